"""The references of benchmarks/knowable_bounds.py are what they claim: the EDD median is the
oracle's when it is told the lane's true effect, and the churn scores are true
probabilities (calibrated against the labels and, by the tower property, the oracle)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.simulate import SimConfig, simulate


@pytest.fixture(scope="module")
def kb(benchmark_module):
    return benchmark_module("knowable_bounds")


@pytest.fixture(scope="module")
def sim():
    return simulate(SimConfig(customers=3000, seed=11), keep_latent=True)


def test_the_knowable_median_told_the_true_lane_effect_and_no_storm_is_the_oracles(kb, sim):
    world, p = sim.latent["world"], sim.latent["parcels"]
    day0 = np.floor(p.ordered).astype(np.int64)
    # calm parcels: no storm in their region from the order until three weeks on
    calm = ~np.array([world.storm_days[r, d:d + 21].any() for r, d in zip(p.region, day0)])
    pick = np.flatnonzero(calm & ~np.isnan(p.truth["p50"]))[:400]
    effect = world.lane_effect[p.warehouse, p.region, p.cs]
    got = np.empty(len(pick))
    for value in np.unique(effect[pick]):  # one lane at a time: its effect is the grid's only point
        at = np.flatnonzero(effect[pick] == value)
        posterior = np.zeros((len(p.ordered), 1))
        posterior[pick[at]] = 1.0
        got[at] = kb.knowable_median(world, p, pick[at], posterior, grid=np.array([value]))
    assert len(pick) == 400
    np.testing.assert_allclose(got, p.truth["p50"][pick], atol=60 / 86_400)  # within a minute


def test_the_lane_posterior_narrows_around_the_true_effect_as_deliveries_come(kb, sim):
    world, p = sim.latent["world"], sim.latent["parcels"]
    post = kb.lane_posteriors(world, p)
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    mean = post @ kb.LANE_GRID
    sd = np.sqrt(np.maximum(post @ kb.LANE_GRID ** 2 - mean ** 2, 0))
    effect = world.lane_effect[p.warehouse, p.region, p.cs]
    late = p.ordered > np.quantile(p.ordered, 0.8)  # busy lanes have seen many deliveries by then
    early = p.ordered < np.quantile(p.ordered, 0.02)
    assert np.median(sd[late]) < 0.5 * np.median(sd[early])
    assert np.median(np.abs(mean[late] - effect[late])) < 0.05  # the prior's own spread is 0.35


def test_churn_scores_are_true_probabilities(kb, sim):
    orders = kb.orders_with_bound(sim)
    judged = orders[orders.mature]
    assert len(judged) > 5000
    assert abs(judged.bound.mean() - judged.y.mean()) < 0.015
    bins = judged.groupby(pd.qcut(judged.bound.rank(method="first"), 5)).agg(
        bound=("bound", "mean"), oracle=("oracle", "mean"), y=("y", "mean"))
    np.testing.assert_allclose(bins.oracle, bins.bound, atol=0.012)  # E[oracle | bound] = bound
    np.testing.assert_allclose(bins.y, bins.bound, atol=0.04)
    # a customer who stayed through several orders is less likely to leave: the posterior
    # must learn it from each survival (without that term, 0.019 too high here)
    tenured = judged[judged.groupby("customer_idx").cumcount() >= 4]
    assert len(tenured) > 1000
    assert abs(tenured.bound.mean() - tenured.oracle.mean()) < 0.008
    # it ranks between knowing nothing and knowing each customer's hidden traits
    from sklearn.metrics import roc_auc_score
    assert 0.6 < roc_auc_score(judged.y, judged.bound) < roc_auc_score(judged.y, judged.oracle)
