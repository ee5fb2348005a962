"""The scoring store the review pages read, and table files written by the batch commands.

``eddy score-customers`` (without ``--out``) writes ``latest.parquet`` (one row per
customer), ``latest-history.parquet`` (their orders) and ``latest-drivers.json`` (what
drives loyalty) into the scores folder; the review pages read them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Scoring:
    """A scoring run: one row per customer, their order history, and what drives loyalty."""

    table: pd.DataFrame
    history: pd.DataFrame
    drivers: dict


def write_scoring(scoring: Scoring, folder: Path) -> Path:
    """The review page's store: latest.parquet, latest-history.parquet, latest-drivers.json."""
    folder.mkdir(parents=True, exist_ok=True)
    write_table(scoring.history, folder / "latest-history.parquet")
    (folder / "latest-drivers.json").write_text(json.dumps(scoring.drivers, default=str))
    return write_table(scoring.table, folder / "latest.parquet")  # last: the page keys its cache on it


def read_scoring(folder: Path) -> Scoring:
    """What ``write_scoring`` stored, reasons back as lists (history and drivers may be absent)."""
    table = pd.read_parquet(folder / "latest.parquet")
    table["reasons"] = [json.loads(r) if isinstance(r, str) else [] for r in table.reasons]
    history, drivers = folder / "latest-history.parquet", folder / "latest-drivers.json"
    return Scoring(table, pd.read_parquet(history) if history.exists() else pd.DataFrame(),
                   json.loads(drivers.read_text()) if drivers.exists() else {})


def write_table(table: pd.DataFrame, target: Path) -> Path:
    """Parquet (reasons as JSON text, so any reader can open it) or CSV by extension."""
    target.parent.mkdir(parents=True, exist_ok=True)
    flat = table.copy()
    if "reasons" in flat:
        flat["reasons"] = [json.dumps(r) for r in flat.reasons]
    flat.to_csv(target, index=False) if target.suffix == ".csv" else flat.to_parquet(target, index=False)
    return target
