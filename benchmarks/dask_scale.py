"""Dask against in-process on the same data: equal features, equally good models, and time.

Target (issue 11, equality): on a 20k-customer simulated set, the features built on a
``LocalCluster`` equal the in-process ones exactly; a model trained with ``--cluster``
is within 2% of the in-process EDD MAE and within 0.01 of its delay and churn AUC.
Both are reported, with the wall time of each path and the workers' peak memory
(resident set, sampled every half second).

Usage: .venv/bin/python benchmarks/dask_scale.py [--data data/sets/demo] [--workers 2]
  [--memory 4GiB]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.load import load_data_set  # noqa: E402
from eddy.cluster import connect  # noqa: E402
from features import distributed  # noqa: E402
from features.build import FeatureSnapshot, at_order  # noqa: E402
from training.train import train  # noqa: E402

METRICS = ("edd_mae_days", "edd_interval_coverage", "delay_roc_auc", "churn_roc_auc")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakMemory:
    """The largest resident set each worker reached while the block ran."""

    def __init__(self, client):
        self.client, self.peak, self._stop = client, {}, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.5):
            try:
                for worker, rss in self.client.run(_rss).items():
                    self.peak[worker] = max(self.peak.get(worker, 0), rss)
            except Exception:  # noqa: BLE001 - a worker between restarts
                pass

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def gib(self) -> str:
        return ", ".join(f"{v / 2**30:.2f}" for v in sorted(self.peak.values())) + " GiB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "data" / "sets" / "demo"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory", default="4GiB")
    args = ap.parse_args()
    ds = load_data_set(args.data)
    print(f"data: {args.data}: {len(ds['shipments']):,} shipments, {len(ds['scans']):,} scans, "
          f"{ds['shipments'].customer_id.nunique():,} customers")

    t = time.time()
    local_snapshot = FeatureSnapshot.fit(ds)
    local_rows = at_order(ds, local_snapshot)
    local_features_s = time.time() - t
    t = time.time()
    local = train(ds)
    local_train_s = time.time() - t

    with connect("local", n_workers=args.workers, memory_limit=args.memory) as client, \
            tempfile.TemporaryDirectory() as scratch:
        with PeakMemory(client) as features_memory:
            t = time.time()
            parts = distributed.partitions(client, ds, Path(scratch) / "features")
            snapshot = distributed.snapshot_on(client, parts, ds.get("locations"))
            rows = distributed.rows_on(client, parts, snapshot).compute()
            dask_features_s = time.time() - t
        rows = rows.set_index("shipment_id").loc[local_rows.shipment_id].reset_index()[local_rows.columns]
        pd.testing.assert_frame_equal(local_rows.reset_index(drop=True), rows, check_exact=True)
        same_history = all(np.array_equal(local_snapshot.history.tables[k].hist, snapshot.history.tables[k].hist)
                           for k in local_snapshot.history.tables)
        with PeakMemory(client) as train_memory:
            t = time.time()
            remote = train(ds, client=client, scratch=Path(scratch) / "train")
            dask_train_s = time.time() - t

    print(f"\nfeatures (history + at-order rows): equal row for row: yes; history tables equal: "
          f"{'yes' if same_history else 'NO'}")
    print(f"| path | features s | training s | worker peak memory (features; training) |")
    print(f"|---|---|---|---|")
    print(f"| in-process | {local_features_s:.1f} | {local_train_s:.1f} | - |")
    print(f"| Dask, {args.workers} workers x {args.memory} | {dask_features_s:.1f} | {dask_train_s:.1f} | "
          f"{features_memory.gib()}; {train_memory.gib()} |")
    print("\n| metric | in-process | Dask | difference | target |")
    print("|---|---|---|---|---|")
    for k in METRICS:
        a, b = local.metrics[k], remote.metrics[k]
        target = "within 2%" if k == "edd_mae_days" else ("within 0.01" if k.endswith("auc") else "-")
        diff = f"{(b - a) / a:+.1%}" if k == "edd_mae_days" else f"{b - a:+.4f}"
        print(f"| {k} | {a:.4f} | {b:.4f} | {diff} | {target} |")
    ok = (remote.metrics["edd_mae_days"] <= local.metrics["edd_mae_days"] * 1.02
          and all(abs(remote.metrics[k] - local.metrics[k]) <= 0.01 for k in ("delay_roc_auc", "churn_roc_auc")))
    print(f"\ntarget met: {'yes' if ok else 'no'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
