"""The prediction log: every answer Eddy gives, kept in a database so it can be judged later.

The service (``/eta``, ``/eta/batch``, ``/churn``, ``/churn/batch``) and the batch commands
(``eddy predict``, ``eddy score-customers``) hand their answers to a
:class:`PredictionLog`. It holds them in a bounded in-memory queue that a background
thread writes to the database in batches, so writing never blocks or fails an answer:
when the database is slow, away or full the queue fills, the oldest entries are dropped
and counted, and ``/status`` and ``/metrics`` say so.

The database is reached through SQLAlchemy: an embedded SQLite file in WAL mode by
default (``mlruns/eddy.db``), PostgreSQL or any other server when ``EDDY_DATABASE_URL``
names one. Moments are stored as integer microseconds since 1970 UTC (the unit every
column inside Eddy uses), so a million rows read back without parsing dates.

The same database holds what ``eddy monitor`` computes from the log (``monitor_runs``,
``monitor_figures``), which the monitoring page and the Prometheus gauges read.
Shipment and customer ids are stored as given (they are the operator's own data) but
never written to the server's log: database errors are reported without parameters.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque

import numpy as np

from eddy import settings
from features.pit import NAT

log = logging.getLogger("eddy.predlog")

RETENTION_EVERY_S = 3600.0  # how often the writer deletes entries past the retention


def tables(metadata=None):
    """The log's tables (SQLAlchemy Core), made on a fresh ``MetaData``."""
    from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text

    md = metadata or MetaData()
    predictions = Table(
        "predictions", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("logged_at", BigInteger, nullable=False),
        Column("source", String(32), nullable=False),
        Column("alias", String(32), nullable=False),
        Column("model_version", String(64), nullable=False),
        Column("kind", String(8), nullable=False),  # eta | churn
        Column("shipment_id", String(128)),
        Column("customer_id", String(128)),
        Column("carrier", String(64)),
        Column("service_level", String(64)),
        Column("lane", String(140)),
        Column("as_of", BigInteger, nullable=False),
        Column("eta_p10", BigInteger), Column("eta_p50", BigInteger), Column("eta_p90", BigInteger),
        Column("promise_at", BigInteger), Column("promise_confidence", Float),
        Column("late_probability", Float), Column("churn_risk", Float),
        # the promise the request carried (its late probability is about that one); an
        # export's promised_at may differ, and a log from before 2026-12-04 has none
        Column("requested_promise", BigInteger),
        Column("reasons", Text),
        Index("predictions_kind_as_of", "kind", "as_of"),
        Index("predictions_logged_at", "logged_at"),
    )
    versions = Table(
        "model_versions", md,
        Column("model_version", String(64), primary_key=True),
        Column("first_seen", BigInteger, nullable=False),
        Column("meta", Text, nullable=False),  # test-window metrics, horizon, drift reference
    )
    runs = Table(
        "monitor_runs", md,
        Column("run_id", String(40), primary_key=True),
        Column("computed_at", BigInteger, nullable=False),
        Column("data", Text), Column("since", BigInteger), Column("predictions", Integer),
        Column("advice", Text),  # JSON list of sentences
    )
    figures = Table(
        "monitor_figures", md,
        Column("run_id", String(40), nullable=False, index=True),
        Column("week", String(10)), Column("model", String(64)), Column("alias", String(32)),
        Column("carrier", String(64)), Column("lane", String(140)),
        Column("metric", String(96), nullable=False),
        Column("value", Float), Column("reference", Float), Column("n", Integer),
    )
    return md, predictions, versions, runs, figures


def masked(url: str) -> str:
    """The URL without its password, for /status and messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unreadable URL is reported as such, not raised
        return "(unreadable database URL)"


def engine_for(url: str | None = None):
    """An engine with the log's tables created: SQLite in WAL mode (and capped when
    ``EDDY_DATABASE_MAX_MB`` says so), servers with a short connect timeout."""
    from sqlalchemy import create_engine, event

    url = url or settings.database_url()
    args = {}
    if url.startswith("postgresql"):
        args["connect_args"] = {"connect_timeout": 3}
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        args["connect_args"] = {"timeout": 5}
    engine = create_engine(url, hide_parameters=True, pool_pre_ping=True, **args)
    if engine.dialect.name == "sqlite":
        cap = settings.database_max_mb()

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _):  # noqa: ANN001 - SQLAlchemy's hook signature
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers (the page, eddy monitor) never block the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            if cap:
                cur.execute(f"PRAGMA max_page_count={max(8, int(cap * 1024 * 1024 / 4096))}")
            cur.close()
    md = tables()[0]
    md.create_all(engine)
    _add_new_columns(engine, md)
    return engine


def _add_new_columns(engine, md) -> None:
    """Columns added to the log since a database was made (``create_all`` makes missing
    tables, not missing columns): added empty, so an older log keeps its answers."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    have = {c["name"] for c in inspect(engine).get_columns("predictions")}  # one look, not one per column
    for column in md.tables["predictions"].columns:
        if column.name in have:
            continue
        try:
            with engine.begin() as conn:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(text(f'ALTER TABLE predictions ADD COLUMN "{column.name}" {kind}'))
        except DBAPIError:  # another process (the service, a monitor) added it first
            if column.name not in {c["name"] for c in inspect(engine).get_columns("predictions")}:
                raise


def short_error(exc: BaseException) -> str:
    """An error in one line without the statement or its parameters (no ids in logs)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {text[:200]}"


class PredictionLog:
    """A bounded queue of answers and the thread that writes them to the database."""

    def __init__(self, url: str | None = None, capacity: int | None = None, batch_size: int = 5000,
                 interval_s: float = 0.2, retention_days: float | None = None):
        self.url = url or settings.database_url()
        self.capacity = capacity or settings.prediction_log_capacity()
        self.batch_size, self.interval_s = batch_size, interval_s
        self.retention_days = settings.prediction_log_retention_days() if retention_days is None else retention_days
        self._queue: deque = deque()
        self._versions: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._engine = None
        self._tables = None
        self._last_retention = 0.0
        self.written = self.dropped = self.failures = 0
        self.last_error: str | None = None
        self.last_write_at: float | None = None
        # hooks the service points at its Prometheus counters (called with a count)
        self.on_dropped = self.on_written = self.on_failure = _ignore

    # -- the answer's side: never blocks, never raises
    def put(self, records: list[dict]) -> None:
        if not records:
            return
        with self._lock:
            self._queue.extend(records)
            over = len(self._queue) - self.capacity
            for _ in range(max(0, over)):
                self._queue.popleft()
            self.dropped += max(0, over)
            self._idle.clear()
        if over > 0:
            self.on_dropped(over)
        self._ensure_thread()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def put_all(self, records: list[dict], timeout: float = 120.0) -> bool:
        """A batch command's answers, every one kept: in pieces the queue holds, each
        written before the next goes in (``put`` drops the oldest past the capacity, which
        a live service must do and a batch of 100,064 answers did). False when the
        database did not take a piece in ``timeout`` seconds."""
        step = max(1, min(self.capacity, self.batch_size * 10))
        for start in range(0, len(records), step):
            self.put(records[start:start + step])
            if not self.flush(timeout):
                return False
        return True

    def note_model(self, version: str, meta: dict) -> None:
        """The reference a version's live figures are judged against (written once)."""
        with self._lock:
            self._versions[str(version)] = reference_meta(meta)
            self._idle.clear()
        self._ensure_thread()

    # -- the writer
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="eddy-prediction-log", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(max(self.interval_s, backoff))
            self._wake.clear()
            backoff = 0.0 if self._drain() else min(5.0, max(0.5, backoff * 2))
        self._drain()

    def _drain(self) -> bool:
        """Write everything queued, a batch at a time; False when the database refused."""
        try:
            if self._engine is None:
                self._engine = engine_for(self.url)
                self._tables = tables()
            self._write_versions()
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                if not batch:
                    break
                try:
                    with self._engine.begin() as conn:
                        conn.execute(self._tables[1].insert(), batch)
                except Exception:
                    self._requeue(batch)
                    raise
                self.written += len(batch)
                self.on_written(len(batch))
                self.last_write_at = time.time()
            self._apply_retention()
            self.last_error = None
            with self._lock:
                if not self._queue and not self._versions:
                    self._idle.set()
            return True
        except Exception as exc:  # noqa: BLE001 - the database failing must never reach an answer
            self.failures += 1
            self.on_failure(1)
            self.last_error = short_error(exc)
            log.warning("prediction log: cannot write to %s: %s", masked(self.url), self.last_error)
            if self._engine is not None and self.failures % 10 == 0:
                self._engine.dispose()
            return False

    def _requeue(self, batch: list[dict]) -> None:
        with self._lock:
            room = self.capacity - len(self._queue)
            keep = batch[max(0, len(batch) - room):] if room < len(batch) else batch
            self.dropped += len(batch) - len(keep)
            self._queue.extendleft(reversed(keep))
        if len(batch) > len(keep):
            self.on_dropped(len(batch) - len(keep))

    def _write_versions(self) -> None:
        from sqlalchemy import select

        with self._lock:
            pending = dict(self._versions)
        if not pending:
            return
        table = self._tables[2]
        with self._engine.begin() as conn:
            known = {r[0] for r in conn.execute(select(table.c.model_version).where(table.c.model_version.in_(list(pending))))}
            new = [{"model_version": v, "first_seen": now_us(), "meta": json.dumps(m, default=str)}
                   for v, m in pending.items() if v not in known]
            if new:
                conn.execute(table.insert(), new)
        with self._lock:
            for v in pending:
                self._versions.pop(v, None)

    def _apply_retention(self) -> None:
        if time.time() - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = time.time()
        cutoff = now_us() - int(self.retention_days * 86_400_000_000)
        with self._engine.begin() as conn:
            conn.execute(self._tables[1].delete().where(self._tables[1].c.logged_at < cutoff))

    # -- for the batch commands and tests
    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until everything queued is written (True) or the time is up (False)."""
        if self._thread is None:
            return True
        self._wake.set()
        return self._idle.wait(timeout)

    def close(self, timeout: float = 60.0) -> bool:
        done = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return done

    def status(self) -> dict:
        return {"enabled": True, "database": masked(self.url), "ok": self.last_error is None,
                "pending": len(self._queue), "written": self.written, "dropped": self.dropped,
                "write_failures": self.failures, "last_error": self.last_error,
                "last_write_age_s": None if self.last_write_at is None else round(time.time() - self.last_write_at, 1)}


class NoLog:
    """Logging turned off (``EDDY_PREDICTION_LOG=0``): the same calls, nothing kept."""

    written = dropped = failures = 0

    def put(self, records: list[dict]) -> None:
        pass

    def put_all(self, records: list[dict], timeout: float = 0.0) -> bool:
        return True

    def note_model(self, version: str, meta: dict) -> None:
        pass

    def flush(self, timeout: float = 0.0) -> bool:
        return True

    def close(self, timeout: float = 0.0) -> bool:
        return True

    def status(self) -> dict:
        return {"enabled": False}


def _ignore(_: int) -> None:
    pass


def open_log(url: str | None = None):
    """The prediction log the settings ask for."""
    return PredictionLog(url) if settings.prediction_log_enabled() else NoLog()


def now_us() -> int:
    return int(time.time() * 1_000_000)


#: test-window metrics (as ``eddy train`` names them) kept as a version's reference
REFERENCE_METRICS = ("edd_mae_days", "edd_within_1d", "edd_interval_coverage", "edd_promise90_on_time",
                     "edd_promise95_on_time", "delay_roc_auc", "delay_brier", "delay_ece", "churn_roc_auc")


def reference_meta(meta: dict) -> dict:
    """What monitoring needs of a bundle's meta: its test-window figures, churn horizon,
    data end and the drift reference (``profile``)."""
    return {"metrics": {k: v for k, v in meta.get("metrics", {}).items() if k in REFERENCE_METRICS},
            "horizon_days": meta.get("horizon_days"), "data_end": meta.get("data_end"),
            "trained_at": meta.get("trained_at"), "profile": meta.get("profile")}


# ------------------------------------------------------------------- records from answers


def _opt_int(v) -> int | None:
    return None if v is None else int(v)


def _opt_float(v) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def _opt_moments(us) -> list[int | None]:
    """Microseconds as ints, NAT (no such moment) as None: NULL in the log."""
    return [None if v == NAT else v for v in np.asarray(us, dtype=np.int64).tolist()]


def _lanes(origin, destination) -> list[str]:
    return [f"{o} → {d}" for o, d in zip(np.asarray(origin).tolist(), np.asarray(destination).tolist())]


def eta_records(out: dict, ship: dict, source: str, alias: str, version: str, confidence) -> list[dict]:
    """One log entry per ETA answer: ``out`` from ``ModelBundle.predict_columns``, ``ship``
    the shipments' contract columns (same order; ``promised_at`` in microseconds, the
    promise the request carried, logged as ``requested_promise``)."""
    n = len(out["as_of"])
    customers = ship.get("customer_id")
    reasons = out.get("reasons")
    own = {**{k: _opt_moments(out[k]) for k in ("eta_p10", "eta_p50", "eta_p90", "promise_at")},  # none: likely lost
           "promise_confidence": np.broadcast_to(np.asarray(confidence, dtype=float), n).tolist(),
           "requested_promise": [None] * n if ship.get("promised_at") is None else _opt_moments(ship["promised_at"]),
           "late_probability": [_opt_float(v) for v in np.asarray(out["late_probability"], dtype=float).tolist()]}
    return _records("eta", (source, alias, version), out["as_of"], ship,
                    ids=np.asarray(ship["shipment_id"]).tolist(),
                    customers=[None] * n if customers is None else [_text(c) for c in customers],
                    own=own, reasons=[None] * n if reasons is None else [_reasons(r, "effect_hours") for r in reasons])


def churn_records(out: dict, shipment_ids, source: str, alias: str, version: str, customer_ids=None) -> list[dict]:
    """One log entry per churn answer: ``out`` from ``ModelBundle.score_churn``; ``customer_ids``
    as the requests named them (the service scores a customer named twice under two copy
    names, which must not reach the log)."""
    n = len(out["churn_risk"])
    reasons = out.get("reasons")
    return _records("churn", (source, alias, version), out["as_of"], out,
                    ids=[_text(v) for v in np.asarray(shipment_ids).tolist()],
                    customers=np.asarray(out["customer_id"] if customer_ids is None else customer_ids).tolist(),
                    own={"churn_risk": np.asarray(out["churn_risk"], dtype=float).tolist()},
                    reasons=[_reasons(r, "effect_log_odds") for r in reasons] if reasons is not None and len(reasons)
                    else [None] * n)


#: the fields only one kind of answer fills; the other kind logs them as None
ANSWER_FIELDS = ("eta_p10", "eta_p50", "eta_p90", "promise_at", "promise_confidence", "late_probability", "churn_risk",
                 "requested_promise")


def _records(kind: str, run: tuple[str, str, str], as_of, delivery: dict, ids: list, customers: list,
             own: dict[str, list], reasons: list) -> list[dict]:
    """Log entries in the log's column order: who answered (``run``: source, alias,
    version), the shipment and its lane (carrier, service and regions from ``delivery``),
    the moment, the kind's ``own`` answer fields and the reasons."""
    source, alias, version = run
    now, at = now_us(), np.asarray(as_of, dtype=np.int64).tolist()
    carrier, service = np.asarray(delivery["carrier"]).tolist(), np.asarray(delivery["service_level"]).tolist()
    lanes = _lanes(delivery["origin_region"], delivery["destination_region"])
    blank = dict.fromkeys(ANSWER_FIELDS)
    return [{"logged_at": now, "source": source, "alias": alias, "model_version": version, "kind": kind,
             "shipment_id": ids[i], "customer_id": customers[i], "carrier": carrier[i], "service_level": service[i],
             "lane": lanes[i], "as_of": at[i], **blank, **{k: v[i] for k, v in own.items()}, "reasons": reasons[i]}
            for i in range(len(at))]


def _text(v) -> str | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def _reasons(items, effect: str) -> str | None:
    """The reasons as compact JSON: feature and effect (the words are the spec's)."""
    if not items:
        return None
    return json.dumps([[r["feature"], r.get(effect)] for r in items])
