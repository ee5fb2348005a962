"""Training: honest splits, calibrated outputs, baselines beaten, thin data handled."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.load import load_data_set
from data.simulate import SimConfig, simulate
from data.write import write_data_set
from runtime.bundle import ModelBundle
from training.train import train


def test_splits_are_in_time_order(trained):
    result, _ = trained
    split = result.bundle.meta["split"]
    assert split["calibrate_from"] < split["test_from"] < split["test_until"] < result.bundle.meta["data_end"]


def test_every_model_trained_and_beats_its_simple_baseline(trained):
    result, _ = trained
    m = result.metrics
    assert result.bundle.meta["skipped"] == {}
    assert m["edd_mae_days"] < m["edd_baseline_lane_median_mae_days"] < m["edd_baseline_promise_mae_days"] + 0.5
    assert m["delay_roc_auc"] > m["delay_baseline_late_rate_roc_auc"]
    assert m["edd_mae_days"] >= m["edd_oracle_mae_days"] * 0.95  # no model beats the truth by much: no leakage


def test_intervals_and_probabilities_are_calibrated_on_later_data(trained):
    m = trained[0].metrics
    assert 0.74 <= m["edd_interval_coverage"] <= 0.86
    assert m["delay_ece"] < 0.05
    assert m["edd_promise95_on_time"] >= 0.92


def test_intervals_hold_at_order_and_in_transit_each_calibrated_apart(trained):
    result, _ = trained
    m = result.metrics
    assert 0.74 <= m["edd_in_transit_interval_coverage"] <= 0.86
    shifts = result.bundle.edd.interval_shift_
    assert {"ups@order", "ups@transit", "*"} <= set(shifts)
    assert shifts["ups@order"] != shifts["ups@transit"]


def test_each_carrier_runs_on_the_days_the_simulated_carrier_works(trained):
    """The simulator's UPS works Monday to Friday, FedEx Ground and USPS also Saturdays
    (USPS a little on Sundays, too little to count); the clock learned from deliveries says so."""
    weeks = trained[0].bundle.edd.clock_.weeks
    assert weeks["ups/ground"] == [1, 1, 1, 1, 1, 0, 0]
    assert weeks["fedex/ground"] == weeks["usps/ground_advantage"] == [1, 1, 1, 1, 1, 1, 0]


def test_a_carrier_that_rests_on_weekends_never_gets_a_weekend_eta(trained):
    """Orders of every weekday and hour with UPS: the median ETA and the promise land on a
    weekday, however the weekend falls; with USPS (which works Saturdays) some land on one."""
    result, ds = trained
    from features.rows import order_moments

    s = ds["shipments"]
    s = s[s.carrier.isin(["ups", "usps"])].tail(3000)
    out = result.bundle.predict_rows(result.bundle.shipment_rows(s, ds["scans"], order_moments(s)), explain=False)
    weekday = out.eta_p50.dt.dayofweek.to_numpy()
    ups = (s.carrier == "ups").to_numpy()
    assert len(set(s.ordered_at.dt.dayofweek[ups])) == 7
    assert (weekday[ups] < 5).all()
    assert (out.promise_at.dt.dayofweek.to_numpy()[ups] < 5).all()
    assert (weekday[~ups] == 5).mean() > 0.05


def test_bundle_round_trip_predicts_the_same(trained, tmp_path):
    result, ds = trained
    from features.rows import order_moments

    s = ds["shipments"].tail(50)
    rows = result.bundle.shipment_rows(s, ds["scans"], order_moments(s))
    before = result.bundle.predict_rows(rows)
    loaded = ModelBundle.load(result.bundle.save(tmp_path / "b"))
    after = loaded.predict_rows(loaded.shipment_rows(s, ds["scans"], order_moments(s)))
    pd.testing.assert_frame_equal(before, after)


def test_a_bundle_loaded_for_batch_answers_as_the_services_does(trained, tmp_path):
    """Batch commands load without the online tables and warmed forests: their rows take
    the point-in-time path and must get the service's answers, reasons and churn scores
    included, inside the history and after its end."""
    result, ds = trained
    from features.pit import US_PER_DAY, micros
    from features.rows import order_moments
    from runtime.batch import score_data_set

    folder = result.bundle.save(tmp_path / "b")
    service, batch = ModelBundle.load(folder), ModelBundle.load(folder, online=False)
    assert service.snapshot.history.online is not None
    assert batch.snapshot.history.online is None and batch.edd._forest[1] is None
    s = ds["shipments"].tail(300)
    past = order_moments(s)
    later = past.assign(as_of=pd.to_datetime(micros(past.as_of) + 30 * US_PER_DAY, unit="us", utc=True))
    for moments in (past, later):
        answers = [b.predict_rows(b.shipment_rows(s, ds["scans"], moments)) for b in (service, batch)]
        pd.testing.assert_frame_equal(*answers)
    assert batch.snapshot.history.online is None  # answered without them
    scored = [score_data_set(b, ds).table.drop(columns="scored_at") for b in (service, batch)]  # the wall clock
    pd.testing.assert_frame_equal(*scored)


def test_orders_years_before_the_training_data_get_etas_days_after_them(trained):
    """A backfill of old orders: the operating clock is laid out around the training years,
    and a moment nine years before them used to read a clock standing still (ETAs years
    after the order). Now their ETAs are as far off as the same orders' today."""
    result, ds = trained
    from features.pit import US_PER_DAY, micros
    from features.rows import order_moments

    s = ds["shipments"].tail(200)
    old = s.assign(ordered_at=pd.to_datetime(micros(s.ordered_at) - 52 * 7 * 9 * US_PER_DAY, unit="us", utc=True))
    days = {}
    for name, orders in (("now", s), ("old", old)):
        out = result.bundle.predict_rows(result.bundle.shipment_rows(orders, None, order_moments(orders)), explain=False)
        days[name] = ((out.eta_p50 - out.as_of).dt.total_seconds() / 86400).to_numpy()
    assert days["old"].max() < 20 and days["old"].min() > 0
    assert abs(np.median(days["old"]) - np.median(days["now"])) < 2


def test_answers_name_the_fields_whose_value_the_model_never_saw(trained):
    """A checkout sending "UPS" for "ups" is answered from the wider levels, and told so;
    a missing postal or a known value is not "unseen"."""
    result, ds = trained
    from features.rows import order_moments

    s = ds["shipments"].tail(4).reset_index(drop=True)
    s["carrier"] = s.carrier.astype("str").to_numpy()
    s["destination_region"] = s.destination_region.astype("str").to_numpy()
    s.loc[1, "carrier"] = s.loc[1, "carrier"].upper()
    s.loc[2, ["carrier", "destination_region"]] = ["Pigeon Post", "Atlantis"]
    s["destination_postal"] = None
    out = result.bundle.predict_rows(result.bundle.shipment_rows(s, None, order_moments(s)), explain=False)
    assert out.unseen.tolist() == ["", "carrier", "carrier,destination_region", ""]
    assert out.confidence[1] == out.confidence[2] == "low"


def test_a_promise_is_never_before_the_etas_own_point_at_its_confidence(trained):
    """The promise (one-sided errors) and the interval (conformal ends) are calibrated
    apart; the promise at 50% is never before the median, from 90% on never before the
    interval's upper end, and a higher confidence never promises sooner."""
    result, ds = trained
    from features.rows import order_moments

    s = ds["shipments"].tail(1000)
    rows = result.bundle.shipment_rows(s, None, order_moments(s))
    eta = result.bundle.edd.predict_hours(rows, rows["carrier"])
    promise = {c: result.bundle.edd.promise_hours(rows, rows["carrier"], c) for c in (0.5, 0.7, 0.9, 0.95, 0.995)}
    assert (promise[0.5] >= eta[:, 1] - 1e-9).all()
    assert all((promise[c] >= eta[:, 2] - 1e-9).all() for c in (0.9, 0.95, 0.995))
    assert all((later >= sooner - 1e-9).all() for sooner, later in zip(promise.values(), list(promise.values())[1:]))


def test_numeric_model_input_predicts_exactly_what_the_categorical_frame_predicts(trained):
    """Predictions go to LightGBM as a float matrix of category codes (no per-call pandas
    conversion); it must match the training-shaped categorical frame to the bit,
    unseen and missing levels included, for one row and for many."""
    result, ds = trained
    from features.rows import order_moments

    from features.pit import frame_of, take

    s = ds["shipments"].tail(200)
    cols = result.bundle.shipment_rows(s, ds["scans"], order_moments(s))
    cols["carrier"][0] = "never-seen"
    cols["destination_region"][1] = None
    rows = frame_of(cols, timestamps=("as_of",))
    edd, delay = result.bundle.edd, result.bundle.delay
    for model, booster in ((edd, edd.boosters_[1]), (delay, delay.booster_)):
        for frame, columns in ((rows, cols), (rows.head(1), take(cols, slice(0, 1))), (rows.iloc[[1]], take(cols, [1]))):
            assert np.array_equal(booster.predict(model._X(frame)), booster.predict(model._matrix(columns)))
        contrib = booster.predict(model._X(rows.head(20)), pred_contrib=True)
        assert np.array_equal(contrib, booster.predict(model._matrix(take(cols, slice(0, 20))), pred_contrib=True))


def test_thin_data_skips_models_with_a_clear_reason(tmp_path):
    write_data_set(simulate(SimConfig(customers=60, seed=2)).tables, tmp_path)
    result = train(load_data_set(tmp_path))
    skipped = result.bundle.meta["skipped"]
    assert "edd" in skipped and "too little delivered history" in skipped["edd"]
    assert "churn" in skipped and "churn labels" in skipped["churn"]
    with pytest.raises(RuntimeError, match="no EDD model in this version: too little delivered history"):
        result.bundle.predict_rows(pd.DataFrame({"as_of": []}))


def test_scoring_for_the_review_pages_history_and_drivers(trained):
    """score-customers' store for the review pages: each scored customer's past orders (none
    placed after the moment), and the loyalty drivers, whose SHAP values match shap's."""
    import shap

    from runtime.batch import DEPENDENCE, score_data_set

    result, ds = trained
    moment = pd.Timestamp("2025-10-01T00:00:00Z")
    scoring = score_data_set(result.bundle, ds, as_of=moment, window_days=120)
    table, history, drivers = scoring.table, scoring.history, scoring.drivers
    assert len(table) > 50 and table.churn_risk.is_monotonic_decreasing
    assert set(history.customer_id) == set(table.customer_id)
    assert (history.ordered_at < moment).all()
    orders = ds["orders"] if "orders" in ds.tables else None
    if orders is not None:
        one = table.customer_id.iloc[0]
        expected = orders[(orders.customer_id == one) & (orders.ordered_at < moment)]
        assert len(history[history.customer_id == one]) == len(expected)
    importance = [i["mean_abs_shap"] for i in drivers["importance"]]
    assert importance == sorted(importance, reverse=True) and importance[0] > 0
    assert set(drivers["dependence"]) <= set(DEPENDENCE) and "days_late" in drivers["dependence"]
    assert len(drivers["dependence"]["days_late"]["x"]) == len(drivers["dependence"]["days_late"]["y"]) > 0
    assert drivers["customers"] == len(table)

    churn = result.bundle.churn
    rows = result.bundle.churn_rows(ds["shipments"], ds["scans"],
                                    pd.DataFrame({"order_id": table.order_id.head(30).to_numpy(),
                                                  "as_of": table.as_of.head(30).to_numpy()}))
    ours = churn.contributions(rows, churn.booster_)
    theirs = shap.TreeExplainer(churn.booster_).shap_values(churn._X(rows))
    assert np.allclose(ours, theirs, atol=1e-6)


def test_churn_rows_take_an_empty_scan_table_for_no_scans(trained):
    """A delivery with no scans at all: None and the empty columns a request without scans
    gives are the same request, so the service passes a request's scans as they are."""
    result, ds = trained
    s = ds["shipments"][ds["shipments"].delivered_at.notna()].tail(20)
    moments = pd.DataFrame({"order_id": s.order_id.to_numpy(),
                            "as_of": (s.delivered_at + pd.Timedelta(minutes=5)).to_numpy()})
    no_scans = {"shipment_id": np.array([], dtype=object), "scanned_at": np.array([], dtype=np.int64),
                "event": np.array([], dtype=object), "region": np.array([], dtype=object)}  # as a request gives them
    empty = result.bundle.score_churn(result.bundle.churn_rows(s, no_scans, moments))
    none = result.bundle.score_churn(result.bundle.churn_rows(s, None, moments))
    assert set(empty) == set(none)
    for k in none:
        assert repr(np.asarray(empty[k]).tolist()) == repr(np.asarray(none[k]).tolist()), k
    assert np.isfinite(np.asarray(none["churn_risk"], dtype=float)).all()


def test_recency_weights_halve_every_half_life_and_default_to_equal():
    from training.models import recency_weights

    moments = pd.Series(pd.to_datetime(["2025-01-01", "2025-04-11", "2025-07-20", "2025-07-20"], utc=True))
    w = recency_weights(moments, 100.0)
    np.testing.assert_allclose(w, [0.25, 0.5, 1.0, 1.0])
    assert recency_weights(moments, None) is None


def test_the_conformal_half_life_is_at_least_one_median_lead_time_of_the_window():
    """4 days, or the median lead time of the window's at-order parcels where longer;
    in-transit rows (hours left, not lead times) and unknown outcomes do not count."""
    from training.models import CONFORMAL_HALF_LIFE_DAYS, conformal_half_life

    def rows(since_order: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"hours_since_order": since_order})

    assert CONFORMAL_HALF_LIFE_DAYS == 4.0
    assert conformal_half_life(rows([0, 0, 0]), np.array([48.0, 72.0, 96.0])) == 4.0  # 3 days: 4 stand
    slow = conformal_half_life(rows([0, 0, 0, 0, 30, 30]), np.array([200.0, 240.0, 280.0, np.nan, 1.0, 1.0]))
    assert slow == pytest.approx(10.0)  # the median of 200, 240 and 280 hours
    assert conformal_half_life(rows([30.0]), np.array([500.0])) == 4.0  # no at-order row: 4 days


def test_score_map_is_strictly_increasing_and_keeps_isotonic_rates():
    """Calibration without plateaus: distinct scores stay distinct, and each isotonic
    block's rows keep (on average) the block's observed rate."""
    from sklearn.isotonic import IsotonicRegression

    from runtime.models import logit
    from training.models import score_map

    rng = np.random.default_rng(3)
    raw = rng.uniform(0.01, 0.99, 20_000)
    y = (rng.uniform(size=raw.size) < raw ** 2).astype(float)  # a miscalibrated score
    m = score_map(raw, y)
    grid = np.linspace(0.001, 0.999, 5_000)
    p = m.probability(grid)
    assert (np.diff(p) > 0).all() and (p > 0).all() and (p < 1).all()
    iso = IsotonicRegression().fit(logit(raw), y).predict(logit(raw))
    ours = m.probability(raw)
    for level in np.unique(iso)[::5]:
        block = iso == level
        if block.sum() >= 200:
            assert abs(ours[block].mean() - level) < 0.03
    assert abs(ours.mean() - y.mean()) < 0.01
    pct = m.percentile(raw)
    assert pct.min() >= 0 and pct.max() <= 100 and abs(np.median(pct) - 50) < 1


def test_churn_risks_rank_customers_without_plateaus_and_say_what_is_actionable(trained):
    """The review list's risks: no value shared by a crowd, a percentile that orders like
    the risk, and an actionable share between 0 and 1 that is higher after a bad delivery."""
    from runtime.batch import score_data_set

    result, ds = trained
    table = score_data_set(result.bundle, ds, as_of=pd.Timestamp("2025-10-01T00:00:00Z"), window_days=120).table
    assert len(table) > 200
    assert table.churn_risk.value_counts().max() <= max(5, len(table) // 100)
    order = np.argsort(table.churn_risk.to_numpy(), kind="stable")
    assert (np.diff(table.risk_percentile.to_numpy()[order]) >= -1e-9).all()
    assert table.actionable_share.between(0, 1).all()
    late = table.days_late.fillna(0) >= 2
    assert table.actionable_share[late].mean() > table.actionable_share[~late].mean() + 0.1


def test_recency_weighted_conformal_follows_the_latest_errors():
    """Equal weights give the plain finite-sample conformal quantile; with recent errors
    weighing more, a network that got worse in the last weeks widens the correction."""
    from training.models import _conformal_quantile, _weighted_quantile, recency_weights

    rng = np.random.default_rng(8)
    scores = rng.normal(size=4000)
    levels = np.linspace(0, 1, 21)
    kth = np.sort(scores)[np.maximum(np.ceil(levels * 4000 - 1e-6).astype(int) - 1, 0)]  # the textbook order statistic
    np.testing.assert_allclose(_weighted_quantile(scores, np.ones(4000), levels), kth)
    np.testing.assert_allclose(_weighted_quantile(scores, np.full(4000, 3.0), levels), kth)
    assert _conformal_quantile(scores, 0.8, np.ones(4000)) == _conformal_quantile(scores, 0.8)

    moments = pd.Series(pd.date_range("2025-01-01", periods=60, freq="D", tz="UTC").repeat(50))
    worse_lately = rng.normal(size=3000) + np.where(moments >= pd.Timestamp("2025-02-15", tz="UTC"), 1.0, 0.0)
    plain = _conformal_quantile(worse_lately, 0.8)
    recent = _conformal_quantile(worse_lately, 0.8, recency_weights(moments, 14.0))
    latest_only = np.quantile(worse_lately[(moments >= pd.Timestamp("2025-02-15", tz="UTC")).to_numpy()], 0.8)
    assert plain < recent <= latest_only + 0.1


def test_shipped_boosters_predict_and_explain_through_compiled_walks_with_lightgbms_numbers(trained):
    """The boosters the service explains are within the tables' limits (so no request
    falls back to LightGBM's slower TreeSHAP), and the tables give its numbers; every
    model's boosters are packed into a forest that predicts LightGBM's numbers bit for bit."""
    result, ds = trained
    from features.rows import order_moments

    s = ds["shipments"].tail(300)
    rows = result.bundle.shipment_rows(s, ds["scans"], order_moments(s))
    edd = result.bundle.edd
    assert edd.explainer(edd.explained) is not None
    X = edd._matrix(rows)
    np.testing.assert_allclose(edd.contributions(rows, edd.explained),
                               edd.explained.predict(X, pred_contrib=True)[:, :-1], rtol=0, atol=1e-12)
    churn = result.bundle.churn
    assert churn.explainer(churn.explained) is not None
    assert all(m.forest() is not None for m in (edd, result.bundle.delay, churn))
    for model in (edd, result.bundle.delay):
        X = model._matrix(rows)
        assert X.dtype == np.float32  # the feature code's numbers are float32: the same values, half the memory
        expected = np.column_stack([b.predict(X.astype(np.float64)) for b in model.boosters])
        np.testing.assert_array_equal(model.predicted(X.astype(np.float64)), expected)
        np.testing.assert_array_equal(model.predicted(X), expected)
        np.testing.assert_array_equal(np.vstack([model.predicted(X[i:i + 1]) for i in range(0, len(X), 50)]), expected[::50])


def test_churn_starts_from_the_customers_rhythm_and_its_reasons_add_up(trained):
    """The churn booster learns on top of BG/NBD's log-odds (features.spec.BASES): its
    features are the delivery's and the days since it, not the customer's orders again;
    the base, the booster's expected value and every reason add up to the risk's log-odds
    before calibration; the rhythm is a reason of its own, never an actionable one."""
    from features import spec
    from runtime.models import logit
    from runtime.reasons import actionable_share

    result, ds = trained
    churn = result.bundle.churn
    assert churn.base_ == "rhythm_p_no_order" and "orders_so_far" not in churn.features
    assert churn.explained_names == churn.features + ["rhythm_p_no_order"]
    rows = churn._derived(result.evaluation["churn"]["rows"].head(400))
    X = churn._matrix(rows)
    booster_log_odds = churn.explained.predict(X, raw_score=True)
    np.testing.assert_allclose(logit(churn.raw_score(rows)), logit(rows["rhythm_p_no_order"]) + booster_log_odds,
                               rtol=0, atol=1e-6)
    explained = churn.explanation(rows)
    expected_value = churn.explained.predict(X, pred_contrib=True)[:, -1]
    np.testing.assert_allclose(explained.sum(axis=1) + expected_value + churn.base_mean_,
                               logit(churn.raw_score(rows)), rtol=0, atol=1e-6)
    rhythm = explained[:, -1]
    assert rhythm.std() > 0.1  # the rhythm moves the risk, customer by customer
    assert not spec.feature(spec.CHURN, "rhythm_p_no_order").actionable
    only_rhythm = np.zeros_like(explained)
    only_rhythm[:, -1] = np.abs(rhythm)
    assert (actionable_share(only_rhythm, churn.explained_names) == 0).all()


def test_an_answer_works_out_the_clocks_once_and_answers_what_each_part_alone_does(trained):
    """``predict_columns`` reads the rows' operating clocks once and hands them to the
    interval, the promise, the late probability and the reasons; each part asked alone
    (working the clocks out itself) gives the same numbers."""
    from runtime.bundle import end_of_day

    result, ds = trained
    bundle = result.bundle
    # a day past the data's end: the nowcast moves the answers, so the late shift reads the clocks too
    late_orders = ds["shipments"].tail(200)
    moments = pd.DataFrame({"shipment_id": late_orders.shipment_id.astype("str").to_numpy(),
                            "as_of": pd.Series([bundle.snapshot.end + pd.Timedelta(days=1)] * 200, dtype="datetime64[us, UTC]")})
    rows = bundle.shipment_rows(ds["shipments"], ds["scans"], moments)
    assert (bundle.edd.nowcast_shift(rows) != 0).all()
    out = bundle.predict_columns(rows, 0.95, True)
    groups = rows["carrier"]
    at = np.asarray(out["as_of"])
    hours = bundle.edd.predict_hours(rows, groups)
    np.testing.assert_array_equal(out["eta_p50"], at + (hours[:, 1] * 3_600_000_000).astype(np.int64))
    promise = bundle.edd.promise_hours(rows, groups, 0.95)
    np.testing.assert_array_equal(out["promise_at"], end_of_day(at + (promise * 3_600_000_000).astype(np.int64)))
    late = bundle.late_probability(rows)
    np.testing.assert_array_equal(np.isnan(out["late_probability"]), np.isnan(np.asarray(rows["promise_hours"], dtype=float)))
    known = ~np.isnan(out["late_probability"])
    np.testing.assert_allclose(out["late_probability"][known], late[known], rtol=0, atol=1e-12)
    passed = np.asarray(rows["hours_to_promise"], dtype=float) < 0
    assert passed.any() and (out["late_probability"][passed] == 1.0).all()  # not delivered by the promise: late
    shifted = bundle.edd.shifted_quantiles(rows, groups)[0]
    alone = bundle.reasons(rows, shifted[:, 1], top=15)
    assert [[r["effect_hours"] for r in rs] for rs in alone] == \
        [[r["effect_hours"] for r in rs] for rs in bundle.reasons(rows, shifted[:, 1], top=15,
                                                                 codes=bundle.edd.clock_codes(rows))]


def test_a_version_trained_before_the_churn_base_still_scores_and_explains(trained):
    """The registry keeps old versions, and one may be the champion: a churn booster on
    the former features (the customer's orders, tenure, spend and rhythm, no base)
    scores, explains in plain words and fills the drivers page as before."""
    import copy

    from features import spec
    from runtime.batch import loyalty_drivers
    from runtime.reasons import churn_words
    from training.models import ProbabilityEstimator
    from training.rows import LABEL

    result, _ = trained
    rows = result.evaluation["churn"]["rows"]
    former = [f.name for f in spec.FORMER[spec.CHURN]] + ["rhythm_p_no_order"]
    features = result.bundle.churn.features + former
    old = ProbabilityEstimator("churn", features, spec.categorical(spec.CHURN), {"num_leaves": 7, "rounds": 60})
    old.rhythm_ = result.bundle.churn.rhythm_
    half = len(rows) // 2
    old.fit(rows.iloc[:half], rows[LABEL].to_numpy()[:half], rows.iloc[half:], rows[LABEL].to_numpy()[half:])
    old.calibrate(rows, rows[LABEL].to_numpy())
    assert old.base_ is None and old.explained_names == features
    bundle = copy.copy(result.bundle)
    bundle.churn = old
    scored = bundle.score_churn_rows(rows.head(200))
    named = {r["feature"] for rs in scored.reasons for r in rs}
    assert named & set(former)  # the former features do explain these answers
    assert all("_" not in churn_words(f) for f in named)
    assert loyalty_drivers(bundle, rows.head(200))["importance"]


def test_the_interval_ends_are_trained_as_distances_from_the_median(trained, tmp_path):
    """The 10% and 90% boosters start from the median booster's answer and learn only
    each end's distance from it: small boosters (bulk prediction walks every tree), an
    interval that brackets the median, kept across a save; a version whose ends were
    trained on their own still reads its boosters as the quantiles themselves."""
    import copy

    from features.rows import order_moments

    result, ds = trained
    edd = result.bundle.edd
    s = ds["shipments"].tail(400)
    rows = result.bundle.shipment_rows(s, ds["scans"], order_moments(s))
    X = edd._matrix(rows)
    low, median, high = (b.predict(X) for b in edd.boosters_)
    assert edd.ends_from_median_
    assert np.median(low) < 0 < np.median(high)  # distances, not log hours
    np.testing.assert_array_equal(edd.raw_log_quantiles(rows, X),
                                  np.sort(np.column_stack([median + low, median, median + high]), axis=1))
    assert all(b.num_trees() < edd.boosters_[1].num_trees() for b in (edd.boosters_[0], edd.boosters_[2]))
    assert ModelBundle.load(result.bundle.save(tmp_path / "b")).edd.ends_from_median_
    former = copy.copy(edd)
    former.ends_from_median_ = False
    np.testing.assert_array_equal(former.raw_log_quantiles(rows, X),
                                  np.sort(np.column_stack([low, median, high]), axis=1))


def test_the_services_answers_serialize_as_the_same_answers_validated(trained):
    """The service builds each answer without validating it again (``model_construct``),
    so every value must already be of the schema's type: its JSON equals that of the same
    answers validated, and writing it warns of nothing. Answers with and without reasons,
    for an unseen carrier and for a parcel silent long enough to be likely lost."""
    import warnings

    from monitoring.replay import shipment_body
    from serving.columns import columns_of
    from serving.schemas import ShipmentIn
    from serving.service import ETA_LIST, Eddy

    result, ds = trained
    s = ds["shipments"].tail(40)
    bodies = [{**shipment_body(r), "explain": i % 2 == 0} for i, r in enumerate(s.itertuples())]
    bodies[1]["carrier"] = "Pigeon Post"
    bodies[2]["as_of"] = (s.ordered_at.iloc[2] + pd.Timedelta(days=90)).isoformat()
    requests = [ShipmentIn(**b) for b in bodies]
    ship, scans, moments = columns_of(requests)
    out = result.bundle.predict_columns(result.bundle.shipment_rows(ship, scans, moments),
                                        np.array([r.confidence for r in requests]), np.array([r.explain for r in requests]))
    built = [Eddy.inner._answer(r, out, i, "7") for i, r in enumerate(requests)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = ETA_LIST.dump_json(built)  # the service's own writer of a batch's answers
    assert fast == ETA_LIST.dump_json(ETA_LIST.validate_python([a.model_dump() for a in built]))
    assert built[1].unseen == ["carrier"] and built[2].likely_lost and built[2].eta_p50 is None
    assert all(len(a.reasons) == 3 for a in built[4::2]) and not any(a.reasons for a in built[1::2])
