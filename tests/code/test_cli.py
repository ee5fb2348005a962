"""The ``eddy`` command as a user runs it: help everywhere, one-line summaries and errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EDDY = [str(Path(sys.executable).parent / "eddy")]
COMMANDS = ["simulate", "validate", "import-olist", "features", "train", "backtest", "promote", "predict", "score-customers", "serve",
            "bento"]


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([*EDDY, *args], capture_output=True, text=True, timeout=300, check=check)


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_on_every_command(command):
    r = run(*command, "--help")
    assert r.returncode == 0
    assert "Usage" in r.stdout
    for c in COMMANDS if not command else []:
        assert c in r.stdout


def test_simulate_then_validate_prints_summaries(tmp_path):
    r = run("simulate", "--out", str(tmp_path / "s"), "--customers", "150", "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("simulated ") and f"into {tmp_path / 's'} (csv" in r.stdout
    assert (tmp_path / "s" / "shipments.csv").exists() and (tmp_path / "s" / "truth" / "shipments.parquet").exists()
    v = run("validate", str(tmp_path / "s"))
    assert v.returncode == 0, v.stderr
    assert v.stdout.strip().splitlines()[-1].startswith(f"validated {tmp_path / 's'}: 0 rows quarantined")


@pytest.mark.parametrize(
    "args, message",
    [
        (["validate", "/definitely/not/here"], "error: /definitely/not/here: folder does not exist"),
        (["simulate", "--out", "/definitely/not/here/out", "--format", "xml"], "error: --format must be one of parquet, csv, not 'xml'"),
        (["import-olist", "/definitely/not/here", "--out", "/definitely/not/here/out"], "olist_orders_dataset.csv: missing"),
        (["predict", "/definitely/not/here", "--out", "/definitely/not/here/x.parquet", "--as-of", "NaT"], "--as-of 'NaT' is not a timestamp"),
        (["simulate", "--out", __file__], "a file is there; a data set is written as a folder"),
        (["score-customers", "/definitely/not/here", "--as-of", ""], "--as-of '' is not a timestamp"),
    ],
)
def test_errors_are_one_clear_line_without_traceback(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_every_command_that_reads_data_sets_its_bad_rows_aside_and_says_so(tmp_path):
    """Not only `eddy validate`: a command that reads a data set with rows failing the
    contract writes them with their reasons and says so; extra columns and files are
    named; the simulator's truth folder is not "an unknown file"."""
    folder = tmp_path / "s"
    run("simulate", "--out", str(folder), "--customers", "150", "--format", "csv", check=True)
    shipments = (folder / "shipments.csv").read_text().splitlines()
    head, rows = shipments[0], shipments[1:]
    cells = rows[4].split(",")
    cells[9] = "2024-02-30 10:00:00Z"  # ordered_at: no such day
    rows[4] = ",".join(cells)
    (folder / "shipments.csv").write_text("\n".join([head + ',"colour"'] + [r + ",red" for r in rows]) + "\n")
    (folder / "scan.csv").write_text("shipment_id\nS1\n")
    r = run("features", str(folder), "--out", str(tmp_path / "f.parquet"))
    assert r.returncode == 0, r.stderr
    assert "rows failed the data contract and were set aside (shipments 1" in r.stderr
    assert f"with each row's reason in {folder / '_quarantine'}" in r.stderr
    assert "shipments: extra columns ignored: colour" in r.stderr
    assert "scan.csv is not a contract table" in r.stderr and "truth" not in r.stderr
    set_aside = (folder / "_quarantine" / "shipments.csv").read_text()
    assert "unparseable timestamp" in set_aside and "2024-02-30" in set_aside


def test_a_training_that_trains_no_model_registers_no_version(tmp_path):
    """47 shipments: every model is skipped with its reason. Registering that version
    would have made a champion that answers nothing (it did, until 2026-12-04); a
    backtest of them printed "0 figures" and exited 0."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", "EDDY_PREDICTION_LOG": "0"}
    assert subprocess.run([*EDDY, "simulate", "--out", str(tmp_path / "s"), "--customers", "10"], env=env,
                          capture_output=True, timeout=300).returncode == 0
    r = subprocess.run([*EDDY, "train", str(tmp_path / "s"), "--report-dir", str(tmp_path / "r")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "skipped edd: too little delivered history" in r.stderr
    assert f"nothing trained on {tmp_path / 's'}: every model was skipped" in r.stderr
    assert (tmp_path / "r" / "report.md").exists()
    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.search_model_versions() == []
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.tags["eddy.outcome"] == "nothing trained: not registered"
    r = subprocess.run([*EDDY, "backtest", str(tmp_path / "s"), "--cutoffs", "2", "--report-dir", str(tmp_path / "b")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "no figure at any of 2 cutoffs" in r.stderr and "edd: too little delivered history" in r.stderr


def test_serving_on_a_port_already_taken_is_one_line_not_a_traceback():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run("serve", "--port", str(port))
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


@pytest.mark.parametrize("command", [["promote"], ["bento"]])
def test_a_store_that_is_not_a_database_is_one_line_not_a_traceback(tmp_path, command):
    import os

    (tmp_path / "mlflow.db").write_text("not a database\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    r = subprocess.run([*EDDY, *command], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert f"error: cannot open the MLflow store at sqlite:///{tmp_path / 'mlflow.db'}: DatabaseError" in r.stderr


@pytest.mark.slow
def test_stopping_eddy_serve_stops_the_server_it_started(tmp_path):
    """`eddy serve` becomes the server: a SIGTERM to it (kill, systemd) stops BentoML too,
    which used to live on as an orphan holding the port (and serving the old code)."""
    import os
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "prom").mkdir()
    env = {**os.environ, "EDDY_MLRUNS_DIR": str(tmp_path / "mlruns"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
           "EDDY_PREDICTION_LOG": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen([*EDDY, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/livez"
        for _ in range(300):  # no champion in this store: alive, not ready
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("eddy serve never answered /livez")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        time.sleep(1)
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)
    finally:
        if server.poll() is None:
            server.kill()
