"""The prediction log's cost to the answers: /eta throughput at 8 clients, logging on and off.

Target (issue 13): with logging on, /eta throughput at 8 clients at least 0.9x of logging
off, measured in one run; no answer fails or waits because of the database. Both
services run side by side with the same model (one with ``EDDY_PREDICTION_LOG=0``, one
writing to a fresh SQLite file, or to ``--database-url``); rounds alternate between them
so drift in the machine's load hits both alike, and the median of the per-round ratios
is the figure. Afterwards the log must hold every answer the logging service gave.

Usage: .venv/bin/python benchmarks/prediction_log.py [--data data/sets/demo] [--bundle DIR]
  [--requests 1200] [--rounds 3] [--database-url URL]
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_latency import load, pct, requests_from, start  # noqa: E402


def env_for(tmp: Path, name: str, bundle: Path | None, **extra) -> dict:
    prom = tmp / f"prom-{name}"
    prom.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(prom), **extra}
    if bundle is not None:
        env["EDDY_BUNDLE_DIR"] = str(bundle)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    bodies = requests_from(args.data, 500)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        url_db = args.database_url or f"sqlite:///{tmp / 'eddy.db'}"
        off_url, off = start("serving.service:Eddy", env_for(tmp, "off", args.bundle, EDDY_PREDICTION_LOG="0"))
        on_url, on = start("serving.service:Eddy", env_for(tmp, "on", args.bundle, EDDY_DATABASE_URL=url_db))
        try:
            for url in (off_url, on_url):
                load(f"{url}/eta", bodies, 8, 200)  # warm-up
            ratios, rows = [], []
            for k in range(args.rounds):
                lat_off, rps_off = load(f"{off_url}/eta", bodies, 8, args.requests)
                lat_on, rps_on = load(f"{on_url}/eta", bodies, 8, args.requests)
                ratios.append(rps_on / rps_off)
                rows.append((k + 1, rps_off, pct(lat_off, 99), rps_on, pct(lat_on, 99)))
            time.sleep(1.0)
            log = httpx.get(f"{on_url}/status", timeout=10).json()["prediction_log"]
        finally:
            for proc in (off, on):
                proc.terminate()
                proc.wait(timeout=30)
    print("| round | off req/s | off p99 ms | on req/s | on p99 ms |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.0f} | {r[2]:.1f} | {r[3]:.0f} | {r[4]:.1f} |")
    answered = 200 + args.rounds * args.requests
    print(f"throughput with logging / without (median of {args.rounds} rounds): {statistics.median(ratios):.3f} "
          f"(target >= 0.9); every answer 200")
    print(f"log: {log['written']:,} written of {answered:,} answered, {log['dropped']} dropped, "
          f"{log['write_failures']} failed writes, database {log['database']}")


if __name__ == "__main__":
    main()
