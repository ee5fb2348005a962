"""Feature tables for the three prediction moments, and the feature snapshot.

``FeatureSnapshot`` is everything historical a model version needs at prediction
time: the daily lane/carrier/region tables for the last year, the locations, the
holiday country, and the customer-side tables (orders, feedback, judged deliveries)
for churn. Training builds it from the training data and saves it with the model;
the service loads it and calls the same feature functions on a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data.calendar import guess_country
from data.load import DataSet
from features.customer import CustomerHistory, churn_moments, customer_features
from features.history import DailyTable, History, data_end
from features.pit import Columns, columns_of, frame_of, micros
from features.shipment import Locations, shipment_features
from features.transit import transit_features, training_moments

SNAPSHOT_VERSION = 2  # 2: customer tables as columns, judged moments as timestamps
USUAL_HOURS = "carrier_lane_median_h"  # the lane's usual lead time (shrunk), at order time


@dataclass
class FeatureSnapshot:
    history: History
    locations: Locations
    country: str
    end: pd.Timestamp
    customers: CustomerHistory

    @classmethod
    def fit(cls, ds: DataSet, country: str | None = None, end: pd.Timestamp | None = None) -> "FeatureSnapshot":
        shipments, scans = ds["shipments"], ds.get("scans")
        end = end if end is not None else data_end(shipments, scans)
        customers = CustomerHistory.from_tables(shipments, scans, ds.get("orders"), ds.get("feedback"), ds.get("customers"))
        return cls(History.build(shipments, scans, end), Locations(ds.get("locations")),
                   country or guess_country(shipments.destination_region), end, customers)

    # -- persistence
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        snap = self.history.snapshot()
        for name, table in {**snap.tables, "volume": snap.volume}.items():
            _write_daily(table, folder / f"history_{name}.parquet")
        self.locations.table.to_parquet(folder / "locations.parquet", index=False)
        self.customers.save(folder)
        if snap.lanes is not None:
            snap.lanes.to_parquet(folder / "lanes.parquet", index=False)
        meta = {"version": SNAPSHOT_VERSION, "country": self.country, "end": self.end.isoformat(),
                "last_day": self.history.last_day, "levels": list(snap.tables)}
        (folder / "snapshot.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FeatureSnapshot":
        folder = Path(folder)
        meta = json.loads((folder / "snapshot.json").read_text())
        if meta.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{folder}: feature snapshot version {meta.get('version')} is not {SNAPSHOT_VERSION}")
        tables = {name: _read_daily(folder / f"history_{name}.parquet", name) for name in meta["levels"]}
        lanes = pd.read_parquet(folder / "lanes.parquet") if (folder / "lanes.parquet").exists() else None
        history = History(tables, _read_daily(folder / "history_volume.parquet", "carrier"), int(meta["last_day"]), lanes)
        return cls(history, Locations(pd.read_parquet(folder / "locations.parquet")), meta["country"],
                   pd.Timestamp(meta["end"]), CustomerHistory.load(folder))


def _write_daily(t: DailyTable, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(t.frame(), preserve_index=False), path, compression="zstd")


def _read_daily(path: Path, level: str) -> DailyTable:
    return DailyTable.from_frame(pd.read_parquet(path), level)


# ------------------------------------------------------------------------ moments


def at_order(ds: DataSet, snapshot: FeatureSnapshot) -> pd.DataFrame:
    """One row per shipment: its features as of its ``ordered_at``."""
    return frame_of(shipment_features(columns_of(ds["shipments"]), snapshot.history, snapshot.locations, snapshot.country))


def in_transit(ds: DataSet, snapshot: FeatureSnapshot, at_order_rows: pd.DataFrame,
               moments: pd.DataFrame | None = None, seed: int = 0) -> pd.DataFrame:
    """In-transit features per (shipment_id, as_of), with progress against the lane's usual.

    Without ``moments``, the training snapshots (one after each scan of history).
    The at-order columns join on ``shipment_id``; they are not repeated per snapshot.
    """
    shipments, scans = ds["shipments"], ds.get("scans")
    if moments is None:
        moments = training_moments(shipments, scans, snapshot.end, seed)
    rows = transit_features(columns_of(shipments), columns_of(scans) if scans is not None else None, moments)
    rows = add_progress(rows, at_order_rows)
    del rows["pos"]
    return frame_of(rows, timestamps=("as_of",))


def add_progress(transit_rows: Columns, at_order_rows) -> Columns:
    """Time in transit against the lane's usual lead time, read from each row's shipment
    (``transit_rows["pos"]``) in ``at_order_rows`` (the shipments' at-order features)."""
    usual = np.asarray(at_order_rows[USUAL_HOURS], dtype=float)[transit_rows["pos"]]
    since = np.asarray(transit_rows["hours_since_order"], dtype=float)
    return {**transit_rows, "progress_vs_usual": (since / usual).astype(np.float32),
            "hours_left_vs_usual": (usual - since).astype(np.float32)}


def after_delivery(ds: DataSet, snapshot: FeatureSnapshot, at_order_rows=None, moments=None,
                   lag_days: float | np.ndarray = 0.0) -> pd.DataFrame:
    """Customer features per (order_id, as_of); default moments: each judged order + lag."""
    shipments, scans = ds["shipments"], ds.get("scans")
    if moments is None:
        moments = churn_moments(snapshot.customers.experience, lag_days)
    rows = customer_features(shipments, scans, snapshot.customers, moments, usual_hours(at_order_rows))
    return frame_of(rows, timestamps=("as_of",))


def usual_hours(at_order_rows) -> Columns | None:
    """Each shipment's usual lead time on its lane at order time, from its at-order rows."""
    if at_order_rows is None:
        return None
    return {"shipment_id": np.asarray(at_order_rows["shipment_id"], dtype=object),
            "usual_hours": np.asarray(at_order_rows[USUAL_HOURS], dtype=float)}


def moments_at(ds: DataSet, as_of: pd.Timestamp) -> pd.DataFrame:
    """Every shipment ordered before ``as_of`` and neither delivered nor returned to its
    sender by then (a returned parcel never reaches the customer: no ETA), at ``as_of``."""
    s = ds["shipments"]
    t = micros(pd.Series([as_of]))[0]
    ids = s.shipment_id.astype("str")
    delivered = micros(s.delivered_at)
    open_ = (micros(s.ordered_at) < t) & ((delivered == np.iinfo(np.int64).min) | (delivered >= t))
    open_ &= ~ids.isin(returned_before(ds.get("scans"), t)).to_numpy()
    return pd.DataFrame({"shipment_id": ids[open_].to_numpy(),
                         "as_of": pd.Series([as_of] * int(open_.sum()), dtype="datetime64[us, UTC]")})


def returned_before(scans: pd.DataFrame | None, t_us: int) -> np.ndarray:
    """Ids of the shipments with a ``returned_to_sender`` scan strictly before ``t_us``."""
    if scans is None or not len(scans):
        return np.array([], dtype=object)
    back = (scans.event == "returned_to_sender").to_numpy() & (micros(scans.scanned_at) < t_us)
    return scans.shipment_id[back].astype("str").unique()
