"""The feature build on a Dask cluster: the same feature functions, over partitions.

A data set is split into partitions by customer (a shipment without a customer by its
own id) and each shipment's scans go with it, so every per-shipment and per-customer
computation sees whole histories inside one partition. Then:

* **History** (lane, carrier, region and volume statistics): each partition reduces its
  deliveries to daily sums and lead-time histograms per (group, day) with
  ``features.history.daily_tables``; sums of parts equal the sums of the whole, so the
  partial tables are added up with a Dask group-by (tree reduction; the postal-lane
  level, the one with many groups, is split across several output partitions by key).
  The ``History`` built from the totals is identical to the in-process one.
* **Rows** at order and in transit: ``features.build`` functions run on each partition
  with the snapshot sent once to every worker (a broadcast), giving the rows the whole
  data set would give, partition by partition.

Nothing here defines a feature: the engine changes where partitions run, never what a
feature means (``tests/model/test_distributed.py`` holds both paths equal).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from data.calendar import country_of_counts
from data.load import DataSet
from data.partitioned import part_of
from features.build import FeatureSnapshot, after_delivery, at_order, in_transit, moments_at
from features.customer import CustomerHistory
from features.history import LEVELS, N_BINS, SCALAR_SUMS, DailyTable, History, daily_tables, data_end, first_exceptions
from features.shipment import Locations

#: tables split by customer (scans follow their shipment, feedback its order)
PARTITIONED = ("shipments", "scans", "orders", "feedback", "customers")
#: levels with many groups, whose totals are split across output partitions by key
WIDE_LEVELS = {"postal_lane": 4, "carrier_lane": 2}


def partition_numbers(ds: DataSet, n: int) -> dict[str, np.ndarray]:
    """Each row's partition in ``0..n-1``, for every partitioned table of ``ds``: a hash of
    the customer (of the shipment, when it has none); scans go with their shipment and
    feedback with its order."""
    s = ds["shipments"]
    out = {"shipments": _hashed(s.customer_id.astype("str").fillna(s.shipment_id.astype("str")), n)}
    for name in ("orders", "customers"):
        if ds.get(name) is not None:
            out[name] = _hashed(ds[name].customer_id.astype("str"), n)
    if ds.get("scans") is not None:
        out["scans"] = _owned(ds["scans"].shipment_id, s.shipment_id, out["shipments"], n)
    if ds.get("feedback") is not None:
        orders = [(s.order_id, out["shipments"])] + ([(ds["orders"].order_id, out["orders"])] if "orders" in out else [])
        out["feedback"] = _owned(ds["feedback"].order_id, pd.concat([o for o, _ in orders]),
                                 np.concatenate([p for _, p in orders]), n)
    return out


def _hashed(keys: pd.Series, n: int) -> np.ndarray:
    return part_of(keys, n) % n  # the reader's buckets, folded onto n partitions


def _owned(keys: pd.Series, owners: pd.Series, owner_parts: np.ndarray, n: int) -> np.ndarray:
    """The partition of each key's owner (the first row naming it); a key nobody owns (a
    row the reader would quarantine) goes by its own hash."""
    index = pd.Index(owners.astype("str").to_numpy())
    first = ~index.duplicated()
    at = index[first].get_indexer(keys.astype("str").to_numpy())
    return np.where(at >= 0, owner_parts[first][np.maximum(at, 0)], _hashed(keys.astype("str"), n))


def split(ds: DataSet, n: int) -> list[DataSet]:
    """``ds`` as ``n`` data sets, each holding whole customers with their scans."""
    numbers = partition_numbers(ds, n)
    parts = []
    for k in range(n):
        tables = {name: (t[numbers[name] == k].reset_index(drop=True) if name in numbers else t)
                  for name, t in ds.tables.items() if name in PARTITIONED or name == "locations"}
        parts.append(DataSet(ds.folder, tables, {}, {}))
    return parts


def stage(ds: DataSet, n: int, folder: Path) -> list[Path]:
    """Write the ``n`` partitions of ``ds`` as Parquet under ``folder`` (one folder each),
    for workers to read: a partition read from a file is recomputed when the worker
    holding it dies, where data handed over from this process would be lost."""
    paths = []
    for k, part in enumerate(split(ds, n)):
        target = folder / f"{k:05d}"
        target.mkdir(parents=True, exist_ok=True)
        for name, table in part.tables.items():
            table.to_parquet(target / f"{name}.parquet", index=False)
        paths.append(target)
    return paths


def read_stage(folder: Path) -> DataSet:
    """One staged partition, as ``stage`` wrote it."""
    return DataSet(folder, {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}, {}, {})


def partitions(client, ds: DataSet, folder: Path, n: int | None = None) -> list:
    """The partitions of ``ds`` on the cluster's workers (futures, spread evenly), read
    from ``folder`` (see ``stage``; a folder the workers can read)."""
    n = n or max(2, 2 * len(client.scheduler_info()["workers"]))
    return client.map(read_stage, stage(ds, n, Path(folder)), pure=False)


# ---------------------------------------------------------------------- history


def _partial_tables(part: DataSet) -> dict[str, pd.DataFrame]:
    """One partition's daily sums per level, as tables that add up across partitions."""
    return {level: t.frame() for level, t in daily_tables(part["shipments"], first_exceptions(part.get("scans"))).items()}


def _level(partials: dict[str, pd.DataFrame], level: str) -> pd.DataFrame:
    return partials[level]


def _end_of(part: DataSet) -> pd.Timestamp | None:
    return data_end(part["shipments"], part.get("scans")) if len(part["shipments"]) else None


_DAILY_META = pd.DataFrame({"group": pd.Series(dtype="str"), "day": pd.Series(dtype=np.int64),
                            **{k: pd.Series(dtype=np.int64) for k in SCALAR_SUMS},
                            **{f"h{i}": pd.Series(dtype=np.int32) for i in range(N_BINS)}})


def history_on(client, parts: list, end: pd.Timestamp | None = None) -> tuple[History, pd.Timestamp]:
    """The History of the whole data set from its partitions, and the data's end."""
    import dask.dataframe as dd

    ends = [e for e in client.gather(client.map(_end_of, parts)) if e is not None]
    end = end if end is not None else max(ends)
    partials = client.map(_partial_tables, parts)
    names = [*LEVELS, "volume"]
    totals = [dd.from_delayed(client.map(_level, partials, level=level), meta=_DAILY_META, verify_meta=False)
              .groupby(["group", "day"]).sum(split_out=WIDE_LEVELS.get(level, 1)) for level in names]
    frames = client.gather(client.compute(totals))
    # the volume table counts orders per carrier-service: its groups are carrier keys
    tables = {name: DailyTable.from_frame(f.reset_index(), "carrier" if name == "volume" else name)
              for name, f in zip(names, frames)}
    return History.from_daily(tables, end), end


def _regions(part: DataSet) -> pd.Series:
    return part["shipments"].destination_region.value_counts()


def country_on(client, parts: list) -> str:
    """``guess_country`` over every partition's destination regions."""
    counts = client.gather(client.map(_regions, parts))
    return country_of_counts(pd.concat(counts).groupby(level=0).sum() if counts else pd.Series(dtype="int64"))


def snapshot_on(client, parts: list, locations: pd.DataFrame | None, country: str | None = None,
                end: pd.Timestamp | None = None, customers: CustomerHistory | None = None) -> FeatureSnapshot:
    """``FeatureSnapshot.fit`` with the history reduced on the cluster; ``customers`` (the
    per-order tables churn training needs) are the caller's, as the rows built here on a
    partition use that partition's own (``customers_of``)."""
    history, end = history_on(client, parts, end)
    return FeatureSnapshot(history, Locations(locations), country or country_on(client, parts), end, customers)


# ------------------------------------------------------------------------- rows


def customers_of(part: DataSet) -> CustomerHistory:
    """The customer tables of a partition's customers (whole, as partitions hold whole customers)."""
    return CustomerHistory.from_tables(part["shipments"], part.get("scans"), part.get("orders"), part.get("feedback"),
                                       part.get("customers"))


def _rows_of(part: DataSet, snapshot: FeatureSnapshot, moment: str, as_of: pd.Timestamp | None, seed: int) -> pd.DataFrame:
    rows = at_order(part, snapshot)
    if moment == "in-transit":
        return in_transit(part, snapshot, rows, moments_at(part, as_of) if as_of is not None else None, seed=seed)
    if moment == "after-delivery":
        return after_delivery(part, dataclasses.replace(snapshot, customers=customers_of(part)), rows)
    return rows


def rows_on(client, parts: list, snapshot: FeatureSnapshot, moment: str = "at-order",
            as_of: pd.Timestamp | None = None, seed: int = 0):
    """Feature rows per partition (a Dask DataFrame): at order, in transit (every open
    shipment at ``as_of``, or the training snapshots) or after delivery (each judged order)."""
    import dask.dataframe as dd

    shared = client.scatter(snapshot, broadcast=True)
    pieces = client.map(_rows_of, parts, snapshot=shared, moment=moment, as_of=as_of, seed=seed)
    return dd.from_delayed(pieces, verify_meta=False)
