"""The feature build on a Dask cluster: the same feature functions, over partitions.

The partitions are those ``data.partitioned.read_on`` makes: whole customers (a
shipment without a customer by its own id), each shipment with its scans, so every
per-shipment and per-customer computation sees whole histories inside one partition. Then:

* **History** (lane, carrier, region and volume statistics): each partition reduces its
  deliveries to daily sums and lead-time histograms per (group, day) with
  ``features.history.daily_tables``; sums of parts equal the sums of the whole, so the
  partial tables are added up with a Dask group-by (tree reduction; the postal-lane
  level, the one with many groups, is split across several output partitions by key).
  The ``History`` built from the totals is identical to the in-process one.
* **Rows** at order and in transit: ``features.build`` functions run on each partition
  with the snapshot as one task of the graph (``shared_on``: sent where needed, rebuilt if
  a worker is lost), giving the rows the whole data set would give, partition by partition.

Nothing here defines a feature: the engine changes where partitions run, never what a
feature means (``tests/model/test_distributed.py`` holds both paths equal).
"""

from __future__ import annotations

import dataclasses
import uuid
import warnings

import numpy as np
import pandas as pd

from data.calendar import country_of_counts
from data.load import DataSet
from features.build import FeatureSnapshot, after_delivery, at_order, in_transit, moments_at
from features.customer import CustomerHistory
from features.history import (LEVELS, N_BINS, SCALAR_SUMS, DailyTable, History, add_lanes, daily_tables, data_end,
                              first_exceptions, recent_lanes)
from features.shipment import Locations

#: levels with many groups, whose totals are split across output partitions by key
WIDE_LEVELS = {"postal_lane": 4, "carrier_lane": 2}


# ---------------------------------------------------------------------- history


def _partial_tables(part: DataSet) -> dict[str, pd.DataFrame]:
    """One partition's daily sums per level, as tables that add up across partitions."""
    return {level: t.frame() for level, t in daily_tables(part["shipments"], first_exceptions(part.get("scans"))).items()}


def _level(partials: dict[str, pd.DataFrame], level: str) -> pd.DataFrame:
    return partials[level]


def end_of(part: DataSet) -> pd.Timestamp | None:
    """The latest fact of a partition (None when it has no shipment)."""
    return data_end(part["shipments"], part.get("scans")) if len(part["shipments"]) else None


_DAILY_META = pd.DataFrame({"group": pd.Series(dtype="str"), "day": pd.Series(dtype=np.int64),
                            **{k: pd.Series(dtype=np.int64) for k in SCALAR_SUMS},
                            **{f"h{i}": pd.Series(dtype=np.int32) for i in range(N_BINS)}})


def history_on(client, parts: list, end: pd.Timestamp | None = None) -> tuple[History, pd.Timestamp]:
    """The History of the whole data set from its partitions, and the data's end."""
    import dask.dataframe as dd

    ends = [e for e in client.gather(client.map(end_of, parts)) if e is not None]
    end = end if end is not None else max(ends)
    partials = client.map(_partial_tables, parts)
    names = [*LEVELS, "volume"]
    totals = [dd.from_delayed(client.map(_level, partials, level=level), meta=_DAILY_META, verify_meta=False)
              .groupby(["group", "day"]).sum(split_out=WIDE_LEVELS.get(level, 1)) for level in names]
    frames = client.gather(client.compute(totals))
    # the volume table counts orders per carrier-service: its groups are carrier keys
    tables = {name: DailyTable.from_frame(f.reset_index(), "carrier" if name == "volume" else name)
              for name, f in zip(names, frames)}
    lanes = add_lanes(client.gather(client.map(_lanes, parts, end=end)))
    return History.from_daily(tables, end, lanes), end


def _lanes(part: DataSet, end: pd.Timestamp) -> pd.DataFrame:
    return recent_lanes(part["shipments"], end)


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


def shared_on(client, obj):
    """``obj`` (a snapshot, a bundle) on the cluster for every task that needs it, as a
    future that can be made again: a task whose result it is, sent where it is needed.

    Not scattered: the scheduler's active memory manager keeps one copy of scattered data
    once no task on a worker needs the others, and scattered data whose last copy was on a
    lost worker cannot be made again, so every task that still needed it was cancelled
    ("already forgotten"; tests/model/test_distributed.py kills a worker during and after
    a build). A task's result the scheduler makes again."""
    import dask

    with warnings.catch_warnings():
        # the object (megabytes) goes once, in the graph: what the warning's advice asks for
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.compute(dask.delayed(obj, name=f"shared-{uuid.uuid4().hex}", traverse=False))


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

    pieces = client.map(_rows_of, parts, snapshot=shared_on(client, snapshot), moment=moment, as_of=as_of, seed=seed)
    return dd.from_delayed(pieces, verify_meta=False)
