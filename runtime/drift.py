"""What a model's features look like on some rows: the drift reference and its live counterpart.

Training calls :func:`reference` on the model's test rows and keeps the result in the
bundle's meta (``profile``); ``eddy monitor`` calls :func:`live` on the features of
logged requests, rebuilt from the retailer's data with the same feature code. Both
measure the same two things: each feature's distribution (``features.profile``) and its
mean |SHAP value|, from LightGBM's ``pred_contrib`` (the EDD model's median booster).
"""

from __future__ import annotations

import numpy as np

from features.pit import take
from features.profile import drift, profile

SAMPLE = 5000  # rows per picture: shares to about ±1 point
SHAP_SAMPLE = 500  # rows whose TreeSHAP values are averaged: mean |SHAP| to a few percent, 0.2 s not 2 s


def _sample(rows, sample: int, seed: int):
    n = len(np.asarray(rows[next(iter(rows.keys()))])) if isinstance(rows, dict) else len(rows)
    if n <= sample:
        return rows, n
    pick = np.sort(np.random.default_rng(seed).permutation(n)[:sample])
    return (take(rows, pick) if isinstance(rows, dict) else rows.iloc[pick]), sample


def _mean_abs_shap(model, rows, seed: int = 0) -> dict[str, float]:
    rows, _ = _sample(rows, SHAP_SAMPLE, seed)
    contrib = model.contributions(rows, model.explained)
    return {f: round(float(v), 5) for f, v in zip(model.features, np.abs(contrib).mean(axis=0))}


def reference(model, rows, sample: int = SAMPLE, seed: int = 0) -> dict:
    """The drift reference of ``model`` on ``rows``: feature profiles and mean |SHAP|."""
    rows, n = _sample(model._derived(rows), sample, seed)
    if not n:
        return {"rows": 0, "profile": {}, "mean_abs_shap": {}}
    return {"rows": n, "profile": profile(rows, model.features, set(model.categorical)),
            "mean_abs_shap": _mean_abs_shap(model, rows)}


def live(model, ref: dict, rows, sample: int = SAMPLE, seed: int = 0, shap: bool = True) -> dict:
    """PSI of each feature of ``rows`` against ``ref`` and, with ``shap``, their mean |SHAP|
    (to set beside the reference's)."""
    rows, n = _sample(model._derived(rows), sample, seed)
    if not n:
        return {"rows": 0, "psi": {}, "mean_abs_shap": {}}
    return {"rows": n, "psi": drift(ref.get("profile", {}), rows),
            "mean_abs_shap": _mean_abs_shap(model, rows) if shap else {}}
