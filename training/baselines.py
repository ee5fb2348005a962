"""The best simple alternatives each model must beat, on the same rows.

EDD: the retailer's own promise and the lane's historical median. Delay: the
lane/carrier late-rate table. Churn: an RFM logistic regression and a BG/NBD model
(pymc-marketing's BetaGeoModel, fitted by MAP on the training window).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RFM_FEATURES = ("recency_days", "orders_so_far", "spend_per_order", "tenure_days")


def promise_hours(rows: pd.DataFrame) -> np.ndarray:
    """The retailer's promise read as a prediction of hours left (from the moment)."""
    return (rows.promise_hours - rows.hours_since_order).to_numpy(dtype=float)


def lane_median_hours(rows: pd.DataFrame) -> np.ndarray:
    """The lane's historical median lead time (carrier lane, shrunk), minus time already spent."""
    return np.maximum(rows.carrier_lane_median_h.to_numpy(dtype=float) - rows.hours_since_order.to_numpy(dtype=float), 0)


def late_rate_table(rows: pd.DataFrame) -> np.ndarray:
    """The carrier lane's historical late rate (shrunk toward carrier and global)."""
    return np.nan_to_num(rows.carrier_lane_late_rate.to_numpy(dtype=float), nan=np.nanmean(rows.carrier_lane_late_rate))


def rfm_frame(rows: pd.DataFrame) -> pd.DataFrame:
    recency = rows.days_since_previous_order.fillna(rows.tenure_days)
    return pd.DataFrame({
        "recency_days": recency.to_numpy(dtype=float),
        "orders_so_far": rows.orders_so_far.to_numpy(dtype=float),
        "spend_per_order": (rows.spend_so_far / rows.orders_so_far.clip(lower=1)).to_numpy(dtype=float),
        "tenure_days": rows.tenure_days.fillna(0).to_numpy(dtype=float),
    }).fillna(0.0)


class RfmBaseline:
    def fit(self, rows: pd.DataFrame, y: np.ndarray) -> "RfmBaseline":
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(rfm_frame(rows), y)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(rfm_frame(rows))[:, 1]


class BgNbdBaseline:
    """BG/NBD on each customer's purchase history: frequency, recency, age (days)."""

    def fit(self, orders: pd.DataFrame, cutoff: pd.Timestamp) -> "BgNbdBaseline":
        from pymc_marketing.clv import BetaGeoModel

        summary = self._summary(orders[orders.ordered_at < cutoff], cutoff)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("pymc").setLevel(logging.ERROR)
            self.model_ = BetaGeoModel(data=summary)
            self.model_.fit(method="map", progressbar=False)
        return self

    def params(self) -> dict[str, float]:
        """The fitted population parameters (r, alpha, a, b), for ``features.rhythm``."""
        post = self.model_.fit_result  # the posterior (one draw for a MAP fit)
        return {k: float(post[k].mean()) for k in ("r", "alpha", "a", "b")}

    @staticmethod
    def _summary(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
        g = orders.groupby(orders.customer_id.astype("str")).ordered_at
        first, last, count = g.min(), g.max(), g.size()
        return pd.DataFrame({
            "customer_id": np.arange(len(count)),
            "frequency": (count - 1).to_numpy(dtype=float),
            "recency": ((last - first) / pd.Timedelta(days=1)).to_numpy(dtype=float),
            "T": ((cutoff - first) / pd.Timedelta(days=1)).to_numpy(dtype=float),
        })

    def predict_no_order(self, rows: pd.DataFrame, horizon_days: float) -> np.ndarray:
        """P(no purchase within the horizon) from each row's own history as of its moment."""
        frequency = (rows.orders_so_far - 1).clip(lower=0).to_numpy(dtype=float)
        age = rows.tenure_days.fillna(0).to_numpy(dtype=float)
        since_last = rows.days_since_delivery.fillna(0).to_numpy(dtype=float) + \
            rows.transit_days.fillna(0).to_numpy(dtype=float)
        data = pd.DataFrame({"customer_id": np.arange(len(rows)), "frequency": frequency,
                             "recency": np.clip(age - since_last, 0, None) * (frequency > 0), "T": np.maximum(age, 1e-3)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = self.model_.expected_probability_no_purchase(t=horizon_days, data=data)
        return np.asarray(p.mean(axis=tuple(range(p.ndim - 1)))).ravel() if np.ndim(p) > 1 else np.asarray(p)
