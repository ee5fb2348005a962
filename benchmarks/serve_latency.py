"""Latency and throughput of the real service on loopback, beside the floor and in-process.

Judged against the floor: an empty BentoML service with the same request schemas,
measured the same way in the same run (issue 10, 2 cores): /eta with reasons at 1 client
within 5 ms (p50) and 15 ms (p99) of the floor; at 8 clients at least half the floor's
throughput and at most twice its p99; /churn at 1 client within 10 ms (p50) of the
floor's /churn. In-process: one shipment with reasons <= 3 ms; 1,000 shipments <= 100 ms
without reasons and <= 1 s with them. Start-up and resident memory are reported.

Both services run at once and are measured in alternating rounds (floor then Eddy,
Eddy then floor, ...; ``--rounds``, default 4), so this machine's drift over the
minute of a run falls on both alike; each figure pools its rounds.

Requests are the data set's last shipments moved to the days after its end, as live
traffic is (a live order is always later than the model's data); ``--in-history``
keeps them where they were (the point-in-time path).

Usage: .venv/bin/python benchmarks/serve_latency.py [--data data/sets/demo] [--bundle DIR]
[--in-process | --canned] (without --bundle the service loads the champion from the MLflow
store; --in-process starts no server and prints the in-process figures and one request's
stages, as the service's ``_predict`` runs them; --canned serves Eddy with one canned answer
per /eta, ``benchmarks/canned_service.py``, to show what its HTTP side alone costs beside the
floor). Every loop is bounded in count and sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
#: requests of 1,000 shipments timed per setting; the figure is their median
BATCH_RUNS = 5
BATCH_PAUSE_S = 2.0
sys.path.insert(0, str(ROOT))

from monitoring.replay import shipment_body  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (from /proc)."""
    total = 0
    pids = [pid]
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids += [int(c) for c in children]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def requests_from(data: Path, n: int, live: bool = True) -> list[dict]:
    all_ = pd.read_parquet(data / "shipments.parquet")
    s = all_.tail(n).copy()
    if live:  # whole days, so weekdays and hours stay as they were
        shift = (all_.ordered_at.max() - s.ordered_at.min()).ceil("D") + pd.Timedelta(days=1)
        s["ordered_at"], s["promised_at"] = s.ordered_at + shift, s.promised_at + shift
    return [shipment_body(r) for r in s.itertuples()]


def churn_bodies(shipments: list[dict], data: Path) -> list[dict]:
    """One /churn request per shipment: delivered two days after its order, by a known customer."""
    customers = pd.read_parquet(data / "shipments.parquet").customer_id.tail(len(shipments)).tolist()
    return [{"customer_id": c, "delivery": {**s, "delivered_at": (pd.Timestamp(s["ordered_at"]) + pd.Timedelta(days=2)).isoformat()}}
            for c, s in zip(customers, shipments)]


def load(url: str, bodies: list[dict], clients: int, total: int, key: str = "shipment") -> tuple[list[float], float]:
    """``total`` requests from ``clients`` threads; latencies in ms and requests/s."""
    def worker(k: int) -> list[float]:
        out = []
        with httpx.Client(timeout=30) as c:
            for i in range(k, total, clients):
                t = time.perf_counter()
                r = c.post(url, json={key: bodies[i % len(bodies)]})
                out.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = [x for part in pool.map(worker, range(clients)) for x in part]
    return lat, total / (time.perf_counter() - t0)


def start(target: str, env: dict, cwd: Path = ROOT) -> tuple[str, subprocess.Popen]:
    """``bentoml serve target`` (from the checkout ``cwd``) on a free loopback port, once /readyz answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Answers are logged as in production (its cost is part of the figure), but into a
    # database of the benchmark's own: replayed traffic is not the retailer's live accuracy.
    env = {"EDDY_DATABASE_URL": f"sqlite:///{tempfile.mkdtemp(prefix='eddy-bench-log-')}/predictions.db", **env}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", target, "--port", str(port)],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"{target} did not become ready")


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def measure(urls: dict[str, str], bodies: list[dict], churn: list[dict], n: int, rounds: int) -> dict:
    """The same measurements against services with Eddy's schemas (the floor and Eddy), in
    alternating rounds; per service and figure, the pooled latencies and requests/s."""
    for url in urls.values():  # warm-up
        load(f"{url}/eta", bodies, 2, 40)
        load(f"{url}/churn", churn, 1, 10, "request")
    plan = {"eta1": ("/eta", bodies, 1, n // 2, "shipment"), "eta8": ("/eta", bodies, 8, n, "shipment"),
            "churn1": ("/churn", churn, 1, n // 4, "request")}
    pooled = {name: {key: ([], 0.0) for key in plan} for name in urls}  # latencies, seconds
    for r in range(rounds):
        for name in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
            for key, (route, items, clients, total, field) in plan.items():
                lat, rps = load(urls[name] + route, items, clients, max(total // rounds, clients), field)
                done, seconds = pooled[name][key]
                pooled[name][key] = (done + lat, seconds + len(lat) / rps)
    return {name: {key: (lat, len(lat) / seconds) for key, (lat, seconds) in figures.items()}
            for name, figures in pooled.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds of floor and Eddy")
    ap.add_argument("--in-history", action="store_true", help="keep request times inside the data (point-in-time path)")
    ap.add_argument("--canned", action="store_true",
                    help="Eddy with one canned answer for every /eta (benchmarks/canned_service.py): its HTTP side alone")
    ap.add_argument("--in-process", action="store_true", help="only the in-process figures and stages, no servers")
    args = ap.parse_args()

    bodies = requests_from(args.data, 1000, live=not args.in_history)
    if args.in_process:
        bare(args, bodies)
        return
    churn = churn_bodies(bodies, args.data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.bundle:
        env["EDDY_BUNDLE_DIR"] = str(args.bundle)
    prom = Path(os.environ.get("TMPDIR", "/tmp")) / f"eddy-bench-prom-{os.getpid()}"
    prom.mkdir(exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)

    floor_url, floor = start("benchmarks.floor_service:Floor", env)
    t0 = time.perf_counter()
    try:
        url, proc = start("benchmarks.canned_service:Eddy" if args.canned else "serving.service:Eddy", env)
    except BaseException:
        floor.terminate()
        raise
    try:
        startup = time.perf_counter() - t0
        rss = tree_rss_mb(proc.pid)
        try:
            both = measure({"floor": floor_url, "eddy": url}, bodies, churn, args.requests, args.rounds)
        finally:
            floor.terminate()
            floor.wait(timeout=30)
        base, eddy = both["floor"], both["eddy"]
        plain = [{**b, "explain": False} for b in bodies]
        without, _ = load(f"{url}/eta", plain, 8, args.requests)
        batch_ms = {True: [], False: []}
        with httpx.Client(timeout=120) as c:
            for explain in (False, True):
                # encoded once: the client's own JSON encoding is not the service's time
                body = json.dumps({"shipments": [{**b, "explain": explain} for b in bodies[:1000]]}).encode()
                for _ in range(BATCH_RUNS):
                    # after a pause: the prediction log's writer has caught up with the
                    # answers before (its cost under load is in the client figures above)
                    time.sleep(BATCH_PAUSE_S)
                    t = time.perf_counter()
                    c.post(f"{url}/eta/batch", content=body, headers={"content-type": "application/json"}).raise_for_status()
                    batch_ms[explain].append((time.perf_counter() - t) * 1000)
        batches = httpx.get(f"{url}/status", timeout=10).json().get("eta_batches")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def line(name, lat, rps=None):
        return f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms" + (f", {rps:.0f} req/s" if rps else "")

    print(f"requests: {'inside the data (point in time)' if args.in_history else 'after the data end (live)'}")
    for key, label in (("eta1", "/eta with reasons, 1 client "), ("eta8", "/eta with reasons, 8 clients"),
                       ("churn1", "/churn, 1 client           ")):
        (fl, frps), (el, erps) = base[key], eddy[key]
        print(f"{label}  floor {line('', fl, frps)} | eddy {line('', el, erps)} | "
              f"p50 +{pct(el, 50) - pct(fl, 50):.1f} ms, p99 +{pct(el, 99) - pct(fl, 99):.1f} ms, "
              f"p99 x{pct(el, 99) / pct(fl, 99):.2f}, throughput x{erps / frps:.2f}")
    print(f"/eta without reasons, 8 clients  eddy {line('', without)}")
    print(f"/eta/batch of 1,000              median {statistics.median(batch_ms[False]):.0f} ms without reasons, "
          f"{statistics.median(batch_ms[True]):.0f} ms with")
    print(f"micro-batching                   {batches}")
    print(f"start-up to ready                {startup:.1f} s, resident memory {rss:,.0f} MB")
    bare(args, bodies)


def eta_in_process(bundle, batch: list, explain: bool) -> dict:
    """What the service's _predict does for ``batch`` (ShipmentIn requests), without HTTP:
    request columns, features, models and, where ``explain``, reasons."""
    from serving.columns import columns_of

    ship, scans, moments = columns_of(batch)
    return bundle.predict_columns(bundle.shipment_rows(ship, scans, moments), np.full(len(batch), 0.95),
                                  np.full(len(batch), explain))


def bare(args, bodies: list[dict]) -> None:
    """The same code in-process, no HTTP: request columns, features, models, reasons."""
    from runtime.bundle import ModelBundle
    from runtime.registry import download_bundle
    from serving.schemas import ShipmentIn

    bundle = ModelBundle.load(args.bundle or download_bundle()[0])
    requests = [ShipmentIn(**b) for b in bodies]
    for explain in (True, False):
        times = []
        for r in requests[:300]:
            t = time.perf_counter()
            eta_in_process(bundle, [r], explain)
            times.append((time.perf_counter() - t) * 1000)
        print(f"in-process, one shipment {'with' if explain else 'without'} reasons  "
              f"p50 {pct(times, 50):.2f} ms, p99 {pct(times, 99):.2f} ms")
    # Caches swept (32 MB, past L2) before every other request, as a request's HTTP work
    # between model calls does in the server; alternating, so drift falls on both alike.
    sweep, times = np.ones(4_000_000), {True: [], False: []}
    for i, r in enumerate(requests[:600]):
        if i % 2:
            sweep.sum()
        t = time.perf_counter()
        eta_in_process(bundle, [r], True)
        times[bool(i % 2)].append((time.perf_counter() - t) * 1000)
    print(f"in-process, one shipment with reasons, caches swept before each / not (alternating)  "
          f"p50 {pct(times[True], 50):.2f} / {pct(times[False], 50):.2f} ms")
    # A lane the live rows do not hold yet (its statistics computed, then kept), alternating
    # with one they hold, as most are from load on (``features.history.LiveRows``).
    from features.history import LiveRows

    history, times = bundle.snapshot.history, {True: [], False: []}
    held = history.live_rows
    for i, r in enumerate(requests[:600]):
        history.live_rows = LiveRows() if i % 2 else held
        t = time.perf_counter()
        eta_in_process(bundle, [r], True)
        times[bool(i % 2)].append((time.perf_counter() - t) * 1000)
    history.live_rows = held
    print(f"in-process, one shipment with reasons, on a lane not held / held (alternating)  "
          f"p50 {pct(times[True], 50):.2f} / {pct(times[False], 50):.2f} ms")
    for explain in (False, True):
        t = time.perf_counter()
        eta_in_process(bundle, requests[:1000], explain)
        print(f"in-process, 1,000 shipments {'with' if explain else 'without'} reasons  {(time.perf_counter() - t) * 1000:.0f} ms")
    stages(bundle, bodies[:400])


def stages(bundle, bodies: list[dict]) -> None:
    """One /eta with reasons, stage by stage as the service's ``_predict`` runs them: what
    the models and features cost, and what the service adds around them (p50, ms)."""
    from runtime.predlog import eta_records
    from serving.columns import columns_of
    from serving.schemas import ShipmentIn
    from serving.service import Eddy

    names = ("read the body", "request columns", "features", "models and reasons", "answer", "log records", "JSON")
    took = {name: [] for name in names}
    for body in bodies:
        t = [time.perf_counter()]
        request = ShipmentIn(**body)
        t.append(time.perf_counter())
        ship, scans, moments = columns_of([request])
        t.append(time.perf_counter())
        rows = bundle.shipment_rows(ship, scans, moments)
        t.append(time.perf_counter())
        out = bundle.predict_columns(rows, np.array([request.confidence]), np.array([True]))
        t.append(time.perf_counter())
        answer = Eddy.inner._answer(request, out, 0, "1")
        t.append(time.perf_counter())
        eta_records(out, ship, "/eta", "champion", "1", [request.confidence])
        t.append(time.perf_counter())
        answer.model_dump_json()
        t.append(time.perf_counter())
        for name, a, b in zip(names, t, t[1:]):
            took[name].append((b - a) * 1000)
    print("one /eta with reasons by stage, p50 ms  " + ", ".join(f"{n} {pct(v[50:], 50):.2f}" for n, v in took.items()))


if __name__ == "__main__":
    main()
