"""The CX review pages in a real browser (Debian's Chromium driven by Playwright) against a real server."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest

from eddy import settings
from runtime.batch import score_data_set
from runtime.store import write_scoring

pytestmark = pytest.mark.slow
TOKEN = "review-token-for-tests"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Chromium as root in a closed network: no sandbox, no GPU, no calls home
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = settings.REPO_ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def review(trained, tmp_path_factory, Server, env_with):
    result, ds = trained
    root = tmp_path_factory.mktemp("review")
    result.bundle.meta["version"] = "7"
    scoring = score_data_set(result.bundle, ds, window_days=120)
    write_scoring(scoring, root / "scores")
    bundle_dir = result.bundle.save(root / "7")
    server = Server(env_with(root, EDDY_BUNDLE_DIR=str(bundle_dir), EDDY_SCORES_DIR=str(root / "scores"),
                             EDDY_REVIEW_TOKEN=TOKEN))
    yield server, scoring, ds
    logs = server.stop()
    # Customer identifiers never reach the service's log (pages are addressed by a keyed hash).
    leaked = [c for c in scoring.table.customer_id.head(200) if c in logs]
    assert not leaked, leaked[:5]
    assert "Traceback" not in logs


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_every_review_page_and_the_export_need_the_token_and_the_api_does_not(review):
    server, scoring, ds = review
    for path in ("/review", "/review/drivers", "/review/export.csv", "/review/customer/abc", "/review?min_risk=0.5"):
        r = httpx.get(server.url + path, timeout=10)
        assert r.status_code == 401, path
        assert scoring.table.customer_id.iloc[0] not in r.text
        assert httpx.get(server.url + path, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    ok = httpx.get(f"{server.url}/review", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    riskiest = scoring.table.sort_values(["churn_risk", "customer_id"], ascending=[False, True]).customer_id.iloc[0]
    assert ok.status_code == 200 and riskiest in ok.text
    assert httpx.get(f"{server.url}/models", timeout=10).status_code == 200
    bad = httpx.get(f"{server.url}/review?min_risk=lots", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert bad.status_code == 400 and "min_risk" in bad.text and "not a number" in bad.text


def test_the_review_pages_in_a_real_browser(review, browser, tmp_path):
    server, scoring, ds = review
    table = scoring.table
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)

    # The login form: a wrong token is refused, the right one leads to the list.
    page.goto(f"{server.url}/review")
    assert page.locator("#token").is_visible()
    page.fill("#token", "not-it")
    page.click("button[type=submit]")
    assert "not right" in page.inner_text("#login-error")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/review")

    # The list: the latest scoring, riskiest first, 50 a page.
    rows = page.locator("#at-risk tbody tr")
    assert rows.count() == min(50, len(table))
    risks = [float(x) for x in page.locator("#at-risk td.risk").evaluate_all("els => els.map(e => e.dataset.risk)")]
    assert risks == sorted(risks, reverse=True) and risks[0] == pytest.approx(table.churn_risk.max())
    assert f"{len(table):,} customers scored" in page.inner_text("#scoring-meta")
    assert "model version 7" in page.inner_text("#scoring-meta")
    page.screenshot(path=str(SHOTS / "review-list.png"), full_page=False)

    # Reasons a CX agent can act on come first in each row, and are marked.
    from runtime.reasons import churn_actionable
    for tr in page.locator("#at-risk tbody tr").all()[:20]:
        marks = [("actionable" in (c or "")) for c in
                 tr.locator("td.why span.reason").evaluate_all("els => els.map(e => e.className)")]
        assert marks == sorted(marks, reverse=True)
    top = table.sort_values(["churn_risk", "customer_id"], ascending=[False, True]).iloc[0]
    first_row_marks = page.locator("#at-risk tbody tr").first.locator("td.why span.reason.actionable").count()
    assert first_row_marks == sum(churn_actionable(r["feature"]) for r in top.reasons)

    # A filter: minimum risk and a carrier; every row shown matches, the count is the table's.
    carrier = table.carrier.value_counts().index[0]
    page.fill("input[name=min_risk]", "0.5")
    page.select_option("select[name=carrier]", carrier)
    page.click("#apply")
    page.wait_for_load_state()
    expected = table[(table.churn_risk >= 0.5) & (table.carrier == carrier)]
    assert page.inner_text("#matching") == f"{len(expected):,}"
    shown = page.locator("#at-risk tbody tr")
    assert shown.count() == min(50, len(expected))
    if len(expected):
        carriers = page.locator("#at-risk tbody tr td:nth-child(6)").all_inner_texts()
        assert all(c.startswith(carrier) for c in carriers)

    # The CSV export of the filtered list equals the scored table under the same filter.
    with page.expect_download() as download:
        page.click("#export")
    csv = pd.read_csv(io.StringIO(Path(download.value.path()).read_text()))
    assert csv.customer_id.astype(str).tolist() == expected.sort_values(
        ["churn_risk", "customer_id"], ascending=[False, True]).customer_id.astype(str).tolist()
    assert csv.churn_risk.to_numpy() == pytest.approx(
        expected.sort_values(["churn_risk", "customer_id"], ascending=[False, True]).churn_risk.to_numpy())
    assert csv.risk_percentile.between(0, 100).all() and csv.actionable_share.between(0, 1).all()

    # A customer: risk, one bar per reason, and the order history.
    page.goto(f"{server.url}/review")
    first = page.locator("#at-risk a.customer").first
    customer_id = first.inner_text()
    first.click()
    page.wait_for_selector("#reasons-chart[data-drawn=true]")
    row = table[table.customer_id == customer_id].iloc[0]
    assert page.inner_text("#customer-id") == customer_id
    assert page.inner_text("#risk") == f"{100 * row.churn_risk:.1f}%"
    assert page.inner_text("#percentile") == f"{row.risk_percentile:,.0f}"
    assert f"{100 * row.actionable_share:.0f}%" in page.inner_text("#actionable-share")
    assert page.locator("#reasons-chart g.bar").count() == len(row.reasons)
    orders = scoring.history[scoring.history.customer_id == customer_id]
    assert page.locator("#history tbody tr").count() == max(len(orders), 1)
    assert customer_id not in page.url  # addressed by a keyed hash, not the id
    page.screenshot(path=str(SHOTS / "review-customer.png"), full_page=True)

    # What drives loyalty: global importance bars and the dependence plots.
    page.goto(f"{server.url}/review/drivers")
    page.wait_for_selector("#importance-chart[data-drawn=true]")
    assert page.locator("#importance-chart g.bar").count() == len(scoring.drivers["importance"])
    assert page.locator("#dependence-days_late circle").count() == len(scoring.drivers["dependence"]["days_late"]["x"])
    assert "version 7" in page.inner_text("#drivers-meta")
    assert f"{100 * scoring.drivers['actionable_share']:.0f}%" in page.inner_text("#actionable-share")
    page.screenshot(path=str(SHOTS / "review-drivers.png"), full_page=True)
    page.close()


def test_no_scoring_yet_says_what_to_run(trained, tmp_path, Server, env_with):
    result, _ = trained
    server = Server(env_with(tmp_path, EDDY_BUNDLE_DIR=str(result.bundle.save(tmp_path / "b")),
                             EDDY_SCORES_DIR=str(tmp_path / "empty")))
    try:
        r = httpx.get(f"{server.url}/review", timeout=10)
        assert r.status_code == 200 and "eddy score-customers" in r.text
    finally:
        server.stop()


def test_sign_in_is_per_login_forgery_proof_rate_limited_and_never_a_500(review):
    """Non-ASCII credentials are refused (not a 500), the form needs its anti-forgery
    value, each sign-in gets its own signed session, and guessing is slowed to 5 a minute."""
    server, scoring, ds = review
    url = f"{server.url}/review"
    with httpx.Client(timeout=10) as c:
        assert c.get(url, headers={"Authorization": "Bearer jöhn".encode()}).status_code == 401
        assert c.get(url, headers={"Cookie": "eddy_review=sésame.1.2".encode()}).status_code == 401
        bad_date = c.get(f"{url}?since=NaT", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad_date.status_code == 400 and "since" in bad_date.text
        assert c.post(f"{url}/login", data={"token": TOKEN, "next": "/review"}).status_code == 403  # no form value

    def sign_in(token: str) -> httpx.Response:
        with httpx.Client(timeout=10) as c:
            form = c.get(f"{url}/login")
            csrf = form.text.split('name="csrf" value="')[1].split('"')[0]
            return c.post(f"{url}/login", data={"token": token, "csrf": csrf, "next": "/review"})

    first, second = sign_in(TOKEN), sign_in(TOKEN)
    assert first.status_code == second.status_code == 303
    a, b = first.cookies["eddy_review"], second.cookies["eddy_review"]
    assert a != b and "Max-Age=28800" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
    assert httpx.get(url, cookies={"eddy_review": a}, timeout=10).status_code == 200
    payload, signature = a.rsplit(".", 1)
    forged = payload.rsplit(".", 1)[0] + ".9999999999." + signature  # a later expiry, same signature
    assert httpx.get(url, cookies={"eddy_review": forged}, timeout=10).status_code == 401
    codes = [sign_in("wrönG").status_code for _ in range(6)]
    refused = codes.index(429) if 429 in codes else len(codes)  # earlier tests' wrong tries count too
    assert 1 <= refused <= 5 and set(codes[:refused]) == {401} and set(codes[refused:]) == {429}, codes
    limited = sign_in(TOKEN)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
