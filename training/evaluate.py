"""Metrics a sceptic would accept, computed the same way for models and baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

HOURS_PER_DAY = 24.0


def edd_metrics(pred_hours: np.ndarray, actual_hours: np.ndarray) -> dict[str, float]:
    """Mean absolute error in days and the share within one day."""
    err = np.abs(pred_hours - actual_hours) / HOURS_PER_DAY
    return {"mae_days": float(np.mean(err)), "within_1d": float(np.mean(err <= 1.0))}


def interval_metrics(low: np.ndarray, high: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    return {"coverage": float(np.mean((actual >= low) & (actual <= high))),
            "width_days": float(np.mean(high - low) / HOURS_PER_DAY)}


def coverage_by(segment: pd.Series, low: np.ndarray, high: np.ndarray, actual: np.ndarray) -> pd.DataFrame:
    inside = (actual >= low) & (actual <= high)
    df = pd.DataFrame({"segment": segment.to_numpy(), "inside": inside, "width_days": (high - low) / HOURS_PER_DAY})
    return df.groupby("segment").agg(rows=("inside", "size"), coverage=("inside", "mean"),
                                     width_days=("width_days", "mean")).reset_index()


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |observed - predicted| over equal-width probability bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(total)


def probability_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(p, y),
        "base_rate": float(np.mean(y)),
    }


def top_decile_lift(p: np.ndarray, y: np.ndarray) -> float:
    cut = np.quantile(p, 0.9)
    top = p >= cut
    return float(y[top].mean() / max(y.mean(), 1e-9)) if top.any() else float("nan")


def calibration_table(p: np.ndarray, y: np.ndarray, bins: int = 10) -> pd.DataFrame:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    df = pd.DataFrame({"bin": which, "p": p, "y": y})
    return df.groupby("bin").agg(predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size")).reset_index()
