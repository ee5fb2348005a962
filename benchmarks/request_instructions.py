"""CPU instructions one in-process /eta or /churn request costs, counted by valgrind, not timed.

On a shared 2-core machine the in-process milliseconds move by half from one run to the
next; instructions do not (the same count on a loaded or idle machine). This counts
what the service's model call executes for one live request (request columns, features,
the four boosters, TreeSHAP reasons, the reason sentences): valgrind's callgrind runs
the same script three times, loading only, then ``--requests`` single requests with
reasons and without, and the difference over the requests is the cost of one
(``--endpoint churn``: a /churn request, a delivery two days after its order by a known
customer, as ``serve_latency.py`` sends). It says
nothing of memory stalls (the boosters' trees do not stay in cache between requests),
which is why the timed figures in ``serve_latency.py`` stay the ones judged.

Usage: .venv/bin/python benchmarks/request_instructions.py [--bundle DIR] [--requests 200] [--endpoint eta|churn]
(needs Debian's valgrind; about 8 minutes on 2 cores). ``--one`` is the child's part.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one(bundle_dir: Path, data: Path, n: int, explain: bool, endpoint: str) -> None:
    """The counted part: load, one warm-up request, then ``n`` single requests."""
    from benchmarks.serve_latency import churn_bodies, eta_in_process, requests_from
    from runtime.bundle import ModelBundle
    from serving.columns import deliveries_of
    from serving.schemas import ChurnIn, ShipmentIn

    bundle = ModelBundle.load(bundle_dir)
    bodies = requests_from(data, n + 1)
    if endpoint == "churn":  # as the service's _churn does for one request
        for r in [ChurnIn(**b) for b in churn_bodies(bodies, data)]:
            ship, scans, moments = deliveries_of([r])
            bundle.score_churn(bundle.churn_rows(ship, scans, moments), explain)
        return
    for r in [ShipmentIn(**b) for b in bodies]:  # a batch of one each
        eta_in_process(bundle, [r], explain)


def counted(bundle_dir: Path, data: Path, n: int, explain: bool, endpoint: str, out: Path) -> int:
    """Instructions valgrind counted for one child run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__, "--one",
           str(bundle_dir), str(data), str(n), str(int(explain)), endpoint]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    found = re.findall(r"Collected : (\d+)", run.stderr)
    if not found:
        raise SystemExit("valgrind printed no instruction count:\n" + run.stderr[-2000:])
    return int(found[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--endpoint", choices=["eta", "churn"], default="eta")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        bundle_dir, data, n, explain, endpoint = args.one
        return one(Path(bundle_dir), Path(data), int(n), explain == "1", endpoint)

    if args.bundle is None:
        from runtime.registry import download_bundle
        args.bundle = download_bundle()[0]
    runs = {"load only": (0, True), "with reasons": (args.requests, True), "without reasons": (args.requests, False)}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:  # two children at a time: 2 cores
        # Not counted: numba's cache is keyed by the CPU, and valgrind's differs from the
        # machine's, so the first child under valgrind compiles the TreeSHAP loop; after
        # this run every counted child reads it from the cache alike.
        counted(args.bundle, args.data, 0, True, args.endpoint, Path(tmp) / "warm.out")
        futures = {name: pool.submit(counted, args.bundle, args.data, n, explain, args.endpoint, Path(tmp) / f"{k}.out")
                   for k, (name, (n, explain)) in enumerate(runs.items())}
        total = {name: f.result() for name, f in futures.items()}
    base = total["load only"]
    for name in ("with reasons", "without reasons"):
        per = (total[name] - base) / args.requests
        print(f"one /{args.endpoint} request {name:16s} {per / 1e6:6.2f} M instructions ({args.requests} requests counted)")


if __name__ == "__main__":
    main()
