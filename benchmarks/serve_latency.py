"""Latency and throughput of the real service on loopback, beside the bare models in-process.

Targets (issue 5, 2 cores): single /eta with reasons p50 <= 15 ms and p99 <= 50 ms at 8
concurrent clients, without reasons p99 <= 20 ms; /eta/batch of 1,000 <= 500 ms;
sustained throughput at p99 <= 100 ms reported; start-up time and resident memory.

Usage: .venv/bin/python benchmarks/serve_latency.py [--data data/sets/demo] [--bundle DIR]
(without --bundle the service loads the champion from the MLflow store). Every loop
is bounded in count and sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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


def requests_from(data: Path, n: int) -> list[dict]:
    s = pd.read_parquet(data / "shipments.parquet").tail(n)
    iso = lambda v: None if pd.isna(v) else pd.Timestamp(v).isoformat()  # noqa: E731
    return [{"shipment_id": r.shipment_id, "carrier": r.carrier, "service_level": r.service_level,
             "origin_region": r.origin_region, "destination_region": r.destination_region,
             "origin_postal": r.origin_postal, "destination_postal": r.destination_postal,
             "ordered_at": iso(r.ordered_at), "promised_at": iso(r.promised_at),
             "weight_kg": float(r.weight_kg), "value": float(r.value)} for r in s.itertuples()]


def load(url: str, bodies: list[dict], clients: int, total: int) -> tuple[list[float], float]:
    """``total`` requests from ``clients`` threads; latencies in ms and requests/s."""
    def worker(k: int) -> list[float]:
        out = []
        with httpx.Client(timeout=30) as c:
            for i in range(k, total, clients):
                t = time.perf_counter()
                r = c.post(url, json={"shipment": bodies[i % len(bodies)]})
                out.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        lat = [x for part in pool.map(worker, range(clients)) for x in part]
    return lat, total / (time.perf_counter() - t0)


def start(target: str, env: dict) -> tuple[str, subprocess.Popen]:
    """``bentoml serve target`` on a free loopback port, once /readyz answers 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", target, "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()

    bodies = requests_from(args.data, 1000)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.bundle:
        env["EDDY_BUNDLE_DIR"] = str(args.bundle)
    prom = Path(os.environ.get("TMPDIR", "/tmp")) / f"eddy-bench-prom-{os.getpid()}"
    prom.mkdir(exist_ok=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)

    floor_url, floor = start("benchmarks.floor_service:Floor", env)
    try:
        load(f"{floor_url}/eta", bodies, 2, 40)
        floor_lat, floor_rps = load(f"{floor_url}/eta", bodies, 8, args.requests)
    finally:
        floor.terminate()
        floor.wait(timeout=30)

    t0 = time.perf_counter()
    url, proc = start("serving.service:Eddy", env)
    try:
        startup = time.perf_counter() - t0
        load(f"{url}/eta", bodies, 2, 40)  # warm-up
        with_reasons, _ = load(f"{url}/eta", bodies, 8, args.requests)
        plain = [{**b, "explain": False} for b in bodies]
        without, _ = load(f"{url}/eta", plain, 8, args.requests)
        one_client, _ = load(f"{url}/eta", bodies, 1, args.requests // 2)
        batch_ms = []
        with httpx.Client(timeout=120) as c:
            for _ in range(5):
                t = time.perf_counter()
                c.post(f"{url}/eta/batch", json={"shipments": plain[:1000]}).raise_for_status()
                batch_ms.append((time.perf_counter() - t) * 1000)
        sustained = []
        for clients in (1, 2, 4, 8, 16):
            lat, rps = load(f"{url}/eta", plain, clients, args.requests)
            sustained.append((clients, rps, pct(lat, 99)))
        rss = tree_rss_mb(proc.pid)
        batches = httpx.get(f"{url}/status", timeout=10).json().get("eta_batches")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"floor (empty endpoint) p50 {pct(floor_lat, 50):.1f} ms, p99 {pct(floor_lat, 99):.1f} ms, {floor_rps:.0f} req/s "
          "(8 clients; BentoML + HTTP + this load generator, no model)")
    print(f"start-up to ready      {startup:.1f} s, resident memory {rss:,.0f} MB")
    print(f"/eta with reasons      p50 {pct(with_reasons, 50):.1f} ms, p99 {pct(with_reasons, 99):.1f} ms (8 clients)")
    print(f"/eta without reasons   p50 {pct(without, 50):.1f} ms, p99 {pct(without, 99):.1f} ms (8 clients)")
    print(f"/eta with reasons      p50 {pct(one_client, 50):.1f} ms, p99 {pct(one_client, 99):.1f} ms (1 client)")
    print(f"micro-batching         {batches}")
    print(f"/eta/batch of 1,000    median {statistics.median(batch_ms):.0f} ms (no reasons)")
    ok = [(c, r, p) for c, r, p in sustained if p <= 100]
    best = max(ok, key=lambda x: x[1]) if ok else None
    print("sustained              " + ", ".join(f"{c} clients {r:.0f} req/s p99 {p:.0f} ms" for c, r, p in sustained))
    print(f"throughput at p99<=100 {best[1]:.0f} req/s ({best[0]} clients)" if best else "throughput at p99<=100: none")
    bare(args)


def bare(args) -> None:
    """The same models in-process, no HTTP: the floor the service's overhead sits on."""
    from data.load import load_data_set
    from runtime.bundle import ModelBundle
    from runtime.registry import download_bundle
    from features.rows import order_moments

    bundle = ModelBundle.load(args.bundle or download_bundle()[0])
    s = load_data_set(args.data)["shipments"].tail(200)
    for explain in (True, False):
        times = []
        for i in range(len(s)):
            one = s.iloc[[i]]
            t = time.perf_counter()
            bundle.predict_rows(bundle.shipment_rows(one, None, order_moments(one)), explain=explain)
            times.append((time.perf_counter() - t) * 1000)
        print(f"bare, {'with' if explain else 'without'} reasons   p50 {pct(times, 50):.1f} ms, p99 {pct(times, 99):.1f} ms (one shipment, in-process)")
    big = load_data_set(args.data)["shipments"].tail(1000)
    t = time.perf_counter()
    bundle.predict_rows(bundle.shipment_rows(big, None, order_moments(big)), explain=False)
    print(f"bare, 1,000 shipments  {(time.perf_counter() - t) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
