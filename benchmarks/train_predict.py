"""Time and peak memory of a default ``eddy train`` (no tuning) and of ``eddy predict``.

Targets: 1,000,000 shipments trained in 10 minutes or less on 2 cores; predictions at
50,000 shipments/s or more. Each measurement runs in a fresh process. Training is
timed in-process without MLflow logging (the registry adds a few seconds of I/O);
prediction times the models on prepared feature rows, without and with reasons.

Usage: .venv/bin/python benchmarks/train_predict.py [--train-sizes 100000 1000000] [--predict-size 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from features_scale import ensure_data  # noqa: E402


#: runs of the 5,000 answers with reasons; the figure is their median
REASON_RUNS = 3


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def run_train(folder: Path) -> dict:
    from data.load import load_data_set
    from training.train import train

    t0 = time.perf_counter()
    ds = load_data_set(folder)
    result = train(ds)
    t1 = time.perf_counter()
    result.bundle.save(folder.parent / f"bundle-{folder.name}")
    return {"shipments": len(ds["shipments"]), "train_s": t1 - t0, "peak_gb": peak_gb(),
            "edd_mae_days": result.metrics.get("edd_mae_days"), "skipped": result.bundle.meta["skipped"]}


def run_predict(folder: Path, bundle_dir: Path, n: int) -> dict:
    from data.load import load_data_set
    from runtime.bundle import ModelBundle
    from features.pit import take
    from features.rows import order_moments

    ds = load_data_set(folder)
    bundle = ModelBundle.load(bundle_dir)
    s = ds["shipments"].tail(n)
    t0 = time.perf_counter()
    rows = bundle.shipment_rows(s, ds["scans"], order_moments(s))
    t1 = time.perf_counter()
    bundle.predict_rows(rows, explain=False)
    t2 = time.perf_counter()
    k = min(n, 5000)
    sample = take(rows, np.arange(k))
    times = []
    for _ in range(REASON_RUNS):  # a second each: one run is at the mercy of this machine's phases
        t3 = time.perf_counter()
        bundle.predict_rows(sample, explain=True)
        times.append(time.perf_counter() - t3)
    return {"shipments": len(s), "features_s": t1 - t0, "models_s": t2 - t1,
            "reasons_per_s": k / float(np.median(times)), "peak_gb": peak_gb()}


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--predict-size", type=int, default=100_000)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, folder, *rest = args.child
        r = run_train(Path(folder)) if kind == "train" else run_predict(Path(folder), Path(rest[0]), int(rest[1]))
        print(json.dumps(r, default=str))
        return
    for size in args.train_sizes:
        folder = ensure_data(size)
        r = child("train", str(folder))
        print(f"train   {r['shipments']:>10,} shipments: {r['train_s']:7.1f} s, peak {r['peak_gb']:.2f} GB"
              f" (EDD MAE {r['edd_mae_days']:.3f} d, skipped: {r['skipped'] or 'none'})", flush=True)
    folder = ensure_data(args.predict_size)
    bundle_dir = folder.parent / f"bundle-{folder.name}"
    if not bundle_dir.exists():
        child("train", str(folder))
    r = child("predict", str(folder), str(bundle_dir), str(args.predict_size))
    n = r["shipments"]
    print(f"predict {n:>10,} shipments: features {r['features_s']:.2f} s + models {r['models_s']:.2f} s = "
          f"{n / (r['features_s'] + r['models_s']):,.0f} shipments/s (models alone {n / r['models_s']:,.0f}/s); "
          f"with TreeSHAP reasons {r['reasons_per_s']:,.0f} shipments/s (median of {REASON_RUNS}); peak {r['peak_gb']:.2f} GB")


if __name__ == "__main__":
    main()
