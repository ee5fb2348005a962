"""What the explained booster's size costs: EDD accuracy against TreeSHAP latency.

Per-request reasons run TreeSHAP (LightGBM's ``pred_contrib``) on the median booster;
its cost grows with trees x leaves x depth squared. For each candidate size this trains
the median booster on the default data set's training window (early stopping on its
tail, as ``eddy train`` does), and prints the at-order MAE on the test window, the
number of trees, and the time of one row's prediction and of its contributions on one
thread: LightGBM's own TreeSHAP, and the tables the service reads (``runtime.treeshap``,
the same numbers; "-" where a booster is past the tables' limits).

Usage: .venv/bin/python benchmarks/explained_booster.py [--data data/sets/demo]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CANDIDATES = {
    "leaves 31, depth 8, rate 0.08 (before)": {},
    "leaves 15, depth 6, rate 0.08": {"num_leaves": 15, "max_depth": 6},
    "leaves 15, depth 6, rate 0.15": {"num_leaves": 15, "max_depth": 6, "learning_rate": 0.15},
    "leaves 7, depth 4, rate 0.15": {"num_leaves": 7, "max_depth": 4, "learning_rate": 0.15},
}


def per_row_ms(booster, X: np.ndarray, **kwargs) -> float:
    booster.predict(X[:1], num_threads=1, **kwargs)
    t = time.perf_counter()
    for i in range(200):
        booster.predict(X[i % len(X):i % len(X) + 1], num_threads=1, **kwargs)
    return (time.perf_counter() - t) / 200 * 1000


def tables_ms(booster, X: np.ndarray) -> str:
    from runtime.treeshap import ContributionTables

    tables = ContributionTables.of(booster)
    if tables is None:
        return "-"
    tables.contributions(X[:1])
    t = time.perf_counter()
    for i in range(200):
        tables.contributions(X[i % len(X):i % len(X) + 1])
    return f"{(time.perf_counter() - t) / 200 * 1000:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "sets" / "demo")
    args = ap.parse_args()

    from data.load import load_data_set
    from features import spec
    from features.build import FeatureSnapshot
    from runtime.models import CategoricalEncoder
    from training.models import edd_target, fit_clock, train_booster
    from training.rows import edd_training_rows, shipment_split
    from training.rows import validation_tail
    from training.train import feature_columns

    ds = load_data_set(args.data)
    snapshot = FeatureSnapshot.fit(ds)
    split = shipment_split(snapshot, ds["shipments"])
    rows, labels = edd_training_rows(ds, snapshot)
    part = split.assign(rows.as_of)
    hours = labels.hours_left.to_numpy()
    known = ~np.isnan(hours)
    at_order = rows.hours_since_order.to_numpy() == 0
    fit, val = validation_tail(known & (part == "train"), rows.as_of)
    test = known & (part == "test") & at_order
    enc = CategoricalEncoder(spec.categorical(spec.EDD)).fit(rows[fit])
    X = enc.transform(rows.reindex(columns=feature_columns(rows, spec.EDD)))
    # the target the shipped boosters learn: log(1 + hours) on the carriers' operating clock
    clock = fit_clock(rows[fit], hours[fit], snapshot.country)
    y = edd_target(clock, rows, np.nan_to_num(hours))
    codes = clock.codes(rows.carrier[test].to_numpy(), rows.service_level[test].to_numpy())
    print(f"{'median booster':<40} {'trees':>6} {'MAE days':>9} {'predict ms':>11} {'TreeSHAP ms':>12} "
          f"{'tables ms':>10}")
    for name, params in CANDIDATES.items():
        booster = train_booster({**params, "objective": "quantile", "alpha": 0.5}, X[fit], y[fit], X[val], y[val])
        p50 = clock.calendar_hours(codes, rows.as_of[test], np.expm1(booster.predict(X[test])))
        mae = np.mean(np.abs(p50 - hours[test])) / 24.0
        # the float matrix of category codes the service predicts from (no pandas per call)
        dense = X[test].head(200).apply(lambda c: c.cat.codes.where(c.cat.codes >= 0) if hasattr(c, "cat") else c)
        dense = dense.to_numpy(dtype=np.float64, na_value=np.nan)
        print(f"{name:<40} {booster.num_trees():>6} {mae:>9.3f} {per_row_ms(booster, dense):>11.3f} "
              f"{per_row_ms(booster, dense, pred_contrib=True):>12.3f} {tables_ms(booster, dense):>10}")


if __name__ == "__main__":
    main()
