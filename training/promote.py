"""Compare challenger and champion on the same latest held-out window, and promote by rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.load import DataSet
from features.build import FeatureSnapshot
from runtime.bundle import ModelBundle
from training.evaluate import edd_metrics, probability_metrics
from training.rows import churn_split, churn_training_rows, edd_training_rows, shipment_split


def held_out_metrics(bundles: dict[str, ModelBundle], ds: DataSet, horizon_days: float) -> dict[str, dict[str, float]]:
    """Primary metrics of each bundle on the latest test window of ``ds`` (same rows for all)."""
    snapshot = FeatureSnapshot.fit(ds)
    split = shipment_split(snapshot, ds["shipments"])
    rows, labels = edd_training_rows(ds, snapshot, transit_per_shipment=0)
    test = split.assign(rows.as_of) == "test"
    hours, late = labels.hours_left.to_numpy(), labels.late.to_numpy()
    churn_rows, churn_y, ref = churn_training_rows(ds, snapshot, rows, horizon_days)
    c_split, ref_ts = churn_split(snapshot, ref, horizon_days)
    churn_test = (c_split.assign(ref_ts) == "test") & ~np.isnan(churn_y) & (churn_rows.days_since_delivery.to_numpy() < 1e-3)
    out: dict[str, dict[str, float]] = {}
    for name, b in bundles.items():
        m: dict[str, float] = {}
        t = test & ~np.isnan(hours)
        if b.edd is not None and t.any():
            m["edd_mae_days"] = edd_metrics(b.edd.predict_hours(rows[t], rows.carrier[t])[:, 1], hours[t])["mae_days"]
        t = test & ~np.isnan(late)
        if b.delay is not None and t.any():
            m["delay_brier"] = probability_metrics(b.delay.predict_proba(rows[t]), late[t])["brier"]
        if b.churn is not None and churn_test.any():
            m["churn_roc_auc"] = probability_metrics(b.churn.predict_proba(churn_rows[churn_test]), churn_y[churn_test])["roc_auc"]
        out[name] = m
    return out
