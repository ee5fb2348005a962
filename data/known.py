"""A data set as it looked at a past moment: what a backtest may train on.

Rows that had not happened yet are gone and outcomes that had not happened yet are
unknown, so every stage downstream sees exactly what the retailer's export would have
held at that moment. Facts fixed at order time (the promise, the lane) stay.
"""

from __future__ import annotations

import pandas as pd

from data.load import DataSet

#: table -> the column saying when its row became known
EVENT_TIME = {"scans": "scanned_at", "orders": "ordered_at", "feedback": "submitted_at"}


def known_at(ds: DataSet, cut: pd.Timestamp) -> DataSet:
    """The data set as it looked at ``cut``: rows strictly before it, later outcomes unknown."""
    s = ds["shipments"]
    s = s[s.ordered_at < cut].copy()
    for col in ("shipped_at", "delivered_at"):
        s[col] = s[col].where(s[col] < cut)
    tables = {"shipments": s.reset_index(drop=True)}
    for name, col in EVENT_TIME.items():
        frame = ds.get(name)
        if frame is not None:
            tables[name] = frame[frame[col] < cut].reset_index(drop=True)
    if "scans" in tables:
        scans = tables["scans"]
        tables["scans"] = scans[scans.shipment_id.isin(s.shipment_id)].reset_index(drop=True)
    customers = ds.get("customers")
    if customers is not None:
        seen = customers.first_seen_at
        tables["customers"] = customers[seen.isna() | (seen < cut)].reset_index(drop=True)
    if ds.get("locations") is not None:
        tables["locations"] = ds["locations"]
    return DataSet(ds.folder, tables, {}, {})
