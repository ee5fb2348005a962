"""The scoring store the review pages read, and table files written by the batch commands.

``eddy score-customers`` (without ``--out``) writes a scoring (``latest.parquet``, one
row per customer; ``latest-history.parquet``, their orders; ``latest-drivers.json``,
what drives loyalty) into a folder of its own under ``runs/`` in the scores folder, then
points ``LATEST`` at it with one atomic rename: a reader, or a run killed half way,
sees the old scoring or the new one whole, never a mix. The review pages read it back.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from eddy.files import atomic_text, atomic_write


@dataclass
class Scoring:
    """A scoring run: one row per customer, their order history, and what drives loyalty."""

    table: pd.DataFrame
    history: pd.DataFrame
    drivers: dict


KEEP = 3  # scorings kept besides the latest (a page being read may still hold the previous one)


def write_scoring(scoring: Scoring, folder: Path) -> Path:
    """A new scoring in ``folder/runs/<id>/``, then ``LATEST`` switched to it; older ones pruned."""
    folder = Path(folder)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    run = folder / "runs" / run_id
    run.mkdir(parents=True)
    write_table(scoring.history, run / "latest-history.parquet")
    atomic_text(run / "latest-drivers.json", json.dumps(scoring.drivers, default=str))
    write_table(scoring.table, run / "latest.parquet")
    atomic_text(folder / "LATEST", run_id)
    for old in sorted((folder / "runs").iterdir())[:-(KEEP + 1)]:
        if old.name != run_id:
            shutil.rmtree(old, ignore_errors=True)
    return run / "latest.parquet"


def latest_run(folder: Path) -> Path | None:
    """The folder of the latest complete scoring (None before the first)."""
    pointer = Path(folder) / "LATEST"
    if not pointer.exists():
        return None
    run = Path(folder) / "runs" / pointer.read_text().strip()
    return run if (run / "latest.parquet").exists() else None


def read_scoring(folder: Path) -> Scoring:
    """The latest scoring, reasons back as lists (history and drivers may be absent)."""
    run = latest_run(folder)
    if run is None:
        raise FileNotFoundError(f"no scoring in {folder}: run eddy score-customers")
    table = pd.read_parquet(run / "latest.parquet")
    table["reasons"] = [json.loads(r) if isinstance(r, str) else [] for r in table.reasons]
    history, drivers = run / "latest-history.parquet", run / "latest-drivers.json"
    return Scoring(table, pd.read_parquet(history) if history.exists() else pd.DataFrame(),
                   json.loads(drivers.read_text()) if drivers.exists() else {})


def write_table(table: pd.DataFrame, target: Path) -> Path:
    """Parquet (reasons as JSON text, so any reader can open it) or CSV by extension."""
    target.parent.mkdir(parents=True, exist_ok=True)
    flat = table.copy()
    if "reasons" in flat:
        flat["reasons"] = [json.dumps(r) for r in flat.reasons]
    write = (lambda p: flat.to_csv(p, index=False)) if target.suffix.lower() == ".csv" else \
        (lambda p: flat.to_parquet(p, index=False))
    return atomic_write(target, write)
