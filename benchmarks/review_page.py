"""How fast the CX review pages load in a real browser, with 10,000+ scored customers.

Target (issue 6): a page loads in under a second for 10,000 scored customers. Scores the
default data set with a window long enough for at least 10,000 customers, serves it,
and times each page in Debian's Chromium (Playwright): navigation start to the load
event, charts drawn. With --screenshots DIR it also saves the README's screenshots.

Usage: .venv/bin/python benchmarks/review_page.py [--data data/sets/demo] [--screenshots docs/screenshots]
(the champion comes from the MLflow store; run `make demo` or `eddy train` first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.serve_latency import start  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def timed(page, url: str, wait_for: str | None = None) -> float:
    t = time.perf_counter()
    page.goto(url, wait_until="load")
    if wait_for:
        page.wait_for_selector(wait_for)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    ap.add_argument("--window-days", type=float, default=400)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    scores = Path(tempfile.mkdtemp(prefix="eddy-review-bench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDDY_SCORES_DIR": str(scores),
           "EDDY_DATABASE_URL": f"sqlite:///{scores / 'predictions.db'}",  # not the live prediction log
           "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="eddy-prom-")}
    env.pop("EDDY_REVIEW_TOKEN", None)
    subprocess.run([str(Path(sys.executable).parent / "eddy"), "score-customers", str(args.data),
                    "--window-days", str(args.window_days)], env=env, check=True)
    url, proc = start("serving.service:Eddy", env)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 860})
            cold = timed(page, f"{url}/review")
            customers = page.inner_text("#scoring-meta")
            pages = {
                "list (sorted by risk)": (f"{url}/review", None),
                "list, filtered (risk >= 0.8, ups)": (f"{url}/review?min_risk=0.8&carrier=ups", None),
                "list, page 20": (f"{url}/review?page=20", None),
                "customer detail": (None, "#reasons-chart[data-drawn=true]"),
                "what drives loyalty": (f"{url}/review/drivers", "#importance-chart[data-drawn=true]"),
            }
            first_customer = page.locator("#at-risk a.customer").first.get_attribute("href")
            results = {}
            for name, (target, wait) in pages.items():
                target = target or f"{url}{first_customer}"
                results[name] = statistics.median(timed(page, target, wait) for _ in range(7))
            t = time.perf_counter()
            csv = httpx.get(f"{url}/review/export.csv", timeout=60)
            export_ms = (time.perf_counter() - t) * 1000
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                page.goto(f"{url}/review?min_risk=0.5")
                page.screenshot(path=str(args.screenshots / "review-list.png"))
                page.goto(f"{url}{first_customer}")
                page.wait_for_selector("#reasons-chart[data-drawn=true]")
                page.screenshot(path=str(args.screenshots / "review-customer.png"), full_page=True)
                page.goto(f"{url}/review/drivers")
                page.wait_for_selector("#importance-chart[data-drawn=true]")
                page.screenshot(path=str(args.screenshots / "review-drivers.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"scoring: {customers}")
    print(f"first load after start (reads the scoring)   {cold:7.0f} ms")
    for name, ms in results.items():
        print(f"{name:44s} {ms:7.0f} ms (median of 7, to the load event, charts drawn)")
    print(f"CSV export of every customer ({len(csv.content) / 1e6:.1f} MB)      {export_ms:7.0f} ms")


if __name__ == "__main__":
    main()
