"""Model rows, labels and time-based splits.

Rows themselves come from ``features.rows`` (the same function the runtime uses).

Splits are by time only: train on the past, calibrate on the next window, test on
the window after. Labels near the end of the data are censored (only fast parcels
have arrived), so moments later than the longest usual lead time before the end are
left out of every labelled set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data.load import DataSet
from features.build import FeatureSnapshot, after_delivery
from features.customer import churn_moments
from features.pit import NAT, US_PER_DAY, US_PER_HOUR, EventIndex, Lookup, columns_of, frame_of, micros, timestamps_of
from features.rows import order_moments, shipment_rows
from features.shipment import shipment_features
from features.transit import keyed_uniform, training_moments



# ----------------------------------------------------------------------- labels


def lead_days(shipments: pd.DataFrame) -> np.ndarray:
    """Days from order to delivery of every delivered shipment."""
    done = shipments.delivered_at.notna()
    return ((shipments.delivered_at[done] - shipments.ordered_at[done]) / pd.Timedelta(days=1)).to_numpy(dtype=float)


def censor_days(lead: np.ndarray) -> float:
    """How long before the end labels are complete: the 99th percentile of the lead times
    (``lead_days``), 14 to 60 days."""
    if not len(lead):
        return 30.0
    return float(np.clip(np.ceil(np.quantile(lead, 0.99)), 14, 60))


def shipment_labels(shipments: pd.DataFrame, rows: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """Per row: hours from the moment to delivery, and late (missed the promise), where known."""
    s = shipments.set_index(shipments.shipment_id.astype("str"))
    idx = s.index.get_indexer(rows.shipment_id)
    delivered = micros(s.delivered_at)[idx]
    promised = micros(s.promised_at)[idx]
    at = micros(rows.as_of)
    end_us = micros(pd.Series([end]))[0]
    hours = np.where(delivered != NAT, (delivered - at) / US_PER_HOUR, np.nan)
    known_late = (promised != NAT) & ((delivered != NAT) | (promised < end_us))
    late = np.where(known_late, ((delivered == NAT) | (delivered > promised)).astype(float), np.nan)
    return pd.DataFrame({"hours_left": hours, "late": late})


def churn_labels(history_orders, rows: pd.DataFrame, ref_us: np.ndarray, horizon_days: float,
                 end: pd.Timestamp) -> np.ndarray:
    """1 when the customer placed no order in (ref, ref + horizon]; NaN when not yet mature."""
    vocab = Lookup.of(history_orders["customer_id"], rows["customer_id"])
    idx = EventIndex(vocab.codes(history_orders["customer_id"]), micros(history_orders["ordered_at"]))
    q = vocab.codes(rows["customer_id"])
    horizon = int(horizon_days * US_PER_DAY)
    placed = idx.count_before(q, ref_us + horizon + 1) - idx.count_before(q, ref_us + 1)
    mature = ref_us + horizon <= micros(pd.Series([end]))[0]
    return np.where(mature, (placed == 0).astype(float), np.nan)


# ----------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Split:
    """Train before ``calibrate_from``, calibrate until ``test_from``, test until ``test_until``."""

    calibrate_from: pd.Timestamp
    test_from: pd.Timestamp
    test_until: pd.Timestamp

    @classmethod
    def before(cls, label_end: pd.Timestamp, window_days: float) -> "Split":
        w = pd.Timedelta(days=window_days)
        return cls(label_end - 2 * w, label_end - w, label_end)

    def assign(self, moments: pd.Series) -> np.ndarray:
        """'train', 'calibrate', 'test' or '' (after the labelled period) per moment."""
        t = micros(moments)
        cal, test, until = micros(pd.Series([self.calibrate_from, self.test_from, self.test_until]))
        known = t != NAT
        return np.select([known & (t < cal), known & (t < test), known & (t <= until)], ["train", "calibrate", "test"], default="")

    def as_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in vars(self).items()}


def window_days(first: pd.Timestamp, label_end: pd.Timestamp) -> float:
    """Calibration and test windows: an eighth of the labelled span each, 14 to 61 days."""
    return float(np.clip((label_end - first) / pd.Timedelta(days=1) / 8.0, 14, 61))


def shipment_split(snapshot: FeatureSnapshot, shipments: pd.DataFrame) -> Split:
    """EDD and delay: labelled moments end where censoring starts."""
    return split_of_shipments(snapshot.end, lead_days(shipments), shipments.ordered_at.min())


def split_of_shipments(end: pd.Timestamp, leads: np.ndarray, first_order: pd.Timestamp) -> Split:
    """``shipment_split`` from what it reads: the data's end, every lead time, the first order."""
    label_end = end - pd.Timedelta(days=censor_days(leads))
    return Split.before(label_end, window_days(first_order, label_end))


def churn_split(snapshot: FeatureSnapshot, ref_us: np.ndarray, horizon_days: float) -> tuple[Split, pd.Series]:
    """Churn: split on the judged moment; labels are mature up to the end minus the horizon."""
    ref = timestamps_of(ref_us)
    label_end = snapshot.end - pd.Timedelta(days=horizon_days)
    return Split.before(label_end, window_days(ref.min(), label_end)), ref


MIN_TRAIN_ROWS = 300  # fewer, and a model is skipped with the reason
#: most recent labelled training rows per model; older history reaches it through the
#: features, and it bounds training time (and, on a cluster, the client's memory) at any scale
MAX_TRAIN_ROWS = 600_000
VALIDATION_SHARE = 0.1  # the newest tenth of those stops the boosting early
#: labelled rows per model in each of the calibration and test windows; beyond it, a
#: keyed sample of them: enough to calibrate and to measure to a few thousandths, and
#: it bounds the training process's memory however long those windows' data grows
MAX_EVAL_ROWS = 250_000
LABEL = "_y"  # a window's label column
REF = "_ref"  # a churn row's judged moment (its delivery), by which it is split and weighed


def tail_bounds(train_us: np.ndarray, share: float = VALIDATION_SHARE) -> tuple[int, int]:
    """The first moment of the newest ``MAX_TRAIN_ROWS`` training moments, and of the
    newest ``share`` of those: rows from the first are used, and from the second on they
    validate. Bounds, not positions, so every engine picks the same rows from its part."""
    t = np.sort(np.asarray(train_us))[-MAX_TRAIN_ROWS:]
    if not len(t):
        return 0, 0
    return int(t[0]), int(t[min(int(len(t) * (1 - share)), len(t) - 1)])


EVAL_WINDOWS = ("calibrate", "test")


def eval_counts(labelled_windows: np.ndarray) -> dict[str, int]:
    """How many labelled rows each evaluation window has, from every labelled row's window."""
    return {w: int((labelled_windows == w).sum()) for w in EVAL_WINDOWS}


def eval_shares(counts: dict[str, int]) -> dict[str, float]:
    """The share of each evaluation window's labelled rows kept (``MAX_EVAL_ROWS``)."""
    return {w: min(1.0, MAX_EVAL_ROWS / max(counts[w], 1)) for w in EVAL_WINDOWS}


def eval_draw(keys, t_us: np.ndarray, seed: int) -> np.ndarray:
    """A keyed draw per row (its shipment or order, its moment): the rows of a sampled
    evaluation window are the same whichever engine or partition builds them."""
    return keyed_uniform(np.asarray(keys, dtype=object), np.asarray(t_us), seed + 5)


def validation_tail(mask: np.ndarray, moments: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Training rows split into fit and early-stopping parts (``tail_bounds``)."""
    t = micros(moments)
    first, cut = tail_bounds(t[mask])
    return mask & (t >= first) & (t < cut), mask & (t >= cut)


@dataclass
class Windows:
    """One model's labelled rows by window, the label in column ``LABEL``: the newest
    training rows as ``fit`` and ``val`` (``tail_bounds``), then ``calibrate`` and
    ``test``. ``n_train`` and ``positives`` count the whole training window's scored
    rows (the delivered shipments at order, not their in-transit copies)."""

    fit: pd.DataFrame
    val: pd.DataFrame
    calibrate: pd.DataFrame
    test: pd.DataFrame
    n_train: int
    positives: float


def at_order(rows: pd.DataFrame) -> np.ndarray:
    """Rows at the order moment (the others are in-transit snapshots)."""
    return rows.hours_since_order.to_numpy() == 0


def kept(y: np.ndarray, window: np.ndarray, t: np.ndarray, first: int, draw: np.ndarray,
         shares: dict[str, float]) -> np.ndarray:
    """The rows a model learns from: labelled training rows from ``first`` (``tail_bounds``)
    on, and labelled rows of the calibration and test windows, those whose ``draw``
    (``eval_draw``) falls below the window's share (``eval_shares``)."""
    sampled = [(window == w) & (draw < share) for w, share in shares.items()]
    return ~np.isnan(y) & (((window == "train") & (t >= first)) | np.logical_or.reduce(sampled))


def windows_of(rows: pd.DataFrame, y: np.ndarray, window: np.ndarray, moments: pd.Series, keys: np.ndarray,
               seed: int, scored: np.ndarray | None = None) -> Windows:
    """``rows`` with label ``y`` (NaN: unknown) and window ('train', 'calibrate', 'test')
    as ``Windows``, the training tail chosen on ``moments``, the evaluation windows
    sampled by ``keys`` (shipment or order ids) when large."""
    y = np.asarray(y, dtype=float)
    t = micros(moments)
    train = ~np.isnan(y) & (window == "train")
    bounds = tail_bounds(t[train])
    keep = kept(y, window, t, bounds[0], eval_draw(keys, t, seed), eval_shares(eval_counts(window[~np.isnan(y)])))
    scored = np.ones(len(rows), dtype=bool) if scored is None else scored
    picked = rows[keep].assign(**{LABEL: y[keep], "_window": window[keep], "_moment": t[keep]})
    return windows_from([picked], bounds, int((train & scored).sum()), float(y[train & scored].sum()))


def windows_from(frames: list[pd.DataFrame], bounds: tuple[int, int], n_train: int, positives: float) -> Windows:
    """``Windows`` from the ``kept`` rows with their label, window (``_window``) and moment
    (``_moment``, microseconds): in one process, or gathered from a cluster's partitions."""
    rows = pd.concat(frames, ignore_index=True)
    w, t = rows.pop("_window").to_numpy(), rows.pop("_moment").to_numpy()
    return Windows(rows[(w == "train") & (t < bounds[1])], rows[(w == "train") & (t >= bounds[1])],
                   rows[w == "calibrate"], rows[w == "test"], n_train, positives)


@dataclass
class Labelled:
    """Every model's labelled rows by window (``Windows``), and the splits that made them;
    ``churn`` is the reason instead when there are too few mature churn labels."""

    split: Split
    edd: Windows
    delay: Windows
    churn: Windows | str
    churn_split: Split | None
    shipments: int


def too_few_churn_labels(known: int, horizon_days: float) -> str:
    return (f"too few mature churn labels: {known} deliveries are older than the {horizon_days:g}-day horizon at "
            f"the end of the data (need {MIN_TRAIN_ROWS * 2})")


# ---------------------------------------------------------------- model frames


def edd_training_moments(ds: DataSet, snapshot: FeatureSnapshot, seed: int = 0,
                         transit_per_shipment: int = 1) -> dict[str, np.ndarray]:
    """Every shipment at its order time, then ``transit_per_shipment`` in-transit snapshots
    of each: ``shipment_id``, ``pos`` (the shipment's row) and ``as_of`` (microseconds)."""
    shipments, scans = ds["shipments"], ds.get("scans")
    ids = shipments.shipment_id.astype("str").to_numpy(dtype=object)
    transit = training_moments(shipments, scans, snapshot.end, seed)
    if len(transit) and transit_per_shipment:
        # a keyed draw picks each shipment's snapshots, as it placed them: the same on any partition
        codes = transit.shipment_id.cat.codes.to_numpy()
        draw = keyed_uniform(ids[codes], micros(transit.as_of), seed + 1)
        ranked = transit.iloc[np.lexsort((draw, codes))]
        transit = ranked[ranked.groupby("shipment_id", observed=True).cumcount() < transit_per_shipment]
    else:
        transit = transit.iloc[:0]
    # Every shipment at its order, then the snapshots; positions known, so no id lookup.
    pos = np.concatenate([np.arange(len(shipments)), transit.shipment_id.cat.codes.to_numpy().astype(np.int64)])
    return {"shipment_id": ids[pos], "pos": pos,
            "as_of": np.concatenate([micros(shipments.ordered_at), micros(transit.as_of)])}


def edd_training_rows(ds: DataSet, snapshot: FeatureSnapshot, seed: int = 0,
                      transit_per_shipment: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``edd_training_moments``, with their labels."""
    shipments, scans = ds["shipments"], ds.get("scans")
    cols = columns_of(shipments)
    at_order_rows = shipment_features(cols, snapshot.history, snapshot.locations, snapshot.country)
    moments = edd_training_moments(ds, snapshot, seed, transit_per_shipment)
    rows = frame_of(shipment_rows(cols, columns_of(scans) if scans is not None else None, moments, snapshot,
                                  at_order_rows), timestamps=("as_of",))
    return rows, shipment_labels(shipments, rows, snapshot.end)


#: the days of orders before the data's end that the nowcast reads (``recent_rows``): the
#: network's over all of them, a region's over the newest ``training.models.NOWCAST_REGION_DAYS``.
#: Olist's parcels take about 10 days: over 10 days hardly one is due (chosen by backtest, README)
NOWCAST_DAYS = 45


#: at most about this many of them are read, a keyed sample past it: a median needs no
#: more, and it bounds the rows the client builds however large the data (``train --cluster``)
NOWCAST_MAX_ROWS = 200_000
NOWCAST_SEED = 97  # its keyed draw's own: no other draw of shipments at their order moment uses it


def recent_shipments(shipments: pd.DataFrame, end: pd.Timestamp, cap: int = NOWCAST_MAX_ROWS,
                     share: float | None = None) -> pd.DataFrame:
    """The shipments ordered in the ``NOWCAST_DAYS`` before ``end``; past ``cap`` of them,
    a keyed share (by shipment and order moment, so the same shipments whichever
    partition holds them). ``share``: the one a caller set from every partition's count
    (``recent_share``); by default these shipments' own."""
    recent = shipments[is_recent(shipments, end)]
    share = recent_share(len(recent), cap) if share is None else share
    if share < 1.0:
        draw = keyed_uniform(recent.shipment_id.astype("str").to_numpy(dtype=object), micros(recent.ordered_at),
                             NOWCAST_SEED)
        recent = recent[draw < share]
    return recent.reset_index(drop=True)


def is_recent(shipments: pd.DataFrame, end: pd.Timestamp) -> np.ndarray:
    """Whether each shipment was ordered in the ``NOWCAST_DAYS`` before ``end``."""
    ordered = micros(shipments.ordered_at)
    end_us = micros(pd.Series([end]))[0]
    return (ordered < end_us) & (ordered >= end_us - NOWCAST_DAYS * US_PER_DAY)


def recent_share(count: int, cap: int = NOWCAST_MAX_ROWS) -> float:
    """The share of ``count`` recent shipments the nowcast reads: all up to ``cap``."""
    return min(1.0, cap / count) if count else 1.0


def recent_rows(recent: pd.DataFrame, snapshot: FeatureSnapshot) -> tuple[pd.DataFrame, np.ndarray]:
    """At-order rows of ``recent_shipments`` (as of the snapshot's end), and their hours
    to delivery where known by then (NaN: still on the way)."""
    end = micros(pd.Series([snapshot.end]))[0]
    rows = frame_of(shipment_rows(columns_of(recent), None, order_moments(recent), snapshot), timestamps=("as_of",))
    delivered = micros(recent.delivered_at)
    known = (delivered != NAT) & (delivered < end)
    return rows, np.where(known, (delivered - micros(recent.ordered_at)) / US_PER_HOUR, np.nan)


def churn_training_moments(snapshot: FeatureSnapshot, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One moment per judged order (half right after the delivery, half up to 60 days
    later), with the delivery's judged moment (microseconds) and the customer."""
    exp = snapshot.customers.experience
    # keyed draws per order, as the in-transit snapshots: the same on any partition
    ids = np.asarray(exp["order_id"], dtype=object)
    first, later = keyed_uniform(ids, exp["ref"], seed + 2), keyed_uniform(ids, exp["ref"], seed + 3)
    moments = churn_moments(exp, np.where(first < 0.5, 0.0, later * 60))
    at = Lookup(exp["order_id"]).codes(moments.order_id.to_numpy(dtype=object))
    return moments, exp["ref"][at], np.asarray(exp["customer_id"], dtype=object)[at]


def churn_training_rows(ds: DataSet, snapshot: FeatureSnapshot, at_order_rows: pd.DataFrame | None,
                        horizon_days: float, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows of ``churn_training_moments``, with their labels and judged moments."""
    rows = after_delivery(ds, snapshot, at_order_rows, churn_training_moments(snapshot, seed)[0])
    exp = snapshot.customers.experience
    ref = exp["ref"][Lookup(exp["order_id"]).codes(rows.order_id.to_numpy(dtype=object))]
    return rows, churn_labels(snapshot.customers.orders, rows, ref, horizon_days, snapshot.end), ref
