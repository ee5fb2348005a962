"""Live figures, drift and advice, checked against slow plain-loop references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data.load import DataSet
from features.pit import NAT, US_PER_DAY, US_PER_HOUR
from features.profile import categorical_profile, drift, live_shares, numeric_profile, psi
from monitoring.advice import advice, auc_standard_error, noise_psi, wilson_upper
from monitoring.live import _auc_by, _ece_by, churn_outcomes, eta_outcomes, live_figures, week_of
from training.evaluate import expected_calibration_error

T0 = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday


def us(t: pd.Timestamp) -> int:
    return int(t.value // 1000)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    ref = numeric_profile(rng.normal(size=20000))
    same = psi(ref["p"], live_shares(ref, rng.normal(size=20000)))
    moved = psi(ref["p"], live_shares(ref, rng.normal(1.0, 1.0, size=20000)))
    assert same < 0.01 < 0.25 < moved
    cats = categorical_profile(np.array(["a"] * 70 + ["b"] * 30 + [None] * 10, dtype=object))
    assert cats["levels"] == ["a", "b"] and cats["p"][-1] == pytest.approx(10 / 110)  # missing is a bin of its own
    assert drift({"x": cats}, {"x": np.array(["c"] * 50, dtype=object)})["x"] > 1  # an unseen level: "other"


def test_the_noise_allowance_matches_the_psi_of_two_samples_of_one_distribution():
    rng = np.random.default_rng(1)
    levels = np.array([f"l{k}" for k in range(30)], dtype=object)
    ref_sample = rng.choice(levels, 5000)
    ref = categorical_profile(ref_sample)
    seen = [psi(ref["p"], live_shares(ref, rng.choice(levels, 200))) for _ in range(200)]
    expected = noise_psi(len(ref["p"]) - 1, 200, 5000)  # the empty "missing" bin adds nothing
    assert np.mean(seen) == pytest.approx(expected, rel=0.3)


def test_auc_and_ece_by_group_equal_the_plain_computations():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"g": rng.choice(["a", "b", "c"], 3000), "p": rng.random(3000).round(2)})
    frame["y"] = (rng.random(3000) < frame.p).astype(float)
    aucs, eces = _auc_by(frame, ["g"], "p", "y"), _ece_by(frame, ["g"], "p", "y")
    for g, part in frame.groupby("g"):
        assert aucs[g] == pytest.approx(roc_auc_score(part.y, part.p))
        assert eces[g] == pytest.approx(expected_calibration_error(part.p.to_numpy(), part.y.to_numpy()))


def logged_eta(rows: list[tuple]) -> pd.DataFrame:
    """Logged ETA answers: (shipment, carrier, as_of, p10, p50, p90 hours after, promise day end, late prob)."""
    out = []
    for sid, carrier, at, p10, p50, p90, promise, late in rows:
        out.append({"model_version": "1", "alias": "champion", "kind": "eta", "shipment_id": sid, "customer_id": None,
                    "carrier": carrier, "lane": "n → s", "as_of": us(at), "eta_p10": us(at) + int(p10 * US_PER_HOUR),
                    "eta_p50": us(at) + int(p50 * US_PER_HOUR), "eta_p90": us(at) + int(p90 * US_PER_HOUR),
                    "promise_at": us(promise), "promise_confidence": 0.95, "late_probability": late, "churn_risk": np.nan})
    return pd.DataFrame(out)


def data_set(shipments: pd.DataFrame) -> DataSet:
    return DataSet("mem", {"shipments": shipments}, {}, {})


def test_live_eta_figures_equal_a_loop_over_the_answers():
    rng = np.random.default_rng(3)
    n = 400
    at = [T0 + pd.Timedelta(hours=int(h)) for h in rng.integers(0, 24 * 20, n)]
    lead = rng.uniform(20, 120, n)
    delivered = [a + pd.Timedelta(hours=float(h)) for a, h in zip(at, lead)]
    promised = [a + pd.Timedelta(hours=72) for a in at]
    carriers = rng.choice(["ups", "dhl"], n)
    never = rng.random(n) < 0.05  # lost: never delivered, but the promise has passed
    ship = pd.DataFrame({"shipment_id": [f"s{i}" for i in range(n)], "carrier": carriers,
                         "ordered_at": pd.Series(at), "shipped_at": pd.Series(at), "promised_at": pd.Series(promised),
                         "delivered_at": pd.Series([pd.NaT if x else d for x, d in zip(never, delivered)],
                                                   dtype="datetime64[us, UTC]")})
    p50 = lead + rng.normal(0, 12, n)
    logged = logged_eta([(f"s{i}", carriers[i], at[i], p50[i] - 20, p50[i], p50[i] + 20,
                          at[i] + pd.Timedelta(hours=80), float(rng.random())) for i in range(n)])
    logged = pd.concat([logged, logged_eta([("not-in-the-export", "ups", T0, 1, 2, 3, T0, 0.5)])], ignore_index=True)
    eta = eta_outcomes(logged, data_set(ship))
    table = live_figures(eta, eta.iloc[:0].assign(churned=[]), {"1": {"metrics": {"edd_interval_coverage": 0.8}}})
    for week in sorted(set(week_of(np.array([us(a) for a in at])))):
        err, inside, late_y, late_p = [], [], [], []
        for i in range(n):
            if week_of(np.array([us(at[i])]))[0] != week:
                continue
            late_y.append(1.0 if never[i] or delivered[i] > promised[i] else 0.0)
            late_p.append(logged.late_probability[i])
            if never[i]:
                continue
            actual = lead[i]
            err.append(abs(p50[i] - actual) / 24)
            inside.append(p50[i] - 20 <= actual + 1e-6 and actual <= p50[i] + 20 + 1e-6)
        total = table[(table.week == week) & (table.carrier == "")].set_index("metric")
        assert total.value["edd_mae_days"] == pytest.approx(np.mean(err), abs=1e-6)
        assert total.value["coverage_80"] == pytest.approx(np.mean(inside), abs=1e-9)
        assert total.n["edd_mae_days"] == len(err)
        assert total.value["delay_brier"] == pytest.approx(np.mean((np.array(late_p) - np.array(late_y)) ** 2))
        assert total.value["delay_auc"] == pytest.approx(roc_auc_score(late_y, late_p))
        assert total.reference["coverage_80"] == 0.8
    assert set(table[table.carrier != ""].carrier) == {"ups", "dhl"}


def test_an_answer_given_after_the_delivery_judges_nothing():
    """A caller that asks again after the parcel came (without its delivered scan) gets an
    answer, but that answer is no forecast: it counted as a missed promise before."""
    ship = pd.DataFrame({"shipment_id": ["early", "late", "asked-after"], "carrier": ["ups"] * 3,
                         "ordered_at": pd.Series([T0] * 3), "shipped_at": pd.Series([T0] * 3),
                         "promised_at": pd.Series([T0 + pd.Timedelta(days=3)] * 3),
                         "delivered_at": pd.Series([T0 + pd.Timedelta(days=2), T0 + pd.Timedelta(days=5),
                                                    T0 + pd.Timedelta(days=2)])})
    asked = [T0, T0, T0 + pd.Timedelta(days=4)]
    logged = logged_eta([(sid, "ups", at, 10, 48, 90, T0 + pd.Timedelta(days=3), 0.2)
                         for sid, at in zip(ship.shipment_id, asked)])
    eta = eta_outcomes(logged, data_set(ship)).set_index("shipment_id")
    assert eta.late["early"] == 0 and eta.late["late"] == 1 and np.isnan(eta.late["asked-after"])
    assert np.isnan(eta.abs_err_days["asked-after"]) and eta.outcome_at["asked-after"] == NAT


def test_an_answer_that_called_the_parcel_likely_lost_is_judged_on_lateness_only():
    """Such an answer gave no dates (``eta_records`` logs them empty, read back as NAT): it
    has no error or coverage to judge, even when the parcel turns up, but its certain
    lateness is judged."""
    from runtime.predlog import eta_records

    out = {"as_of": np.array([us(T0)] * 2), "eta_p10": np.array([NAT, us(T0) + 10]), "eta_p50": np.array([NAT, us(T0) + 20]),
           "eta_p90": np.array([NAT, us(T0) + 30]), "promise_at": np.array([NAT, us(T0) + 40]),
           "late_probability": np.array([1.0, 0.2])}
    ship = {"shipment_id": np.array(["lost", "dated"], dtype=object), "carrier": np.array(["ups"] * 2, dtype=object),
            "service_level": np.array(["ground"] * 2, dtype=object), "origin_region": np.array(["NJ"] * 2, dtype=object),
            "destination_region": np.array(["PA"] * 2, dtype=object)}
    records = eta_records(out, ship, "/eta", "champion", "1", 0.95)
    assert [r["eta_p50"] for r in records] == [None, us(T0) + 20] and records[0]["promise_at"] is None
    ship = pd.DataFrame({"shipment_id": ["turned-up"], "carrier": ["ups"], "ordered_at": pd.Series([T0]),
                         "shipped_at": pd.Series([T0]), "promised_at": pd.Series([T0 + pd.Timedelta(days=3)]),
                         "delivered_at": pd.Series([T0 + pd.Timedelta(days=40)])})
    logged = logged_eta([("turned-up", "ups", T0 + pd.Timedelta(days=30), 1, 2, 3, T0 + pd.Timedelta(days=3), 1.0)])
    logged[["eta_p10", "eta_p50", "eta_p90", "promise_at"]] = NAT
    eta = eta_outcomes(logged, data_set(ship)).iloc[0]
    assert np.isnan(eta.abs_err_days) and np.isnan(eta.covered) and np.isnan(eta.on_time) and np.isnan(eta.within_1d)
    assert eta.late == 1 and eta.lost_then_delivered == 1


def test_lateness_is_judged_against_the_promise_the_request_carried():
    """A caller whose promise differs from its export's (a re-promise the export does not
    hold) is judged against the promise it asked about; a log without requested promises
    (written before they were kept) falls back to the export's."""
    ship = pd.DataFrame({"shipment_id": ["a", "b"], "carrier": ["ups"] * 2, "ordered_at": pd.Series([T0] * 2),
                         "shipped_at": pd.Series([T0] * 2), "promised_at": pd.Series([T0 + pd.Timedelta(days=2)] * 2),
                         "delivered_at": pd.Series([T0 + pd.Timedelta(days=3)] * 2)})
    logged = logged_eta([(sid, "ups", T0, 10, 20, 30, T0 + pd.Timedelta(days=2), 0.4) for sid in ("a", "b")])
    old = eta_outcomes(logged, data_set(ship))
    assert list(old.late) == [1.0, 1.0]  # delivered a day after the export's promise
    logged["requested_promise"] = [us(T0 + pd.Timedelta(days=5)), NAT]  # "a" asked about a later promise
    new = eta_outcomes(logged, data_set(ship))
    assert list(new.late) == [0.0, 1.0]
    assert list(new.outcome_at) == [us(T0 + pd.Timedelta(days=3))] * 2


def test_the_share_of_likely_lost_calls_whose_parcel_came_after_all_is_a_live_figure():
    ship = pd.DataFrame({"shipment_id": ["found", "gone", "gone-too", "dated"], "carrier": ["ups"] * 4,
                         "ordered_at": pd.Series([T0] * 4), "shipped_at": pd.Series([T0] * 4),
                         "promised_at": pd.Series([T0 + pd.Timedelta(days=3)] * 4),
                         "delivered_at": pd.Series([T0 + pd.Timedelta(days=40), pd.NaT, pd.NaT, T0 + pd.Timedelta(days=2)],
                                                   dtype="datetime64[us, UTC]")})
    asked = [T0 + pd.Timedelta(days=30)] * 3 + [T0]
    logged = logged_eta([(sid, "ups", at, 10, 48, 90, T0 + pd.Timedelta(days=3), 1.0 if sid != "dated" else 0.1)
                         for sid, at in zip(ship.shipment_id, asked)])
    logged.loc[:2, ["eta_p10", "eta_p50", "eta_p90", "promise_at"]] = NAT
    eta = eta_outcomes(logged, data_set(ship))
    assert eta.lost_then_delivered.tolist()[:3] == [1.0, 0.0, 0.0] and np.isnan(eta.lost_then_delivered.iloc[3])
    table = live_figures(eta, eta.iloc[:0].assign(churned=[]), {})
    lost = table[(table.metric == "likely_lost_delivered") & (table.carrier == "")]
    assert lost.value.tolist() == [pytest.approx(1 / 3)] and lost.n.tolist() == [3]


def test_churn_labels_come_from_the_next_order_and_wait_for_the_horizon():
    orders = pd.DataFrame({"shipment_id": ["a", "b", "c", "d"], "customer_id": ["back", "back", "gone", "late"],
                           "ordered_at": pd.Series([T0, T0 + pd.Timedelta(days=20), T0, T0 + pd.Timedelta(days=50)]),
                           "shipped_at": pd.Series([T0] * 4), "promised_at": pd.Series([pd.NaT] * 4, dtype="datetime64[us, UTC]"),
                           "delivered_at": pd.Series([T0 + pd.Timedelta(days=70)] * 4)})
    logged = pd.DataFrame({"model_version": "1", "alias": "champion", "kind": "churn", "shipment_id": ["a", "c", "d", "x"],
                           "customer_id": ["back", "gone", "late", "late"], "carrier": "ups", "lane": "",
                           "as_of": [us(T0 + pd.Timedelta(days=2))] * 3 + [us(T0 + pd.Timedelta(days=60))],
                           "churn_risk": [0.2, 0.8, 0.5, 0.5], "horizon_us": 30 * US_PER_DAY})
    out = churn_outcomes(logged, data_set(orders))
    # back ordered again on day 20 (within 30); gone never; late's next order came on day 50 (after
    # day 32); the last answer's horizon ends after the data does (day 70): not mature yet
    assert out.churned.tolist()[:3] == [0.0, 1.0, 1.0] and np.isnan(out.churned.iloc[3])


def test_advice_names_the_carrier_whose_coverage_fell():
    rng = np.random.default_rng(4)
    n = 600
    at = T0 + pd.to_timedelta(rng.integers(0, 24 * 14, n), unit="h")
    carrier = np.where(np.arange(n) % 4 == 0, "ups", "dhl")  # a quarter of the traffic
    eta = pd.DataFrame({"model_version": "1", "alias": "champion", "carrier": carrier, "lane": "",
                        "as_of": [us(a) for a in at], "kind": "eta", "late": np.nan, "late_probability": np.nan,
                        "abs_err_days": 0.5, "within_1d": 1.0, "promise_confidence": 0.95, "on_time": 1.0,
                        "covered": np.where(carrier == "ups", rng.random(n) < 0.55, rng.random(n) < 0.9).astype(float)})
    eta["outcome_at"] = eta.as_of + 3 * US_PER_DAY
    rules = advice(eta, eta.iloc[:0].assign(churned=[], outcome_at=[]), pd.DataFrame(columns=["week", "n"]),
                   {"1": {"metrics": {"edd_mae_days": 0.5}}})
    named = [a for a in rules if a["metric"] == "coverage_80"]
    assert [a["carrier"] for a in named] == ["ups"], rules
    assert named[0]["text"].startswith("retrain: coverage for ups 5") and "below 77%" in named[0]["text"]


def test_confidence_helpers():
    assert wilson_upper(0.5, 100) == pytest.approx(0.5968, abs=1e-3)
    assert auc_standard_error(0.8, 50, 50) < auc_standard_error(0.8, 10, 10)
    assert noise_psi(10, 100, 0) == pytest.approx(0.09)


def test_monitor_prints_the_figures_it_has_or_says_none_is_judged(capsys):
    """Answers whose outcomes the export does not know yet print a sentence, not an empty
    pandas frame; the figures that exist print without the missing columns."""
    from types import SimpleNamespace

    from eddy import cli

    row = {"week": "2026-03-02", "model": "1", "alias": "champion", "carrier": "", "lane": "", "reference": np.nan,
           "n": 10, "text": ""}
    unjudged = pd.DataFrame([{**row, "metric": "delay_auc", "value": np.nan}])
    result = SimpleNamespace(table=unjudged, advice=[], notes=[], predictions=10, run_id="r")
    cli._print_monitor(result, 1.0, None)
    said = capsys.readouterr().out
    assert "no headline figure yet" in said and "Empty DataFrame" not in said
    judged = pd.concat([unjudged, pd.DataFrame([{**row, "metric": "delay_brier", "value": 0.125}])])
    cli._print_monitor(SimpleNamespace(**{**vars(result), "table": judged}), 1.0, None)
    said = capsys.readouterr().out
    assert "delay_brier" in said and "0.125" in said and "delay_auc" not in said
