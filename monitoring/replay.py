"""Traffic from a data set: the requests a checkout and an order system would have sent.

Used to exercise the service on later months of a data set (the monitoring tests and
benchmarks), and to plant a known drift: one carrier slower from a date on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.load import DataSet

SHIPMENT_FIELDS = ("shipment_id", "customer_id", "carrier", "service_level", "origin_region", "destination_region",
                   "origin_postal", "destination_postal")


def _iso(v) -> str | None:
    return None if pd.isna(v) else pd.Timestamp(v).isoformat()


def shipment_body(row) -> dict:
    """A contract shipment row (a namedtuple or Series) as the ``shipment`` of a request:
    its contract fields, timestamps as ISO text, missing values left out or null."""
    out = {k: (None if pd.isna(getattr(row, k)) else str(getattr(row, k))) for k in SHIPMENT_FIELDS}
    out.update(ordered_at=_iso(row.ordered_at), promised_at=_iso(row.promised_at))
    for k in ("weight_kg", "value"):
        v = getattr(row, k)
        if not pd.isna(v):
            out[k] = float(v)
    return out


def eta_requests(shipments: pd.DataFrame, explain: bool = False) -> list[dict]:
    """One ``/eta`` body per shipment, at its order moment (what checkout asks)."""
    return [{**shipment_body(r), "explain": explain} for r in shipments.itertuples()]


def churn_requests(shipments: pd.DataFrame, explain: bool = False) -> list[dict]:
    """One ``/churn`` body per delivered shipment, right after its delivery."""
    done = shipments[shipments.delivered_at.notna()]
    return [{"customer_id": str(r.customer_id), "explain": explain,
             "delivery": {**shipment_body(r), "delivered_at": _iso(r.delivered_at)}} for r in done.itertuples()]


def slow_down(ds: DataSet, carrier: str, start: pd.Timestamp, days: float = 2.0) -> DataSet:
    """``ds`` with every parcel of ``carrier`` ordered from ``start`` on delivered ``days`` later
    (its scans after the first day move with it)."""
    tables = dict(ds.tables)
    s = tables["shipments"].copy()
    hit = (s.carrier == carrier) & (s.ordered_at >= start) & s.delivered_at.notna()
    shift = pd.Timedelta(days=days)
    s.loc[hit, "delivered_at"] = s.loc[hit, "delivered_at"] + shift
    tables["shipments"] = s
    scans = tables.get("scans")
    if scans is not None:
        sc = scans.copy()
        first_day = s.set_index("shipment_id").ordered_at + pd.Timedelta(days=1)
        ids = set(s.shipment_id[hit])
        move = sc.shipment_id.isin(ids).to_numpy() & (
            sc.scanned_at.to_numpy() > first_day.reindex(sc.shipment_id).to_numpy())
        sc.loc[move, "scanned_at"] = sc.loc[move, "scanned_at"] + shift
        tables["scans"] = sc
    return DataSet(ds.folder, tables, ds.quarantine, ds.report)
