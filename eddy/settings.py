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


def review_session_hours() -> float:
    """How long a review sign-in lasts (``EDDY_REVIEW_SESSION_HOURS``, default 8)."""
    return float(os.environ.get("EDDY_REVIEW_SESSION_HOURS", "8"))


def cookie_secure() -> bool:
    """Mark the review cookies Secure (HTTPS only): ``EDDY_COOKIE_SECURE=1`` behind TLS."""
    return os.environ.get("EDDY_COOKIE_SECURE", "") in ("1", "true", "yes")


def link_key() -> bytes:
    """The key of customer links on the review pages: ``EDDY_LINK_KEY``, else a random key
    made once and kept beside the scores, so links survive restarts and agree between
    workers."""
    given = os.environ.get("EDDY_LINK_KEY")
    if given:
        return given.encode()
    path = scores_dir() / ".link-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".link-key.{os.getpid()}")
        temp.write_text(os.urandom(32).hex())
        try:
            os.link(temp, path)  # atomic and never overwrites: the first worker's key wins
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    return path.read_text().strip().encode()
