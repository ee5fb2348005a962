"""Batch scoring on a Dask cluster: ``eddy predict --cluster`` and ``eddy score-customers --cluster``.

The data set is read by partition (whole customers, each shipment with its scans:
``data.partitioned``), the bundle is sent once to every worker, and each
partition is scored by the in-process code (``runtime.batch``), so a shipment's or a
customer's answer is the same whichever engine computed it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from data.load import DataSet
from features.distributed import end_of, shared_on
from runtime.batch import Scored, predict_data_set, scored_customers, scoring_of, shipment_of_orders
from runtime.bundle import ModelBundle
from runtime.store import Scoring


def _predict_part(part: DataSet, bundle: ModelBundle, as_of, confidence: float, explain: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    return predict_data_set(bundle, part, as_of, confidence, explain), part["shipments"]


def predict_on(client, parts: list, bundle: ModelBundle, as_of: pd.Timestamp | None = None,
               confidence: float = 0.95, explain: bool = True) -> Iterator[tuple[int, pd.DataFrame, pd.DataFrame]]:
    """(partition number, its predictions, its shipments) as partitions finish, one at a
    time, so the caller holds one partition's answers at once; ``parts`` are futures of
    data sets (``data.partitioned.read_on``)."""
    from distributed import as_completed

    shared = shared_on(client, bundle)
    futures = client.map(_predict_part, parts, bundle=shared, as_of=as_of, confidence=confidence, explain=explain)
    number = {f.key: k for k, f in enumerate(futures)}
    for future in as_completed(futures):
        table, shipments = future.result()
        future.release()
        yield number[future.key], table, shipments


def _customers_in(part: DataSet) -> set[str]:
    """Every customer a partition holds (partitions hold whole customers)."""
    ids = set()
    for name in ("shipments", "orders", "customers"):
        if part.get(name) is not None:
            ids.update(part[name].customer_id.dropna().astype("str").tolist())
    return ids


def _score_part(part: DataSet, bundle: ModelBundle, moment, window_days: float,
                customers=None) -> tuple[Scored, pd.Series]:
    """One partition's customers scored, with the bundle's history cut to them
    (``customers`` names others: the customers the bundle knows that no partition holds),
    and the shipment of each scored order (for the prediction log)."""
    ids = _customers_in(part) if customers is None else customers
    if customers is not None:
        part = DataSet(part.folder, {name: t.iloc[:0] for name, t in part.tables.items()}, {}, {})
    scored = scored_customers(bundle, part, moment, window_days, bundle.snapshot.customers.of_customers(sorted(ids)))
    shipment_of = shipment_of_orders(part["shipments"])
    return scored, shipment_of[shipment_of.index.isin(scored.table.order_id.astype("str"))]


def score_on(client, parts: list, bundle: ModelBundle, as_of: pd.Timestamp | None = None,
             window_days: float = 60.0) -> tuple[Scoring, pd.Series]:
    """``runtime.batch.score_data_set`` by partition: each scores its own customers; the
    customers only the bundle's history knows are scored in one more task; the tables and
    the loyalty drivers come together here. Also each scored order's shipment."""
    bundle.require_churn()
    if as_of is None:
        ends = [e for e in client.gather(client.map(end_of, parts)) if e is not None]
        as_of = max(ends) + pd.Timedelta(seconds=1) if ends else bundle.snapshot.end
    shared = shared_on(client, bundle)
    held = set().union(*client.gather(client.map(_customers_in, parts)))
    rest = [c for c in bundle.snapshot.customers.index()["orders"] if c not in held]
    futures = client.map(_score_part, parts, bundle=shared, moment=as_of, window_days=window_days)
    if rest:
        futures.append(client.submit(_score_part, parts[0], shared, as_of, window_days, rest))
    scored = client.gather(futures)
    return scoring_of(bundle, [s for s, _ in scored]), pd.concat([o for _, o in scored])
