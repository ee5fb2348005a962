"""Dask against in-process: equal features, equally good models, and how time grows.

Targets (issue 11):
* ``--part equality``: on a 20k-customer simulated set, the features built on a
  ``LocalCluster`` equal the in-process ones exactly; a model trained with ``--cluster``
  is within 2% of the in-process EDD MAE and within 0.01 of its delay and churn AUC.
* ``--part train``: ``train`` on the cluster on those data sets (time, each worker's and
  the client's peak memory, the model's figures), beside in-process training where it fits.
* ``--part scale``: data sets of N shipments simulated in slices as Parquet parts
  (``eddy simulate --shipments-target N``), then on the cluster: the data set read and
  validated by partition, the history reduced and the at-order rows written as parts;
  wall time and each worker's peak memory per N, beside the in-process build where it
  fits in memory.
Peak memory is the resident set of each worker process, sampled every half second.

Usage: .venv/bin/python benchmarks/dask_scale.py --part equality [--data data/sets/demo]
       .venv/bin/python benchmarks/dask_scale.py --part scale [--sizes 1000000,3000000,10000000]
         [--in-process-up-to 3000000] [--workers 2] [--memory 8GiB]
       .venv/bin/python benchmarks/dask_scale.py --part train [--sizes ...] [--in-process-up-to 1000000]
         [--memory-cap-gb 18] [--workers 0: in-process training only]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data.load import load_data_set  # noqa: E402
from data.partitioned import read_on  # noqa: E402
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


def equality(args) -> None:
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

    with connect("local", n_workers=args.workers, memory_limit=args.memory) as client:
        with PeakMemory(client) as features_memory:
            t = time.time()
            data = read_on(client, args.data)
            snapshot = distributed.snapshot_on(client, data.parts, data.locations)
            rows = distributed.rows_on(client, data.parts, snapshot).compute()
            dask_features_s = time.time() - t
        rows = rows.set_index("shipment_id").loc[local_rows.shipment_id].reset_index()[local_rows.columns]
        pd.testing.assert_frame_equal(local_rows.reset_index(drop=True), rows, check_exact=True)
        same_history = all(np.array_equal(local_snapshot.history.tables[k].hist, snapshot.history.tables[k].hist)
                           for k in local_snapshot.history.tables)
        with PeakMemory(client) as train_memory:
            t = time.time()
            remote = train(None, client=client, data=read_on(client, args.data))
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


def scale(args) -> None:
    import subprocess

    work = Path(args.workdir)
    rows_out = []
    for n in [int(x) for x in args.sizes.split(",")]:
        folder = work / f"sim-{n}"
        if not (folder / "shipments").is_dir():
            t = time.time()
            subprocess.run([str(ROOT / ".venv" / "bin" / "eddy"), "simulate", "--shipments-target", str(n),
                            "--out", str(folder)], check=True, stdout=subprocess.DEVNULL)
            print(f"simulated {n:,} in {time.time() - t:.0f} s")
        with connect("local", n_workers=args.workers, memory_limit=args.memory) as client, PeakMemory(client) as peak:
            t = time.time()
            data = read_on(client, folder)
            read_s = time.time() - t
            snapshot = distributed.snapshot_on(client, data.parts, data.locations)
            history_s = time.time() - t - read_s
            rows = distributed.rows_on(client, data.parts, snapshot)
            rows.to_parquet(work / f"rows-{n}", write_index=False, overwrite=True)
            total_s = time.time() - t
            shipments = data.report["shipments"].accepted
        local = in_process(folder) if n <= args.in_process_up_to else None
        rows_out.append((n, shipments, data.report["scans"].accepted, read_s, history_s, total_s, peak.gib(), local))
        print(rows_out[-1], flush=True)
    print("\n| shipments | scans | Dask: read + validate s | history s | total s (rows written) | worker peak memory "
          "| in-process: total s, peak |")
    print("|---|---|---|---|---|---|---|")
    for n, ships, scans, read_s, history_s, total_s, peak, local in rows_out:
        inproc = _in_process_cell(local) if local else "not run (see README)"
        print(f"| {ships:,} | {scans:,} | {read_s:.1f} | {history_s:.1f} | {total_s:.1f} | {peak} | {inproc} |")


class OwnPeak(PeakMemory):
    """The largest resident set of this process (the client) while the block ran."""

    def _sample(self):
        while not self._stop.wait(0.5):
            self.peak["client"] = max(self.peak.get("client", 0), _rss())


def training(args) -> None:
    """``train`` on the cluster at each size: time, each worker's and the client's peak
    memory, the model figures; beside the in-process training where it fits."""
    work = Path(args.workdir)
    lines = []
    for n in [int(x) for x in args.sizes.split(",")]:
        folder = work / f"sim-{n}"
        local = in_process_training(folder, args.memory_cap_gb) if n <= args.in_process_up_to else None
        if not args.workers:  # the in-process training alone
            lines.append((n, float("nan"), "-", "-", {}, local))
            print(n, local, flush=True)
            continue
        with connect("local", n_workers=args.workers, memory_limit=args.memory) as client, \
                PeakMemory(client) as peak, OwnPeak(None) as own:
            t = time.time()
            result = train(None, client=client, data=read_on(client, folder))
            total_s = time.time() - t
        m = result.metrics
        lines.append((result.bundle.meta["shipments"], total_s, peak.gib(), own.gib(), m, local))
        print(lines[-1][:4], {k: round(m[k], 4) for k in METRICS if k in m}, local, flush=True)
    print("\n| shipments | Dask: training s | worker peak | client peak | EDD MAE | coverage | delay AUC | churn AUC "
          "| in-process: s, peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ships, total_s, workers, client, m, local in lines:
        inproc = _in_process_cell(local) if local else "not run"
        print(f"| {ships:,} | {total_s:.1f} | {workers} | {client} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in METRICS)
              + f" | {inproc} |")


def _in_process_cell(local: tuple[float, float] | str) -> str:
    """An in-process run's table cell: its time and peak, or where it stopped or failed."""
    return local if isinstance(local, str) else f"{local[0]:.1f} s, {local[1]:.2f} GB"


def in_process_training(folder: Path, cap_gb: float) -> tuple[float, float] | str:
    """``train`` in one process on the same data (time, peak GB); stopped at ``cap_gb``
    of resident memory, the stage it had reached is the answer instead."""
    return _timed_child("import time,resource,sys; t=time.time(); from data.load import load_data_set; "
                        "from training.train import train; ds=load_data_set(sys.argv[1]); print('stage: training', flush=True); "
                        "train(ds, progress=lambda s, f: print('stage:', s, flush=True)); "
                        "print(time.time()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20)", folder, cap_gb)


def _timed_child(code: str, folder: Path, cap_gb: float = float("inf")) -> tuple[float, float] | str:
    """Run ``code`` in a child on ``folder``: its time and peak GB, or, when its resident
    set passes ``cap_gb``, where it was (killed there, so this machine stays usable)."""
    import subprocess

    import psutil

    t = time.time()
    child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, psutil.Process(child.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if peak > cap_gb * 2**30:
            child.kill()
            child.wait()
            reader.join()
            stage = next((ln.strip() for ln in reversed(lines) if ln.startswith("stage:")), "stage: reading the data set")
            return f"stopped at {peak / 2**30:.1f} GiB after {time.time() - t:.0f} s ({stage})"
        time.sleep(0.5)
    reader.join()
    if child.returncode:
        return f"failed (exit {child.returncode}) after {time.time() - t:.0f} s"
    seconds, gb = lines[-1].split()[-2:]
    return float(seconds), float(gb)


def in_process(folder: Path) -> tuple[float, float]:
    """The same work in one process: load, history, at-order rows (time, peak GB)."""
    return _timed_child("import time,resource,sys; t=time.time(); from data.load import load_data_set; "
                        "from features.build import FeatureSnapshot, at_order; ds=load_data_set(sys.argv[1]); "
                        "s=FeatureSnapshot.fit(ds); at_order(ds, s).to_parquet('/dev/null'); "
                        "print(time.time()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20)", folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("equality", "scale", "train"), default="equality")
    ap.add_argument("--data", default=str(ROOT / "data" / "sets" / "demo"))
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    ap.add_argument("--in-process-up-to", type=int, default=3_000_000)
    ap.add_argument("--workdir", default="/tmp/eddy-dask-scale")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory", default=None)
    ap.add_argument("--memory-cap-gb", type=float, default=18.0,
                    help="an in-process training past this resident memory is stopped, and where it was is reported")
    args = ap.parse_args()
    args.memory = args.memory or ("4GiB" if args.part == "equality" else "8GiB")
    {"equality": equality, "scale": scale, "train": training}[args.part](args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
