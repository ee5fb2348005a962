"""Two checkouts of Eddy served side by side, one client alternating between them.

``serve_latency.py`` compares Eddy with the floor inside one run; two commits measured
in separate runs a minute apart differ by this machine's phase more than by their
code. Here both servers run at once (each from its own checkout, the same bundle) and
one client sends blocks of live ``/eta`` requests with reasons to each in turn, so
drift falls on both alike. Prints each one's p50 and p99 (ms).

Usage: .venv/bin/python benchmarks/serve_ab.py BEFORE_DIR AFTER_DIR --bundle DIR [--blocks 16] [--block 100]
(e.g. ``git worktree add /tmp/before <commit>`` for BEFORE_DIR).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_latency import requests_from, start  # noqa: E402


def serve(root: Path, bundle: Path, metrics: str) -> tuple[str, subprocess.Popen]:
    """The service of the checkout ``root`` (its own code first on the path) serving ``bundle``."""
    env = {**os.environ, "PYTHONPATH": str(root), "EDDY_BUNDLE_DIR": str(bundle), "PROMETHEUS_MULTIPROC_DIR": metrics}
    return start("serving.service:Eddy", env, cwd=root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--block", type=int, default=100)
    args = ap.parse_args()
    bodies = requests_from(args.data, 1000, live=True)
    servers = {}
    try:
        for name, root in (("before", args.before), ("after", args.after)):
            servers[name] = serve(root.resolve(), args.bundle.resolve(), tempfile.mkdtemp(prefix=f"eddy-ab-{name}-"))
        latencies = {name: [] for name in servers}
        with httpx.Client(timeout=30) as client:
            for url, _ in servers.values():  # warm-up
                for b in bodies[:args.block]:
                    client.post(url + "/eta", json={"shipment": b}).raise_for_status()
            for k in range(args.blocks):
                for name in (list(servers) if k % 2 == 0 else list(servers)[::-1]):
                    for i in range(args.block):
                        t = time.perf_counter()
                        r = client.post(servers[name][0] + "/eta", json={"shipment": bodies[(k * args.block + i) % len(bodies)]})
                        latencies[name].append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
    finally:
        for _, proc in servers.values():
            proc.terminate()
    for name, lat in latencies.items():
        print(f"{name} ({getattr(args, name)}): /eta with reasons, 1 client, {len(lat)} requests  "
              f"p50 {np.percentile(lat, 50):.2f} ms, p99 {np.percentile(lat, 99):.2f} ms")


if __name__ == "__main__":
    main()
