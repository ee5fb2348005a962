"""Paths and settings in one place.

Nothing here touches the file system or the environment at import time; callers ask
for a path when they need it, so tests can point everything elsewhere with environment
variables.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every timestamp inside Eddy is tz-aware UTC at this resolution (pandas 3 defaults to
#: microseconds; mixing units breaks ``merge_asof`` and equality checks).
TIMESTAMP_DTYPE = "datetime64[us, UTC]"


def data_sets_dir() -> Path:
    """Folder where generated and imported data sets live (ignored by git)."""
    return Path(os.environ.get("EDDY_DATA_DIR", REPO_ROOT / "data" / "sets"))


def default_data_set() -> Path:
    """The embedded default synthetic data set that ``make demo`` builds."""
    return data_sets_dir() / "demo"


def mlruns_dir() -> Path:
    """MLflow store folder: SQLite database plus artifacts."""
    return Path(os.environ.get("EDDY_MLRUNS_DIR", REPO_ROOT / "mlruns"))


def tracking_uri() -> str:
    """MLflow tracking URI; follows ``MLFLOW_TRACKING_URI`` like every MLflow tool."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlruns_dir() / 'mlflow.db'}"


DEFAULT_DEMO_CUSTOMERS = 20000
DEFAULT_SEED = 7


def olist_sample_dir() -> Path:
    """The real Olist sample shipped beside the repository (``../shared/data/olist-sample``)."""
    return Path(os.environ.get("EDDY_OLIST_SAMPLE", REPO_ROOT.parent / "shared" / "data" / "olist-sample"))


def review_token() -> str | None:
    """The token the review pages ask for (``EDDY_REVIEW_TOKEN``); none: the pages are open."""
    return os.environ.get("EDDY_REVIEW_TOKEN") or None


def scores_dir() -> Path:
    """Where ``eddy score-customers`` stores its latest scoring for the review page."""
    return Path(os.environ.get("EDDY_SCORES_DIR", REPO_ROOT / "data" / "scores"))
