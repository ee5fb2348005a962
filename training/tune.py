"""Optuna studies (seeded, pruned), one per model; each trial is a nested MLflow run.

Trials are judged on the early-stopping tail of the training window, never on the
calibration or test windows, so tuning cannot flatter the reported figures.
"""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pandas as pd

from data.load import DataSet
from features.build import FeatureSnapshot
from runtime.models import CategoricalEncoder
from training.models import train_booster
from features import spec
from features.rhythm import rhythm_features
from training.rows import churn_split, churn_training_rows, edd_training_rows, shipment_split
from training.train import feature_columns, rhythm_params, validation_tail


def search_space(trial: optuna.Trial) -> dict:
    return {
        "num_leaves": trial.suggest_int("num_leaves", 15, 127, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.15, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.6, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def pruning_callback(trial: optuna.Trial):
    def callback(env) -> None:
        if env.iteration % 10 == 0 and env.evaluation_result_list:
            trial.report(env.evaluation_result_list[0][2], env.iteration)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return callback


def _study(name: str, X, y, Xv, yv, objective_params: dict, n_trials: int, seed: int, log_nested) -> dict:
    def objective(trial: optuna.Trial) -> float:
        params = {**search_space(trial), **objective_params}
        booster = train_booster(params, X, y, Xv, yv, callbacks=[pruning_callback(trial)])
        score = float(booster.best_score["valid_0"][next(iter(booster.best_score["valid_0"]))])
        log_nested(name, trial.number, params, score)
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", study_name=name, sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30))
    study.optimize(objective, n_trials=n_trials)
    return {"best_params": study.best_params, "best_value": study.best_value,
            "trials": len(study.trials), "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)}


def tune(ds: DataSet, n_trials: int, horizon_days: float = 90.0, seed: int = 0) -> dict[str, dict]:
    """Best parameters per model, and what each study did."""
    import mlflow

    def log_nested(model: str, number: int, params: dict, score: float) -> None:
        with mlflow.start_run(run_name=f"tune {model} #{number}", nested=True):
            mlflow.log_params({k: v for k, v in params.items() if k not in ("objective",)})
            mlflow.log_metric("validation_loss", score)

    snapshot = FeatureSnapshot.fit(ds)
    split = shipment_split(snapshot, ds["shipments"])
    rows, labels = edd_training_rows(ds, snapshot, seed=seed)
    train_part = split.assign(rows.as_of) == "train"
    features = feature_columns(rows, spec.EDD)
    enc = CategoricalEncoder(spec.categorical(spec.EDD)).fit(rows[train_part])
    X_all = enc.transform(rows.reindex(columns=features))
    out = {}
    for name, y, extra in (("edd", np.log1p(labels.hours_left.to_numpy()), {"objective": "quantile", "alpha": 0.5}),
                           ("delay", labels.late.to_numpy(), {"objective": "binary"})):
        known = train_part & ~np.isnan(y)
        fit, val = validation_tail(known, rows.as_of)
        out[name] = _study(name, X_all[fit], y[fit], X_all[val], y[val], extra, n_trials, seed, log_nested)
    churn_rows, churn_y, ref = churn_training_rows(ds, snapshot, rows[rows.hours_since_order == 0], horizon_days, seed)
    known = ~np.isnan(churn_y)
    if known.sum() > 600:
        c_split, ref_ts = churn_split(snapshot, ref, horizon_days)
        c_train = (c_split.assign(ref_ts) == "train") & known
        rhythm = rhythm_params(snapshot, c_split.calibrate_from, {}, {})
        churn_rows = churn_rows.assign(**rhythm_features(churn_rows, rhythm, horizon_days))
        cfeat = feature_columns(churn_rows, spec.CHURN)
        cX = CategoricalEncoder(spec.categorical(spec.CHURN)).fit(churn_rows[c_train]).transform(churn_rows.reindex(columns=cfeat))
        fit, val = validation_tail(c_train, ref_ts)
        out["churn"] = _study("churn", cX[fit], churn_y[fit], cX[val], churn_y[val],
                              {"objective": "binary"}, n_trials, seed, log_nested)
    logging.getLogger(__name__).info("tuned %s", {k: v["best_value"] for k, v in out.items()})
    return out
