"""Build at-order and in-transit features at 100k, 300k and 1M shipments.

Target: 1,000,000 shipments (about 8 million scans) in 60 s or less end to end on
2 cores with peak memory of 4 GB or less. Each size runs in a fresh process so its
peak memory is its own; the data sets are simulated first (not timed) and kept in
``benchmarks/results/`` for reruns.

Usage: .venv/bin/python benchmarks/features_scale.py [--sizes 100000 300000 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPMENTS_PER_CUSTOMER = 3.67


def ensure_data(shipments: int) -> Path:
    """The simulated set of about ``shipments`` shipments in ``benchmarks/results/``, with
    its truth (so ``eddy backtest`` can judge the oracle there too); simulated once."""
    folder = HERE / "results" / f"sim-{shipments}"
    if not (folder / "shipments.parquet").exists() or not (folder / "truth" / "shipments.parquet").exists():
        from data.simulate import SimConfig, simulate, write_truth
        from data.write import write_data_set

        sim = simulate(SimConfig(customers=int(shipments / SHIPMENTS_PER_CUSTOMER)))
        if not (folder / "shipments.parquet").exists():
            write_data_set(sim.tables, folder)
        write_truth(sim.truth, folder)
    return folder


def run_one(folder: Path) -> dict:
    from data.load import load_data_set
    from features.build import FeatureSnapshot, at_order, in_transit

    t0 = time.perf_counter()
    ds = load_data_set(folder)
    t1 = time.perf_counter()
    snap = FeatureSnapshot.fit(ds)
    rows = at_order(ds, snap)
    t2 = time.perf_counter()
    transit = in_transit(ds, snap, rows)
    t3 = time.perf_counter()
    return {
        "shipments": len(ds["shipments"]), "scans": len(ds["scans"]), "snapshots": len(transit),
        "load_s": t1 - t0, "at_order_s": t2 - t1, "in_transit_s": t3 - t2, "total_s": t3 - t0,
        "features_s": t3 - t1, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024,
        "columns": rows.shape[1] + transit.shape[1] - 2,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run)))
        return
    print(f"{'shipments':>10} {'scans':>10} {'snapshots':>10} {'load s':>7} {'at-order s':>10} {'in-transit s':>12} "
          f"{'total s':>8} {'shipments/s':>12} {'scans/s':>10} {'peak GB':>8}")
    for size in args.sizes:
        folder = ensure_data(size)
        out = subprocess.run([sys.executable, __file__, "--run", str(folder)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['shipments']:>10,} {r['scans']:>10,} {r['snapshots']:>10,} {r['load_s']:>7.1f} {r['at_order_s']:>10.1f} "
              f"{r['in_transit_s']:>12.1f} {r['total_s']:>8.1f} {r['shipments'] / r['total_s']:>12,.0f} "
              f"{r['scans'] / r['total_s']:>10,.0f} {r['peak_gb']:>8.2f}")


if __name__ == "__main__":
    main()
