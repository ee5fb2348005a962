"""The MLflow store under concurrency, kills and an external tracking URI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eddy import settings

CONFIGURE = "from runtime.registry import configure; configure()"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": str(settings.REPO_ROOT), **extra}


def test_first_uses_at_once_all_succeed_on_a_fresh_store(tmp_path: Path):
    """Two first trainings at once used to die with `table params already exists`."""
    env = _env(EDDY_MLRUNS_DIR=str(tmp_path / "mlruns"))
    procs = [subprocess.Popen([sys.executable, "-c", CONFIGURE], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    check = ("import mlflow; from runtime.registry import configure, MODEL_NAME; configure(); "
             "print(len(mlflow.search_experiments(filter_string=f\"name = '{MODEL_NAME}'\")))")
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "1", out.stderr


def test_a_run_whose_process_died_is_marked_killed_and_a_live_one_is_left(tmp_path: Path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    script = f"""
import os
from mlflow import MlflowClient
import mlflow
from runtime.registry import configure, reap_abandoned_runs, run_tags, MODEL_NAME
configure()
client = MlflowClient()
exp = mlflow.get_experiment_by_name(MODEL_NAME).experiment_id
gone = client.create_run(exp, tags={{**run_tags(), "eddy.pid": "{dead.pid}"}}).info.run_id
alive = client.create_run(exp, tags=run_tags()).info.run_id
print(reap_abandoned_runs() == [gone], client.get_run(gone).info.status, client.get_run(alive).info.status)
"""
    out = subprocess.run([sys.executable, "-c", script], env=_env(EDDY_MLRUNS_DIR=str(tmp_path / "m")),
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["True", "KILLED", "RUNNING"], out.stderr[-2000:]


def test_with_an_external_tracking_uri_nothing_goes_to_the_repos_mlruns(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    script = ("import mlflow; from runtime.registry import configure, MODEL_NAME; configure(); "
              "print(mlflow.get_experiment_by_name(MODEL_NAME).artifact_location)")
    out = subprocess.run([sys.executable, "-c", script], env=_env(MLFLOW_TRACKING_URI=uri, EDDY_MLRUNS_DIR=str(tmp_path / "repo-mlruns")),
                         capture_output=True, text=True, timeout=300, cwd=settings.REPO_ROOT)
    location = out.stdout.strip()
    assert location == (tmp_path / "artifacts").as_uri(), out.stderr[-2000:]
    assert not (tmp_path / "repo-mlruns").exists()
