"""Issue 12's goals on a simulated set ten times the default one: is the EDD gap to the oracle data-bound?

The default set (20,000 customers, 73,743 shipments) leaves Eddy's EDD at 1.13-1.20x the
oracle's MAE, while a model that knew the simulator's law reaches 1.01-1.04x from the
same data (``knowable_bounds.py``): the gap is the boosters'. This runs the same
backtest on a set from the same simulated world with ten times the customers (the set
``train_predict.py`` trains on; simulated once, with its truth, into
``benchmarks/results/``), so the same code learns from ten times the parcels, and
judges every goal cutoff by cutoff (``backtest_goals.py``). 22 minutes on 2 cores with
``--jobs 2`` (2026-12-04), about 10 GB; simulating the set the first time adds about a minute.

Usage: .venv/bin/python benchmarks/backtest_at_scale.py [--shipments 734000] [--jobs 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from features_scale import ensure_data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shipments", type=int, default=734_000)
    p.add_argument("--jobs", default="2")
    p.add_argument("--out", type=Path, help="keep the backtest's long table here (.csv or .parquet)")
    a = p.parse_args()
    folder = ensure_data(a.shipments)
    keep = [] if a.out is None else ["--out", str(a.out)]
    subprocess.run([sys.executable, str(HERE / "backtest_goals.py"), "--data", str(folder), "--jobs", a.jobs, *keep],
                   check=True)


if __name__ == "__main__":
    main()
