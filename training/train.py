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

from data.contract import TRUTH_DIR
from data.load import DataSet
from features.build import FeatureSnapshot
from features.pit import US_PER_DAY, US_PER_HOUR, micros
from features import spec
from features.rhythm import rhythm_features
from runtime import drift
from runtime.bundle import ModelBundle, end_of_day
from training import baselines
from training.distributed import labelled_on, recent_shipments_on
from training.evaluate import coverage_by, edd_metrics, interval_metrics, probability_metrics, top_decile_lift
from training.models import EddEstimator, ProbabilityEstimator, recency_weights
from training.rows import (LABEL, MIN_TRAIN_ROWS, REF, Labelled, Windows, at_order, churn_split, churn_training_rows,
                           edd_training_rows, recent_rows, recent_shipments, shipment_split, too_few_churn_labels, windows_of)

#: churn labels are noisy (a customer's own baseline is unknowable) and the booster adds
#: a little to its base: small, slow trees. Chosen by backtest (README, "Backtests"): 7
#: leaves at 0.01 ranked better than 15 at 0.03 at 5 of 6 cutoffs.
CHURN_DEFAULTS = {"num_leaves": 7, "min_data_in_leaf": 200, "learning_rate": 0.01, "lambda_l2": 5.0, "rounds": 1000}
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
    tuning: dict[str, dict] | None = None  # what each Optuna study did, when tuned


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


def train(ds: DataSet | None, horizon_days: float = 90.0, params: dict[str, dict] | None = None,
          progress: Progress | None = None, seed: int = 0, end: pd.Timestamp | None = None,
          recency_half_life_days: float | None = RECENCY_HALF_LIFE_DAYS, client=None, data=None,
          tune_trials: int = 0) -> TrainResult:
    """Train the three models on ``ds``; ``end`` is the moment the data was known at
    (default: its latest fact), which a backtest sets to its cutoff; recent training rows
    weigh more with ``recency_half_life_days``. With a Dask ``client`` and ``data`` (the
    data set read on the cluster, ``data.partitioned.read_on``), the history, the rows and
    the boosters are computed on the cluster (``training.distributed``) and only the
    windows the models learn from come here; calibration and evaluation, on the later
    windows, stay in this process. ``tune_trials`` Optuna trials per model choose the
    parameters first, on the same rows (``training.tune``)."""
    report = progress or (lambda stage, frac: None)
    params = params or {}
    started = time.time()
    report("features", 0.05)
    if data is None:
        snapshot = FeatureSnapshot.fit(ds, end=end)
        labelled = labelled_rows(ds, snapshot, horizon_days, seed)
        folder = ds.folder
    else:
        snapshot, labelled = labelled_on(client, data, horizon_days, seed, end)
        folder = data.folder

    tuning = None
    if tune_trials:
        from training.tune import tune  # which reads this module's helpers

        report(f"tuning: {tune_trials} trials per model", 0.1)
        tuning = tune(snapshot, labelled, tune_trials, horizon_days, seed)
        params = {**params, **{name: t["best_params"] for name, t in tuning.items()}}

    metrics: dict[str, float] = {}
    skipped: dict[str, str] = {}
    evaluation: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    fitted: dict[str, object] = {}
    truth = truth_tables(folder)

    sample = next((w.fit for w in (labelled.edd, labelled.delay) if len(w.fit)), labelled.edd.fit)
    tables["_sample_shipment_rows"] = sample.drop(columns=LABEL).head(50)  # for MLflow signatures
    report("EDD model", 0.2)
    hl = recency_half_life_days
    edd = _train_edd(labelled.edd, params.get("edd"), metrics, skipped, evaluation, tables, truth, hl, client,
                     snapshot.country)
    if edd is not None:  # judged without it: the test window lies before the end it speaks of
        if data is None:
            recent = recent_shipments(ds["shipments"], snapshot.end)
        else:
            recent = recent_shipments_on(client, data, snapshot.end)
        edd.nowcast(*recent_rows(recent, snapshot), snapshot.end)
    report("delay model", 0.5)
    delay = _train_delay(labelled.delay, params.get("delay"), metrics, skipped, evaluation, truth, hl, client)
    report("churn model", 0.7)
    churn = _train_churn(labelled, snapshot, horizon_days, params.get("churn"), metrics, skipped, evaluation,
                         tables, truth, fitted, hl, client)

    meta = {
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "data": str(folder),
        "data_end": snapshot.end.isoformat(),
        "shipments": labelled.shipments,
        "split": labelled.split.as_dict(),
        "horizon_days": horizon_days,
        "recency_half_life_days": hl,
        "skipped": skipped,
        "metrics": metrics,
        "profile": drift_references(edd, delay, churn, labelled.edd.test, evaluation),
        "train_seconds": round(time.time() - started, 1),
    }
    report("done", 1.0)
    return TrainResult(ModelBundle(snapshot, edd, delay, churn, meta), metrics, tables, evaluation, params, fitted,
                       tuning)


def labelled_rows(ds: DataSet, snapshot: FeatureSnapshot, horizon_days: float, seed: int) -> Labelled:
    """Every model's windows, built in this process."""
    split = shipment_split(snapshot, ds["shipments"])
    rows, labels = edd_training_rows(ds, snapshot, seed=seed)
    window = split.assign(rows.as_of)
    ordered = at_order(rows)
    ids = rows.shipment_id.to_numpy(dtype=object)
    edd = windows_of(rows, labels.hours_left.to_numpy(), window, rows.as_of, ids, seed, ordered)
    delay = windows_of(rows, labels.late.to_numpy(), window, rows.as_of, ids, seed, ordered)
    churn_rows, y, ref = churn_training_rows(ds, snapshot, rows[ordered], horizon_days, seed)
    known = int((~np.isnan(y)).sum())
    if known < MIN_TRAIN_ROWS * 2:
        return Labelled(split, edd, delay, too_few_churn_labels(known, horizon_days), None, len(ds["shipments"]))
    c_split, ref_ts = churn_split(snapshot, ref, horizon_days)
    churn = windows_of(churn_rows.assign(**{REF: ref_ts.to_numpy()}), y, c_split.assign(ref_ts), ref_ts,
                       churn_rows.order_id.to_numpy(dtype=object), seed)
    return Labelled(split, edd, delay, churn, c_split, len(ds["shipments"]))


def _y(rows: pd.DataFrame) -> np.ndarray:
    return rows[LABEL].to_numpy(dtype=float)


def drift_references(edd, delay, churn, test_rows: pd.DataFrame, evaluation: dict) -> dict:
    """Each model's drift reference on its test rows, apart for each moment a request can
    come at (what ``eddy monitor`` compares live requests with)."""
    out = {}
    ordered = at_order(test_rows)
    for name, model in (("edd", edd), ("delay", delay)):
        if model is not None:
            out[name] = {"at_order": drift.reference(model, test_rows[ordered]),
                         "in_transit": drift.reference(model, test_rows[~ordered])}
    if churn is not None:
        out["churn"] = {"after_delivery": drift.reference(churn, evaluation["churn"]["rows"])}
    return out


#: what evaluation reads of a simulated data set's truth file: the oracle's answers
ORACLE_COLUMNS = {"shipments": ["shipment_id", "p10_hours", "p50_hours", "p90_hours", "p_late"],
                  "orders": ["order_id", "p_no_order_90d"]}


def truth_tables(data_folder: Path) -> dict[str, pd.DataFrame]:
    """The oracle's answers (``ORACLE_COLUMNS``) where the data set has a truth file; only
    those columns, as the whole file of a large data set is gigabytes."""
    folder = Path(data_folder) / TRUTH_DIR
    found = {name: folder / f"{name}.parquet" if (folder / f"{name}.parquet").exists() else folder / name
             for name in ORACLE_COLUMNS}
    return {name: pd.read_parquet(path, columns=ORACLE_COLUMNS[name])
            for name, path in found.items() if path.exists()}  # a file, or its parts


def _train_edd(win: Windows, params, metrics, skipped, evaluation, tables, truth, half_life,
               client=None, country: str = "US") -> EddEstimator | None:
    # Counted in delivered shipments (at-order rows), not in-transit snapshots of them.
    n_train, n_cal, n_test = win.n_train, int(at_order(win.calibrate).sum()), int(at_order(win.test).sum())
    if n_train < MIN_TRAIN_ROWS or n_cal < MIN_EVAL_ROWS or n_test < MIN_EVAL_ROWS:
        skipped["edd"] = (f"too little delivered history: {n_train} training, {n_cal} calibration and {n_test} test "
                          f"shipments (need {MIN_TRAIN_ROWS}, {MIN_EVAL_ROWS}, {MIN_EVAL_ROWS})")
        return None
    cal, test = win.calibrate, win.test
    model = EddEstimator(feature_columns(win.fit, spec.EDD), spec.categorical(spec.EDD), params).fit(
        win.fit, _y(win.fit), win.val, _y(win.val), weight=recency_weights(win.fit.as_of, half_life), client=client,
        country=country)
    model.calibrate(cal, _y(cal), cal.carrier)

    r = test[at_order(test)]
    q = model.predict_hours(r, r.carrier)
    actual = _y(r)
    metrics.update({f"edd_{k}": v for k, v in edd_metrics(q[:, 1], actual).items()})
    metrics.update({f"edd_interval_{k}": v for k, v in interval_metrics(q[:, 0], q[:, 2], actual).items()})
    for name, pred in (("promise", baselines.promise_hours(r)), ("lane_median", baselines.lane_median_hours(r))):
        ok = ~np.isnan(pred)
        metrics.update({f"edd_baseline_{name}_{k}": v for k, v in edd_metrics(pred[ok], actual[ok]).items()})
    tt = test[~at_order(test)]
    if len(tt) >= MIN_EVAL_ROWS:
        qt = model.predict_hours(tt, tt.carrier)
        metrics.update({f"edd_in_transit_{k}": v for k, v in edd_metrics(qt[:, 1], _y(tt)).items()})
        metrics["edd_in_transit_interval_coverage"] = interval_metrics(qt[:, 0], qt[:, 2], _y(tt))["coverage"]
    for c in (0.95, 0.90):
        promise = hours_to_end_of_day(r, model.promise_hours(r, r.carrier, c))
        metrics[f"edd_promise{int(c * 100)}_on_time"] = float(np.mean(actual <= promise))
        metrics[f"edd_promise{int(c * 100)}_days"] = float(np.mean(promise) / 24.0)
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
    model.calibrate(test, _y(test), test.carrier)
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


def _train_delay(win: Windows, params, metrics, skipped, evaluation, truth, half_life, client=None):
    n_train, n_late = win.n_train, int(win.positives)
    cal, test = win.calibrate, win.test
    if (n_train < MIN_TRAIN_ROWS or n_late < 10 or at_order(cal).sum() < MIN_EVAL_ROWS
            or at_order(test).sum() < MIN_EVAL_ROWS):
        skipped["delay"] = (f"too few promised shipments with a known outcome: {n_train} in training, {n_late} of them "
                            f"late (need {MIN_TRAIN_ROWS} and 10)")
        return None
    model = ProbabilityEstimator("delay", feature_columns(win.fit, spec.DELAY), spec.categorical(spec.DELAY), params).fit(
        win.fit, _y(win.fit), win.val, _y(win.val), weight=recency_weights(win.fit.as_of, half_life), client=client)
    model.calibrate(cal, _y(cal))
    r = test[at_order(test)]
    p = model.predict_proba(r)
    metrics.update({f"delay_{k}": v for k, v in probability_metrics(p, _y(r)).items()})
    metrics.update({f"delay_baseline_late_rate_{k}": v
                    for k, v in probability_metrics(baselines.late_rate_table(r), _y(r)).items()})
    tt = test[~at_order(test)]
    if len(tt) >= MIN_EVAL_ROWS:
        metrics.update({f"delay_in_transit_{k}": v for k, v in probability_metrics(model.predict_proba(tt), _y(tt)).items()
                        if k in ("roc_auc", "brier", "ece")})
    if "shipments" in truth:
        oracle = truth["shipments"].set_index("shipment_id").p_late.reindex(r.shipment_id).to_numpy()
        ok = ~np.isnan(oracle)
        metrics.update({f"delay_oracle_{k}": v for k, v in probability_metrics(oracle[ok], _y(r)[ok]).items()})
    evaluation["delay"] = {"p": p, "y": _y(r)}
    model.calibrate(test, _y(test))  # as the EDD model: shipped calibrated on the freshest outcomes
    return model


def churn_estimator(features: list[str], rhythm: dict | None, horizon_days: float,
                    params: dict | None = None) -> ProbabilityEstimator:
    """The churn model before its fit: the rhythm's BG/NBD parameters and, where they could
    be fitted, the base it starts from (``features.spec.BASES``); without BG/NBD, the booster alone."""
    model = ProbabilityEstimator("churn", features, spec.categorical(spec.CHURN), {**CHURN_DEFAULTS, **(params or {})})
    model.rhythm_ = {"params": rhythm, "horizon_days": horizon_days} if rhythm else None
    model.base_ = spec.base(spec.CHURN) if rhythm else None
    return model


def _train_churn(labelled: Labelled, snapshot, horizon_days, params, metrics, skipped, evaluation, tables, truth,
                 fitted, half_life, client=None):
    if isinstance(labelled.churn, str):
        skipped["churn"] = labelled.churn
        return None
    win, split = labelled.churn, labelled.churn_split
    positives = win.positives
    if win.n_train < MIN_TRAIN_ROWS or positives < 10 or win.n_train - positives < 10 or len(win.test) < MIN_EVAL_ROWS:
        skipped["churn"] = (f"too few mature churn labels in the training window: {win.n_train} rows, "
                            f"{int(positives)} without a new order (need {MIN_TRAIN_ROWS} and 10 of each)")
        return None
    rhythm = rhythm_params(snapshot, split.calibrate_from, fitted, skipped)
    fit, val, cal, test = (w.assign(**rhythm_features(w, rhythm, horizon_days))
                           for w in (win.fit, win.val, win.calibrate, win.test))
    features = feature_columns(fit, spec.CHURN)
    model = churn_estimator(features, rhythm, horizon_days, params)
    model.fit(fit, _y(fit), val, _y(val), weight=recency_weights(fit[REF], half_life), client=client)
    model.calibrate(cal, _y(cal))
    # Judged on the moment right after each delivery, as the truth file speaks of it.
    t = test[test.days_since_delivery.to_numpy() < 1e-3]
    p = model.predict_proba(t)
    metrics.update({f"churn_{k}": v for k, v in probability_metrics(p, _y(t)).items()})
    metrics["churn_top_decile_lift"] = top_decile_lift(p, _y(t))
    # the newest training rows (the whole window below MAX_TRAIN_ROWS)
    trained_on = pd.concat([fit, val])
    rfm = fitted["rfm"] = baselines.RfmBaseline().fit(trained_on, _y(trained_on))
    metrics.update({f"churn_baseline_rfm_{k}": v for k, v in probability_metrics(rfm.predict_proba(t), _y(t)).items()})
    if "bgnbd" in fitted:
        pb = fitted["bgnbd"].predict_no_order(t, horizon_days)
        metrics.update({f"churn_baseline_bgnbd_{k}": v for k, v in probability_metrics(pb, _y(t)).items()})
    if "orders" in truth:
        oracle = truth["orders"].set_index("order_id").p_no_order_90d.reindex(t.order_id).to_numpy()
        ok = ~np.isnan(oracle)
        metrics.update({f"churn_oracle_{k}": v for k, v in probability_metrics(oracle[ok], _y(t)[ok]).items()})
    metrics["churn_split_test_from"] = float(micros(pd.Series([split.test_from]))[0] / US_PER_DAY)
    evaluation["churn"] = {"p": p, "y": _y(t), "rows": t, "model": model}
    tables["_sample_customer_rows"] = fit.drop(columns=[LABEL, REF]).head(50)
    return model
