"""benchmarks/backtest_goals.py reads a share against its sampling noise correctly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom


@pytest.fixture(scope="module")
def goals(benchmark_module):
    return benchmark_module("backtest_goals")


def test_the_wilson_interval_and_the_chance_of_a_band_are_the_textbooks(goals):
    lo, hi = goals.wilson(0.8, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.7112, 0.8666)  # Wilson (1927), z = 1.96
    k = np.arange(451)
    in_band = (k / 450 >= 0.77) & (k / 450 <= 0.83)
    assert goals.calibrated_meets(450, 0.8, 0.77, 0.83) == pytest.approx(binom.pmf(k[in_band], 450, 0.8).sum())
    assert goals.calibrated_meets(10_000, 0.9, 0.9) == pytest.approx(binom.sf(8999, 10_000, 0.9))  # >= 90% on time


def test_a_miss_is_called_noise_only_when_a_calibrated_model_could_have_made_it(goals):
    rows = []
    for cutoff, cover, n in (("2018-01-01", 0.75, 200), ("2018-02-01", 0.75, 5000), ("2018-03-01", 0.80, 5000)):
        rows += [(cutoff, "at_order", "eddy", "coverage_80", cover), (cutoff, "at_order", "eddy", "edd_n", n),
                 (cutoff, "at_order", "eddy", "edd_mae_days", 1.0), (cutoff, "at_order", "lane_median", "edd_mae_days", 2.0)]
    t = pd.DataFrame(rows, columns=["cutoff", "moment", "model", "metric", "value"])
    cover = [g for g in goals.goals(t) if g.goal.startswith("coverage 80") and "at_order" in g.goal]
    (met1, note1, p1), (met2, note2, p2), (met3, _, p3) = ((g.met, g.note, g.chance) for g in cover)
    assert not met1 and "within sampling noise" in note1 and "n=200" in note1  # 75% of 200: 80% is inside its interval
    assert not met2 and "beyond sampling noise" in note2  # 75% of 5,000 is not
    assert met3 and p1 < p2 == pytest.approx(p3) and p3 > 0.99  # 200 parcels often leave the band by chance
