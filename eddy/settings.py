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


def database_url() -> str:
    """Where the prediction log and the monitoring figures live: ``EDDY_DATABASE_URL``
    (any SQLAlchemy URL, e.g. ``postgresql+psycopg://eddy@db/eddy``), else an embedded
    SQLite file beside the MLflow store."""
    return os.environ.get("EDDY_DATABASE_URL") or f"sqlite:///{mlruns_dir() / 'eddy.db'}"


def prediction_log_enabled() -> bool:
    """Record every answer (``EDDY_PREDICTION_LOG=0`` turns it off)."""
    return os.environ.get("EDDY_PREDICTION_LOG", "1") not in ("0", "false", "no", "off")


def prediction_log_capacity() -> int:
    """Answers held in memory while the database is slow or away; beyond it the oldest are dropped."""
    return int(os.environ.get("EDDY_PREDICTION_LOG_QUEUE", "100000"))


def prediction_log_retention_days() -> float:
    """Logged answers older than this are deleted (``EDDY_PREDICTION_LOG_RETENTION_DAYS``, default 180)."""
    return float(os.environ.get("EDDY_PREDICTION_LOG_RETENTION_DAYS", "180"))


def database_max_mb() -> float | None:
    """A cap on an embedded SQLite log's size (``EDDY_DATABASE_MAX_MB``); at the cap writes
    fail as "database or disk is full" and answers go on. None: no cap."""
    value = os.environ.get("EDDY_DATABASE_MAX_MB")
    return float(value) if value else None


def shadow_alias() -> str | None:
    """``EDDY_SHADOW=challenger``: also score a share of requests with that alias, off the answer's path."""
    return os.environ.get("EDDY_SHADOW") or None


def shadow_rate() -> float:
    """Share of requests the shadow model scores (``EDDY_SHADOW_RATE``, default 0.1)."""
    return min(1.0, max(0.0, float(os.environ.get("EDDY_SHADOW_RATE", "0.1"))))


def dask_workers() -> int:
    """Workers of ``--cluster local`` (default: one per core, one thread each)."""
    return int(os.environ.get("EDDY_DASK_WORKERS", str(os.cpu_count() or 2)))


def dask_worker_memory() -> str:
    """Memory limit per worker of ``--cluster local``: Dask spills, then pauses, then restarts
    a worker above it, instead of the machine swapping."""
    return os.environ.get("EDDY_DASK_WORKER_MEMORY", "4GiB")
