"""The simulator: contract-valid, deterministic, realistic, and its truth is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.contract import EVENTS, TABLES
from data.load import load_data_set
from data.simulate import SimConfig, _lognormal_mixture_quantiles, mixture_cdf, simulate, transit_mean
from data.write import write_data_set


def test_every_table_follows_the_contract_and_nothing_is_quarantined(sim_dir):
    ds = load_data_set(sim_dir)
    assert set(ds.tables) == set(TABLES)
    assert ds.total_quarantined == 0, {k: r.by_rule for k, r in ds.report.items() if r.quarantined}
    assert set(ds["scans"].event.unique()) <= set(EVENTS)
    assert {"label_created", "picked_up", "arrived_at_facility", "departed_facility", "out_for_delivery",
            "delivered", "exception", "delivery_attempted"} <= set(ds["scans"].event.unique())


def test_csv_and_parquet_load_to_the_same_tables(sim_small, tmp_path):
    write_data_set(sim_small.tables, tmp_path / "p", "parquet")
    write_data_set(sim_small.tables, tmp_path / "c", "csv")
    a, b = load_data_set(tmp_path / "p"), load_data_set(tmp_path / "c")
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, rtol=1e-9, obj=name)


def test_same_seed_same_data_other_seed_other_data():
    a = simulate(SimConfig(customers=300, seed=5)).tables
    b = simulate(SimConfig(customers=300, seed=5)).tables
    c = simulate(SimConfig(customers=300, seed=6)).tables
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    assert not a["shipments"].delivered_at.equals(c["shipments"].delivered_at)


def test_latent_state_changes_no_table_and_matches_the_rows_and_truth():
    """``keep_latent=True`` (what benchmarks/knowable_bounds.py reads) hands back the hidden
    state beside the same tables: parcels in the shipments table's row order, customers'
    traits by id, and the law's inputs that rebuild each parcel's true mean transit."""
    cfg = SimConfig(customers=300, seed=5)
    plain, full = simulate(cfg), simulate(cfg, keep_latent=True)
    assert plain.latent == {}
    for name in plain.tables:
        pd.testing.assert_frame_equal(plain.tables[name], full.tables[name], obj=name)
    for name in plain.truth:
        pd.testing.assert_frame_equal(plain.truth[name], full.truth[name], obj=name)
    world, p, people = (full.latent[k] for k in ("world", "parcels", "customers"))
    ship = full.tables["shipments"]
    ordered = (ship.ordered_at - world.start) / pd.Timedelta(days=1) + world.t_start
    np.testing.assert_allclose(ordered.to_numpy(), p.ordered, atol=1 / 86_400)  # whole seconds
    t = p.truth
    mean = transit_mean(t["route_days"], world.lane_effect[p.warehouse, p.region, p.cs], t["rural"], t["heavy"])
    np.testing.assert_array_equal(mean, full.truth["shipments"].mean_transit_days.to_numpy())
    first_seen = (full.tables["customers"].first_seen_at - world.start) / pd.Timedelta(days=1) + world.t_start
    idx = full.tables["customers"].customer_id.str[1:].astype(int).to_numpy() - 1
    np.testing.assert_allclose(first_seen.to_numpy(), np.minimum(people.first_seen[idx], world.t_end), atol=1 / 86_400)
    assert len(people.rate_per_day) == cfg.customers and (people.rate_per_day > 0).all()


def test_late_share_is_realistic_and_higher_at_peak(sim_small):
    s = sim_small.summary
    assert 0.05 <= s["late_share"] <= 0.12
    assert s["late_share_peak"] > 1.8 * s["late_share_off_peak"]


def test_world_has_the_promised_variety(sim_small):
    sh = sim_small.tables["shipments"]
    assert sh.carrier.nunique() >= 4 and sh.service_level.nunique() >= 3
    assert sh.origin_region.nunique() == 5 and sh.destination_region.nunique() >= 30
    span = sh.ordered_at.max() - sh.ordered_at.min()
    assert span > pd.Timedelta(days=730)
    orders_per_customer = sim_small.tables["orders"].groupby("customer_id").size()
    assert orders_per_customer.max() >= 10 and (orders_per_customer == 1).mean() > 0.1
    truth = sim_small.truth["shipments"]
    assert set(truth.outcome) == {"delivered", "lost", "returned"}
    assert len(sim_small.truth["storms"]) > 20
    # Some scans missing and some recorded out of order.
    scans = sim_small.tables["scans"]
    delivered = sh.delivered_at.notna()
    per_ship = scans.groupby("shipment_id", observed=True).size()
    assert per_ship.reindex(sh.shipment_id[delivered]).fillna(0).min() >= 1
    assert (scans.groupby("shipment_id", observed=True).scanned_at.is_monotonic_increasing.mean()) == 1.0  # feed sorted by time
    hubs = scans[scans.event.isin(["arrived_at_facility", "departed_facility"])].sort_values(["shipment_id", "scanned_at"])
    first = hubs.groupby("shipment_id", observed=True).event.first()
    assert (first == "departed_facility").mean() > 0.005  # a skewed arrival scan recorded before its departure


def test_delivered_scan_matches_delivered_at(sim_small):
    sh = sim_small.tables["shipments"].set_index("shipment_id")
    scans = sim_small.tables["scans"]
    d = scans[scans.event == "delivered"]
    assert (d.scanned_at.to_numpy() == sh.delivered_at.loc[d.shipment_id.astype(str)].to_numpy()).all()
    assert (d.scanned_at.dt.hour.between(9, 20)).all()


def test_truth_quantiles_hold_their_share_of_real_outcomes():
    r = simulate(SimConfig(customers=6000, seed=3))
    sh, truth = r.tables["shipments"], r.truth["shipments"]
    done = sh.delivered_at.notna().to_numpy()
    a = sh.delivered_at[done]
    inside = ((a >= truth.p10_at[done]) & (a <= truth.p90_at[done])).mean()
    below_median = (a <= truth.p50_at[done]).mean()
    assert inside == pytest.approx(0.80, abs=0.015)
    assert below_median == pytest.approx(0.50, abs=0.015)
    assert (truth.p10_hours <= truth.p50_hours).all() and (truth.p50_hours <= truth.p90_hours).all()


def test_truth_late_probability_is_calibrated():
    r = simulate(SimConfig(customers=6000, seed=4))
    sh, truth = r.tables["shipments"], r.truth["shipments"]
    resolved = sh.promised_at.notna() & (sh.delivered_at.notna() | (truth.outcome != "delivered"))
    late = (truth.outcome[resolved] != "delivered") | (
        sh.delivered_at[resolved].dt.floor("D") > sh.promised_at[resolved].dt.floor("D"))
    p = truth.p_late[resolved]
    assert late.mean() == pytest.approx(p.mean(), abs=0.01)
    high = p > 0.5
    assert late[high].mean() == pytest.approx(p[high].mean(), abs=0.05)


def test_mixture_quantiles_match_a_slow_bisection_reference():
    rng = np.random.default_rng(0)
    n = 500
    mu, sigma = rng.normal(0.7, 0.4, n), rng.uniform(0.15, 0.35, n)
    shifts = rng.uniform(0, 50, n)[:, None] + np.array([0, 2, 1, 3, 1.5, 3.5, 2.5, 4.5])[None, :]
    weights = rng.dirichlet(np.ones(8), n)
    fast = _lognormal_mixture_quantiles(shifts, weights, mu, sigma, (0.1, 0.5, 0.9))
    for q, p in zip(fast, (0.1, 0.5, 0.9)):
        for i in range(0, n, 50):  # the obvious, slow way: 200 bisection steps on one row
            lo, hi = shifts[i].min(), shifts[i].max() + 100.0
            for _ in range(200):
                mid = (lo + hi) / 2
                below = mixture_cdf(np.array([mid]), shifts[i:i + 1], weights[i:i + 1], mu[i:i + 1], sigma[i:i + 1])[0] < p
                lo, hi = (mid, hi) if below else (lo, mid)
            assert q[i] == pytest.approx(lo, abs=2e-3)  # within 3 minutes


def test_bad_deliveries_raise_the_true_churn_probability(sim_small):
    o = sim_small.truth["orders"]
    clean = o[(o.days_late == 0) & ~o.exception & ~o.not_delivered]
    late = o[o.days_late >= 2]
    lost = o[o.not_delivered]
    assert late.p_no_order_90d.mean() > clean.p_no_order_90d.mean() + 0.1
    assert lost.p_no_order_90d.mean() > late.p_no_order_90d.mean()
    assert o.p_no_order_90d.between(0, 1).all()


def test_a_simulation_in_slices_is_one_valid_data_set_of_parts(tmp_path):
    """``eddy simulate --shipments-target``: slices of one world, each written as a part
    before the next is made; ids unique across slices, every row accepted, truth in parts."""
    from data.load import load_data_set
    from data.simulate import SimConfig, simulate_in_slices

    totals = simulate_in_slices(SimConfig(customers=900, seed=5), 3, tmp_path)
    ds = load_data_set(tmp_path)
    assert ds.total_quarantined == 0 and len(ds["shipments"]) == totals["shipments"]
    assert sorted(p.name for p in (tmp_path / "shipments").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    assert ds["shipments"].shipment_id.is_unique and ds["orders"].order_id.is_unique
    slices = ds["customers"].customer_id.str.slice(1, 5)
    assert sorted(slices.unique()) == ["0000", "0001", "0002"] and slices.value_counts().min() > 200
    # one world: every slice ships on the same carriers and lanes
    per_slice = ds["shipments"].groupby(ds["shipments"].shipment_id.str.slice(1, 5)).carrier.unique()
    assert all(set(c) == set(per_slice.iloc[0]) for c in per_slice)
    truth = pd.read_parquet(tmp_path / "truth" / "shipments")
    assert set(truth.shipment_id) == set(ds["shipments"].shipment_id)
