"""Reading the model registry: which version is behind an alias, and its bundle.

Store: SQLite under ``mlruns/`` with artifacts beside it (``MLFLOW_TRACKING_URI``
wins when set, like every MLflow tool). One registered model, ``eddy``: each version
is one training run's bundle (the three models, their calibration and the feature
snapshot), so the service always loads models and features that belong together.
Writing to the registry (logging runs, registering, promoting) is training's job.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from eddy import settings

MODEL_NAME = "eddy"
CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says why."""


def configure() -> str:
    """Point MLflow at the project's store (created on first use) and quiet its logs."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in logs and CI
    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///") and "MLFLOW_TRACKING_URI" not in os.environ:
        settings.mlruns_dir().mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    if mlflow.get_experiment_by_name(MODEL_NAME) is None:
        artifacts = settings.mlruns_dir() / "artifacts"
        mlflow.create_experiment(MODEL_NAME, artifact_location=artifacts.resolve().as_uri())
    mlflow.set_experiment(MODEL_NAME)
    return uri


def champion_version(client=None):
    from mlflow import MlflowClient

    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except Exception:
        return None


def download_bundle(alias: str = CHAMPION, dest: Path | None = None) -> tuple[Path, str]:
    """The bundle folder of the version behind ``alias`` (and its version number)."""
    import mlflow
    from mlflow import MlflowClient

    configure()
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(MODEL_NAME, alias)
    except Exception:
        raise RegistryError(f"no model version has the alias {alias!r} yet: run `eddy train DIR` first") from None
    dest = dest or Path(tempfile.mkdtemp(prefix=f"eddy-{alias}-"))
    path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="bundle", dst_path=str(dest))
    return Path(path), mv.version


def load_bundle(alias: str = CHAMPION):
    """The bundle behind ``alias`` loaded into memory, and its version; the downloaded
    copy is removed once read (a serve, predict or score leaves nothing in the temp folder)."""
    from runtime.bundle import ModelBundle

    dest = Path(tempfile.mkdtemp(prefix=f"eddy-{alias}-"))
    try:
        folder, version = download_bundle(alias, dest)
        bundle = ModelBundle.load(folder)
        bundle.meta["version"] = version
        return bundle, version
    finally:
        shutil.rmtree(dest, ignore_errors=True)
