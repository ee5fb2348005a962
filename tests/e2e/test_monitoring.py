"""Live monitoring end to end: a real server logging to a real database (SQLite, then
PostgreSQL), traffic replayed from a simulated data set's later months, a carrier slowed
in the export, ``eddy monitor``, the page in Chromium, the challenger in shadow and
``eddy promote --live``."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data.known import known_at
from data.write import write_data_set
from monitoring.replay import churn_requests, eta_requests, slow_down
from runtime.bundle import ModelBundle

pytestmark = pytest.mark.slow

EDDY = str(Path(sys.executable).parent / "eddy")
TOKEN = "monitor-token"
SLOW_AFTER_DAYS = 21  # the carrier slows this long after the replayed traffic starts
REPLAY_DAYS = 75


def register(bundle: ModelBundle, folder: Path) -> str:
    import mlflow

    from runtime.registry import configure
    from training.registry import register as register_run

    configure()
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(bundle.save(folder)), artifact_path="bundle")
    return str(register_run(run.info.run_id).version)


@pytest.fixture(scope="module")
def world(trained, tmp_path_factory):
    """Version 1 (champion) is the trained bundle; version 2 (challenger) the same with its
    ETAs a third later, so its answers differ and are worse."""
    result, ds = trained
    root = tmp_path_factory.mktemp("monitoring")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDDY_MLRUNS_DIR", str(root / "mlruns"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert register(result.bundle, root / "v1") == "1"
        challenger = ModelBundle.load(root / "v1")
        challenger.edd.level_shift_ = {k: v + 0.3 for k, v in challenger.edd.level_shift_.items()}
        assert register(challenger, root / "v2") == "2"
    s = ds["shipments"]
    start = (s.ordered_at.max() - pd.Timedelta(days=REPLAY_DAYS)).floor("D")
    carrier = s.carrier.value_counts().index[0]
    slow_from = start + pd.Timedelta(days=SLOW_AFTER_DAYS)
    export = root / "export"
    # the retailer's export two weeks after the slow-down began
    write_data_set(known_at(slow_down(ds, carrier, slow_from), slow_from + pd.Timedelta(days=14)).tables, export)
    return {"root": root, "ds": ds, "bundle": result.bundle, "start": start, "carrier": carrier, "export": export,
            "env": {"EDDY_MLRUNS_DIR": str(root / "mlruns"), "EDDY_DATABASE_URL": f"sqlite:///{root / 'eddy.db'}"}}


def posted(url: str, key: str, bodies: list[dict], size: int = 250) -> list[dict]:
    """Every body sent in batches; the answers in order."""
    answers = []
    for i in range(0, len(bodies), size):
        r = httpx.post(url, json={key: bodies[i:i + size]}, timeout=120)
        assert r.status_code == 200, r.text[:300]
        answers += r.json()
    return answers


def replay(url: str, ds, since: pd.Timestamp, churn_from: pd.Timestamp, churn_until: pd.Timestamp) -> dict:
    """ETA requests at order time for shipments ordered since ``since``; churn requests after
    deliveries ordered in [churn_from, churn_until) (their horizon has passed)."""
    s = ds["shipments"]
    later = s[s.ordered_at >= since].sort_values("ordered_at")
    bodies = eta_requests(later)
    answers = posted(f"{url}/eta/batch", "shipments", bodies)
    churn_bodies = churn_requests(s[(s.ordered_at >= churn_from) & (s.ordered_at < churn_until)])
    churn_answers = posted(f"{url}/churn/batch", "requests", churn_bodies)
    one = httpx.post(f"{url}/eta", json={"shipment": bodies[0]}, timeout=30)
    assert one.status_code == 200
    return {"eta": answers, "eta_bodies": bodies, "churn": churn_answers, "churn_bodies": churn_bodies,
            "single": one.json()}


def settled(url: str, expected: int, timeout: float = 90) -> dict:
    """/status once the log has written ``expected`` answers and nothing waits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = httpx.get(f"{url}/status", timeout=10).json()
        log, shadow = status["prediction_log"], status.get("shadow") or {}
        if log["written"] >= expected and log["pending"] == 0 and not shadow.get("backlog"):
            return status
        time.sleep(0.5)
    pytest.fail(f"the prediction log did not settle: {status}")


def eddy(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([EDDY, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def served(world, tmp_path_factory, Server, env_with):
    root = tmp_path_factory.mktemp("monitor-serve")
    server = Server(env_with(root, **world["env"], EDDY_SHADOW="challenger", EDDY_SHADOW_RATE="1",
                             EDDY_REVIEW_TOKEN=TOKEN))
    ds, start = world["ds"], world["start"]
    traffic = replay(server.url, ds, start, start - pd.Timedelta(days=160), start - pd.Timedelta(days=110))
    answered = len(traffic["eta"]) + len(traffic["churn"]) + 1
    status = settled(server.url, 2 * answered)  # every answer twice: champion, and challenger in shadow
    yield server, traffic, status
    logs = server.stop()
    assert "Traceback" not in logs, logs[-2000:]
    assert traffic["eta"][5]["shipment_id"] not in logs  # ids go to the database, never to the server log


@pytest.fixture(scope="module")
def monitored(world, served, tmp_path_factory):
    out = tmp_path_factory.mktemp("monitor-out") / "live.csv"
    done = eddy(["monitor", str(world["export"]), "--out", str(out)], world["env"])
    assert done.returncode == 0, done.stdout + done.stderr
    return pd.read_csv(out, keep_default_na=False, na_values=[""]), done.stdout


def test_every_answer_is_logged_once_per_alias_and_the_shadow_changes_none(world, served):
    server, traffic, status = served
    assert status["shadow"]["version"] == "2" and status["shadow"]["failures"] == 0
    assert status["prediction_log"]["dropped"] == 0 and status["prediction_log"]["ok"]
    # the champion's answers, as eddy predict gives them, whatever the challenger said
    from runtime.batch import predict_data_set
    ds = world["ds"]
    ids = [a["shipment_id"] for a in traffic["eta"]]
    direct = predict_data_set(world["bundle"], type(ds)(ds.folder, {**ds.tables, "shipments": ds["shipments"][
        ds["shipments"].shipment_id.isin(ids)]}, {}, {}), explain=False).set_index("shipment_id")
    served_p50 = pd.to_datetime(pd.Series({a["shipment_id"]: a["eta_p50"] for a in traffic["eta"]}), utc=True, format="ISO8601")
    assert (served_p50 == direct.eta_p50.reindex(served_p50.index)).all()
    from sqlalchemy import create_engine, text
    with create_engine(world["env"]["EDDY_DATABASE_URL"]).connect() as conn:
        rows = pd.DataFrame(conn.execute(text(
            "select alias, model_version, source, kind, shipment_id, eta_p50, requested_promise from predictions")).fetchall(),
            columns=["alias", "model_version", "source", "kind", "shipment_id", "eta_p50", "requested_promise"])
    counts = rows.groupby(["alias", "model_version", "source"]).size().to_dict()
    assert counts == {("champion", "1", "/eta/batch"): len(traffic["eta"]), ("champion", "1", "/churn/batch"): len(traffic["churn"]),
                      ("champion", "1", "/eta"): 1, ("challenger", "2", "/eta/batch"): len(traffic["eta"]),
                      ("challenger", "2", "/churn/batch"): len(traffic["churn"]), ("challenger", "2", "/eta"): 1}
    eta = rows[(rows.kind == "eta") & (rows.source == "/eta/batch")].pivot(index="shipment_id", columns="alias", values="eta_p50")
    logged = pd.to_datetime(eta.champion, unit="us", utc=True)
    assert (logged == served_p50.reindex(logged.index)).all()  # the log holds what the client got
    assert (eta.challenger > eta.champion).mean() > 0.95  # the challenger's own (later) answers, logged apart
    # each answer's log keeps the promise its request carried (replay sends the export's)
    asked = rows[(rows.kind == "eta") & (rows.alias == "champion")].set_index("shipment_id").requested_promise
    promised = ds["shipments"].drop_duplicates("shipment_id").set_index("shipment_id").promised_at.reindex(asked.index)
    assert promised.notna().sum() > 10
    assert (pd.to_datetime(asked[promised.notna()].astype("int64"), unit="us", utc=True) == promised.dropna()).all()
    assert asked[promised.isna()].isna().all()


def test_live_figures_equal_the_metrics_computed_from_the_answers_and_the_export(world, monitored, served):
    table, _ = monitored
    _, traffic, _ = served
    s = world["export"]
    from data.load import load_data_set
    export = load_data_set(s)["shipments"].set_index("shipment_id")
    rows = []
    for a in traffic["eta"] + [traffic["single"]]:  # every logged answer, the single /eta call too
        delivered = export.delivered_at.get(a["shipment_id"])
        if delivered is None or pd.isna(delivered):
            continue
        at = pd.Timestamp(a["as_of"])
        rows.append({"week": (at - pd.Timedelta(days=at.weekday())).strftime("%Y-%m-%d"),
                     "err": abs((pd.Timestamp(a["eta_p50"]) - delivered) / pd.Timedelta(days=1)),
                     "inside": pd.Timestamp(a["eta_p10"]) <= delivered <= pd.Timestamp(a["eta_p90"])})
    direct = pd.DataFrame(rows).groupby("week").agg(mae=("err", "mean"), coverage=("inside", "mean"), n=("err", "size"))
    live = table[(table.alias == "champion") & table.carrier.isna() & table.lane.isna() & (table.metric != "advice")].pivot(
        index="week", columns="metric", values="value")
    n = table[(table.alias == "champion") & table.carrier.isna() & (table.metric == "edd_mae_days")].set_index("week").n
    assert len(direct) >= 4
    assert np.allclose(live.edd_mae_days.reindex(direct.index), direct.mae, atol=1e-6)
    assert np.allclose(live.coverage_80.reindex(direct.index), direct.coverage)
    assert (n.reindex(direct.index) == direct.n).all()
    # churn: no order within the champion's 90-day horizon after the moment, straight from the orders
    orders = load_data_set(s)["shipments"][["customer_id", "ordered_at"]]
    judged = []
    for body, a in zip(traffic["churn_bodies"], traffic["churn"]):
        moment = pd.Timestamp(body["delivery"]["delivered_at"]) + pd.Timedelta(seconds=1)  # no as_of: just after
        theirs = orders[(orders.customer_id == body["customer_id"]) & (orders.ordered_at > moment)].ordered_at
        judged.append({"week": (moment - pd.Timedelta(days=moment.weekday())).strftime("%Y-%m-%d"),
                       "churned": float(not (theirs <= moment + pd.Timedelta(days=90)).any()), "risk": a["churn_risk"]})
    judged = pd.DataFrame(judged)
    churn = table[(table.alias == "champion") & table.carrier.isna() & (table.metric == "churn_auc")].set_index("week")
    assert churn.n.sum() == len(judged) and len(churn) >= 4
    for week, part in judged.groupby("week"):
        if part.churned.nunique() == 2:
            assert churn.value[week] == pytest.approx(roc_auc_score(part.churned, part.risk))


def test_the_slowed_carrier_is_named_and_drift_is_measured(world, monitored):
    table, printed = monitored
    advice = table[table.metric == "advice"]
    named = advice[(advice.alias == "champion") & (advice.carrier == world["carrier"])]
    assert len(named) and any(t.startswith(f"retrain: coverage for {world['carrier']} ") for t in named.text), printed
    assert f"retrain: coverage for {world['carrier']}" in printed
    assert not advice[(advice.alias == "champion") & advice.carrier.notna() & (advice.carrier != world["carrier"])
                      & (advice.text.str.contains("coverage"))].shape[0]  # the other carriers hold
    psi = table[table.metric.str.startswith("psi_edd@at_order:")]
    assert len(psi) and psi.value.ge(0).all() and set(psi.alias) == {"champion", "challenger"}
    shap = table[table.metric.str.startswith("mean_abs_shap_edd@at_order:")]
    assert shap.reference.notna().all()
    import sqlite3  # the run is on record in MLflow, with its table and advice
    with sqlite3.connect(world["root"] / "mlruns" / "mlflow.db") as db:
        runs = db.execute("select run_uuid from tags where key = 'eddy.kind' and value = 'monitor'").fetchall()
        logged = dict(db.execute("select key, value from metrics where run_uuid = ?", runs[-1]).fetchall())
    assert runs and 0 < logged["champion_coverage_80"] <= 1


def test_the_monitor_page_and_the_gauges(world, served, monitored):
    server, _, _ = served
    from playwright.sync_api import sync_playwright
    assert httpx.get(f"{server.url}/review/monitor", timeout=30).status_code == 401  # same sign-in as the review pages
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu",
                                    "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
        page.goto(f"{server.url}/review/monitor")
        page.wait_for_selector("#chart-coverage_80[data-drawn=true] svg")
        assert world["carrier"] in page.inner_text("#advice")
        series = page.locator("#chart-coverage_80 g.series").count()
        assert series == 2  # champion and challenger
        assert page.locator("#chart-coverage_80 g.reference").count() >= 1  # the test-window level
        assert page.locator("#worst-carriers tbody tr").count() >= 2
        assert page.locator("section.drift").count() >= 2
        browser.close()
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'eddy_live_figure{alias="champion",metric="coverage_80"}' in metrics
    written = [line for line in metrics.splitlines() if line.startswith("eddy_prediction_log_written_total")]
    assert written and float(written[0].split()[-1]) > 0


def test_promote_live_keeps_the_champion_when_the_shadow_challenger_is_worse(world, monitored):
    done = eddy(["promote", "--live", "--data", str(world["export"])], world["env"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "live requests compared: edd " in done.stdout and "kept version 1 as champion" in done.stdout
    assert "edd    mae_days" in done.stdout and "WORSE" in done.stdout
    no_data = eddy(["promote", "--live"], world["env"])
    assert no_data.returncode == 2 and "--data DIR" in no_data.stderr


def test_postgresql_log_and_a_database_that_goes_away(world, postgres, tmp_path, Server, env_with):
    env = {**world["env"], "EDDY_DATABASE_URL": postgres.url}
    server = Server(env_with(tmp_path, **env))
    try:
        s = world["ds"]["shipments"]
        bodies = eta_requests(s[s.ordered_at >= world["start"]].head(300))
        answers = httpx.post(f"{server.url}/eta/batch", json={"shipments": bodies}, timeout=120).json()
        settled(server.url, 300)
        from sqlalchemy import create_engine, text
        with create_engine(postgres.url).connect() as conn:
            got = dict(conn.execute(text("select shipment_id, eta_p50 from predictions")).fetchall())
        assert len(got) == 300
        assert all(pd.Timestamp(got[a["shipment_id"]], unit="us", tz="UTC") == pd.Timestamp(a["eta_p50"]) for a in answers)
        done = eddy(["monitor", str(world["export"]), "--no-drift"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        with create_engine(postgres.url).connect() as conn:
            assert conn.execute(text("select count(*) from monitor_figures")).scalar() > 10
        # the database goes away: answers go on, the status and the counters say so
        postgres.stop()
        for _ in range(3):
            r = httpx.post(f"{server.url}/eta/batch", json={"shipments": bodies[:50]}, timeout=30)
            assert r.status_code == 200 and r.json()[0]["eta_p50"] == answers[0]["eta_p50"]
        deadline = time.time() + 30
        while time.time() < deadline:
            log = httpx.get(f"{server.url}/status", timeout=10).json()["prediction_log"]
            if not log["ok"]:
                break
            time.sleep(0.5)
        assert log["ok"] is False and log["last_error"] and log["pending"] == 150
        failures = [line for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines()
                    if line.startswith("eddy_prediction_log_write_failures_total")]
        assert failures and float(failures[0].split()[-1]) >= 1
    finally:
        logs = server.stop()
    assert "Traceback" not in logs and bodies[7]["shipment_id"] not in logs
