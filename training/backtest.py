"""Rolling-origin backtest: at each cutoff, train on what was known then, judge what came next.

At a cutoff the data set is cut to what its export would have held (``data.known``),
``eddy train``'s own pipeline fits the three models and their baselines on it, and the
resulting version predicts the shipments ordered in the following window, at order
time and once in transit, as the service would have: its feature snapshot ends at the
cutoff, scans are the shipment's own up to the moment. Churn is judged on the orders
delivered in the window, right after delivery, once their labels are mature.

The result is one long table (``cutoff, moment, model, metric, value``) that every
summary, plot and MLflow run reads.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from data.known import known_at
from data.load import DataSet
from features.customer import CustomerHistory
from features.history import data_end
from features.pit import NAT, US_PER_DAY, frame_of, micros
from features.rows import order_moments
from features.transit import training_moments
from runtime.bundle import ModelBundle
from training import baselines
from training.evaluate import edd_metrics, interval_metrics, probability_metrics, top_decile_lift
from training.rows import censor_days, churn_labels, lead_days, shipment_labels
from training.train import (MIN_EVAL_ROWS, RECENCY_HALF_LIFE_DAYS, TrainResult, hours_to_end_of_day, train,
                            truth_tables)

COLUMNS = ["cutoff", "moment", "model", "metric", "value"]
MODELS = ("eddy", "promise", "lane_median", "late_rate", "rfm", "bgnbd", "oracle")
METRICS = ("edd_mae_days", "edd_within_1d", "coverage_80", "promise90_on_time", "promise90_days",
           "promise95_on_time", "promise95_days", "delay_auc", "delay_brier", "delay_ece", "churn_auc",
           "churn_lift10", "edd_n", "churn_n")  # *_n: the parcels and customers judged, for sampling noise
#: churn is judged right after the delivery, the moment its labels speak of
MOMENTS = ("at_order", "in_transit", "after_delivery")
Figure = tuple[str, str, str, float]  # moment, model, metric, value


# ------------------------------------------------------------------------ cutoffs


def default_cutoffs(ds: DataSet, n: int, every: pd.Timedelta, horizon: pd.Timedelta,
                    churn_horizon_days: float) -> list[pd.Timestamp]:
    """``n`` midnights ``every`` apart, the last one late enough that every label of its
    window is known by the end of the data (deliveries and the churn horizon)."""
    shipments = ds["shipments"]
    lag = pd.Timedelta(days=max(censor_days(lead_days(shipments)), churn_horizon_days))
    last = (data_end(shipments, ds.get("scans")) - horizon - lag).floor("D")
    return [last - k * every for k in reversed(range(n))]


# ----------------------------------------------------------------------- outcomes


@dataclass
class Outcomes:
    """What really happened, from the full data set: the judge's side, never a model's."""

    ds: DataSet
    history: CustomerHistory
    end: pd.Timestamp
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)

    @classmethod
    def of(cls, ds: DataSet) -> "Outcomes":
        history = CustomerHistory.from_tables(ds["shipments"], ds.get("scans"), ds.get("orders"), ds.get("feedback"),
                                              ds.get("customers"))
        return cls(ds, history, data_end(ds["shipments"], ds.get("scans")), truth_tables(ds.folder))

    def shipments_between(self, start: pd.Timestamp, until: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        s = self.ds["shipments"]
        s = s[(s.ordered_at >= start) & (s.ordered_at < until)].reset_index(drop=True)
        scans = self.ds.get("scans")
        if scans is not None:
            scans = scans[scans.shipment_id.isin(s.shipment_id)].reset_index(drop=True)
        return s, scans

    def oracle(self, table: str, key: str, column: str, ids) -> np.ndarray | None:
        t = self.truth.get(table)
        if t is None or column not in t:
            return None
        return t.set_index(key)[column].reindex(np.asarray(ids, dtype=object)).to_numpy(dtype=float)


# ------------------------------------------------------------------------ judging


def with_label(rows: pd.DataFrame, y: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows whose label is known, and their labels."""
    known = ~np.isnan(y)
    return rows[known].reset_index(drop=True), y[known]


def edd_figures(moment: str, bundle: ModelBundle, rows: pd.DataFrame, labels: pd.DataFrame,
                outcomes: Outcomes) -> list[Figure]:
    """EDD and promise figures of the model and its baselines on rows whose delivery is known."""
    r, actual = with_label(rows, labels.hours_left.to_numpy())
    if bundle.edd is None or len(actual) < MIN_EVAL_ROWS:
        return []
    q = bundle.edd.predict_hours(r, r.carrier)
    out = _point_figures(moment, "eddy", q[:, 1], actual)
    out.append((moment, "eddy", "coverage_80", interval_metrics(q[:, 0], q[:, 2], actual)["coverage"]))
    out.append((moment, "eddy", "edd_n", float(len(actual))))
    for c in (90, 95):
        due = hours_to_end_of_day(r, bundle.edd.promise_hours(r, r.carrier, c / 100))
        out += [(moment, "eddy", f"promise{c}_on_time", float(np.mean(actual <= due))),
                (moment, "eddy", f"promise{c}_days", float(np.mean(due) / 24.0))]
    promise = baselines.promise_hours(r)
    given = ~np.isnan(promise)
    if given.sum() >= MIN_EVAL_ROWS:
        out += _point_figures(moment, "promise", promise[given], actual[given])
        for c in (90, 95):  # the retailer has one promise; it stands beside each of ours
            out += [(moment, "promise", f"promise{c}_on_time", float(np.mean(actual[given] <= promise[given]))),
                    (moment, "promise", f"promise{c}_days", float(np.mean(promise[given]) / 24.0))]
    median = baselines.lane_median_hours(r)
    ok = ~np.isnan(median)
    out += _point_figures(moment, "lane_median", median[ok], actual[ok])
    if moment == "at_order":  # the truth file knows each parcel's distribution at its order
        p10, p50, p90 = (outcomes.oracle("shipments", "shipment_id", f"p{k}_hours", r.shipment_id) for k in (10, 50, 90))
        if p50 is not None:
            ok = ~np.isnan(p50)
            out += _point_figures(moment, "oracle", p50[ok], actual[ok])
            out.append((moment, "oracle", "coverage_80", interval_metrics(p10[ok], p90[ok], actual[ok])["coverage"]))
    return out


def _point_figures(moment: str, model: str, pred: np.ndarray, actual: np.ndarray) -> list[Figure]:
    m = edd_metrics(pred, actual)
    return [(moment, model, "edd_mae_days", m["mae_days"]), (moment, model, "edd_within_1d", m["within_1d"])]


def delay_figures(moment: str, bundle: ModelBundle, rows: pd.DataFrame, labels: pd.DataFrame,
                  outcomes: Outcomes) -> list[Figure]:
    r, yk = with_label(rows, labels.late.to_numpy())
    if bundle.delay is None or len(yk) < MIN_EVAL_ROWS:
        return []
    scores = {"eddy": bundle.late_probability(r), "late_rate": baselines.late_rate_table(r)}
    if moment == "at_order":
        scores["oracle"] = outcomes.oracle("shipments", "shipment_id", "p_late", r.shipment_id)
    return [f for model, p in scores.items() if p is not None for f in _probability_figures(moment, model, "delay", p, yk)]


def _probability_figures(moment: str, model: str, kind: str, p: np.ndarray, y: np.ndarray) -> list[Figure]:
    ok = ~np.isnan(p)
    m = probability_metrics(p[ok], y[ok])
    if kind == "churn":
        return [(moment, model, "churn_auc", m["roc_auc"]), (moment, model, "churn_lift10", top_decile_lift(p[ok], y[ok]))]
    return [(moment, model, "delay_auc", m["roc_auc"]), (moment, model, "delay_brier", m["brier"]),
            (moment, model, "delay_ece", m["ece"])]


def churn_figures(result: TrainResult, outcomes: Outcomes, start: pd.Timestamp, until: pd.Timestamp,
                  horizon_days: float) -> list[Figure]:
    """Churn right after each delivery judged in the window, where its label is mature."""
    bundle = result.bundle
    if bundle.churn is None:
        return []
    exp = outcomes.history.experience
    ref = exp["ref"]
    lo, hi, end = micros(pd.Series([start, until, outcomes.end]))
    judged = np.flatnonzero((ref != NAT) & (ref >= lo) & (ref < hi) & (ref + int(horizon_days * US_PER_DAY) <= end))
    if len(judged) < MIN_EVAL_ROWS:
        return []
    moments = {"order_id": exp["order_id"][judged], "as_of": ref[judged] + 1_000_000}  # just after: the delivery is seen
    s = outcomes.ds["shipments"]
    s = s[s.order_id.isin(set(moments["order_id"].tolist()))].reset_index(drop=True)
    scans = outcomes.ds.get("scans")
    scans = scans[scans.shipment_id.isin(s.shipment_id)] if scans is not None else None
    rows = frame_of(bundle.churn_rows(s, scans, moments, history=outcomes.history), timestamps=("as_of",))
    order_ref = dict(zip(exp["order_id"][judged].tolist(), ref[judged].tolist()))
    y = churn_labels(outcomes.history.orders, rows, np.array([order_ref[o] for o in rows.order_id], dtype=np.int64),
                     horizon_days, outcomes.end)
    rows, y = with_label(rows, y)
    if len(y) < MIN_EVAL_ROWS or len(np.unique(y)) < 2:
        return []
    scores = {"eddy": bundle.churn.predict_proba(rows),
              "oracle": outcomes.oracle("orders", "order_id", "p_no_order_90d", rows.order_id)}
    if "rfm" in result.baselines:
        scores["rfm"] = result.baselines["rfm"].predict_proba(rows)
    if "bgnbd" in result.baselines:
        scores["bgnbd"] = np.asarray(result.baselines["bgnbd"].predict_no_order(rows, horizon_days), dtype=float)
    if horizon_days != 90:  # the oracle's figure is for 90 days
        scores.pop("oracle")
    return [("after_delivery", "eddy", "churn_n", float(len(y)))] + [
        f for model, p in scores.items() if p is not None for f in _probability_figures("after_delivery", model, "churn", p, y)]


def shipment_figures(bundle: ModelBundle, outcomes: Outcomes, start: pd.Timestamp, until: pd.Timestamp,
                     seed: int) -> list[Figure]:
    """EDD and delay on the shipments ordered in the window: at order, and once in transit each."""
    if bundle.edd is None and bundle.delay is None:
        return []
    shipments, scans = outcomes.shipments_between(start, until)
    if len(shipments) < MIN_EVAL_ROWS:
        return []
    transit = training_moments(shipments, scans, outcomes.end, seed)
    first = transit.sample(frac=1.0, random_state=seed).drop_duplicates("shipment_id")  # one moment per shipment
    out: list[Figure] = []
    for moment, moments in (("at_order", order_moments(shipments)),
                            ("in_transit", first.assign(shipment_id=first.shipment_id.astype("str")))):
        rows = frame_of(bundle.shipment_rows(shipments, scans, moments), timestamps=("as_of",))
        labels = shipment_labels(shipments, rows, outcomes.end)
        out += edd_figures(moment, bundle, rows, labels, outcomes) + delay_figures(moment, bundle, rows, labels, outcomes)
    return out


# --------------------------------------------------------------------- one cutoff


@dataclass
class CutoffResult:
    cutoff: pd.Timestamp
    figures: pd.DataFrame  # long table of this cutoff
    info: dict  # training rows, seconds, skipped models


def run_cutoff(ds: DataSet, outcomes: Outcomes, cut: pd.Timestamp, horizon: pd.Timedelta,
               churn_horizon_days: float = 90.0, params: dict | None = None, seed: int = 0,
               recency_half_life_days: float | None = RECENCY_HALF_LIFE_DAYS) -> CutoffResult:
    """Train on the data as known at ``cut``; judge the window ``[cut, cut + horizon)``."""
    started = time.time()
    known = known_at(ds, cut)
    result = train(known, horizon_days=churn_horizon_days, params=params, seed=seed, end=cut,
                   recency_half_life_days=recency_half_life_days)
    trained = time.time() - started
    until = cut + horizon
    figures = shipment_figures(result.bundle, outcomes, cut, until, seed) + \
        churn_figures(result, outcomes, cut, until, churn_horizon_days)
    table = pd.DataFrame(figures, columns=COLUMNS[1:])
    table.insert(0, "cutoff", cut)
    info = {"cutoff": cut.isoformat(), "train_shipments": int(len(known["shipments"])),
            "window_shipments": int(len(outcomes.shipments_between(cut, until)[0])),
            "train_seconds": round(trained, 1), "seconds": round(time.time() - started, 1),
            "skipped": result.bundle.meta["skipped"], "split": result.bundle.meta["split"]}
    return CutoffResult(cut, table, info)


# ------------------------------------------------------------------- all cutoffs


def backtest(ds: DataSet, cutoffs: Iterable[pd.Timestamp], horizon: pd.Timedelta, churn_horizon_days: float = 90.0,
             jobs: int = 1, seed: int = 0, done: Callable[[CutoffResult], None] | None = None,
             recency_half_life_days: float | None = RECENCY_HALF_LIFE_DAYS) -> list[CutoffResult]:
    """Every cutoff's result, in cutoff order; ``done`` is called as each one finishes.

    With ``jobs`` > 1 cutoffs train in separate processes (joblib's loky), each with
    its share of the cores, so memory grows with ``jobs``."""
    cutoffs = sorted(pd.Timestamp(c) for c in cutoffs)
    outcomes = Outcomes.of(ds)
    params = None
    if jobs > 1:
        threads = max(1, _cores() // jobs)
        params = {m: {"num_threads": threads} for m in ("edd", "delay", "churn")}
    results = []
    if jobs <= 1:
        for cut in cutoffs:
            results.append(run_cutoff(ds, outcomes, cut, horizon, churn_horizon_days, params, seed, recency_half_life_days))
            if done:
                done(results[-1])
    else:
        from joblib import Parallel, delayed

        work = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")(
            delayed(run_cutoff)(ds, outcomes, cut, horizon, churn_horizon_days, params, seed, recency_half_life_days)
            for cut in cutoffs)
        with warnings.catch_warnings():
            # loky restarts a worker whose memory grew by a cutoff's training (its leak
            # guard) and says so in a UserWarning; the cutoff's result has come back by
            # then, and a lost one would raise, so on a large set the warning is noise.
            warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given to the executor")
            for r in work:
                results.append(r)
                if done:
                    done(r)
    return sorted(results, key=lambda r: r.cutoff)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def long_table(results: list[CutoffResult]) -> pd.DataFrame:
    """Every figure of every cutoff: ``cutoff, moment, model, metric, value``."""
    if not results:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat([r.figures for r in results], ignore_index=True)
    table["cutoff"] = pd.to_datetime(table.cutoff, utc=True).astype("datetime64[us, UTC]")
    return table[COLUMNS]


def by_cutoff(long: pd.DataFrame, metric: str, moment: str) -> pd.DataFrame:
    """One metric at one moment: a row per cutoff, a column per model (in ``MODELS`` order),
    then the mean and the spread (standard deviation) over cutoffs."""
    t = long[(long.metric == metric) & (long.moment == moment)]
    if t.empty:
        return pd.DataFrame()
    wide = t.pivot_table(index="cutoff", columns="model", values="value", aggfunc="first")
    wide = wide[[m for m in MODELS if m in wide.columns]]
    wide.index = wide.index.strftime("%Y-%m-%d")
    return pd.concat([wide, wide.mean().to_frame("mean").T, wide.std(ddof=0).to_frame("spread").T])


def write_long(long: pd.DataFrame, path) -> None:
    """CSV or Parquet by the file's extension."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        long.to_parquet(path, index=False)
    elif path.suffix.lower() == ".csv":
        long.assign(cutoff=long.cutoff.dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    else:
        raise ValueError(f"{path}: --out must end in .csv or .parquet")

