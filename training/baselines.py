"""The best simple alternatives each model must beat, on the same rows.

EDD: the retailer's own promise and the lane's historical median. Delay: the
lane/carrier late-rate table. Churn: an RFM logistic regression and a BG/NBD model
fitted by MAP on the training window.

The BG/NBD fit is pymc-marketing's ``BetaGeoModel.fit(method="map")`` done with scipy:
the same likelihood and default priors, so the same four parameters (tested against
pymc-marketing, which stays the reference in the tests). Through pymc-marketing every
``eddy train`` paid 14 s for its first fit (4.4 s importing pymc, 7 s compiling the
graph) and 3 s for each later one, for four numbers; here a fit takes milliseconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import betaln, gammaln
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from features.rhythm import PARAMS

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
        summary = self._summary(orders[orders.ordered_at < cutoff], cutoff)
        self.params_ = bgnbd_map(*(summary[c].to_numpy() for c in ("frequency", "recency", "T")))
        return self

    def params(self) -> dict[str, float]:
        """The fitted population parameters (r, alpha, a, b), for ``features.rhythm``."""
        return dict(self.params_)

    @staticmethod
    def _summary(orders: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
        g = orders.groupby(orders.customer_id.astype("str")).ordered_at
        first, last, count = g.min(), g.max(), g.size()
        return pd.DataFrame({
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
        recency = np.clip(age - since_last, 0, None) * (frequency > 0)
        return bgnbd_no_purchase(self.params_, frequency, recency, np.maximum(age, 1e-3), horizon_days)


#: pymc-marketing's default BetaGeoModel priors: r ~ Weibull(2, 1), alpha ~ Weibull(2, 10),
#: a = phi * kappa and b = (1 - phi) * kappa with phi ~ Uniform(0, 1), kappa ~ Pareto(1, 1)
WEIBULL_R, WEIBULL_ALPHA = (2.0, 1.0), (2.0, 10.0)


def bgnbd_log_likelihood(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """Each customer's BG/NBD log-likelihood (Fader, Hardie and Lee 2005, eq. 6), as
    pymc-marketing's ``BetaGeoNBD.logp`` writes it."""
    d1 = gammaln(r + x) - gammaln(r) + gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    d2 = r * np.log(alpha) - (r + x) * np.log(alpha + t_x)
    c3 = ((alpha + t_x) / (alpha + T)) ** (r + x)
    c4 = np.where(x > 0, a / np.maximum(b + x - 1, 1e-300), 0.0)
    return d1 + d2 + np.log(c3 + c4)


def _weibull_logpdf(v: float, shape: float, scale: float) -> float:
    return np.log(shape / scale) + (shape - 1) * np.log(v / scale) - (v / scale) ** shape


def bgnbd_log_posterior(r: float, alpha: float, phi: float, kappa: float, x, t_x, T) -> float:
    """What pymc's ``find_MAP`` maximizes for the default BetaGeoModel: the likelihood and
    the priors' densities, without the transforms' Jacobians."""
    prior = _weibull_logpdf(r, *WEIBULL_R) + _weibull_logpdf(alpha, *WEIBULL_ALPHA) - 2.0 * np.log(kappa)
    return float(bgnbd_log_likelihood(r, alpha, phi * kappa, (1 - phi) * kappa, x, t_x, T).sum() + prior)


def _natural(u: np.ndarray) -> tuple[float, float, float, float]:
    """(r, alpha, phi, kappa) from unconstrained values: log, log, logit, log(kappa - 1)."""
    return float(np.exp(u[0])), float(np.exp(u[1])), float(1 / (1 + np.exp(-u[2]))), float(1 + np.exp(u[3]))


def bgnbd_map(x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> dict[str, float]:
    """The maximum a posteriori (r, alpha, a, b) for repeat purchases ``x``, age at the last
    one ``t_x`` and age ``T`` (days). The search runs over unconstrained values; without a
    Jacobian the maximum is the same point as over the parameters themselves."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))

    def loss(u):
        # The search probes the edges of the parameter space, where a log meets zero: such a
        # point is simply not a candidate (1e300), not something to warn the user about.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value = bgnbd_log_posterior(*_natural(u), x, t_x, T)
        return -value if np.isfinite(value) else 1e300

    # start near the priors' modes (r 0.7, alpha 7, phi 0.5, kappa 2)
    best = optimize.minimize(loss, np.array([np.log(0.7), np.log(7.0), 0.0, np.log(1.0)]), method="L-BFGS-B",
                             options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 2000})
    if not np.isfinite(best.fun) or best.fun >= 1e300:
        raise ValueError("BG/NBD: no finite posterior for these customers")
    r, alpha, phi, kappa = _natural(best.x)
    return {"r": r, "alpha": alpha, "a": phi * kappa, "b": (1 - phi) * kappa}


def bgnbd_no_purchase(params: dict, x, t_x, T, t: float) -> np.ndarray:
    """P(no purchase in (T, T + t]) per customer: Hardie's step-by-step BG/NBD notes, eq.
    34, as pymc-marketing's ``expected_probability_no_purchase`` computes it (tested equal)."""
    r, alpha, a, b = (float(params[k]) for k in PARAMS)
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    with np.errstate(invalid="ignore", over="ignore"):
        beta_rep = betaln(a, b + x)
        k_e = betaln(a + 1, b + x - 1) - (r + x) * np.log(alpha + t_x)
        k_f = beta_rep - (r + x) * np.log(alpha + T + t)
        k_m = beta_rep - (r + x) * np.log(alpha + T)
        k1, k2 = np.maximum(k_e, k_f), np.maximum(k_e, k_m)
        numer = np.exp(k_e - k1) + np.exp(k_f - k1)
        denom = np.exp(k_e - k2) + np.exp(k_m - k2)
        return np.exp(k1 - k2) * numer / denom
