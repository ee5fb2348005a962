"""Issue 12's accuracy goals, judged cutoff by cutoff on an `eddy backtest` long table.

    .venv/bin/python benchmarks/backtest_goals.py --table figures.csv
    .venv/bin/python benchmarks/backtest_goals.py --data data/sets/olist \\
        --cutoffs 2017-09-01,2017-10-01,2017-11-01,2017-12-01,2018-01-01,2018-02-01

With ``--data`` it runs the backtest first (``eddy backtest DIR --out``). Prints one
line per goal and cutoff with the figure and whether it is met, then a summary.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def figure(t: pd.DataFrame, moment: str, model: str, metric: str) -> pd.Series:
    v = t[(t.moment == moment) & (t.model == model) & (t.metric == metric)]
    return v.set_index("cutoff").value


def goals(t: pd.DataFrame) -> list[tuple[str, str, float, bool]]:
    """(goal, cutoff, figure, met) for every goal the table can judge."""
    out = []

    def each(name, values: pd.Series, ok):
        for cutoff, v in values.dropna().items():
            out.append((name, str(cutoff)[:10], float(v), bool(ok(v))))

    mae, lane = figure(t, "at_order", "eddy", "edd_mae_days"), figure(t, "at_order", "lane_median", "edd_mae_days")
    each("EDD MAE / lane median <= 1", (mae / lane), lambda v: v <= 1.0)
    oracle = figure(t, "at_order", "oracle", "edd_mae_days")
    if len(oracle):
        each("EDD MAE / oracle <= 1.10", (mae / oracle), lambda v: v <= 1.10)
    for moment in ("at_order", "in_transit"):
        each(f"coverage 80 in 77-83% ({moment})", figure(t, moment, "eddy", "coverage_80"), lambda v: 0.77 <= v <= 0.83)
    for c in (90, 95):
        each(f"promise at {c}% on time >= {c}%", figure(t, "at_order", "eddy", f"promise{c}_on_time"),
             lambda v, c=c: v >= c / 100)
    churn = figure(t, "after_delivery", "eddy", "churn_auc")
    for base in ("rfm", "bgnbd"):
        b = figure(t, "after_delivery", base, "churn_auc")
        if len(b):
            each(f"churn AUC - {base} >= 0.02", (churn - b), lambda v: v >= 0.02)
    o = figure(t, "after_delivery", "oracle", "churn_auc")
    if len(o):
        each("churn AUC / oracle >= 0.90", churn / o, lambda v: v >= 0.90)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", type=Path, help="a long table written by eddy backtest --out")
    p.add_argument("--data", type=Path, help="run eddy backtest on this data set first")
    p.add_argument("--cutoffs", default="6")
    p.add_argument("--jobs", default="2")
    a = p.parse_args()
    table = a.table
    if table is None:
        if a.data is None:
            p.error("give --table or --data")
        table = Path(tempfile.mkdtemp()) / "figures.csv"
        eddy = str(Path(sys.executable).parent / "eddy")
        subprocess.run([eddy, "backtest", str(a.data), "--cutoffs", a.cutoffs, "--jobs", a.jobs, "--out", str(table)],
                       check=True)
    t = pd.read_csv(table) if table.suffix == ".csv" else pd.read_parquet(table)
    rows = goals(t)
    for name, cutoff, v, ok in rows:
        print(f"{name:40s} {cutoff}  {v:7.3f}  {'met' if ok else 'MISSED'}")
    print()
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        print(f"{name:40s} met at {sum(r[3] for r in mine)} of {len(mine)} cutoffs")


if __name__ == "__main__":
    main()
