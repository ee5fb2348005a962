"""Train, calibrate and evaluate the three models on one data set.

Time-based splits only: train on the past, calibrate on the next window, test on the
window after (see ``training.rows``). Each model is measured beside its baselines on
the same test rows and, on simulated data, beside the oracle from the truth file.
Models the data cannot support are skipped with the reason, never half-trained.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from data.calendar import guess_country
from data.load import DataSet
from features.customer import CustomerHistory
from features.build import FeatureSnapshot
from features.pit import NAT, US_PER_DAY, US_PER_HOUR, micros
from features import distributed, spec
from features.rhythm import rhythm_features
from runtime import drift
from runtime.bundle import ModelBundle, end_of_day
from training import baselines
from training.evaluate import coverage_by, edd_metrics, interval_metrics, probability_metrics, top_decile_lift
from training.models import EddEstimator, ProbabilityEstimator, recency_weights
from training.rows import churn_split, churn_training_rows, edd_training_rows, shipment_split

MIN_TRAIN_ROWS = 300
#: churn labels are noisy (a customer's own baseline is unknowable): small, slow trees
CHURN_DEFAULTS = {"num_leaves": 15, "min_data_in_leaf": 100, "learning_rate": 0.03, "lambda_l2": 5.0}
MIN_EVAL_ROWS = 30
Progress = Callable[[str, float], None]


@dataclass
class TrainResult:
    bundle: ModelBundle
    metrics: dict[str, float]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # for the report
    evaluation: dict[str, dict] = field(default_factory=dict)  # raw test predictions per model
    params: dict[str, dict] = field(default_factory=dict)
    baselines: dict[str, object] = field(default_factory=dict)  # fitted churn baselines, for backtests


def feature_columns(rows: pd.DataFrame, model: str) -> list[str]:
    """The model's features from the spec; every one of them must be in the rows."""
    names = spec.model_features(model)
    missing = [c for c in names if c not in rows]
    if missing:
        raise KeyError(f"{model} rows lack spec features: {', '.join(missing)}")
    return names


#: Training rows weigh 0.5 ** (age / half-life), age counted back from the newest one;
#: None weighs all alike. Chosen by backtest (README, "Backtests").
RECENCY_HALF_LIFE_DAYS: float | None = None


MAX_TRAIN_ROWS = 600_000  # most recent labelled rows per model; older history reaches it through the features


def validation_tail(mask: np.ndarray, moments: pd.Series, share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into fit and early-stopping parts, the latter the last ``share`` in time.

    Only the most recent MAX_TRAIN_ROWS are used, which bounds training time at any scale.
    """
    idx = np.flatnonzero(mask)
    order = idx[np.argsort(micros(moments)[idx], kind="stable")][-MAX_TRAIN_ROWS:]
    cut = int(len(order) * (1 - share))
    fit, val = np.zeros_like(mask), np.zeros_like(mask)
    fit[order[:cut]], val[order[cut:]] = True, True
    return fit, val


def train(ds: DataSet, horizon_days: float = 90.0, params: dict[str, dict] | None = None,
          progress: Progress | None = None, seed: int = 0, end: pd.Timestamp | None = None,
          recency_half_life_days: float | None = RECENCY_HALF_LIFE_DAYS, client=None,
          scratch: Path | None = None) -> TrainResult:
    """Train the three models on ``ds``; ``end`` is the moment the data was known at
    (default: its latest fact), which a backtest sets to its cutoff; recent training rows
    weigh more with ``recency_half_life_days``. With a Dask ``client``, the history is
    reduced and the boosters are trained on the cluster (partitions staged in ``scratch``);
    calibration and evaluation, on the later windows, stay in this process."""
    report = progress or (lambda stage, frac: None)
    params = params or {}
    started = time.time()
    report("features", 0.05)
    snapshot = FeatureSnapshot.fit(ds, end=end) if client is None else _snapshot_on(client, ds, end, scratch)
    shipments = ds["shipments"]
    split = shipment_split(snapshot, shipments)
    rows, labels = edd_training_rows(ds, snapshot, seed=seed)
    part = split.assign(rows.as_of)
    at_order = rows.hours_since_order.to_numpy() == 0

    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    evaluation: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    fitted: dict[str, object] = {}
    truth = truth_tables(ds)

    tables["_sample_shipment_rows"] = rows.head(50)  # for MLflow signatures
    report("EDD model", 0.2)
    hl = recency_half_life_days
    edd = _train_edd(rows, labels, part, at_order, params.get("edd"), metrics, skipped, evaluation, tables, truth, hl,
                     client)
    report("delay model", 0.5)
    delay = _train_delay(rows, labels, part, at_order, params.get("delay"), metrics, skipped, evaluation, tables, truth,
                         hl, client)
    report("churn model", 0.7)
    churn = _train_churn(ds, snapshot, rows[at_order], horizon_days, params.get("churn"), metrics, skipped, evaluation,
                         tables, truth, seed, fitted, hl, client)

    meta = {
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "data": str(ds.folder),
        "data_end": snapshot.end.isoformat(),
        "shipments": int(len(shipments)),
        "split": split.as_dict(),
        "horizon_days": horizon_days,
        "recency_half_life_days": hl,
        "skipped": skipped,
        "metrics": metrics,
        "profile": drift_references(edd, delay, churn, rows[part == "test"], evaluation),
        "train_seconds": round(time.time() - started, 1),
    }
    report("done", 1.0)
    return TrainResult(ModelBundle(snapshot, edd, delay, churn, meta), metrics, tables, evaluation, params, fitted)


def _snapshot_on(client, ds: DataSet, end: pd.Timestamp | None, scratch: Path) -> FeatureSnapshot:
    """The feature snapshot with its history reduced on the cluster (the customer tables,
    which the churn rows read across all customers, are built here)."""
    shipments = ds["shipments"]
    customers = CustomerHistory.from_tables(shipments, ds.get("scans"), ds.get("orders"), ds.get("feedback"),
                                            ds.get("customers"))
    return distributed.snapshot_on(client, distributed.partitions(client, ds, scratch), ds.get("locations"),
                                   guess_country(shipments.destination_region), end, customers)


def drift_references(edd, delay, churn, test_rows: pd.DataFrame, evaluation: dict) -> dict:
    """Each model's drift reference on its test rows, apart for each moment a request can
    come at (what ``eddy monitor`` compares live requests with)."""
    out = {}
    at_order = test_rows.hours_since_order.to_numpy() == 0
    for name, model in (("edd", edd), ("delay", delay)):
        if model is not None:
            out[name] = {"at_order": drift.reference(model, test_rows[at_order]),
                         "in_transit": drift.reference(model, test_rows[~at_order])}
    if churn is not None:
        out["churn"] = {"after_delivery": drift.reference(churn, evaluation["churn"]["rows"])}
    return out


def truth_tables(ds: DataSet) -> dict[str, pd.DataFrame]:
    folder = Path(ds.folder) / "truth"
    found = {name: folder / f"{name}.parquet" if (folder / f"{name}.parquet").exists() else folder / name
             for name in ("shipments", "orders")}
    return {name: pd.read_parquet(path) for name, path in found.items() if path.exists()}  # a file, or its parts


def _train_edd(rows, labels, part, at_order, params, metrics, skipped, evaluation, tables, truth,
               half_life, client=None) -> EddEstimator | None:
    y = labels.hours_left.to_numpy()
    known = ~np.isnan(y)
    train_mask = known & (part == "train")
    cal, test = known & (part == "calibrate"), known & (part == "test")
    # Counted in delivered shipments (at-order rows), not in-transit snapshots of them.
    n_train, n_cal, n_test = (int((m & at_order).sum()) for m in (train_mask, cal, test))
    if n_train < MIN_TRAIN_ROWS or n_cal < MIN_EVAL_ROWS or n_test < MIN_EVAL_ROWS:
        skipped["edd"] = (f"too little delivered history: {n_train} training, {n_cal} calibration and {n_test} test "
                          f"shipments (need {MIN_TRAIN_ROWS}, {MIN_EVAL_ROWS}, {MIN_EVAL_ROWS})")
        return None
    fit, val = validation_tail(train_mask, rows.as_of)
    model = EddEstimator(feature_columns(rows, spec.EDD), spec.categorical(spec.EDD), params).fit(
        rows[fit], y[fit], rows[val], y[val], weight=recency_weights(rows.as_of[fit], half_life), client=client)
    model.calibrate(rows[cal], y[cal], rows.carrier[cal])

    t = test & at_order
    r = rows[t]
    q = model.predict_hours(r, r.carrier)
    actual = y[t]
    metrics.update({f"edd_{k}": v for k, v in edd_metrics(q[:, 1], actual).items()})
    metrics.update({f"edd_interval_{k}": v for k, v in interval_metrics(q[:, 0], q[:, 2], actual).items()})
    for name, pred in (("promise", baselines.promise_hours(r)), ("lane_median", baselines.lane_median_hours(r))):
        ok = ~np.isnan(pred)
        metrics.update({f"edd_baseline_{name}_{k}": v for k, v in edd_metrics(pred[ok], actual[ok]).items()})
    tt = test & ~at_order
    if tt.sum() >= MIN_EVAL_ROWS:
        qt = model.predict_hours(rows[tt], rows.carrier[tt])
        metrics.update({f"edd_in_transit_{k}": v for k, v in edd_metrics(qt[:, 1], y[tt]).items()})
        metrics["edd_in_transit_interval_coverage"] = interval_metrics(qt[:, 0], qt[:, 2], y[tt])["coverage"]
    p95 = model.promise_hours(r, r.carrier, 0.95)
    metrics["edd_promise95_on_time"] = float(np.mean(actual <= hours_to_end_of_day(r, p95)))
    metrics["edd_promise95_days"] = float(np.mean(hours_to_end_of_day(r, p95)) / 24.0)
    p90 = model.promise_hours(r, r.carrier, 0.90)
    metrics["edd_promise90_on_time"] = float(np.mean(actual <= hours_to_end_of_day(r, p90)))
    metrics["edd_promise90_days"] = float(np.mean(hours_to_end_of_day(r, p90)) / 24.0)
    promised = r.promise_hours.notna().to_numpy()
    metrics["retailer_promise_on_time"] = float(np.mean(actual[promised] <= r.promise_hours.to_numpy()[promised]))
    metrics["retailer_promise_days"] = float(np.nanmean(r.promise_hours.to_numpy()) / 24.0)
    if "shipments" in truth:
        oracle = truth["shipments"].set_index("shipment_id").p50_hours.reindex(r.shipment_id).to_numpy()
        ok = ~np.isnan(oracle)
        metrics.update({f"edd_oracle_{k}": v for k, v in edd_metrics(oracle[ok], actual[ok]).items()})
    month = r.as_of.dt.strftime("%Y-%m")
    tables["coverage_by_carrier"] = coverage_by(r.carrier, q[:, 0], q[:, 2], actual)
    tables["coverage_by_month"] = coverage_by(month, q[:, 0], q[:, 2], actual)
    lane = r.origin_region + " → " + r.destination_region
    err = pd.DataFrame({"lane": lane.to_numpy(), "abs_err_days": np.abs(q[:, 1] - actual) / 24.0})
    tables["error_by_lane"] = err.groupby("lane").agg(rows=("abs_err_days", "size"), mae_days=("abs_err_days", "mean")) \
        .reset_index().sort_values("rows", ascending=False)
    for _, c in tables["coverage_by_carrier"].iterrows():
        metrics[f"edd_coverage_{c.segment}"] = float(c.coverage)
    evaluation["edd"] = {"q": q, "actual": actual, "carrier": r.carrier.to_numpy()}
    # Judged, the version ships calibrated on the freshest complete outcomes: the test
    # window's errors, nearer to the requests it will answer (issue 12: intervals under drift).
    model.calibrate(rows[test], y[test], rows.carrier[test])
    return model


def rhythm_params(snapshot, until: pd.Timestamp, fitted: dict, skipped: dict) -> dict | None:
    """BG/NBD fitted on the orders of the training window (the baseline, and the churn
    model's rhythm features); None, and a sentence in the report, when it cannot be."""
    try:
        fitted["bgnbd"] = baselines.BgNbdBaseline().fit(snapshot.customers.frame("orders"), until)
        return fitted["bgnbd"].params()
    except Exception as exc:  # a baseline failing must not sink the model; the report says so
        skipped["churn_baseline_bgnbd"] = f"BG/NBD could not be fitted: {type(exc).__name__}: {exc}"
        return None


def hours_to_end_of_day(rows: pd.DataFrame, hours: np.ndarray) -> np.ndarray:
    """A promise is a date: the end of the day the hours fall on, as hours from the moment."""
    at = micros(rows.as_of)
    return (end_of_day(at + (np.asarray(hours) * US_PER_HOUR).astype(np.int64)) - at) / US_PER_HOUR


def _train_delay(rows, labels, part, at_order, params, metrics, skipped, evaluation, tables, truth, half_life,
                 client=None):
    y = labels.late.to_numpy()
    known = ~np.isnan(y)
    train_mask, cal, test = known & (part == "train"), known & (part == "calibrate"), known & (part == "test")
    n_train = int((train_mask & at_order).sum())
    n_late = int(np.nansum(y[train_mask & at_order]))
    if n_train < MIN_TRAIN_ROWS or n_late < 10 or (cal & at_order).sum() < MIN_EVAL_ROWS or (test & at_order).sum() < MIN_EVAL_ROWS:
        skipped["delay"] = (f"too few promised shipments with a known outcome: {n_train} in training, {n_late} of them "
                            f"late (need {MIN_TRAIN_ROWS} and 10)")
        return None
    fit, val = validation_tail(train_mask, rows.as_of)
    model = ProbabilityEstimator("delay", feature_columns(rows, spec.DELAY), spec.categorical(spec.DELAY), params).fit(
        rows[fit], y[fit], rows[val], y[val], weight=recency_weights(rows.as_of[fit], half_life), client=client)
    model.calibrate(rows[cal], y[cal])
    t = test & at_order
    p = model.predict_proba(rows[t])
    metrics.update({f"delay_{k}": v for k, v in probability_metrics(p, y[t]).items()})
    metrics.update({f"delay_baseline_late_rate_{k}": v
                    for k, v in probability_metrics(baselines.late_rate_table(rows[t]), y[t]).items()})
    tt = test & ~at_order
    if tt.sum() >= MIN_EVAL_ROWS:
        metrics.update({f"delay_in_transit_{k}": v for k, v in probability_metrics(model.predict_proba(rows[tt]), y[tt]).items()
                        if k in ("roc_auc", "brier", "ece")})
    if "shipments" in truth:
        oracle = truth["shipments"].set_index("shipment_id").p_late.reindex(rows.shipment_id[t]).to_numpy()
        ok = ~np.isnan(oracle)
        metrics.update({f"delay_oracle_{k}": v for k, v in probability_metrics(oracle[ok], y[t][ok]).items()})
    evaluation["delay"] = {"p": p, "y": y[t]}
    model.calibrate(rows[test], y[test])  # as the EDD model: shipped calibrated on the freshest outcomes
    return model


def _train_churn(ds, snapshot, at_order_rows, horizon_days, params, metrics, skipped, evaluation, tables, truth, seed,
                 fitted, half_life, client=None):
    rows, y, ref = churn_training_rows(ds, snapshot, at_order_rows, horizon_days, seed)
    known = ~np.isnan(y)
    if known.sum() < MIN_TRAIN_ROWS * 2:
        skipped["churn"] = (f"too few mature churn labels: {int(known.sum())} deliveries are older than the "
                            f"{horizon_days:g}-day horizon at the end of the data (need {MIN_TRAIN_ROWS * 2})")
        return None
    split, ref_ts = churn_split(snapshot, ref, horizon_days)
    part = split.assign(ref_ts)
    train_mask, cal, test = known & (part == "train"), known & (part == "calibrate"), known & (part == "test")
    positives = y[train_mask].sum()
    if train_mask.sum() < MIN_TRAIN_ROWS or positives < 10 or train_mask.sum() - positives < 10 or test.sum() < MIN_EVAL_ROWS:
        skipped["churn"] = (f"too few mature churn labels in the training window: {int(train_mask.sum())} rows, "
                            f"{int(positives)} without a new order (need {MIN_TRAIN_ROWS} and 10 of each)")
        return None
    rhythm = rhythm_params(snapshot, split.calibrate_from, fitted, skipped)
    rows = rows.assign(**rhythm_features(rows, rhythm, horizon_days))
    features = feature_columns(rows, spec.CHURN)
    fit, val = validation_tail(train_mask, ref_ts)
    model = ProbabilityEstimator("churn", features, spec.categorical(spec.CHURN), {**CHURN_DEFAULTS, **(params or {})})
    model.rhythm_ = {"params": rhythm, "horizon_days": horizon_days} if rhythm else None
    model.fit(rows[fit], y[fit], rows[val], y[val], weight=recency_weights(ref_ts[fit], half_life), client=client)
    model.calibrate(rows[cal], y[cal])
    # Judged on the moment right after each delivery, as the truth file speaks of it.
    t = test & (rows.days_since_delivery.to_numpy() < 1e-3)
    p = model.predict_proba(rows[t])
    metrics.update({f"churn_{k}": v for k, v in probability_metrics(p, y[t]).items()})
    metrics["churn_top_decile_lift"] = top_decile_lift(p, y[t])
    rfm = fitted["rfm"] = baselines.RfmBaseline().fit(rows[train_mask], y[train_mask])
    metrics.update({f"churn_baseline_rfm_{k}": v for k, v in probability_metrics(rfm.predict_proba(rows[t]), y[t]).items()})
    if "bgnbd" in fitted:
        pb = fitted["bgnbd"].predict_no_order(rows[t], horizon_days)
        metrics.update({f"churn_baseline_bgnbd_{k}": v for k, v in probability_metrics(pb, y[t]).items()})
    if "orders" in truth:
        oracle = truth["orders"].set_index("order_id").p_no_order_90d.reindex(rows.order_id[t]).to_numpy()
        ok = ~np.isnan(oracle)
        metrics.update({f"churn_oracle_{k}": v for k, v in probability_metrics(oracle[ok], y[t][ok]).items()})
    metrics["churn_split_test_from"] = float(micros(pd.Series([split.test_from]))[0] / US_PER_DAY)
    evaluation["churn"] = {"p": p, "y": y[t], "rows": rows[t], "model": model}
    tables["_sample_customer_rows"] = rows.head(50)
    return model
