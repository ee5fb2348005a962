"""The prediction log: the queue never blocks or fails an answer, the writer keeps what it can."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest
from sqlalchemy import func, select

from features.pit import NAT
from runtime.predlog import PredictionLog, engine_for, eta_records, masked, now_us, tables

UNREACHABLE = "postgresql+psycopg://eddy:secret@127.0.0.1:9/eddy"  # discard port: nothing listens


def entry(i: int, logged_at: int | None = None) -> dict:
    return {"logged_at": logged_at or now_us(), "source": "/eta", "alias": "champion", "model_version": "1",
            "kind": "eta", "shipment_id": f"s{i}", "customer_id": None, "carrier": "ups", "service_level": "ground",
            "lane": "north → south", "as_of": i, "eta_p10": i + 1, "eta_p50": i + 2, "eta_p90": i + 3,
            "promise_at": i + 4, "promise_confidence": 0.95, "late_probability": 0.1, "churn_risk": None,
            "reasons": None}


def count(url: str) -> int:
    with engine_for(url).connect() as conn:
        return conn.execute(select(func.count()).select_from(tables()[1])).scalar()


def test_answers_are_written_in_batches_to_sqlite_in_wal_mode(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, batch_size=500)
    log.put([entry(i) for i in range(1200)])
    log.note_model("1", {"metrics": {"edd_mae_days": 0.9, "not_kept": 1.0}, "horizon_days": 30})
    assert log.close(timeout=30)
    assert count(url) == 1200 and log.written == 1200 and log.dropped == 0
    assert sqlite3.connect(tmp_path / "log.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    from monitoring.live import read_predictions, read_versions
    back = read_predictions(engine_for(url))
    assert sorted(back.as_of) == list(range(1200)) and (back.eta_p90 - back.as_of == 3).all()
    assert read_versions(engine_for(url)) == {"1": {"metrics": {"edd_mae_days": 0.9}, "horizon_days": 30,
                                                    "data_end": None, "trained_at": None, "profile": None}}


def test_a_log_made_before_the_requested_promise_keeps_its_answers_and_gains_the_column(tmp_path):
    """A database written by an earlier version (no ``requested_promise``): opening it adds
    the column, empty, so its answers read back (with no requested promise) and new
    answers are written with theirs."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, logged_at BIGINT NOT NULL, "
                     "source VARCHAR(32) NOT NULL, alias VARCHAR(32) NOT NULL, model_version VARCHAR(64) NOT NULL, "
                     "kind VARCHAR(8) NOT NULL, shipment_id VARCHAR(128), customer_id VARCHAR(128), carrier VARCHAR(64), "
                     "service_level VARCHAR(64), lane VARCHAR(140), as_of BIGINT NOT NULL, eta_p10 BIGINT, "
                     "eta_p50 BIGINT, eta_p90 BIGINT, promise_at BIGINT, promise_confidence FLOAT, "
                     "late_probability FLOAT, churn_risk FLOAT, reasons TEXT)")
        conn.execute("INSERT INTO predictions (logged_at, source, alias, model_version, kind, shipment_id, as_of, "
                     "promise_at) VALUES (?, '/eta', 'champion', '1', 'eta', 'old', 5, 9)", (now_us(),))
    url = f"sqlite:///{path}"
    log = PredictionLog(url)
    log.put([{**entry(7), "requested_promise": 11}])
    assert log.close(timeout=30) and log.failures == 0
    from monitoring.live import read_predictions
    back = read_predictions(engine_for(url)).set_index("shipment_id")
    assert back.loc["old", "requested_promise"] == NAT and back.loc["old", "promise_at"] == 9
    assert back.loc["s7", "requested_promise"] == 11
    engine_for(url)  # opening it again changes nothing
    assert count(url) == 2


def test_a_full_queue_drops_the_oldest_and_counts_them_while_the_database_is_away():
    log = PredictionLog(UNREACHABLE, capacity=10, interval_s=0.05)
    started = time.perf_counter()
    for i in range(25):
        log.put([entry(i)])  # returns at once: the database is never waited for here
    assert time.perf_counter() - started < 5  # generous: a put is a lock and an append
    time.sleep(1.0)
    status = log.status()
    assert status["ok"] is False and status["write_failures"] >= 1
    assert status["dropped"] == 15 and status["pending"] == 10
    assert [e["as_of"] for e in log._queue] == list(range(15, 25))  # the newest kept
    assert "secret" not in status["database"] and "secret" not in (status["last_error"] or "")
    assert not log.close(timeout=0.5)


def test_a_batch_larger_than_the_queue_is_kept_whole(tmp_path):
    """A batch command's answers go in pieces the queue holds, each written before the
    next: 2,500 answers through a queue of 1,000 are all written, none dropped (``put``
    alone keeps the newest 1,000); a database that is away makes it say so in time."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, batch_size=100, capacity=1000, interval_s=0.05)
    assert log.put_all([entry(i) for i in range(2500)], timeout=30)
    assert log.close(timeout=30)
    assert count(url) == 2500 and log.written == 2500 and log.dropped == 0
    away = PredictionLog(UNREACHABLE, batch_size=100, capacity=1000, interval_s=0.05)
    assert not away.put_all([entry(i) for i in range(2500)], timeout=1.0)
    assert away.dropped == 0 and away.status()["pending"] == 1000  # the first piece waits; no later one went in
    away.close(timeout=0.5)


def test_a_full_database_fails_writes_not_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("EDDY_DATABASE_MAX_MB", "0.1")
    url = f"sqlite:///{tmp_path / 'small.db'}"
    log = PredictionLog(url, batch_size=200, capacity=3000, interval_s=0.05)
    for start in range(0, 3000, 200):
        log.put([entry(i) for i in range(start, start + 200)])
    time.sleep(2.0)
    status = log.status()
    assert status["write_failures"] >= 1 and "full" in status["last_error"]
    assert 0 < count(url) < 3000  # what fitted is kept; the rest waits in the bounded queue
    assert status["pending"] + status["written"] + status["dropped"] == 3000
    log.close(timeout=0.5)


def test_retention_deletes_old_answers_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    old = now_us() - 40 * 86_400_000_000
    log = PredictionLog(url, retention_days=30)
    log.put([entry(i, logged_at=old) for i in range(5)] + [entry(i) for i in range(5, 8)])
    log.close(timeout=30)
    log = PredictionLog(url, retention_days=30)  # a new writer applies the retention on its first write
    log.put([entry(9)])
    log.close(timeout=30)
    assert count(url) == 4


def test_records_from_answers_keep_ids_moments_and_reasons():
    out = {"as_of": np.array([10, 20]), "eta_p10": np.array([11, 21]), "eta_p50": np.array([12, 22]),
           "eta_p90": np.array([13, 23]), "promise_at": np.array([14, 24]), "late_probability": np.array([0.2, np.nan]),
           "reasons": [[{"feature": "carrier", "effect_hours": 3.0}], []]}
    ship = {"shipment_id": np.array(["a", "b"], dtype=object), "customer_id": np.array(["c1", None], dtype=object),
            "carrier": np.array(["ups", "dhl"], dtype=object), "service_level": np.array(["ground", "air"], dtype=object),
            "origin_region": np.array(["n", "s"], dtype=object), "destination_region": np.array(["e", "w"], dtype=object)}
    rec = eta_records(out, ship, "/eta/batch", "champion", "3", [0.9, 0.95])
    assert [r["requested_promise"] for r in rec] == [None, None]  # the requests carried no promise column
    rec = eta_records(out, {**ship, "promised_at": np.array([99, NAT])}, "/eta/batch", "champion", "3", [0.9, 0.95])
    assert [r["requested_promise"] for r in rec] == [99, None]
    assert [r["shipment_id"] for r in rec] == ["a", "b"] and rec[0]["lane"] == "n → e"
    assert rec[0]["reasons"] == '[["carrier", 3.0]]' and rec[1]["reasons"] is None
    assert rec[1]["late_probability"] is None and rec[1]["promise_confidence"] == 0.95
    assert rec[0]["customer_id"] == "c1" and rec[1]["customer_id"] is None


def test_a_password_never_shows():
    assert "secret" not in masked(UNREACHABLE) and "127.0.0.1:9" in masked(UNREACHABLE)


@pytest.mark.parametrize("bad", ["not a url", "sqlite:////proc/definitely/not/here.db"])
def test_a_bad_database_url_is_reported_not_raised(bad):
    log = PredictionLog(bad, interval_s=0.05)
    log.put([entry(1)])
    time.sleep(0.5)
    assert log.status()["ok"] is False and log.status()["last_error"]
    log.close(timeout=0.2)
