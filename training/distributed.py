"""Training rows on a Dask cluster: what ``eddy train --cluster`` learns from.

Each partition (whole customers with their scans: ``data.partitioned``) builds its own
training rows with the in-process functions of ``training.rows``, the snapshot sent
once to every worker. Only what the models learn from leaves the workers:

* The splits need facts about the whole data set (every lead time for censoring, the
  first order, the earliest judged delivery for churn): gathered as arrays.
* Each model learns from its newest ``MAX_TRAIN_ROWS`` training rows, chosen by moment
  bounds (``training.rows.tail_bounds``) computed here from every partition's training
  moments; each partition then sends back its training rows from the first bound on,
  with its calibration and test windows (a keyed sample of them past ``MAX_EVAL_ROWS``,
  at shares computed here from every partition's labelled rows: ``eval_shares``).

A first pass computes only the rows' moments and labels (``edd_training_moments``,
``churn_training_moments``: no feature is built), the second builds the rows of the
windows: cheaper than keeping every row of a large data set in worker memory.
So this process holds at most ``MAX_TRAIN_ROWS`` training rows and ``MAX_EVAL_ROWS``
rows of each evaluation window per model, whatever the size of the data; and the
customer tables the bundle serves (``CustomerHistory``, each text value held once).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from data.load import DataSet
from features.build import FeatureSnapshot
from features.customer import CustomerHistory
from features.distributed import customers_of, shared_on, snapshot_on
from features.pit import frame_of, micros, timestamps_of
from training.rows import (LABEL, MIN_TRAIN_ROWS, NOWCAST_MAX_ROWS, REF, Labelled, Split, at_order, churn_labels,
                           churn_split, churn_training_moments, churn_training_rows, edd_training_moments,
                           edd_training_rows, eval_counts, eval_draw, eval_shares, is_recent, kept, lead_days,
                           recent_share, recent_shipments, shipment_labels, split_of_shipments, tail_bounds,
                           too_few_churn_labels, windows_from)

#: the shipment models and their labels (``training.rows.shipment_labels``)
SHIPMENT_LABELS = {"edd": "hours_left", "delay": "late"}


def _snapshot(client, data, end: pd.Timestamp | None, customers: list) -> FeatureSnapshot:
    """``FeatureSnapshot.fit`` over the partitions: the history reduced on the cluster, the
    customer tables (``customers``: each partition's, as futures) gathered (the bundle serves
    them; partitions hold whole customers)."""
    return snapshot_on(client, data.parts, data.locations, None, end, CustomerHistory.joined(client.gather(customers)))


def labelled_on(client, data, horizon_days: float, seed: int = 0, end: pd.Timestamp | None = None):
    """The snapshot and every model's ``Windows`` (``Labelled``), built on the cluster."""
    # each partition's customer tables, built once and kept on the workers for every pass below
    customers = client.map(customers_of, data.parts)
    snapshot = _snapshot(client, data, end, customers)
    # every worker gets the history once; each partition's rows use its own customer tables
    shared = shared_on(client, dataclasses.replace(snapshot, customers=None))
    leads, firsts = zip(*client.gather(client.map(_shipment_facts, data.parts)))
    split = split_of_shipments(snapshot.end, np.concatenate(leads), min(f for f in firsts if f is not None))
    facts = client.gather(client.map(_label_facts, data.parts, customers, snapshot=shared, split=split,
                                     horizon_days=horizon_days, seed=seed))
    bounds, counts, shares = {}, {}, {}
    for name in SHIPMENT_LABELS:
        moments, n, positives, evaluated = zip(*(f[name] for f in facts))
        bounds[name], counts[name] = tail_bounds(np.concatenate(moments)), (sum(n), sum(positives))
        shares[name] = eval_shares({w: sum(c[w] for c in evaluated) for w in evaluated[0]})
    refs, y, first_ref = (np.concatenate([f["churn"][i] for f in facts]) for i in range(3))
    c_split = None
    if len(y) >= 2 * MIN_TRAIN_ROWS and len(first_ref):
        c_split = churn_split(snapshot, first_ref.min(keepdims=True), horizon_days)[0]
        window = c_split.assign(timestamps_of(refs))
        train = window == "train"
        bounds["churn"], counts["churn"] = tail_bounds(refs[train]), (int(train.sum()), float(y[train].sum()))
        shares["churn"] = eval_shares(eval_counts(window))
    parts = client.gather(client.map(_windows, data.parts, customers, snapshot=shared, split=split, churn=c_split,
                                     bounds=bounds, shares=shares, horizon_days=horizon_days, seed=seed))
    client.cancel(customers)
    windows = {name: windows_from([p[name] for p in parts], bounds[name], *counts[name]) for name in bounds}
    churn = windows["churn"] if c_split is not None else too_few_churn_labels(len(y), horizon_days)
    shipments = data.report["shipments"].accepted
    return snapshot, Labelled(split, windows["edd"], windows["delay"], churn, c_split, shipments)


def recent_shipments_on(client, data, end: pd.Timestamp, cap: int = NOWCAST_MAX_ROWS) -> pd.DataFrame:
    """``training.rows.recent_shipments`` of the whole data, as one table: every
    partition counts its recent shipments, and each sends the share of them that all
    the counts set (the in-process rows, shipment for shipment)."""
    count = sum(client.gather(client.map(_recent_count, data.parts, end=end)))
    share = recent_share(count, cap)
    return pd.concat(client.gather(client.map(_recent, data.parts, end=end, share=share)), ignore_index=True)


def _recent_count(part: DataSet, end: pd.Timestamp) -> int:
    return int(is_recent(part["shipments"], end).sum())  # counted, not copied


def _recent(part: DataSet, end: pd.Timestamp, share: float) -> pd.DataFrame:
    return recent_shipments(part["shipments"], end, share=share)


def _shipment_facts(part: DataSet) -> tuple[np.ndarray, pd.Timestamp | None]:
    s = part["shipments"]
    return lead_days(s), (s.ordered_at.min() if len(s) else None)


def _frames(part: DataSet, customers: CustomerHistory, snapshot: FeatureSnapshot, split: Split, horizon_days: float,
            seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A partition's shipment rows with their labels and window, and its churn rows with
    their label and judged moment (microseconds)."""
    snap = dataclasses.replace(snapshot, customers=customers)
    rows, labels = edd_training_rows(part, snap, seed=seed)
    shipments = rows.assign(**{f"_{c}": labels[c].to_numpy() for c in SHIPMENT_LABELS.values()},
                            _window=split.assign(rows.as_of))
    churn_rows, y, ref = churn_training_rows(part, snap, rows[at_order(rows)], horizon_days, seed)
    return shipments, churn_rows.assign(**{LABEL: y, "_ref_us": ref})


def _label_facts(part: DataSet, customers: CustomerHistory, snapshot: FeatureSnapshot, split: Split,
                 horizon_days: float, seed: int) -> dict:
    """Per shipment model: the training rows' moments, their count and positives at
    order, and the labelled rows each evaluation window has; for churn:
    every labelled row's judged moment and label, and the earliest. From the rows'
    moments alone: no feature is built for them."""
    snap = dataclasses.replace(snapshot, customers=customers)
    moments = frame_of(edd_training_moments(part, snap, seed), timestamps=("as_of",))
    labels = shipment_labels(part["shipments"], moments, snap.end)
    t = micros(moments.as_of)
    window = split.assign(moments.as_of)
    train = window == "train"
    ordered = np.arange(len(moments)) < len(part["shipments"])  # the order-time rows come first
    out = {}
    for label, column in SHIPMENT_LABELS.items():
        y = labels[column].to_numpy()
        known = train & ~np.isnan(y)
        out[label] = (t[known], int((known & ordered).sum()), float(y[known & ordered].sum()),
                      eval_counts(window[~np.isnan(y)]))
    churn, ref, customers = churn_training_moments(snap, seed)
    y = churn_labels(snap.customers.orders, {"customer_id": customers}, ref, horizon_days, snap.end)
    known = ~np.isnan(y)
    out["churn"] = (ref[known], y[known], ref.min(keepdims=True) if len(ref) else ref)
    return out


def _windows(part: DataSet, customers: CustomerHistory, snapshot: FeatureSnapshot, split: Split, churn: Split | None,
             bounds: dict, shares: dict, horizon_days: float, seed: int) -> dict[str, pd.DataFrame]:
    """A partition's rows of every window: its training rows from the first bound on, its
    evaluation rows sampled at the whole data set's shares (``kept``)."""
    shipments, churn_rows = _frames(part, customers, snapshot, split, horizon_days, seed)
    out = {}
    window = shipments._window.to_numpy()
    labels = [f"_{c}" for c in SHIPMENT_LABELS.values()]
    t = micros(shipments.as_of)
    draw = eval_draw(shipments.shipment_id, t, seed)
    for name, column in SHIPMENT_LABELS.items():
        y = shipments[f"_{column}"].to_numpy()
        keep = kept(y, window, t, bounds[name][0], draw, shares[name])
        out[name] = shipments[keep].drop(columns=labels).assign(**{LABEL: y[keep], "_moment": t[keep]})
    if churn is not None:
        ref_us = churn_rows.pop("_ref_us").to_numpy()
        ref = timestamps_of(ref_us).set_axis(churn_rows.index)
        window = churn.assign(ref)
        draw = eval_draw(churn_rows.order_id, ref_us, seed)
        keep = kept(churn_rows[LABEL].to_numpy(), window, ref_us, bounds["churn"][0], draw, shares["churn"])
        out["churn"] = churn_rows[keep].assign(**{REF: ref[keep], "_moment": ref_us[keep], "_window": window[keep]})
    return out
