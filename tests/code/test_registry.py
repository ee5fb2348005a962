"""The MLflow store and registry through the real commands: versions, aliases, promotion."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.simulate import SimConfig, simulate, write_truth
from data.write import write_data_set
from runtime.store import latest_run, read_scoring
from training.registry import compare, promotable, verdict_word

EDDY = str(Path(sys.executable).parent / "eddy")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    data = root / "data"
    sim = simulate(SimConfig(customers=1500, seed=17))
    write_data_set(sim.tables, data)
    write_truth(sim.truth, data)
    env = {**os.environ, "EDDY_MLRUNS_DIR": str(root / "mlruns"), "EDDY_SCORES_DIR": str(root / "scores")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return root, data, env


def eddy(env, *args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([EDDY, *args], capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    return r


def aliases(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
        return {a: str(v) for a, v in db.execute("select alias, version from registered_model_aliases").fetchall()}


def mlflow_metrics(root: Path, version: int = 1) -> dict[str, float]:
    """The metrics logged by the run that registered ``version``, read from the store."""
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
        run = db.execute("select run_id from model_versions where version = ?", (version,)).fetchone()[0]
        return dict(db.execute("select key, value from latest_metrics where run_uuid = ?", (run,)).fetchall())


def versions(root: Path) -> int:
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
        return db.execute("select count(*) from model_versions").fetchone()[0]


def test_commands_before_any_training_say_so(store):
    root, data, env = store
    r = eddy(env, "predict", str(data), "--out", str(root / "p.parquet"), check=False)
    assert r.returncode == 2 and "no model version has the alias 'champion' yet: run `eddy train DIR` first" in r.stderr


def test_first_training_is_champion_and_challenger_in_a_sqlite_store(store):
    root, data, env = store
    r = eddy(env, "train", str(data), "--report-dir", str(root / "report1"))
    assert "trained model version 1 (challenger, champion)" in r.stdout
    assert (root / "mlruns" / "mlflow.db").exists()
    assert aliases(root) == {"challenger": "1", "champion": "1"}
    report = (root / "report1" / "report.md").read_text()
    assert "Churn ROC-AUC" in report and "shap_churn_summary.png" in report
    headline = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| ")}
    metrics = mlflow_metrics(root)
    assert f"| {metrics['edd_in_transit_mae_days']:.3f} |" in headline["EDD MAE (days), in transit"]
    assert f"retailer's promise: {metrics['retailer_promise_on_time']:.3f}" in headline["Promise at 95%: on time"]
    assert (root / "report1" / "calibration_delay.png").stat().st_size > 1000


def test_predict_and_score_with_the_champion(store):
    root, data, env = store
    r = eddy(env, "predict", str(data), "--out", str(root / "p.parquet"))
    assert "with model version 1" in r.stdout
    p = pd.read_parquet(root / "p.parquet")
    ships = pd.read_parquet(data / "shipments.parquet")
    assert len(p) == len(ships)
    assert {"shipment_id", "eta_p10", "eta_p50", "eta_p90", "late_probability", "promise_at_95", "reasons"} <= set(p.columns)
    r = eddy(env, "predict", str(data), "--out", str(root / "t.csv"), "--as-of", "2026-02-20T00:00:00")
    t = pd.read_csv(root / "t.csv")
    assert len(t) > 0 and (t.as_of.str.startswith("2026-02-20")).all()
    r = eddy(env, "score-customers", str(data))
    stored = latest_run(root / "scores") / "latest.parquet"
    assert str(stored) in r.stdout
    s = pd.read_parquet(stored)
    assert s.customer_id.is_unique and s.churn_risk.between(0, 1).all()
    assert (s.churn_risk.diff().dropna() <= 0).all()  # sorted by risk
    end = ships.delivered_at.max()
    assert (pd.to_datetime(s.delivery_judged_at, utc=True) >= end - pd.Timedelta(days=61)).all()
    # every answer of both commands is in the prediction log, as the tables hold them
    with sqlite3.connect(root / "mlruns" / "eddy.db") as db:
        logged = pd.read_sql("select source, kind, shipment_id, customer_id, eta_p50, churn_risk, model_version "
                             "from predictions order by id", db)
    assert logged.groupby("source").size().to_dict() == {"predict": len(p) + len(t), "score-customers": len(s)}
    at_order = logged[logged.source == "predict"].drop_duplicates("shipment_id").set_index("shipment_id")  # first run
    assert (pd.to_datetime(at_order.eta_p50.reindex(p.shipment_id), unit="us", utc=True).to_numpy()
            == p.eta_p50.to_numpy()).all()
    scored = logged[logged.source == "score-customers"].set_index("customer_id").churn_risk
    assert np.allclose(scored.reindex(s.customer_id), s.churn_risk) and set(logged.model_version) == {"1"}
    # A window with nobody in it does not blank the review page's list; a file name the
    # writers have no format for is refused before any work.
    empty = eddy(env, "score-customers", str(data), "--as-of", "2031-01-01", check=False)
    assert empty.returncode == 2 and "nothing scored, and the review page keeps the list it has" in empty.stderr
    assert latest_run(root / "scores") / "latest.parquet" == stored
    stale = eddy({**env, "EDDY_PREDICTION_LOG": "0"}, "predict", str(data), "--out", str(root / "stale.parquet"),
                 "--as-of", "2031-01-01", "--no-reasons")  # not logged: the next test counts the log's answers
    assert "days after the data's last fact" in stale.stderr and "with model version 1" in stale.stdout
    xlsx = eddy(env, "predict", str(data), "--out", str(root / "p.xlsx"), check=False)
    assert xlsx.returncode == 2 and "must end in .parquet or .csv" in xlsx.stderr and not (root / "p.xlsx").exists()


def test_predict_and_score_on_a_cluster_answer_as_in_process(store):
    """`--cluster` through the real commands, on a scheduler started apart (as in
    production): parts written, every answer the one the in-process command gave (the
    run above), and logged like it."""
    from eddy.cluster import connect

    root, data, env = store
    with connect("local", say=lambda _: None, n_workers=2, memory_limit="3GiB") as client:
        address = client.scheduler.address
        r = eddy(env, "predict", str(data), "--out", str(root / "p-parts"), "--cluster", address)
        assert f"Dask: scheduler {address}" in r.stdout and "on the cluster to" in r.stdout
        s = eddy(env, "score-customers", str(data), "--out", str(root / "s-parts"), "--cluster", address)
    parts = pd.read_parquet(root / "p-parts").sort_values("shipment_id").reset_index(drop=True)
    p = pd.read_parquet(root / "p.parquet").sort_values("shipment_id").reset_index(drop=True)
    assert len(list((root / "p-parts").glob("part-*.parquet"))) >= 2
    pd.testing.assert_frame_equal(p, parts[p.columns])
    scored = pd.read_parquet(root / "s-parts")
    stored = pd.read_parquet(latest_run(root / "scores") / "latest.parquet")
    assert f"scored {len(stored):,} customers" in s.stdout
    assert (scored.churn_risk.diff().dropna() <= 0).all()  # riskiest first, across parts
    key = lambda t: t.drop(columns="scored_at").sort_values("customer_id").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(stored), key(scored))
    with sqlite3.connect(root / "mlruns" / "eddy.db") as db:
        logged = pd.read_sql("select source, shipment_id, customer_id from predictions", db)
    by_source = logged.groupby("source").size().to_dict()
    assert by_source["score-customers"] == 2 * len(stored) and by_source["predict"] == 2 * len(p) + len(pd.read_csv(root / "t.csv"))
    assert logged[logged.source == "score-customers"].shipment_id.notna().all()


def test_a_second_tuned_training_is_only_the_challenger_and_promotion_follows_the_rule(store):
    """The second training also tunes and runs on a LocalCluster (one training fewer keeps
    the suite under 15 minutes): its Optuna trials are nested runs, its boosters come from
    `lightgbm.dask`, and it is only the challenger, as good as the first by the rule."""
    root, data, env = store
    r = eddy(env, "train", str(data), "--tune", "1", "--report-dir", str(root / "report2"), "--horizon-days", "90",
             "--cluster", "local")
    assert "Dask: local cluster of" in r.stdout and "trained model version 2 (challenger)" in r.stdout
    assert aliases(root) == {"challenger": "2", "champion": "1"}
    with sqlite3.connect(root / "mlruns" / "mlflow.db") as db:
        nested = db.execute("select count(*) from tags where key = 'mlflow.parentRunId'").fetchone()[0]
    assert nested >= 3  # a trial for each of the three models
    r = eddy(env, "promote", check=False)
    if r.returncode == 0:
        assert "promoted version 2 to champion" in r.stdout and aliases(root)["champion"] == "2"
    else:
        assert r.returncode == 1 and "kept version 1 as champion" in r.stdout and aliases(root)["champion"] == "1"
        eddy(env, "promote", "--force")
        assert aliases(root)["champion"] == "2"


def test_a_failed_training_leaves_the_registry_as_it_was(store, tmp_path):
    root, data, env = store
    before_aliases, before_versions = aliases(root), versions(root)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "shipments.csv").write_text("shipment_id\nS1\n")
    r = eddy(env, "train", str(broken), check=False)
    assert r.returncode == 2 and "missing required columns" in r.stderr
    assert aliases(root) == before_aliases and versions(root) == before_versions


def test_compare_rules():
    """Promotion needs a measurable gain: better beyond a tolerance on one model, worse on none."""
    champ = {"edd_mae_days": 1.0, "delay_brier": 0.10, "churn_roc_auc": 0.70}
    level = compare(champ, {"edd_mae_days": 1.005, "delay_brier": 0.1005, "churn_roc_auc": 0.699})
    assert all(v["not_worse"] and not v["better"] for v in level.values()) and not promotable(level)
    assert not promotable(compare(champ, champ))  # the same model again is no reason to switch
    verdict = compare(champ, {"edd_mae_days": 1.2, "delay_brier": 0.09, "churn_roc_auc": 0.71})
    assert not verdict["edd"]["not_worse"] and verdict["delay"]["better"] and verdict["churn"]["better"]
    assert not promotable(verdict)  # better on two does not buy worse on one
    one_gain = compare(champ, {"edd_mae_days": 0.98, "delay_brier": 0.1005, "churn_roc_auc": 0.699})
    assert [verdict_word(v) for v in one_gain.values()] == ["better", "level", "level"] and promotable(one_gain)
    lost = compare(champ, {"edd_mae_days": 0.9, "delay_brier": 0.09})
    assert not lost["churn"]["not_worse"] and not promotable(lost)  # a model lost is worse
    gained = compare({"edd_mae_days": 1.0}, {"edd_mae_days": 1.0, "delay_brier": 0.1})
    assert gained["delay"]["better"] and promotable(gained)  # a model gained is better



@pytest.mark.slow
def test_a_scoring_killed_at_any_moment_leaves_the_old_or_the_new_one_whole(store):
    """SIGKILL at random moments of `eddy score-customers`: the review pages' store is
    always a complete scoring (the previous one or the new one), never a mix or a
    truncated file."""
    import signal
    import time

    root, data, env = store
    eddy(env, "score-customers", str(data))
    before = read_scoring(root / "scores")
    rng = np.random.default_rng(11)
    for delay in rng.uniform(2.0, 9.0, 3):
        proc = subprocess.Popen([str(EDDY), "score-customers", str(data)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = read_scoring(root / "scores")
        assert len(now.table) == len(before.table) and now.table.churn_risk.between(0, 1).all()
        assert set(now.history.customer_id) <= set(now.table.customer_id) and now.drivers["customers"] == len(now.table)
    eddy(env, "score-customers", str(data))  # the next complete run prunes what the killed ones left
    assert len(list((root / "scores" / "runs").iterdir())) <= 4
    assert not list((root / "scores" / "runs").rglob("*.partial"))


def test_nothing_accepted_or_nothing_selected_is_said_plainly(store, tmp_path):
    """Every shipment quarantined: validate, train, backtest and features stop with the reason (exit 2, no
    traceback); a selection with nothing in it predicts and scores to empty tables."""
    root, data, env = store
    bad = tmp_path / "all-bad"
    bad.mkdir()
    ships = pd.read_parquet(data / "shipments.parquet").head(40)
    ships["carrier"] = None
    ships.to_parquet(bad / "shipments.parquet", index=False)
    for command in ("validate", "train", "backtest", "features"):
        extra = ("--out", str(tmp_path / "f.parquet")) if command == "features" else ()
        r = eddy(env, command, str(bad), *extra, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "no shipment in" in r.stderr and "40 quarantined: carrier: required value missing (40)" in r.stderr
    assert (bad / "_quarantine" / "shipments.csv").exists()
    temp = tmp_path / "tmp"  # the commands below download the champion: nothing of it may stay behind
    temp.mkdir()
    env = {**env, "TMPDIR": str(temp)}
    r = eddy(env, "predict", str(data), "--as-of", "1800-01-01", "--out", str(tmp_path / "p.parquet"))
    assert "predicted 0 shipments" in r.stdout
    assert {"eta_p50", "promise_at_95", "reasons"} <= set(pd.read_parquet(tmp_path / "p.parquet").columns)
    r = eddy(env, "score-customers", str(data), "--as-of", "1800-01-01", "--out", str(tmp_path / "s.parquet"))
    assert "scored 0 customers" in r.stdout and len(pd.read_parquet(tmp_path / "s.parquet")) == 0
    assert [p.name for p in temp.iterdir() if p.name.startswith("eddy-")] == []
