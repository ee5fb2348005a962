"""The ``eddy`` command as a user runs it: help everywhere, one-line summaries and errors."""

from __future__ import annotations

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
        (["simulate", "--out", "/tmp/x", "--format", "xml"], "error: --format must be one of parquet, csv, not 'xml'"),
        (["import-olist", "/definitely/not/here", "--out", "/tmp/x"], "olist_orders_dataset.csv: missing"),
    ],
)
def test_errors_are_one_clear_line_without_traceback(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
