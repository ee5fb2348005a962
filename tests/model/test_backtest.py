"""Rolling-origin backtest: only what was known at each cutoff trains, every figure is on record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.known import known_at
from data.load import DataSet, load_data_set
from training.backtest import COLUMNS, METRICS, MODELS, MOMENTS, Outcomes, by_cutoff, run_cutoff

EDDY = str(Path(sys.executable).parent / "eddy")
HORIZON = pd.Timedelta(days=45)
CUT = pd.Timestamp("2025-09-01T00:00:00Z")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ds(sim_dir) -> DataSet:
    return load_data_set(sim_dir)


@pytest.fixture(scope="module")
def at_cut(ds):
    return run_cutoff(ds, Outcomes.of(ds), CUT, HORIZON, seed=3)


def with_shipments(ds: DataSet, new: pd.DataFrame) -> DataSet:
    """The data set plus ``new`` shipments and, when it has an orders table, their orders."""
    tables = dict(ds.tables)
    tables["shipments"] = pd.concat([ds["shipments"], new], ignore_index=True)
    orders = ds.get("orders")
    if orders is not None:
        tables["orders"] = pd.concat([orders, pd.DataFrame({
            "order_id": new.order_id, "customer_id": new.customer_id, "ordered_at": new.ordered_at,
            "value": 50.0})], ignore_index=True).astype(orders.dtypes.to_dict())
    return DataSet(ds.folder, tables, {}, {})


def plant(ds: DataSet, ordered_at: pd.Timestamp) -> DataSet:
    """The data set plus a new customer whose 40 parcels on the busiest carrier lane took
    30 days (the lane's usual is a few), all ordered at ``ordered_at`` or just after."""
    s = ds["shipments"]
    busiest = s.groupby(["carrier", "service_level", "origin_region", "destination_region"], observed=True).size().idxmax()
    like = s[(s.carrier == busiest[0]) & (s.service_level == busiest[1]) & (s.origin_region == busiest[2])
             & (s.destination_region == busiest[3])].head(1)
    n = 40
    new = pd.concat([like] * n, ignore_index=True)
    start = pd.Series([ordered_at + pd.Timedelta(hours=k) for k in range(n)]).astype(s.ordered_at.dtype)
    new = new.assign(shipment_id=[f"planted-{k}" for k in range(n)], order_id=[f"planted-order-{k}" for k in range(n)],
                     customer_id="planted-customer", ordered_at=start.to_numpy(),
                     shipped_at=(start + pd.Timedelta(hours=12)).to_numpy(),
                     promised_at=(start + pd.Timedelta(days=4)).to_numpy(),
                     delivered_at=(start + pd.Timedelta(days=30)).to_numpy())
    return with_shipments(ds, new)


def test_known_at_keeps_only_what_had_happened(ds):
    cut = pd.Timestamp("2025-03-01T00:00:00Z")
    k = known_at(ds, cut)
    s = k["shipments"]
    assert len(s) == int((ds["shipments"].ordered_at < cut).sum()) > 0
    assert (s.ordered_at < cut).all()
    assert (s.delivered_at.dropna() < cut).all() and (s.shipped_at.dropna() < cut).all()
    # an outcome after the cut is unknown, not dropped with its shipment
    full = ds["shipments"].set_index("shipment_id")
    later = full.loc[s.shipment_id[s.delivered_at.isna()]].delivered_at
    assert (later.dropna() >= cut).any()
    assert (k["scans"].scanned_at < cut).all() and k["scans"].shipment_id.isin(s.shipment_id).all()
    assert (k["orders"].ordered_at < cut).all()
    assert s.promised_at.notna().sum() == full.loc[s.shipment_id].promised_at.notna().sum()  # known at order


def test_a_cutoff_has_every_model_and_baseline_with_sane_values(ds, at_cut):
    f = at_cut.figures
    assert list(f.columns) == COLUMNS
    assert set(f.model) <= set(MODELS) and set(f.metric) <= set(METRICS) and set(f.moment) <= set(MOMENTS)
    assert (f.cutoff == CUT).all()
    have = set(zip(f.moment, f.model, f.metric))
    for want in [("at_order", "eddy", "edd_mae_days"), ("at_order", "lane_median", "edd_mae_days"),
                 ("at_order", "promise", "promise95_on_time"), ("at_order", "oracle", "edd_mae_days"),
                 ("at_order", "eddy", "coverage_80"), ("in_transit", "eddy", "edd_mae_days"),
                 ("at_order", "late_rate", "delay_auc"), ("after_delivery", "rfm", "churn_auc"),
                 ("after_delivery", "bgnbd", "churn_auc"), ("after_delivery", "oracle", "churn_auc"),
                 ("after_delivery", "eddy", "churn_lift10")]:
        assert want in have, want
    v = f.set_index(["moment", "model", "metric"]).value
    assert 0.3 < v["at_order", "eddy", "edd_mae_days"] < v["at_order", "promise", "edd_mae_days"]
    assert v["in_transit", "eddy", "edd_mae_days"] < v["at_order", "eddy", "edd_mae_days"]  # scans tell more
    assert 0.6 < v["at_order", "eddy", "coverage_80"] < 0.95
    assert v["at_order", "eddy", "promise95_days"] > v["at_order", "eddy", "promise90_days"]
    share = f[f.metric.str.endswith(("_on_time", "_within_1d", "coverage_80", "_auc", "_brier", "_ece"))].value
    assert share.between(0, 1).all()
    # the parcels judged, so a share can be read against its sampling noise: each share is a count of them
    n = v["at_order", "eddy", "edd_n"]
    assert n == int(n) >= 100 and v["after_delivery", "eddy", "churn_n"] >= 100
    for metric in ("coverage_80", "promise90_on_time", "promise95_on_time", "edd_within_1d"):
        assert abs(v["at_order", "eddy", metric] * n - round(v["at_order", "eddy", metric] * n)) < 1e-6, metric
    assert at_cut.info["train_shipments"] == int((ds["shipments"].ordered_at < CUT).sum())


def test_a_planted_future_row_changes_nothing_and_a_past_one_does(ds, at_cut):
    outcomes_future = plant(ds, CUT + HORIZON + pd.Timedelta(days=1))
    future = run_cutoff(outcomes_future, Outcomes.of(outcomes_future), CUT, HORIZON, seed=3)
    pd.testing.assert_frame_equal(future.figures, at_cut.figures)
    assert future.info["train_shipments"] == at_cut.info["train_shipments"]

    # The control: the same rows before the cutoff reach the trained models.
    past_ds = plant(ds, CUT - pd.Timedelta(days=75))
    past = run_cutoff(past_ds, Outcomes.of(past_ds), CUT, HORIZON, seed=3)
    assert past.info["train_shipments"] == at_cut.info["train_shipments"] + 40
    a, b = (r.figures.set_index(["moment", "model", "metric"]).value for r in (at_cut, past))
    assert a["at_order", "eddy", "edd_mae_days"] != b["at_order", "eddy", "edd_mae_days"]


def test_backtest_command_logs_nested_runs_writes_report_and_long_table(sim_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["EDDY_MLRUNS_DIR"] = str(tmp_path / "mlruns")
    out, report = tmp_path / "figures.csv", tmp_path / "report"
    r = subprocess.run([EDDY, "backtest", str(sim_dir), "--cutoffs", "2025-08-01,2025-09-15", "--horizon", "45d",
                        "--out", str(out), "--report-dir", str(report)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "cutoff 2025-08-01: trained on" in r.stderr and "cutoff 2025-09-15: trained on" in r.stderr
    assert f"report in {report}/backtest.md" in r.stdout

    long = pd.read_csv(out)
    assert list(long.columns) == COLUMNS
    assert sorted(long.cutoff.unique()) == ["2025-08-01T00:00:00Z", "2025-09-15T00:00:00Z"]
    assert set(long.moment) == set(MOMENTS) and set(long.model) == set(MODELS)

    text = (report / "backtest.md").read_text()
    assert "## EDD MAE (days)" in text and "| mean" in text and "| spread" in text and "lane_median" in text
    assert (report / "metric_by_cutoff.png").stat().st_size > 10_000
    assert (report / "model_vs_baselines.png").stat().st_size > 10_000

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["eddy.kind"] == "backtest"
    parent = parents[0]
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.params["cutoff"][:10] for c in children) == ["2025-08-01", "2025-09-15"]
    assert all(x.info.status == "FINISHED" for x in runs)
    first = next(c for c in children if c.data.params["cutoff"].startswith("2025-08-01"))
    mine = long[long.cutoff == "2025-08-01T00:00:00Z"].set_index(["moment", "model", "metric"]).value
    assert first.data.metrics["at_order.eddy.edd_mae_days"] == pytest.approx(mine["at_order", "eddy", "edd_mae_days"])
    mean = by_cutoff(long.assign(cutoff=pd.to_datetime(long.cutoff)), "edd_mae_days", "at_order").loc["mean", "eddy"]
    assert parent.data.metrics["mean.at_order.eddy.edd_mae_days"] == pytest.approx(mean)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"backtest.parquet", "report"} <= artifacts


def test_backtest_rejects_a_bad_out_file_and_cutoffs_before_the_data(sim_dir, tmp_path):
    r = subprocess.run([EDDY, "backtest", str(sim_dir), "--out", str(tmp_path / "x.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and "must end in .parquet or .csv" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([EDDY, "backtest", str(sim_dir), "--out", str(tmp_path / "figures")], capture_output=True, text=True)
    assert r.returncode == 2 and "figures: the file name must end in .parquet or .csv" in r.stderr
    r = subprocess.run([EDDY, "backtest", str(sim_dir), "--cutoffs", "2019-01-01"], capture_output=True, text=True)
    assert r.returncode == 2 and "every cutoff must fall after the first order (2024-01-01)" in r.stderr
    r = subprocess.run([EDDY, "backtest", str(sim_dir), "--every", "soon"], capture_output=True, text=True)
    assert r.returncode == 2 and "--every 'soon' is not a duration" in r.stderr
    for args, said in ((["--cutoffs", "-3"], "--cutoffs must be at least 1"),  # a count, not the year -3
                       (["--horizon", "NaT"], "--horizon 'NaT' is not a duration"),
                       (["--cutoffs", "2030-01-01"], "every cutoff must fall before the data's last fact")):
        r = subprocess.run([EDDY, "backtest", str(sim_dir), *args], capture_output=True, text=True)
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-500:])


def slow_parcels(ds: DataSet, like: pd.DataFrame, ordered: list[pd.Timestamp], lead_days: list[float],
                 tag: str) -> DataSet:
    """The data set plus copies of ``like``'s shipments in turn (carrier, lane, postals),
    ordered at ``ordered`` and delivered ``lead_days`` later, for new customers."""
    s = ds["shipments"]
    n = len(ordered)
    start = pd.Series(ordered).astype(s.ordered_at.dtype)
    lead = pd.to_timedelta(pd.Series(lead_days), unit="D")
    new = like.iloc[np.arange(n) % len(like)].reset_index(drop=True).assign(
        shipment_id=[f"{tag}-{k}" for k in range(n)], order_id=[f"{tag}-order-{k}" for k in range(n)],
        customer_id=[f"{tag}-customer-{k}" for k in range(n)], ordered_at=start.to_numpy(),
        shipped_at=(start + pd.Timedelta(hours=10)).to_numpy(), promised_at=(start + pd.Timedelta(days=4)).to_numpy(),
        delivered_at=(start + lead).astype(s.ordered_at.dtype).to_numpy())
    return with_shipments(ds, new)


@pytest.fixture(scope="module")
def drift(ds):
    """One world trained at the cutoff twice: as it was, and with a storm in one region in
    the last days before the cutoff plus a slow-down on one carrier lane in the weeks before.
    Returns both bundles and the next week's orders (into neither region) three ways: as
    placed, moved onto the slowed lane, and moved into the storm region, so the carriers
    and days are alike in all three."""
    from training.train import train

    s = ds["shipments"]
    before = s[(s.ordered_at < CUT - pd.Timedelta(days=60))]
    storm_region = before.destination_region.value_counts().index[0]
    lanes = before[before.destination_region != storm_region].groupby(
        ["carrier", "service_level", "origin_region", "destination_region"], observed=True).size()
    lane = before[before.set_index(list(lanes.index.names)).index == lanes.idxmax()].head(1)
    into_storm = before[before.destination_region == storm_region].sample(60, random_state=5)  # every carrier
    rng = np.random.default_rng(5)
    # storm: 60 parcels into the region, ordered 8 to 3 days before the cutoff, each 6-8 days on the way
    storm_at = [CUT - pd.Timedelta(days=8) + pd.Timedelta(hours=2 * k) for k in range(60)]
    planted = slow_parcels(ds, into_storm, storm_at, list(rng.uniform(6, 8, 60)), "storm")
    # slow-down: 60 parcels on the lane, ordered 25 to 12 days before, 4-11 days on the way
    slow_at = [CUT - pd.Timedelta(days=25) + pd.Timedelta(hours=5 * k) for k in range(60)]
    planted = slow_parcels(planted, lane, slow_at, list(rng.uniform(4, 11, 60)), "slow")
    calm = train(known_at(ds, CUT), end=CUT, seed=3).bundle
    drifted = train(known_at(planted, CUT), end=CUT, seed=3).bundle

    # orders of the next week: as placed, on the slowed lane, and into the storm region
    after = s[(s.ordered_at >= CUT) & (s.ordered_at < CUT + pd.Timedelta(days=7))]
    others = after[~after.destination_region.isin([storm_region, lane.destination_region.iloc[0]])].head(60)
    keys = ("carrier", "service_level", "origin_region", "destination_region", "origin_postal", "destination_postal")
    on_lane = others.assign(**{k: lane[k].iloc[0] for k in keys})
    storm = others.assign(destination_region=storm_region, destination_postal=into_storm.destination_postal.iloc[0])
    return calm, drifted, {"others": others, "lane": on_lane, "storm": storm}


def _hours(bundle, shipments) -> pd.DataFrame:
    from features.rows import order_moments

    p = bundle.predict_rows(bundle.shipment_rows(shipments, None, order_moments(shipments)), explain=False)
    h = lambda c: ((p[c] - p.as_of) / pd.Timedelta(hours=1)).to_numpy()
    return pd.DataFrame({"p10": h("eta_p10"), "p50": h("eta_p50"), "p90": h("eta_p90")})


def test_a_storm_before_the_cutoff_moves_that_regions_etas_later(drift):
    calm, drifted, orders = drift
    later = {k: (_hours(drifted, v).p50 - _hours(calm, v).p50).mean() for k, v in orders.items() if k != "lane"}
    assert len(orders["others"]) >= 10
    assert later["storm"] > 6  # hours later into the storm region
    assert later["storm"] > later["others"] + 3  # the same orders elsewhere move less


def test_the_storm_shows_in_its_regions_nowcast_which_fades_and_is_given_as_a_reason(drift):
    """The storm region's parcels ran far behind the model at the cutoff: its nowcast is
    large in the stormy world and small in the calm one; its part beyond the network's
    fades over the days after the cutoff, neither part touches a moment before it, and
    the storm orders' reasons say it."""
    from features.rows import order_moments

    calm, drifted, orders = drift
    storm = orders["storm"]
    region = storm.destination_region.iloc[0]
    network = drifted.edd.nowcast_network_
    assert drifted.edd.nowcast_[region] > 0.2 and abs(network) < 0.1 * drifted.edd.nowcast_[region]  # one region
    assert abs(calm.edd.nowcast_.get(region, 0.0)) < 0.1
    at = lambda days: storm.head(3).assign(ordered_at=CUT + pd.Timedelta(days=days))
    parts = {d: drifted.edd.nowcast_parts(drifted.shipment_rows(at(d), None, order_moments(at(d))))
             for d in (-0.01, 0, 2, 14)}
    assert (parts[-0.01] == 0).all()
    np.testing.assert_allclose(parts[0][:, 0], drifted.edd.nowcast_[region] - network)
    np.testing.assert_allclose(parts[2][:, 0], (drifted.edd.nowcast_[region] - network) / 2)
    assert (parts[14][:, 0] < 0.01 * parts[0][:, 0]).all()
    np.testing.assert_allclose(parts[0].sum(axis=1), drifted.edd.nowcast_[region])
    first = storm.head(5).assign(ordered_at=CUT + pd.Timedelta(hours=1))
    said = drifted.predict_rows(drifted.shipment_rows(first, None, order_moments(first))).reasons
    wanted = f"parcels into {region} are running behind right now"
    assert all(any(r["text"] == wanted and r["effect_hours"] > 5 and r["value"] > 0.8 for r in reasons)
               for reasons in said), said.tolist()


def test_a_slow_down_everywhere_shows_in_the_networks_nowcast_which_lasts(ds, drift):
    """When the parcels into every region run behind, the network's nowcast carries it
    (each region's own part stays small) and lasts: half of it two months on, where a
    region's storm is long gone; the answers say why."""
    import copy

    from features.rows import order_moments
    from training.rows import recent_rows, recent_shipments

    calm, _, orders = drift
    slow = copy.copy(calm)
    slow.edd = copy.copy(calm.edd)  # nowcast() sets new attributes: the fixture's model stays as it was
    rows, hours = recent_rows(recent_shipments(known_at(ds, CUT)["shipments"], CUT), calm.snapshot)
    slow.edd.nowcast(rows, hours * 1.6, CUT)  # every parcel took 60% longer
    network = slow.edd.nowcast_network_
    assert network > 0.2
    assert all(abs(v - network) < 0.1 for v in slow.edd.nowcast_.values())
    placed = orders["others"].head(20)
    at = lambda days: placed.assign(ordered_at=CUT + pd.Timedelta(days=days))
    parts = {d: slow.edd.nowcast_parts(slow.shipment_rows(at(d), None, order_moments(at(d)))) for d in (0, 60)}
    np.testing.assert_allclose(parts[0][:, 1], network)
    np.testing.assert_allclose(parts[60][:, 1], network / 2)
    assert np.abs(parts[0][:, 0]).max() < 0.1
    later = (_hours(slow, at(1)).p50 - _hours(calm, at(1)).p50).mean()
    assert later > 6, later  # hours later, the same orders
    said = slow.predict_rows(slow.shipment_rows(at(1), None, order_moments(at(1)))).reasons
    assert all(any(r["text"] == "parcels everywhere are running behind lately" and r["effect_hours"] > 2
                   and r["value"] > 0.6 for r in reasons) for reasons in said), said.tolist()


def test_the_storm_regions_nowcast_raises_the_chance_of_missing_the_promise(drift):
    """The delay model sees no storm either: its probability moves by the mass of the ETA
    distribution the nowcast pushed past each promise, and not at all without a nowcast."""
    from features.rows import order_moments

    _, drifted, orders = drift
    placed = orders["storm"].assign(ordered_at=CUT + pd.Timedelta(hours=1))
    placed = placed.assign(promised_at=placed.ordered_at + pd.Timedelta(days=4))
    rows = drifted.shipment_rows(placed, None, order_moments(placed))
    nowcast = drifted.edd.nowcast_
    with_it = drifted.predict_rows(rows, explain=False).late_probability.to_numpy()
    try:
        drifted.edd.nowcast_ = {}
        without = drifted.predict_rows(rows, explain=False).late_probability.to_numpy()
    finally:
        drifted.edd.nowcast_ = nowcast
    assert (with_it >= without).all() and (with_it <= 1).all()
    assert (with_it - without).mean() > 0.1, (with_it - without)
    # a month on, the storm's part is gone: only the network's (which lasts) moves it
    later = placed.assign(ordered_at=CUT + pd.Timedelta(days=30), promised_at=CUT + pd.Timedelta(days=34))
    rows = drifted.shipment_rows(later, None, order_moments(later))
    with_it = drifted.late_probability(rows)
    try:
        drifted.edd.nowcast_ = {"*": drifted.edd.nowcast_network_}
        network_only = drifted.late_probability(rows)
    finally:
        drifted.edd.nowcast_ = nowcast
    assert np.abs(with_it - network_only).max() < 0.01


def test_a_sudden_lane_slow_down_widens_that_lanes_intervals_at_the_next_cutoff(drift):
    calm, drifted, orders = drift
    width = lambda b, k: (_hours(b, orders[k]).p90 - _hours(b, orders[k]).p10).mean()
    grow = {k: width(drifted, k) / width(calm, k) for k in ("lane", "others")}
    assert grow["lane"] > 1.15 and grow["lane"] > grow["others"] + 0.1, grow
    assert _hours(drifted, orders["lane"]).p50.mean() > _hours(calm, orders["lane"]).p50.mean()
