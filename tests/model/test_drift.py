"""The drift reference training keeps, read against rows like the ones it was made of and against a shift."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import spec
from features.rows import order_moments
from runtime import drift


def test_the_reference_matches_rows_like_its_own_and_names_a_shifted_feature(trained):
    result, ds = trained
    bundle = result.bundle
    profile = bundle.meta["profile"]
    assert set(profile) == {"edd", "delay", "churn"}
    assert set(profile["edd"]) == {"at_order", "in_transit"} and set(profile["churn"]) == {"after_delivery"}
    ref = profile["edd"]["at_order"]
    assert ref["rows"] > 100 and set(ref["profile"]) == set(bundle.edd.features)
    s = ds["shipments"]
    recent = s[s.ordered_at >= pd.Timestamp(bundle.meta["split"]["test_from"])]
    rows = bundle.shipment_rows(recent, ds.get("scans"), order_moments(recent))
    live = drift.live(bundle.edd, ref, rows)
    steady = [v for f, v in live["psi"].items() if not spec.feature("edd", f).clock]
    assert np.median(steady) < 0.05, sorted(live["psi"].items(), key=lambda kv: -kv[1])[:5]
    top = max(ref["mean_abs_shap"], key=ref["mean_abs_shap"].get)
    assert live["mean_abs_shap"][top] == np.float64(live["mean_abs_shap"][top])
    assert 0.5 < live["mean_abs_shap"][top] / ref["mean_abs_shap"][top] < 2
    heavier = {**rows, "weight_kg": np.asarray(rows["weight_kg"]) * 6}
    assert drift.live(bundle.edd, ref, heavier)["psi"]["weight_kg"] > 0.25 > live["psi"]["weight_kg"]
