"""MLflow tracking and registry writes: every run on record, promotion by rule.

The store, and reading from it, are ``runtime.registry``'s. The boosters are also
logged in MLflow's native LightGBM flavour with signatures.

Aliases: a new version becomes ``challenger``; the very first also ``champion``.
``promote`` moves ``champion`` to the challenger only when the challenger is not
worse on the primary metric of each model, compared on the same latest held-out
window (see PRIMARY).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from runtime.registry import CHALLENGER, CHAMPION, MODEL_NAME, champion_version

#: model -> (metric, higher is better, tolerance): within the tolerance the two are level
#: (not worse, not better); a promotion needs better on one and worse on none
PRIMARY = {
    "edd": ("mae_days", False, 0.01),
    "delay": ("brier", False, 0.001),
    "churn": ("roc_auc", True, 0.002),
}


@dataclass
class Registered:
    version: str
    run_id: str
    aliases: list[str]


def log_run(result, report_dir: Path | None, tuning: dict | None = None) -> None:
    """Log a finished training into the active run (registration comes after, see ``register``)."""
    import lightgbm
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    bundle = result.bundle
    mlflow.log_params({"data": bundle.meta["data"], "data_end": bundle.meta["data_end"],
                       "shipments": bundle.meta["shipments"], "horizon_days": bundle.meta["horizon_days"],
                       **{f"split_{k}": v for k, v in bundle.meta["split"].items()},
                       **{f"{m}_{k}": v for m, p in (result.params or {}).items() for k, v in (p or {}).items()},
                       **{f"skipped_{k}": v[:250] for k, v in bundle.meta["skipped"].items()}})
    mlflow.log_metrics({k: float(v) for k, v in result.metrics.items() if np.isfinite(v)})
    if tuning:
        mlflow.log_dict(tuning, "tuning.json")
    with tempfile.TemporaryDirectory() as tmp:
        folder = bundle.save(Path(tmp) / "bundle")
        mlflow.log_artifacts(str(folder), artifact_path="bundle")
    if report_dir is not None and report_dir.exists():
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
    # Named, not inferred: MLflow infers a model's requirements by importing it in a fresh
    # process, 7 s a model, 35 s of every training for a list that is always this one.
    requirements = [f"lightgbm=={lightgbm.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    for name, booster, rows in _boosters(result):
        sample = rows.head(5)
        signature = infer_signature(sample.astype({c: "str" for c in sample.select_dtypes("category").columns}),
                                    booster.predict(sample))
        mlflow.lightgbm.log_model(booster, name=name, signature=signature, pip_requirements=requirements)


def _boosters(result):
    """(name, booster, encoded sample rows) for each trained LightGBM booster (``edd_q10``
    and ``edd_q90`` predict their distance from ``edd_q50``'s answer: ``EddModel``)."""
    b = result.bundle
    out = []
    sample = result.tables.get("_sample_shipment_rows")
    if b.edd is not None and sample is not None:
        X = b.edd._X(sample)
        out += [(f"edd_q{q}", booster, X) for q, booster in zip((10, 50, 90), b.edd.boosters_)]
    if b.delay is not None and sample is not None:
        out.append(("delay", b.delay.booster_, b.delay._X(sample)))
    churn_sample = result.tables.get("_sample_customer_rows")
    if b.churn is not None and churn_sample is not None:
        out.append(("churn", b.churn.booster_, b.churn._X(churn_sample)))
    return out


def register(run_id: str) -> Registered:
    """Register a finished run's bundle: alias challenger, and champion if it is the first.

    Called only after the run ended cleanly, so a failed or interrupted training
    leaves the registry and its aliases as they were.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        client.get_registered_model(MODEL_NAME)
    except Exception:
        client.create_registered_model(MODEL_NAME, description="Eddy: EDD, delay and churn models with their features")
    first = champion_version(client) is None
    mv = client.create_model_version(MODEL_NAME, source=f"runs:/{run_id}/bundle", run_id=run_id)
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, mv.version)
    aliases = [CHALLENGER]
    if first:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, mv.version)
        aliases.append(CHAMPION)
    return Registered(mv.version, run_id, aliases)


def compare(champion_metrics: dict, challenger_metrics: dict) -> dict[str, dict]:
    """Per model: both figures of its primary metric, whether the challenger is not worse
    and whether it is better, each beyond the metric's tolerance (a model only one of them
    has counts for the one that has it)."""
    verdicts = {}
    for model, (metric, higher_better, tolerance) in PRIMARY.items():
        key = f"{model}_{metric}"
        a, b = champion_metrics.get(key), challenger_metrics.get(key)
        if a is None and b is None:
            continue
        if a is None or b is None:
            not_worse = better = b is not None
        else:
            gain = b - a if higher_better else a - b
            not_worse, better = gain >= -tolerance, gain > tolerance
        verdicts[model] = {"metric": metric, "champion": a, "challenger": b, "not_worse": bool(not_worse),
                           "better": bool(better)}
    return verdicts


def promotable(verdicts: dict[str, dict]) -> bool:
    """Measurably better: better than the champion on one model's metric, worse on none."""
    return all(v["not_worse"] for v in verdicts.values()) and any(v["better"] for v in verdicts.values())


def verdict_word(v: dict) -> str:
    return "better" if v["better"] else "level" if v["not_worse"] else "WORSE"


def log_backtest(results, long, report_dir: Path | None, options: dict, tags: dict) -> None:
    """Into the active (parent) run: the options, each cutoff as a nested child run with its
    figures, the mean of each figure over cutoffs, the long table and the report."""
    import mlflow

    mlflow.set_tag("eddy.kind", "backtest")
    mlflow.log_params({k: str(v) for k, v in options.items()})
    for r in results:
        with mlflow.start_run(run_name=f"cutoff {r.cutoff:%Y-%m-%d}", nested=True, tags={**tags, "eddy.kind": "backtest"}):
            mlflow.log_params({"cutoff": r.info["cutoff"], "train_shipments": r.info["train_shipments"],
                               "window_shipments": r.info["window_shipments"],
                               **{f"split_{k}": v for k, v in r.info["split"].items()},
                               **{f"skipped_{k}": v[:250] for k, v in r.info["skipped"].items()}})
            mlflow.log_metrics(_figure_metrics(r.figures))
    if len(long):
        means = long.groupby(["moment", "model", "metric"], as_index=False).value.mean()
        mlflow.log_metrics({f"mean.{k}": v for k, v in _figure_metrics(means).items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backtest.parquet"
        long.to_parquet(path, index=False)
        mlflow.log_artifact(str(path))
    if report_dir is not None and report_dir.exists():
        mlflow.log_artifacts(str(report_dir), artifact_path="report")


def _figure_metrics(figures) -> dict[str, float]:
    """``moment.model.metric`` -> value for the finite figures of a long table."""
    return {f"{f.moment}.{f.model}.{f.metric}": float(f.value) for f in figures.itertuples() if np.isfinite(f.value)}
