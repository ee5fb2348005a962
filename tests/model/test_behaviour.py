"""Model behaviour: the directions a retailer expects, on real inputs, and invariants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runtime.bundle import ModelBundle
from features.rows import order_moments


def shipment(**overrides) -> pd.DataFrame:
    row = {"shipment_id": "R1", "order_id": "RO1", "customer_id": "RC1", "carrier": "ups", "service_level": "ground",
           "origin_region": "NJ", "destination_region": "PA", "origin_postal": "088", "destination_postal": "180",
           "ordered_at": "2026-03-03T10:00:00Z", "shipped_at": None, "promised_at": "2026-03-09T23:59:59Z",
           "delivered_at": None, "weight_kg": 1.5, "value": 40.0}
    row.update(overrides)
    df = pd.DataFrame([row])
    for c in ("ordered_at", "shipped_at", "promised_at", "delivered_at"):
        df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
    return df


def predict(bundle: ModelBundle, df: pd.DataFrame, scans: pd.DataFrame | None = None) -> pd.Series:
    rows = bundle.shipment_rows(df, scans, order_moments(df))
    out = bundle.predict_rows(rows).iloc[0]
    out["p50_hours"] = (out.eta_p50 - out.as_of) / pd.Timedelta(hours=1)
    return out


@pytest.fixture(scope="module")
def bundle(trained) -> ModelBundle:
    return trained[0].bundle


def test_a_slower_service_gets_a_later_eta(bundle):
    express = predict(bundle, shipment(carrier="ups", service_level="express", destination_region="CA", destination_postal="100"))
    ground = predict(bundle, shipment(carrier="usps", service_level="ground_advantage", destination_region="CA", destination_postal="100"))
    assert ground.p50_hours > express.p50_hours + 24


def test_a_longer_lane_gets_a_later_eta(bundle):
    near = predict(bundle, shipment(destination_region="PA", destination_postal="180"))
    far = predict(bundle, shipment(destination_region="CA", destination_postal="100"))
    assert far.p50_hours > near.p50_hours + 24
    assert far.eta_p90 > near.eta_p90


def test_a_storm_hit_region_gets_a_later_eta(bundle, trained):
    """Shipments ordered during a storm in their destination region, against the same
    lanes a month earlier: the model, seeing the region's recent slowdown, says later."""
    _, ds = trained
    storms = pd.read_parquet(ds.folder / "truth" / "storms.parquet")
    s = ds["shipments"]
    hit, calm = [], []
    for st in storms.itertuples():
        during = s[(s.destination_region == st.region) & (s.ordered_at >= st.start + pd.Timedelta(days=1)) & (s.ordered_at < st.end)]
        before = s[(s.destination_region == st.region) & (s.ordered_at >= st.start - pd.Timedelta(days=35))
                   & (s.ordered_at < st.start - pd.Timedelta(days=28))]
        if len(during) >= 3 and len(before) >= 3:
            hit.append(during)
            calm.append(before)
    assert len(hit) >= 5
    hit, calm = pd.concat(hit), pd.concat(calm)
    p_hit = bundle.predict_rows(bundle.shipment_rows(hit, ds["scans"], order_moments(hit)), explain=False)
    p_calm = bundle.predict_rows(bundle.shipment_rows(calm, ds["scans"], order_moments(calm)), explain=False)
    hours = lambda p: ((p.eta_p50 - p.as_of) / pd.Timedelta(hours=1)).mean()
    assert hours(p_hit) > hours(p_calm)


def test_shifting_the_request_by_a_minute_barely_changes_any_output(bundle):
    a = predict(bundle, shipment())
    b = predict(bundle, shipment(ordered_at="2026-03-03T10:01:00Z"))
    for col in ("eta_p10", "eta_p50", "eta_p90"):
        assert abs((b[col] - a[col]) / pd.Timedelta(hours=1)) < 2.0
    assert abs(a.late_probability - b.late_probability) < 0.05
    assert a.promise_at == b.promise_at


def test_quantiles_never_cross_and_probabilities_are_probabilities(bundle, trained):
    _, ds = trained
    s = ds["shipments"].tail(3000)
    p = bundle.predict_rows(bundle.shipment_rows(s, ds["scans"], order_moments(s)), explain=False)
    assert (p.eta_p10 <= p.eta_p50).all() and (p.eta_p50 <= p.eta_p90).all()
    assert (p.eta_p10 >= p.as_of).all()
    assert p.late_probability.dropna().between(0, 1).all()
    assert (p.promise_at >= p.eta_p50.dt.floor("D")).all()


def test_an_unseen_carrier_and_lane_are_predicted_and_flagged_low_confidence(bundle):
    p = predict(bundle, shipment(carrier="newco", service_level="economy", origin_region="ZZ", origin_postal="999"))
    assert p.confidence == "low"
    assert 0 < p.p50_hours < 24 * 30
    assert len(p.reasons) == 3 and all({"feature", "value", "effect_hours"} <= set(r) for r in p.reasons)


def delivered_order(ds, late_days: float = 0.0, exception: bool = False, lost: bool = False):
    """A new order for a known customer, delivered on time, late, with an exception, or never."""
    cust = ds["shipments"].customer_id.value_counts().index[5]
    ordered = pd.Timestamp("2026-02-10T10:00:00Z")
    promised = pd.Timestamp("2026-02-14T23:59:59Z")
    delivered = None if lost else promised - pd.Timedelta(hours=8) + pd.Timedelta(days=late_days)
    df = shipment(customer_id=cust, order_id="NEWORDER", shipment_id="NEWSHIP", ordered_at=str(ordered),
                  shipped_at=str(ordered + pd.Timedelta(hours=30)), promised_at=str(promised),
                  delivered_at=None if delivered is None else str(delivered))
    scans = pd.DataFrame({"shipment_id": ["NEWSHIP"], "scanned_at": [ordered + pd.Timedelta(days=2)],
                          "event": ["exception" if exception else "arrived_at_facility"], "region": ["PA"]})
    scans["scanned_at"] = scans.scanned_at.astype("datetime64[us, UTC]")
    judged = delivered if delivered is not None else promised
    moments = pd.DataFrame({"order_id": ["NEWORDER"], "as_of": pd.Series([judged + pd.Timedelta(hours=1)], dtype="datetime64[us, UTC]")})
    return df, scans, moments


def test_a_late_damaged_or_lost_delivery_raises_churn_risk(bundle, trained):
    _, ds = trained

    def risk(**kw) -> float:
        df, scans, moments = delivered_order(ds, **kw)
        return float(bundle.score_orders(df, scans, moments).churn_risk.iloc[0])

    on_time = risk()
    late = risk(late_days=4)
    late_damaged = risk(late_days=4, exception=True)
    lost = risk(lost=True)
    assert late > on_time
    assert late_damaged >= late
    assert lost > on_time
    assert all(0 <= r <= 1 for r in (on_time, late, late_damaged, lost))


def test_worse_delivery_factors_never_lower_anyones_churn_risk(trained):
    """The churn booster is monotone in the factors the spec gives a direction: for every
    one of 300 real rows, swept over each factor's range, a later, more troubled,
    lower-rated delivery never lowers the risk and an order since the delivery never
    raises it; days late do raise most rows' risk."""
    from features import spec

    result, _ = trained
    churn = result.bundle.churn
    assert churn.booster_.params["monotone_constraints"] == spec.monotone(spec.CHURN, churn.features)
    rows = result.evaluation["churn"]["rows"].head(300)
    sweeps = {"days_late": np.arange(-3.0, 15.0, 0.25), "exceptions": np.arange(0.0, 4.0), "failed_attempts": np.arange(0.0, 4.0),
              "contacts": np.arange(0.0, 5.0), "parcels_missing": np.arange(0.0, 3.0), "transit_vs_usual": np.arange(0.2, 4.0, 0.1),
              "rating": np.arange(5.0, 0.0, -1.0), "orders_since_delivery": np.arange(3.0, -1.0, -1.0)}
    for column, values in sweeps.items():  # each in the order along which the risk may only rise
        risk = np.column_stack([churn.predict_proba(rows.assign(**{column: v})) for v in values])
        assert (np.diff(risk, axis=1) >= -1e-12).all(), column
        if column == "days_late":
            assert (risk[:, -1] > risk[:, 0]).mean() > 0.5


def test_churn_reasons_name_the_delivery_factors(bundle, trained):
    _, ds = trained
    df, scans, moments = delivered_order(ds, late_days=6, exception=True)
    scored = bundle.score_orders(df, scans, moments).iloc[0]
    assert scored.days_late > 5 and scored.exceptions == 1
    assert len(scored.reasons) == 3


def test_reason_texts_are_plain_words(bundle, trained):
    """On real answers, at order time and in transit: no `nan`, `None`, raw feature
    names or underscores, and at order time no "time already spent in transit"."""
    from features.build import moments_at

    _, ds = trained
    s = ds["shipments"]
    at_order = bundle.predict_rows(bundle.shipment_rows(s.tail(300), None, order_moments(s.tail(300))))
    moment = s.ordered_at.quantile(0.9)
    open_now = moments_at(ds, moment)
    in_transit = bundle.predict_rows(bundle.shipment_rows(s, ds["scans"], open_now.head(300)))
    texts = {moment: [r["text"] for rs in table.reasons for r in rs]
             for moment, table in (("at order", at_order), ("in transit", in_transit))}
    for moment, found in texts.items():
        assert found, moment
        bad = [t for t in found if "nan" in t.lower().split() or "None" in t or "_" in t]
        assert bad == [], f"{moment}: {bad[:5]}"
    assert "time already spent in transit" not in texts["at order"]
    assert all(len(rs) == 3 for rs in at_order.reasons)  # three distinct reasons, alike ones merged
    assert all(len({r["text"] for r in rs}) == len(rs) for rs in in_transit.reasons)


def test_several_deliveries_of_one_customer_score_in_one_pass_each_on_its_own(bundle, trained):
    """/churn/batch with one customer named many times: one model call for all, and each
    answer equals that delivery scored alone (no delivery enters another's history)."""
    _, ds = trained
    parts = [delivered_order(ds, late_days=d) for d in (0, 3, 6, 0, 9)]
    alone = [float(bundle.score_orders(*p).churn_risk.iloc[0]) for p in parts]
    df = pd.concat([p[0].assign(order_id=f"O{k}", shipment_id=f"S{k}") for k, p in enumerate(parts)], ignore_index=True)
    scans = pd.concat([p[1].assign(shipment_id=f"S{k}") for k, p in enumerate(parts)], ignore_index=True)
    moments = pd.concat([p[2].assign(order_id=f"O{k}") for k, p in enumerate(parts)], ignore_index=True)
    assert df.customer_id.nunique() == 1
    calls = []
    original = bundle.churn.raw_score
    bundle.churn.raw_score = lambda rows, *a: calls.append(len(rows["order_id"])) or original(rows, *a)
    try:
        together = bundle.score_orders(df, scans, moments)
    finally:
        del bundle.churn.raw_score
    assert calls == [5]
    np.testing.assert_allclose(together.churn_risk.to_numpy(), alone, rtol=1e-6)
    assert together.orders_so_far.nunique() == 1  # none counts the others' orders


def test_a_customer_with_a_steady_rhythm_gets_a_lower_churn_risk_than_a_one_off_buyer(bundle):
    """The same on-time delivery, for a new customer who has ordered every month for a
    year and for one who has never ordered before."""
    def order(customer: str, k: int, ordered: pd.Timestamp) -> pd.DataFrame:
        return shipment(customer_id=customer, order_id=f"{customer}-O{k}", shipment_id=f"{customer}-S{k}",
                        ordered_at=str(ordered), shipped_at=str(ordered + pd.Timedelta(hours=20)),
                        promised_at=str(ordered + pd.Timedelta(days=5)),
                        delivered_at=str(ordered + pd.Timedelta(days=3)))

    judged_at = pd.Timestamp("2026-02-10T10:00:00Z")
    steady = pd.concat([order("STEADY", k, judged_at - pd.Timedelta(days=30 * (12 - k))) for k in range(13)],
                       ignore_index=True)
    one_off = order("ONEOFF", 12, judged_at)
    ship = pd.concat([steady, one_off], ignore_index=True)
    moments = pd.DataFrame({"order_id": ["STEADY-O12", "ONEOFF-O12"],
                            "as_of": pd.Series([judged_at + pd.Timedelta(days=3, hours=1)] * 2,
                                               dtype="datetime64[us, UTC]")})
    history = bundle.snapshot.customers.with_orders(ship)  # as score-customers builds it from a data set
    scored = bundle.score_orders(ship, None, moments, history=history).set_index("customer_id")
    assert scored.loc["STEADY", "orders_so_far"] == 13 and scored.loc["ONEOFF", "orders_so_far"] == 1
    assert scored.loc["STEADY", "churn_risk"] < scored.loc["ONEOFF", "churn_risk"] - 0.1
    assert scored.loc["STEADY", "risk_percentile"] < scored.loc["ONEOFF", "risk_percentile"]


def at_moment(bundle: ModelBundle, df: pd.DataFrame, as_of: pd.Timestamp, scans: pd.DataFrame | None = None) -> pd.Series:
    moments = pd.DataFrame({"shipment_id": df.shipment_id.to_numpy(), "as_of": pd.Series([as_of], dtype="datetime64[us, UTC]")})
    return bundle.predict_rows(bundle.shipment_rows(df, scans, moments)).iloc[0]


def test_a_parcel_silent_far_past_its_carriers_longest_deliveries_is_likely_lost_without_dates(bundle):
    """Nothing heard for 60 days, where 99.9% of UPS ground parcels arrive within about two
    weeks: no made-up ETA, a missed promise, and the reason says why. A scan yesterday
    is news of it: it gets dates again. A parcel a day old is not lost."""
    now = bundle.snapshot.end + pd.Timedelta(days=1)
    ordered = now - pd.Timedelta(days=60)
    old = shipment(ordered_at=str(ordered), shipped_at=str(ordered + pd.Timedelta(hours=20)),
                   promised_at=str(ordered + pd.Timedelta(days=6)))
    lost = at_moment(bundle, old, now)
    assert lost.likely_lost
    assert pd.isna(lost.eta_p10) and pd.isna(lost.eta_p50) and pd.isna(lost.eta_p90) and pd.isna(lost.promise_at)
    assert lost.late_probability == 1.0
    [reason] = lost.reasons
    assert reason["text"].startswith("likely lost: no news of it for 59 days") and "ups ground" in reason["text"]
    assert reason["effect_hours"] is None
    scans = pd.DataFrame({"shipment_id": ["R1"], "scanned_at": pd.Series([now - pd.Timedelta(days=1)], dtype="datetime64[us, UTC]"),
                          "event": ["arrived_at_facility"], "region": ["PA"]})
    never = at_moment(bundle, shipment(ordered_at=str(ordered), promised_at=str(ordered + pd.Timedelta(days=6))), now)
    assert never.likely_lost and never.reasons[0]["text"].startswith("likely lost: not handed to the carrier for 60 days")
    found = at_moment(bundle, old, now, scans)
    assert not found.likely_lost and found.eta_p50 > now and found.late_probability == 1.0  # its promise passed
    fresh = at_moment(bundle, shipment(ordered_at=str(now - pd.Timedelta(days=1))), now)
    assert not fresh.likely_lost and fresh.eta_p50 > now and fresh.late_probability < 1.0

