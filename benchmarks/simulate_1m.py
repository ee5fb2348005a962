"""Time a 1,000,000-shipment simulation (target: 60 s or less on 2 cores).

Usage: .venv/bin/python benchmarks/simulate_1m.py [--customers N] [--out DIR]

Prints wall time for simulating and for writing Parquet, shipments/s and peak memory.
About 3.7 shipments per customer: 272,000 customers give about 1,000,000 shipments.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from data.simulate import SimConfig, simulate, write_truth
from data.write import write_data_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=272_000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="eddy-bench-sim-"))

    t0 = time.perf_counter()
    result = simulate(SimConfig(customers=args.customers))
    t1 = time.perf_counter()
    write_data_set(result.tables, out)
    write_truth(result.truth, out)
    t2 = time.perf_counter()

    n = int(result.summary["shipments"])
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"shipments        {n:,}")
    print(f"scans            {int(result.summary['scans']):,}")
    print(f"simulate         {t1 - t0:.1f} s")
    print(f"write parquet    {t2 - t1:.1f} s")
    print(f"total            {t2 - t0:.1f} s  ({n / (t2 - t0):,.0f} shipments/s)")
    print(f"peak memory      {peak_gb:.2f} GB")
    print(f"late share       {result.summary['late_share']:.1%} (peak {result.summary['late_share_peak']:.1%})")


if __name__ == "__main__":
    main()
