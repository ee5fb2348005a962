"""The real BentoML server end to end: answers, equivalence with batch prediction, bad input, readiness."""

from __future__ import annotations

import json
import time

import httpx
import pandas as pd
import pytest

from monitoring.replay import shipment_body

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory, Server, env_with):
    result, ds = trained
    root = tmp_path_factory.mktemp("serve")
    bundle_dir = result.bundle.save(root / "7")
    # The prediction log's SQLite file is capped small: it fills up during this module, and
    # the last test shows that a full database costs no answer (answers never wait for it).
    server = Server(env_with(root, EDDY_BUNDLE_DIR=str(bundle_dir), EDDY_DATABASE_MAX_MB="0.2"))
    yield server, result.bundle, ds
    logs = server.stop()
    # Every request above was answered without a 5xx; rejected requests are one warning
    # line naming the fields, with no traceback and none of the values sent.
    assert "status=5" not in logs, [line for line in logs.splitlines() if "status=5" in line][:5]
    assert "Traceback" not in logs, logs[-3000:]
    rejected = [line for line in logs.splitlines() if "rejected request" in line]
    assert all("(fields: " in line or "ValidationError" not in line for line in rejected), rejected[:3]
    assert SECRET not in logs


SECRET = "customer-7f3a-never-logged"


def test_churn_answers_equal_score_customers_for_the_same_deliveries(served):
    """`/churn` and `eddy score-customers` (``runtime.batch.score_data_set``) for the same
    deliveries after the snapshot: a known customer's parcel, late with an exception, a
    known customer's on time, and a new customer's. The same risk, percentile, days late
    and orders so far: the service looks the customer up, the command builds the history
    from the data set, through the same feature code."""
    from data.load import DataSet
    from runtime.batch import score_data_set

    server, bundle, ds = served
    end = bundle.snapshot.end
    known = ds["shipments"].customer_id.dropna().drop_duplicates().tail(2).tolist()
    base = ds["shipments"].iloc[-1]
    cases = [(known[0], 3, 9), (known[1], 1, 4), ("someone-new-after", 2, 5)]  # (customer, day ordered, day delivered)
    rows = []
    for k, (customer, ordered_day, delivered_day) in enumerate(cases):
        ordered = end.floor("D") + pd.Timedelta(days=ordered_day, hours=10)
        rows.append(base.copy().rename(None).to_frame().T.assign(
            shipment_id=f"AFTER-S{k}", order_id=f"AFTER-O{k}", customer_id=customer, ordered_at=ordered,
            shipped_at=ordered + pd.Timedelta(hours=20), promised_at=ordered + pd.Timedelta(days=5),
            delivered_at=ordered + pd.Timedelta(days=delivered_day - ordered_day, hours=3)))
    ships = pd.concat(rows, ignore_index=True).astype(ds["shipments"].dtypes.to_dict())
    exception_at = ships.ordered_at.iloc[0] + pd.Timedelta(days=2)
    scans = ds["scans"].iloc[:0].copy()
    scans = pd.concat([scans, pd.DataFrame({"shipment_id": ["AFTER-S0"], "scanned_at": [exception_at], "event": ["exception"]})],
                      ignore_index=True).astype(ds["scans"].dtypes.to_dict())
    moment = end.floor("D") + pd.Timedelta(days=12)
    batch = score_data_set(bundle, DataSet(ds.folder, {"shipments": ships, "scans": scans}, {}, {}), as_of=moment,
                           window_days=11).table.set_index("customer_id")
    assert {c for c, _, _ in cases} <= set(batch.index) and batch.index.is_unique
    for k, (customer, _, _) in enumerate(cases):
        row = ships.iloc[k]
        delivery = {**shipment_body(row), "shipped_at": row.shipped_at.isoformat(),
                    "delivered_at": row.delivered_at.isoformat(),
                    "scans": [{"scanned_at": exception_at.isoformat(), "event": "exception"}] if k == 0 else []}
        r = httpx.post(f"{server.url}/churn", json={"request": {"customer_id": customer, "delivery": delivery,
                                                                  "as_of": moment.isoformat()}}, timeout=30)
        assert r.status_code == 200, r.text
        got, want = r.json(), batch.loc[customer]
        assert got["churn_risk"] == pytest.approx(want.churn_risk, abs=1e-6), customer
        assert got["risk_percentile"] == pytest.approx(want.risk_percentile, abs=0.051), customer
        assert got["orders_so_far"] == want.orders_so_far and got["days_late"] == pytest.approx(want.days_late, abs=1e-3)
        assert got["known_customer"] is (k < 2)
    assert batch.loc[known[0], "days_late"] > 0 > batch.loc[known[1], "days_late"]


def test_eta_equals_the_batch_prediction_for_the_same_shipment(served):
    """`/eta` against `eddy predict`'s function (``runtime.batch.predict_data_set``) for the
    same shipments at order time."""
    from data.load import DataSet
    from runtime.batch import predict_data_set

    server, bundle, ds = served
    ships = ds["shipments"].tail(5)
    expected = predict_data_set(bundle, DataSet(ds.folder, {"shipments": ships}, {}, {})).rename(
        columns={"promise_at_95": "promise_at"})
    for (_, row), (_, exp) in zip(ships.iterrows(), expected.iterrows()):
        r = httpx.post(f"{server.url}/eta", json={"shipment": shipment_body(row)}, timeout=30)
        assert r.status_code == 200, r.text
        got = r.json()
        for col in ("eta_p10", "eta_p50", "eta_p90", "promise_at"):
            assert abs(pd.Timestamp(got[col]) - exp[col]) < pd.Timedelta(seconds=1), col
        assert got["late_probability"] == pytest.approx(exp.late_probability, abs=1e-9)
        assert got["model_version"] == "7"
        assert [g["feature"] for g in got["reasons"]] == [e["feature"] for e in exp.reasons]
        assert all(g["text"] for g in got["reasons"])


def test_batch_answers_in_order_and_equals_single_calls(served):
    server, _, ds = served
    reqs = [shipment_body(r) for _, r in ds["shipments"].tail(4).iterrows()]
    batch = httpx.post(f"{server.url}/eta/batch", json={"shipments": reqs}, timeout=60)
    assert batch.status_code == 200, batch.text
    answers = batch.json()
    assert [a["shipment_id"] for a in answers] == [r["shipment_id"] for r in reqs]
    single = httpx.post(f"{server.url}/eta", json={"shipment": reqs[2]}, timeout=30).json()
    assert answers[2]["eta_p50"] == single["eta_p50"]


def test_concurrent_single_requests_each_get_their_own_answer(served):
    """Concurrent /eta calls are micro-batched; each must still get the answer for its shipment."""
    from concurrent.futures import ThreadPoolExecutor

    server, _, ds = served
    reqs = [shipment_body(r) for _, r in ds["shipments"].tail(24).iterrows()]
    reqs[5]["explain"] = False
    reqs[6]["confidence"] = 0.8
    expected = httpx.post(f"{server.url}/eta/batch", json={"shipments": reqs}, timeout=60).json()
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: httpx.post(f"{server.url}/eta", json={"shipment": r}, timeout=60).json(), reqs))
    assert [g["shipment_id"] for g in got] == [r["shipment_id"] for r in reqs]
    assert [g["eta_p50"] for g in got] == [e["eta_p50"] for e in expected]
    assert [g["promise_at"] for g in got] == [e["promise_at"] for e in expected]
    assert got[5]["reasons"] == [] and len(got[4]["reasons"]) == 3 and got[6]["promise_confidence"] == 0.8
    status = httpx.get(f"{server.url}/status", timeout=10).json()
    assert status["eta_batches"]["shipments"] >= 24


def test_a_value_the_model_never_saw_is_named_in_the_answer(served):
    server, _, ds = served
    req = shipment_body(ds["shipments"].iloc[-1])
    known = httpx.post(f"{server.url}/eta", json={"shipment": req}, timeout=30).json()
    shouted = httpx.post(f"{server.url}/eta", json={"shipment": {**req, "carrier": req["carrier"].upper()}},
                         timeout=30).json()
    assert known["unseen"] == [] and shouted["unseen"] == ["carrier"] and shouted["confidence"] == "low"


def test_scans_so_far_move_the_eta(served):
    server, _, ds = served
    req = shipment_body(ds["shipments"].iloc[-1])
    start = pd.Timestamp(req["ordered_at"])
    at_order = httpx.post(f"{server.url}/eta", json={"shipment": req}, timeout=30).json()
    req["scans"] = [{"scanned_at": (start + pd.Timedelta(hours=30)).isoformat(), "event": "picked_up"},
                    {"scanned_at": (start + pd.Timedelta(hours=70)).isoformat(), "event": "out_for_delivery",
                     "region": req["destination_region"]}]
    later = httpx.post(f"{server.url}/eta", json={"shipment": req}, timeout=30).json()
    assert pd.Timestamp(later["as_of"]) > pd.Timestamp(at_order["as_of"])
    assert pd.Timestamp(later["eta_p90"]) - pd.Timestamp(later["eta_p10"]) < \
        pd.Timestamp(at_order["eta_p90"]) - pd.Timestamp(at_order["eta_p10"])


def test_a_parcel_silent_for_months_is_likely_lost_with_no_dates_and_its_batch_twin_agrees(served):
    """A parcel ordered 90 days before the data's end with no news since: 200, no made-up
    dates, late for sure, one reason saying why; the batch command's answer is the same."""
    server, bundle, ds = served
    row = ds["shipments"].iloc[-1].copy()
    row["ordered_at"] = bundle.snapshot.end - pd.Timedelta(days=90)
    row["promised_at"] = row.ordered_at + pd.Timedelta(days=7)
    req = {**shipment_body(row), "shipment_id": "LOST-1", "as_of": (bundle.snapshot.end + pd.Timedelta(days=1)).isoformat()}
    r = httpx.post(f"{server.url}/eta", json={"shipment": req}, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["likely_lost"] is True and got["late_probability"] == 1.0
    assert all(got[k] is None for k in ("eta_p10", "eta_p50", "eta_p90", "eta_p10_date", "eta_p50_date",
                                        "eta_p90_date", "promise_at"))
    [reason] = got["reasons"]
    assert reason["text"].startswith("likely lost: not handed to the carrier for 91 days") and reason["effect_hours"] is None
    ship = pd.DataFrame([{**row.to_dict(), "shipment_id": "LOST-1"}])
    moments = pd.DataFrame({"shipment_id": ["LOST-1"], "as_of": pd.Series([pd.Timestamp(req["as_of"])],
                                                                         dtype="datetime64[us, UTC]")})
    batch = bundle.predict_rows(bundle.shipment_rows(ship, None, moments)).iloc[0]
    assert batch.likely_lost and pd.isna(batch.eta_p50) and batch.reasons == got["reasons"]
    known = httpx.post(f"{server.url}/eta", json={"shipment": shipment_body(ds["shipments"].iloc[-1])}, timeout=30).json()
    assert known["likely_lost"] is False and known["eta_p50"] is not None


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("carrier"), "carrier"),
    (lambda r: r.update(weight_kg="heavy"), "weight_kg"),
    (lambda r: r.update(scans=[{"scanned_at": "2026-01-01T00:00:00Z", "event": "teleported"}]), "event"),
    (lambda r: r.update(shipped_at="2000-01-01T00:00:00Z"), "shipped_at is before ordered_at"),
    (lambda r: r.update(ordered_at="yesterday"), "ordered_at"),
    (lambda r: r.update(ordered_at="0001-01-01T16:01:00Z"), "must be between 1990-01-01 and 2100-01-01"),
    (lambda r: r.update(confidence=1.5), "confidence"),
    (lambda r: r.update(colour="red"), "colour"),
])
def test_bad_requests_get_a_400_naming_the_field(served, mutate, field):
    server, _, ds = served
    req = {**shipment_body(ds["shipments"].iloc[-1]), "customer_id": SECRET}
    mutate(req)
    r = httpx.post(f"{server.url}/eta", json={"shipment": req}, timeout=30)
    assert r.status_code == 400, r.text
    assert field in r.text and "Traceback" not in r.text


def test_oversized_batches_bodies_and_non_json_are_4xx(served):
    server, _, ds = served
    req = shipment_body(ds["shipments"].iloc[-1])
    too_many = httpx.post(f"{server.url}/eta/batch", json={"shipments": [req] * 1001}, timeout=60)
    assert too_many.status_code == 400 and "shipments" in too_many.text
    assert httpx.post(f"{server.url}/eta", content=b"not json", headers={"content-type": "application/json"},
                      timeout=30).status_code == 400
    huge = json.dumps({"shipment": {**req, "shipment_id": "x" * (10 * 1024 * 1024)}})
    r = httpx.post(f"{server.url}/eta", content=huge, headers={"content-type": "application/json"}, timeout=60)
    assert 400 <= r.status_code < 500


def test_models_readiness_and_metrics(served):
    server, bundle, _ = served
    models = httpx.get(f"{server.url}/models", timeout=10).json()
    assert models["version"] == "7" and models["models"] == {"edd": True, "delay": True, "churn": True}
    assert models["metrics"]["edd_mae_days"] == pytest.approx(bundle.meta["metrics"]["edd_mae_days"])
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "bentoml_service_request_duration_seconds" in metrics.text


def endpoints_in(metrics_text: str) -> set[str]:
    return {line.split('endpoint="')[1].split('"')[0] for line in metrics_text.splitlines() if 'endpoint="' in line}


def test_metrics_are_labelled_by_route_so_random_paths_add_no_series(served):
    """A scanner's 300 random URLs are one `other` series, not 300 histograms (BentoML's
    own metrics grew by a series per path: 4.2 MB after 1,000)."""
    server, _, ds = served
    assert httpx.post(f"{server.url}/eta", json={"shipment": shipment_body(ds["shipments"].iloc[-1])},
                      timeout=30).status_code == 200
    for i in range(300):
        assert httpx.get(f"{server.url}/probe-{i}/x{i}", timeout=10).status_code == 404
    httpx.get(f"{server.url}/review/customer/abc{i}", timeout=10)
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    seen = endpoints_in(text)
    assert {"/eta", "other"} <= seen and not any(e.startswith("/probe") for e in seen), seen
    assert all(e == "other" or e.startswith("/") and "abc" not in e for e in seen), seen
    other = [line for line in text.splitlines() if line.startswith("bentoml_service_request_total")
             and 'endpoint="other"' in line and 'http_response_code="404"' in line]
    assert len(other) == 1 and float(other[0].rsplit(" ", 1)[1]) >= 300, other


def test_a_batch_whose_client_goes_away_is_cancelled(served):
    """A client that hangs up mid-batch stops the work: the request is counted cancelled
    (and answered 499 to nobody), and the service goes on answering."""
    import socket
    import time as _time

    server, _, ds = served
    rows = ds["shipments"].tail(1000)
    scans = lambda r: [{"scanned_at": (r.ordered_at + pd.Timedelta(hours=h)).isoformat(), "event": "in_transit",  # noqa: E731
                        "region": r.origin_region} for h in range(1, 40)]
    batch = [{**shipment_body(r), "scans": scans(r), "as_of": (r.ordered_at + pd.Timedelta(hours=41)).isoformat()}
             for _, r in rows.iterrows()]
    body = json.dumps({"shipments": batch}).encode()
    before = httpx.get(f"{server.url}/status", timeout=30).json()["cancelled"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /eta/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        _time.sleep(0.3)
    deadline = _time.time() + 30
    while _time.time() < deadline and httpx.get(f"{server.url}/status", timeout=30).json()["cancelled"] == before:
        _time.sleep(0.2)
    assert httpx.get(f"{server.url}/status", timeout=30).json()["cancelled"] == before + 1
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert any(line.startswith("eddy_requests_cancelled_total") and 'endpoint="/eta/batch"' in line
               for line in metrics.splitlines()), metrics[-2000:]
    assert httpx.post(f"{server.url}/eta", json={"shipment": batch[0]}, timeout=30).status_code == 200


def test_churn_for_a_known_and_an_unknown_customer(served):
    server, _, ds = served
    row = ds["shipments"].iloc[-1]
    delivery = {**shipment_body(row), "delivered_at": (row.promised_at + pd.Timedelta(days=3)).isoformat(),
                "scans": [{"scanned_at": (row.ordered_at + pd.Timedelta(days=1)).isoformat(), "event": "exception"}]}
    known = httpx.post(f"{server.url}/churn", json={"request": {"customer_id": row.customer_id, "delivery": delivery}}, timeout=30)
    assert known.status_code == 200, known.text
    assert known.json()["known_customer"] is True and 0 <= known.json()["churn_risk"] <= 1
    assert 0 <= known.json()["risk_percentile"] <= 100 and 0 <= known.json()["actionable_share"] <= 1
    new = httpx.post(f"{server.url}/churn", json={"request": {"customer_id": "someone-new", "delivery": delivery}}, timeout=30).json()
    assert new["known_customer"] is False and new["orders_so_far"] == 1
    on_time = {**delivery, "delivered_at": (row.promised_at - pd.Timedelta(days=1)).isoformat(), "scans": []}
    batch = httpx.post(f"{server.url}/churn/batch", json={"requests": [
        {"customer_id": "someone-new", "delivery": delivery}, {"customer_id": row.customer_id, "delivery": delivery},
        {"customer_id": "someone-new", "delivery": on_time}]}, timeout=30)
    assert batch.status_code == 200, batch.text
    answers = batch.json()
    assert [a["customer_id"] for a in answers] == ["someone-new", row.customer_id, "someone-new"]
    assert answers[0]["churn_risk"] == pytest.approx(new["churn_risk"])
    assert answers[1]["churn_risk"] == pytest.approx(known.json()["churn_risk"])
    assert answers[2]["days_late"] < 0 < answers[0]["days_late"]
    # The moment scored is in the answer: just after the delivery, without an as_of.
    assert pd.Timestamp(new["as_of"]) == pd.Timestamp(delivery["delivered_at"]) + pd.Timedelta(seconds=1)
    # days_late is a float32: shown at its digits, not as its float64 copy's 17.
    assert all(len(repr(a["days_late"]).lstrip("-").replace(".", "").lstrip("0")) <= 7 for a in answers)
    # Each reason says whether the retailer can act on it, as the feature spec does.
    from features.spec import CHURN, feature
    reasons = [r for a in answers + [new] for r in a["reasons"]]
    assert reasons and all(r["actionable"] == feature(CHURN, r["feature"]).actionable for r in reasons)


def test_not_ready_without_a_champion_and_ready_after_a_restart_with_one(trained, tmp_path, Server, env_with):
    result, ds = trained
    empty = Server(env_with(tmp_path, EDDY_MLRUNS_DIR=str(tmp_path / "no-mlruns")))
    try:
        ready = httpx.get(f"{empty.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "not ready: no champion model loaded" in ready.text, ready.text
        status = httpx.get(f"{empty.url}/status", timeout=10)
        assert status.status_code == 503 and "no champion model loaded" in status.json()["reason"]
        req = shipment_body(ds["shipments"].iloc[-1])
        r = httpx.post(f"{empty.url}/eta", json={"shipment": req}, timeout=30)
        assert r.status_code == 503  # BentoML hides an API's 5xx message; /readyz and /status carry the reason
    finally:
        empty.stop()
    broken = tmp_path / "broken"
    result.bundle.save(broken)
    (broken / "edd" / "edd_q50.txt").write_text("not a model")
    bad = Server(env_with(tmp_path, EDDY_BUNDLE_DIR=str(broken)))
    try:
        ready = httpx.get(f"{bad.url}/readyz", timeout=10)
        assert ready.status_code == 503 and "edd_q50.txt" in ready.text, ready.text
        assert "no champion model loaded" in httpx.get(f"{bad.url}/status", timeout=10).json()["reason"]
    finally:
        bad.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzing_the_openapi_schema_never_gets_a_server_error(served, mode):
    """Property-based requests from the service's own OpenAPI document (schemathesis on
    hypothesis): valid and invalid bodies for every API; none may get a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    server, _, _ = served
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    statuses: dict[str, set[int]] = {}
    accepted: list[tuple[str, str]] = []
    operations = [r.ok() for r in schema.get_all_operations()]
    posts = [op for op in operations if op.method.upper() == "POST"]
    assert {op.path for op in posts} >= {"/eta", "/eta/batch", "/churn"}
    for op in posts:
        @settings(max_examples=55, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        def call(case):
            r = case.call(base_url=server.url, timeout=60)
            statuses.setdefault(op.path, set()).add(r.status_code)
            if r.status_code < 400:
                accepted.append((op.path, str(case.body)[:500]))  # named in the failure, to reproduce it
            assert r.status_code < 500, (op.path, r.status_code, r.text[:300])
            if r.status_code >= 400:
                assert "Traceback" not in r.text
        call()
    assert all(codes for codes in statuses.values()) and len(statuses) >= 3
    if mode == "negative":
        assert all(codes <= {400, 404, 405, 413, 415, 422} for codes in statuses.values()), (statuses, accepted[:3])


# ------------------------------------------------------------------ the front door


def test_bodies_are_strict_json_with_the_apis_one_key(served):
    """Unknown or duplicate keys, other content types and huge bodies are refused with a
    4xx naming the problem (BentoML alone would ignore them and answer 200)."""
    server, _, ds = served
    shipment = shipment_body(ds["shipments"].iloc[-1])
    url = f"{server.url}/eta"
    extra = httpx.post(url, json={"shipment": shipment, "as_of": "2026-01-01T00:00:00Z"}, timeout=30)
    assert extra.status_code == 400 and "unknown key(s) 'as_of'" in extra.json()["error"], extra.text
    body = json.dumps({"shipment": shipment})
    duplicate = httpx.post(url, content=body[:-1] + ', "shipment": {}}', headers={"content-type": "application/json"},
                           timeout=30)
    assert duplicate.status_code == 400 and "duplicate key 'shipment'" in duplicate.json()["error"]
    text = httpx.post(url, content=body, headers={"content-type": "text/plain"}, timeout=30)
    assert text.status_code == 415 and "application/json" in text.json()["error"]
    not_object = httpx.post(url, json=[shipment], timeout=30)
    assert not_object.status_code == 400 and "'shipment'" in not_object.json()["error"]
    huge = httpx.post(f"{server.url}/eta/batch", content=b'{"shipments": [' + b" " * (9 * 1024 * 1024) + b"]}",
                      headers={"content-type": "application/json"}, timeout=30)
    assert huge.status_code == 413 and "larger than 8 MB" in huge.json()["error"]
    ok = httpx.post(url, content=body, headers={"content-type": "application/json; charset=utf-8"}, timeout=30)
    assert ok.status_code == 200, ok.text
    spec = httpx.get(f"{server.url}/docs.json", timeout=30).json()
    bodies = [op["post"]["requestBody"]["content"]["application/json"]["schema"] for path, op in spec["paths"].items()
              if path in ("/eta", "/eta/batch", "/churn", "/churn/batch")]
    assert len(bodies) == 4 and all(b.get("additionalProperties") is False for b in bodies), bodies


def test_every_answer_has_security_headers_and_the_docs_are_offline(served):
    server, _, ds = served
    eta = httpx.post(f"{server.url}/eta", json={"shipment": shipment_body(ds["shipments"].iloc[-1])}, timeout=30)
    for r in (eta, httpx.get(f"{server.url}/review", timeout=30), httpx.get(f"{server.url}/nowhere", timeout=30)):
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(f"{server.url}/review", timeout=30).headers["cache-control"] == "no-store"
    root = httpx.get(f"{server.url}/", timeout=30)
    assert root.status_code == 307 and root.headers["location"] == "/docs"
    docs = httpx.get(f"{server.url}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "googletagmanager" not in docs.text
    assert "http" not in docs.text.replace("charset", "")  # every script and style is ours
    scripts = [s.split('"')[0] for s in docs.text.split('src="')[1:]]
    assert scripts and all(httpx.get(f"{server.url}{s}", timeout=30).status_code == 200 for s in scripts)


def test_overload_is_shed_with_503_and_retry_after(trained, tmp_path, Server, env_with):
    """Beyond EDDY_MAX_IN_FLIGHT concurrent prediction requests the rest are told to come
    back (503, Retry-After) at once; every other answer is a 200."""
    from concurrent.futures import ThreadPoolExecutor

    result, ds = trained
    server = Server(env_with(tmp_path, EDDY_BUNDLE_DIR=str(result.bundle.save(tmp_path / "7")), EDDY_MAX_IN_FLIGHT="2"))
    try:
        batch = [shipment_body(r) for _, r in ds["shipments"].tail(400).iterrows()]

        def call(_):
            with httpx.Client(timeout=60) as c:
                r = c.post(f"{server.url}/eta/batch", json={"shipments": batch})
                return r.status_code, r.headers.get("retry-after")

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(call, range(24)))
        codes = [c for c, _ in answers]
        assert set(codes) <= {200, 503} and codes.count(200) >= 2 and codes.count(503) >= 1, codes
        assert all(retry == "1" for c, retry in answers if c == 503)
        status = httpx.get(f"{server.url}/status", timeout=30).json()
        assert status["shed"] == codes.count(503) and status["in_flight"] == 0
    finally:
        logs = server.stop()
    assert "Traceback" not in logs


def test_impossible_timelines_are_refused_naming_the_field(served):
    server, _, ds = served
    row = ds["shipments"].iloc[-1]
    shipment = shipment_body(row)
    delivered = (row.ordered_at + pd.Timedelta(days=2)).isoformat()
    eta = httpx.post(f"{server.url}/eta", json={"shipment": {**shipment, "scans": [
        {"scanned_at": delivered, "event": "delivered"}]}}, timeout=30)
    assert 400 <= eta.status_code < 500 and "delivered" in eta.text and "scans[0]" in eta.text, eta.text
    delivery = {**shipment, "delivered_at": delivered}
    early = httpx.post(f"{server.url}/churn", json={"request": {"customer_id": "c", "delivery": delivery,
                       "as_of": (row.ordered_at - pd.Timedelta(days=1)).isoformat()}}, timeout=30)
    assert 400 <= early.status_code < 500 and "as_of is before delivery.ordered_at" in early.text
    backwards = httpx.post(f"{server.url}/churn", json={"request": {"customer_id": "c", "delivery": {
        **delivery, "shipped_at": (row.ordered_at + pd.Timedelta(days=3)).isoformat()}}}, timeout=30)
    assert 400 <= backwards.status_code < 500 and "delivered_at is before shipped_at" in backwards.text


def test_fuzzed_valid_bodies_with_an_extra_key_or_another_content_type_are_refused(served):
    """Schemathesis' valid bodies for every API, each sent once with an unknown top-level
    key (a 400 naming it) and once as text/plain (a 415): the strictness the README
    promises holds for any body the schema allows, not only the hand-written ones."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    server, _, _ = served
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    posts = [op for op in (r.ok() for r in schema.get_all_operations()) if op.method.upper() == "POST"]
    seen = set()
    for op in posts:
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=schemathesis.GenerationMode("positive")))
        def call(case):
            if not isinstance(case.body, dict):
                return
            url = f"{server.url}{op.path}"
            extra = httpx.post(url, json={**case.body, "explain_all": True}, timeout=60)
            assert extra.status_code == 400 and "'explain_all'" in extra.json()["error"], (op.path, extra.text[:300])
            text = httpx.post(url, content=json.dumps(case.body), headers={"content-type": "text/plain"}, timeout=60)
            assert text.status_code == 415, (op.path, text.status_code)
            seen.add(op.path)
        call()
    assert seen >= {"/eta", "/eta/batch", "/churn", "/churn/batch"}, seen


def test_a_full_prediction_log_costs_no_answer_and_is_reported(served):
    server, _, ds = served
    bodies = [shipment_body(r) for _, r in ds["shipments"].tail(1000).iterrows()]
    for _ in range(3):  # 3,000 answers: far more than the capped database holds
        r = httpx.post(f"{server.url}/eta/batch", json={"shipments": bodies}, timeout=120)
        assert r.status_code == 200 and len(r.json()) == 1000
    deadline = time.time() + 30
    while time.time() < deadline:
        log = httpx.get(f"{server.url}/status", timeout=10).json()["prediction_log"]
        if log["last_error"]:
            break
        time.sleep(0.5)
    assert log["ok"] is False and "full" in log["last_error"]
    assert log["pending"] + log["written"] + log["dropped"] >= 3000  # every answer kept or counted
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    counted = [float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("eddy_prediction_log_write_failures_total")]
    assert counted and counted[0] >= log["write_failures"] >= 1, (counted, log)
    assert httpx.post(f"{server.url}/eta", json={"shipment": bodies[0]}, timeout=30).status_code == 200
