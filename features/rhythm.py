"""The customer's own buying rhythm as BG/NBD sees it, as churn features.

BG/NBD (Fader, Hardie and Lee, 2005) reads a customer's repeat purchases ``x``, the
age at the latest one ``t_x`` and the current age ``T`` (days) through four population
parameters. Given those parameters (learned on the training window by training, kept
with the model version), two closed forms describe the customer at a moment:

- P(alive) = 1 / (1 + [x > 0] * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))
- P(no order within h days) = 1 - P(alive) * (1 - ((alpha + T) / (alpha + T + h)) ** (r + x));
  a customer only drops out right after a purchase, so one alive at T who buys nothing
  in the window stays alive, and their rate's posterior is Gamma(r + x, alpha + T).

Inputs are the customer columns of ``features.customer`` at the moment, so training,
``score-customers`` and a single ``/churn`` compute them with this one function.
"""

from __future__ import annotations

import numpy as np

from features.pit import Columns

RHYTHM_FEATURES = ("rhythm_p_alive", "rhythm_p_no_order")
PARAMS = ("r", "alpha", "a", "b")


def rhythm_features(rows: Columns, params: dict | None, horizon_days: float) -> Columns:
    """P(alive) and P(no order within the horizon) per row; missing without parameters."""
    n = len(np.asarray(rows["orders_so_far"]))
    if not params:
        return {name: np.full(n, np.nan, dtype=np.float32) for name in RHYTHM_FEATURES}
    r, alpha, a, b = (float(params[k]) for k in PARAMS)
    x = np.maximum(np.nan_to_num(np.asarray(rows["orders_so_far"], dtype=float)) - 1, 0)
    age = np.maximum(np.nan_to_num(np.asarray(rows["tenure_days"], dtype=float)), 1e-3)
    since_last = np.nan_to_num(np.asarray(rows["days_since_last_order"], dtype=float))
    t_x = np.clip(age - since_last, 0, age)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        odds = np.where(x > 0, a / (b + x - 1) * np.exp((r + x) * np.log((alpha + age) / (alpha + t_x))), 0.0)
        alive = 1.0 / (1.0 + odds)
        quiet_if_alive = np.exp((r + x) * np.log((alpha + age) / (alpha + age + horizon_days)))
    return {"rhythm_p_alive": alive.astype(np.float32),
            "rhythm_p_no_order": (1.0 - alive * (1.0 - quiet_if_alive)).astype(np.float32)}
