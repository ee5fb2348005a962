"""Batch predictions for other systems and the CX page: ``eddy predict``, ``eddy score-customers``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from data.load import DataSet
from features.build import moments_at
from features.history import data_end
from features.pit import NAT, micros
from training.bundle import ModelBundle
from training.rows import order_moments


def predict_data_set(bundle: ModelBundle, ds: DataSet, as_of: pd.Timestamp | None = None,
                     confidence: float = 0.95, explain: bool = True) -> pd.DataFrame:
    """Every shipment at its order time, or every open shipment at ``as_of`` with its scans so far."""
    shipments, scans = ds["shipments"], ds.get("scans")
    moments = order_moments(shipments) if as_of is None else moments_at(ds, as_of)
    rows = bundle.shipment_rows(shipments, scans, moments)
    table = bundle.predict_rows(rows, confidence, explain=explain)
    table = table.rename(columns={"promise_at": f"promise_at_{int(round(confidence * 100))}"})
    return table


def score_data_set(bundle: ModelBundle, ds: DataSet, as_of: pd.Timestamp | None = None,
                   window_days: float = 60.0) -> pd.DataFrame:
    """One row per customer whose latest delivery (or unmet promise) falls in the window before the moment."""
    shipments, scans = ds["shipments"], ds.get("scans")
    moment = as_of if as_of is not None else data_end(shipments, scans) + pd.Timedelta(seconds=1)
    history = bundle.snapshot.customers.with_orders(shipments, scans)
    exp = history.experience
    t = micros(pd.Series([moment]))[0]
    ref = exp.ref.to_numpy()
    judged = (ref != NAT) & (ref < t) & (ref >= t - int(window_days * 86_400_000_000))
    latest = exp[judged].sort_values("ref").groupby("customer_id").tail(1)
    moments = pd.DataFrame({"order_id": latest.order_id.to_numpy(),
                            "as_of": pd.Series([moment] * len(latest), dtype="datetime64[us, UTC]")})
    table = bundle.score_orders(shipments, scans, moments, history=history)
    table.insert(3, "delivery_judged_at", pd.to_datetime(latest.ref.to_numpy(), unit="us", utc=True))
    table["scored_at"] = pd.Timestamp.now(tz="UTC")
    table["model_version"] = bundle.meta.get("version", "")
    return table.sort_values("churn_risk", ascending=False).reset_index(drop=True)


def write_table(table: pd.DataFrame, target: Path) -> Path:
    """Parquet (reasons as JSON text, so any reader can open it) or CSV by extension."""
    target.parent.mkdir(parents=True, exist_ok=True)
    flat = table.copy()
    if "reasons" in flat:
        flat["reasons"] = [json.dumps(r) for r in flat.reasons]
    flat.to_csv(target, index=False) if target.suffix == ".csv" else flat.to_parquet(target, index=False)
    return target
