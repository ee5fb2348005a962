"""How often a parcel Eddy calls "likely lost" was delivered after all, point in time.

    .venv/bin/python benchmarks/likely_lost.py data/sets/demo data/sets/olist [--every 7]

At a moment every ``--every`` days through each data set (from 90 days after its first
order to its last fact), every parcel then open (ordered, neither delivered nor
returned) is judged by ``ModelBundle.likely_lost`` on the history known at that moment,
the rule the answers use; then the data's later facts say what became of it. Prints,
per data set: open parcels judged, those called likely lost, how many of them were
delivered later (the rule's false alarms), and how many parcels never delivered were
called lost at some moment, with the median days from order to the first such call.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from data.load import load_data_set
from features.build import FeatureSnapshot, moments_at
from features.history import data_end
from runtime.bundle import ModelBundle


def judged(folder: Path, every_days: float) -> pd.DataFrame:
    """One row per (moment, open parcel): whether it was called likely lost."""
    ds = load_data_set(folder)
    s, scans = ds["shipments"], ds.get("scans")
    end = data_end(s, scans)
    bundle = ModelBundle(FeatureSnapshot.fit(ds, end=end), None, None, None)
    start = s.ordered_at.min() + pd.Timedelta(days=90)
    out = []
    for at in pd.date_range(start, end, freq=pd.Timedelta(days=every_days)):
        moments = moments_at(ds, at)
        if not len(moments):
            continue
        rows = bundle.shipment_rows(s, scans, moments)
        lost = bundle.likely_lost(rows)[0]
        out.append(pd.DataFrame({"as_of": at, "shipment_id": moments.shipment_id.to_numpy(), "lost": lost}))
    t = pd.concat(out, ignore_index=True)
    fate = s.set_index(s.shipment_id.astype("str"))
    t["delivered_later"] = fate.delivered_at.reindex(t.shipment_id).notna().to_numpy()
    t["ordered_at"] = fate.ordered_at.reindex(t.shipment_id).to_numpy()
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--every", type=float, default=7.0, help="days between judged moments")
    args = ap.parse_args()
    for folder in args.folders:
        t = judged(folder, args.every)
        called = t[t.lost]
        false = called[called.delivered_later]
        never = t[~t.delivered_later]
        first = never[never.lost].groupby("shipment_id").agg(at=("as_of", "min"), ordered=("ordered_at", "first"))
        days = (first["at"] - first.ordered).dt.total_seconds() / 86400
        when = f", first called a median {np.median(days):.0f} days after the order" if len(first) else ""
        print(f"{folder}: {t.as_of.nunique()} moments, {len(t):,} open parcels judged; likely lost: {len(called):,}, "
              f"of which delivered later: {len(false):,} ({len(false) / max(len(called), 1):.2%}, "
              f"{false.shipment_id.nunique()} parcels); parcels never delivered: {never.shipment_id.nunique():,}, "
              f"called lost at some moment: {len(first):,}{when}")


if __name__ == "__main__":
    main()
