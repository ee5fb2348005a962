"""Issue 12's accuracy goals, judged cutoff by cutoff on an `eddy backtest` long table.

    .venv/bin/python benchmarks/backtest_goals.py --table figures.csv
    .venv/bin/python benchmarks/backtest_goals.py --data data/sets/olist \\
        --cutoffs 2017-09-01,2017-10-01,2017-11-01,2017-12-01,2018-01-01,2018-02-01

With ``--data`` it runs the backtest first (``eddy backtest DIR --out``; ``--out FILE``
keeps that table). Prints one
line per goal and cutoff with the figure and whether it is met, then a summary.

Coverage and promises are shares of the parcels judged at a cutoff (``edd_n``), so
even a model calibrated exactly misses a band by chance when they are few. Beside each
such miss: its Wilson 95% interval, and whether a calibrated model (80% covered, c on
time) lies inside it ("within sampling noise") or not; beside each such goal, the
chance that a calibrated model meets it at every cutoff with these numbers of parcels
(for "on time at least c", about a half per cutoff: a promise has to be set above its
level to meet that goal everywhere).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import binom


def figure(t: pd.DataFrame, moment: str, model: str, metric: str) -> pd.Series:
    v = t[(t.moment == moment) & (t.model == model) & (t.metric == metric)]
    return v.set_index("cutoff").value


def wilson(share: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share observed on ``n`` trials."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def calibrated_meets(n: float, p: float, lo: float, hi: float = 1.0) -> float:
    """The chance that a share of ``n`` parcels, each a success with probability ``p``, lies in [lo, hi]."""
    n = int(n)
    return float(binom.cdf(np.floor(hi * n + 1e-9), n, p) - binom.cdf(np.ceil(lo * n - 1e-9) - 1, n, p))


class Judged(NamedTuple):
    """One goal at one cutoff. For shares with a known number of parcels: ``note`` (n, and
    for a miss its Wilson 95% interval), ``chance`` that a calibrated model meets the goal
    there, and ``beyond``: a miss a calibrated model would not make by chance."""

    goal: str
    cutoff: str
    value: float
    met: bool
    note: str = ""
    chance: float | None = None
    beyond: bool = False


def goals(t: pd.DataFrame) -> list[Judged]:
    """Every goal the table can judge, cutoff by cutoff."""
    out = []

    def each(name, values: pd.Series, ok, share=None):
        p, lo, hi, moment = share if share is not None else (None, None, None, None)
        parcels = figure(t, moment, "eddy", "edd_n") if share is not None else pd.Series(dtype=float)
        for cutoff, v in values.dropna().items():
            judged = Judged(name, str(cutoff)[:10], float(v), bool(ok(v)))
            n = parcels.get(cutoff, np.nan)
            if n == n and n > 0:
                a, b = wilson(float(v), n)
                beyond = not judged.met and not a <= p <= b
                note = f"n={int(n):,}" + ("" if judged.met else
                                          f", 95% {a:.3f}-{b:.3f}: {'beyond' if beyond else 'within'} sampling noise")
                judged = judged._replace(note=note, chance=calibrated_meets(n, p, lo, hi), beyond=beyond)
            out.append(judged)

    mae, lane = figure(t, "at_order", "eddy", "edd_mae_days"), figure(t, "at_order", "lane_median", "edd_mae_days")
    each("EDD MAE / lane median <= 1", (mae / lane), lambda v: v <= 1.0)
    oracle = figure(t, "at_order", "oracle", "edd_mae_days")
    if len(oracle):
        each("EDD MAE / oracle <= 1.10", (mae / oracle), lambda v: v <= 1.10)
    for moment in ("at_order", "in_transit"):
        each(f"coverage 80 in 77-83% ({moment})", figure(t, moment, "eddy", "coverage_80"), lambda v: 0.77 <= v <= 0.83,
             share=(0.80, 0.77, 0.83, moment))
    for c in (90, 95):
        each(f"promise at {c}% on time >= {c}%", figure(t, "at_order", "eddy", f"promise{c}_on_time"),
             lambda v, c=c: v >= c / 100, share=(c / 100, c / 100, 1.0, "at_order"))
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
    p.add_argument("--out", type=Path, help="with --data, keep the backtest's long table here (.csv or .parquet)")
    a = p.parse_args()
    table = a.table
    if table is None:
        if a.data is None:
            p.error("give --table or --data")
        table = a.out or Path(tempfile.mkdtemp()) / "figures.csv"
        eddy = str(Path(sys.executable).parent / "eddy")
        subprocess.run([eddy, "backtest", str(a.data), "--cutoffs", a.cutoffs, "--jobs", a.jobs, "--out", str(table)],
                       check=True)
    t = pd.read_csv(table) if table.suffix == ".csv" else pd.read_parquet(table)
    rows = goals(t)
    for r in rows:
        print(f"{r.goal:40s} {r.cutoff}  {r.value:7.3f}  {'met' if r.met else 'MISSED':6s}  {r.note}".rstrip())
    print()
    for name in dict.fromkeys(r.goal for r in rows):
        mine = [r for r in rows if r.goal == name]
        line = f"{name:40s} met at {sum(r.met for r in mine)} of {len(mine)} cutoffs"
        if all(r.chance is not None for r in mine):
            line += (f"; misses beyond sampling noise: {sum(r.beyond for r in mine)}; a calibrated model would meet it"
                     f" at every cutoff with probability {np.prod([r.chance for r in mine]):.2f}")
        print(line)


if __name__ == "__main__":
    main()
