"""Reading the model registry: which version is behind an alias, and its bundle.

Store: SQLite under ``mlruns/`` with artifacts beside it (``MLFLOW_TRACKING_URI``
wins when set, like every MLflow tool). One registered model, ``eddy``: each version
is one training run's bundle (the three models, their calibration and the feature
snapshot), so the service always loads models and features that belong together.
Writing to the registry (logging runs, registering, promoting) is training's job.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from eddy import settings

MODEL_NAME = "eddy"
CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(Exception):
    """The registry cannot do what was asked; the message says why."""


def configure() -> str:
    """Point MLflow at the project's store (created on first use) and quiet its logs.

    Creating the store and the experiment is serialized with a lock file beside the
    store, so two first trainings at once cannot both try to create its tables. With
    ``MLFLOW_TRACKING_URI`` set, artifacts go where that tracking server or store puts
    them, not into this repository's ``mlruns/``."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in logs and CI
    uri = settings.tracking_uri()
    own_store = "MLFLOW_TRACKING_URI" not in os.environ
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    try:
        with _store_lock(settings.mlruns_dir() if own_store else None):
            if mlflow.get_experiment_by_name(MODEL_NAME) is None:
                mlflow.create_experiment(MODEL_NAME, artifact_location=_artifact_root(uri, own_store))
        mlflow.set_experiment(MODEL_NAME)
    except Exception as exc:  # noqa: BLE001 - the store itself: a bad path, not a database, a server away
        from runtime.predlog import masked, short_error

        raise RegistryError(f"cannot open the MLflow store at {masked(uri)}: {short_error(exc)}") from exc
    return uri


def _artifact_root(uri: str, own_store: bool) -> str | None:
    """Artifacts beside the database for a SQLite store (ours under ``mlruns/``, another
    beside its own file); a tracking server decides for itself (None)."""
    if own_store:
        return (settings.mlruns_dir() / "artifacts").resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return None


@contextmanager
def _store_lock(folder: Path | None):
    """An exclusive lock on ``folder/.lock`` (nothing to lock for a remote store)."""
    if folder is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def reap_abandoned_runs() -> list[str]:
    """Runs of this machine still RUNNING whose process is gone (killed with SIGKILL or a
    power cut) are marked KILLED; their ids are returned. Runs carry ``eddy.host`` and
    ``eddy.pid`` tags for this (see ``run_tags``)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = mlflow.get_experiment_by_name(MODEL_NAME)
    if experiment is None:
        return []
    reaped = []
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get("eddy.host") == socket.gethostname() and not _alive(int(tags.get("eddy.pid", "0") or 0)):
            client.set_terminated(run.info.run_id, status="KILLED")
            reaped.append(run.info.run_id)
    return reaped


def run_tags() -> dict[str, str]:
    return {"eddy.host": socket.gethostname(), "eddy.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def load_version(version: str):
    """The bundle of a registered version by number (``eddy monitor`` rebuilding a past
    version's features), for batch use (``ModelBundle.load``'s ``online``); the
    downloaded copy is removed once read."""
    import mlflow
    from mlflow import MlflowClient

    from runtime.bundle import ModelBundle

    configure()
    try:
        mv = MlflowClient().get_model_version(MODEL_NAME, str(version))
    except Exception:
        raise RegistryError(f"model version {version} is not in the registry") from None
    dest = Path(tempfile.mkdtemp(prefix=f"eddy-v{version}-"))
    try:
        path = mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="bundle", dst_path=str(dest))
        bundle = ModelBundle.load(Path(path), online=False)
        bundle.meta["version"] = str(version)
        return bundle
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def load_bundle(alias: str = CHAMPION, online: bool = True):
    """The bundle behind ``alias`` loaded into memory (``online``: ``ModelBundle.load``'s;
    False for batch commands), and its version; the downloaded copy is removed once read
    (a serve, predict or score leaves nothing in the temp folder)."""
    from runtime.bundle import ModelBundle

    dest = Path(tempfile.mkdtemp(prefix=f"eddy-{alias}-"))
    try:
        folder, version = download_bundle(alias, dest)
        bundle = ModelBundle.load(folder, online)
        bundle.meta["version"] = version
        return bundle, version
    finally:
        shutil.rmtree(dest, ignore_errors=True)
