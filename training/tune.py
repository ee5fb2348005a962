"""Optuna studies (seeded, pruned), one per model; each trial is a nested MLflow run.

Trials are judged on the early-stopping tail of the training window, never on the
calibration or test windows, so tuning cannot flatter the reported figures.
"""

from __future__ import annotations

import logging

import optuna
import pandas as pd

from features.build import FeatureSnapshot
from runtime.models import CategoricalEncoder
from training.models import edd_target, fit_clock, train_booster
from features import spec
from features.rhythm import rhythm_features
from training.rows import LABEL, Labelled, Windows
from training.train import churn_estimator, feature_columns, rhythm_params


#: each parameter's range (log scale but for the feature fraction). The churn booster
#: adds a little to its base (the customer's rhythm) from noisy labels: its space holds
#: smaller, slower trees, around the defaults the backtest chose (``training.train.CHURN_DEFAULTS``)
SPACES = {
    "default": {"num_leaves": (15, 127), "learning_rate": (0.02, 0.15), "min_data_in_leaf": (10, 200),
                "lambda_l2": (1e-3, 10.0)},
    spec.CHURN: {"num_leaves": (4, 31), "learning_rate": (0.005, 0.05), "min_data_in_leaf": (50, 400),
                 "lambda_l2": (1e-1, 20.0), "rounds": 1000},
}


def search_space(trial: optuna.Trial, model: str = "default") -> dict:
    """A trial's parameters from the model's ``SPACES`` (fixed values pass as they are)."""
    out = {}
    for name, bounds in SPACES.get(model, SPACES["default"]).items():
        if not isinstance(bounds, tuple):
            out[name] = bounds
        elif isinstance(bounds[0], int):
            out[name] = trial.suggest_int(name, *bounds, log=True)
        else:
            out[name] = trial.suggest_float(name, *bounds, log=True)
    out["feature_fraction"] = trial.suggest_float("feature_fraction", 0.6, 1.0)
    return out


def pruning_callback(trial: optuna.Trial):
    def callback(env) -> None:
        if env.iteration % 10 == 0 and env.evaluation_result_list:
            trial.report(env.evaluation_result_list[0][2], env.iteration)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return callback


def _study(name: str, X, y, Xv, yv, objective_params: dict, n_trials: int, seed: int, log_nested,
           init: tuple | None = None) -> dict:
    def objective(trial: optuna.Trial) -> float:
        params = {**search_space(trial, name), **objective_params}
        booster = train_booster(params, X, y, Xv, yv, callbacks=[pruning_callback(trial)], init=init)
        score = float(booster.best_score["valid_0"][next(iter(booster.best_score["valid_0"]))])
        log_nested(name, trial.number, params, score)
        return score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", study_name=name, sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=30))
    study.optimize(objective, n_trials=n_trials)
    return {"best_params": study.best_params, "best_value": study.best_value,
            "trials": len(study.trials), "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)}


def tune(snapshot: FeatureSnapshot, labelled: Labelled, n_trials: int, horizon_days: float = 90.0,
         seed: int = 0) -> dict[str, dict]:
    """Best parameters per model, and what each study did: trials fit on each model's
    training rows (``Windows.fit``) and are judged on its early-stopping rows
    (``Windows.val``), the rows the final fit uses, on either engine."""
    import mlflow

    def log_nested(model: str, number: int, params: dict, score: float) -> None:
        with mlflow.start_run(run_name=f"tune {model} #{number}", nested=True):
            mlflow.log_params({k: v for k, v in params.items() if k not in ("objective", "monotone_constraints")})
            mlflow.log_metric("validation_loss", score)

    out = {}
    clock = fit_clock(labelled.edd.fit, labelled.edd.fit[LABEL].to_numpy(dtype=float), snapshot.country)
    hours = lambda rows, y: edd_target(clock, rows, y)  # noqa: E731 - the EDD boosters learn log operating hours
    for name, win, objective, label in (("edd", labelled.edd, {"objective": "quantile", "alpha": 0.5}, hours),
                                        ("delay", labelled.delay, {"objective": "binary"}, None)):
        out[name] = _study(name, *_matrices(win.fit, win.val, name, label), objective, n_trials, seed, log_nested)
    if isinstance(labelled.churn, Windows):
        rhythm = rhythm_params(snapshot, labelled.churn_split.calibrate_from, {}, {})
        fit, val = (w.assign(**rhythm_features(w, rhythm, horizon_days)) for w in (labelled.churn.fit, labelled.churn.val))
        # the base and constraints the final fit takes, so the trials judge the same model
        shape, init = churn_estimator(feature_columns(fit, spec.CHURN), rhythm, horizon_days).booster_setup(fit, val)
        out["churn"] = _study("churn", *_matrices(fit, val, spec.CHURN), {"objective": "binary", **shape}, n_trials,
                              seed, log_nested, init)
    logging.getLogger(__name__).info("tuned %s", {k: v["best_value"] for k, v in out.items()})
    return out


def _matrices(fit: pd.DataFrame, val: pd.DataFrame, model: str, label=None):
    """A model's feature matrices and labels for its fit and validation rows, categories
    coded with the fit rows' levels, as the final fit codes them."""
    features = feature_columns(fit, model)
    encoder = CategoricalEncoder(spec.categorical(model)).fit(fit)
    y, yv = fit[LABEL].to_numpy(dtype=float), val[LABEL].to_numpy(dtype=float)
    if label is not None:
        y, yv = label(fit, y), label(val, yv)
    return encoder.transform(fit.reindex(columns=features)), y, encoder.transform(val.reindex(columns=features)), yv
