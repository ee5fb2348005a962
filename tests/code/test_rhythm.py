"""BG/NBD: the training baseline's fit and the rhythm features' closed forms agree with
pymc-marketing's BetaGeoModel, the reference."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from features.rhythm import rhythm_features
from training.baselines import bgnbd_log_posterior, bgnbd_map, bgnbd_no_purchase


def test_rhythm_features_equal_pymc_marketings_bgnbd_for_the_same_parameters():
    from pymc_marketing.clv import BetaGeoModel

    rng = np.random.default_rng(4)
    n = 400
    age = rng.uniform(5, 600, n)
    repeat = rng.poisson(1.5, n).astype(float)
    since_last = np.where(repeat > 0, rng.uniform(0, 1, n) * age, age)
    fit_data = pd.DataFrame({"customer_id": np.arange(n), "frequency": repeat,
                             "recency": np.where(repeat > 0, age - since_last, 0.0), "T": age})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BetaGeoModel(data=fit_data)
        model.fit(method="map", progressbar=False)
        theirs_alive = np.asarray(model.expected_probability_alive(data=fit_data)).reshape(-1, n).mean(axis=0)
        theirs_quiet = np.asarray(model.expected_probability_no_purchase(t=90, data=fit_data)).reshape(-1, n).mean(axis=0)
    params = {k: float(model.fit_result[k].mean()) for k in ("r", "alpha", "a", "b")}
    # the baseline's own MAP fit finds pymc's maximum (at least as high), and its P(no
    # purchase) is pymc-marketing's for every customer, repeat buyer or not
    ours_fit = bgnbd_map(fit_data.frequency, fit_data.recency, fit_data["T"])
    for k in params:
        assert abs(ours_fit[k] / params[k] - 1) < 1e-3, (k, ours_fit[k], params[k])

    def posterior(p):
        return bgnbd_log_posterior(p["r"], p["alpha"], p["a"] / (p["a"] + p["b"]), p["a"] + p["b"],
                                   fit_data.frequency.to_numpy(), fit_data.recency.to_numpy(), fit_data["T"].to_numpy())
    assert posterior(ours_fit) >= posterior(params) - 1e-6
    assert posterior(ours_fit) > posterior({**ours_fit, "r": ours_fit["r"] * 1.05})  # a maximum, not any point
    np.testing.assert_allclose(bgnbd_no_purchase(params, fit_data.frequency, fit_data.recency, fit_data["T"], 90),
                               theirs_quiet, rtol=1e-12)
    rows = {"orders_so_far": repeat + 1, "tenure_days": age, "days_since_last_order": since_last}
    ours = rhythm_features(rows, params, 90.0)
    np.testing.assert_allclose(ours["rhythm_p_alive"], theirs_alive, rtol=1e-4, atol=1e-5)
    repeat_buyers = repeat > 0
    np.testing.assert_allclose(ours["rhythm_p_no_order"][repeat_buyers], theirs_quiet[repeat_buyers], rtol=1e-4, atol=1e-5)
    # Without a repeat purchase BG/NBD holds the customer alive (both agree); pymc-marketing's
    # P(no purchase) then still counts a drop-out, which the model does not allow before a
    # repeat purchase, so ours is the customer's own Poisson-Gamma silence.
    alive, quiet = ours["rhythm_p_alive"][~repeat_buyers], ours["rhythm_p_no_order"][~repeat_buyers]
    assert (alive == 1).all() and (quiet < theirs_quiet[~repeat_buyers]).all()
    r, a = params["r"], params["alpha"]
    np.testing.assert_allclose(quiet, ((a + age[~repeat_buyers]) / (a + age[~repeat_buyers] + 90)) ** r, rtol=1e-5)
    # a long silence after a steady rhythm: less likely alive than the same customer just after an order
    steady = {"orders_so_far": np.array([10.0, 10.0]), "tenure_days": np.array([300.0, 300.0]),
              "days_since_last_order": np.array([2.0, 150.0])}
    assert np.diff(rhythm_features(steady, params, 90.0)["rhythm_p_alive"])[0] < -0.3


def test_without_parameters_the_rhythm_is_missing_not_invented():
    rows = {"orders_so_far": np.array([1.0, 3.0]), "tenure_days": np.array([10.0, 90.0]),
            "days_since_last_order": np.array([1.0, 5.0])}
    out = rhythm_features(rows, None, 90.0)
    assert all(np.isnan(v).all() for v in out.values())
