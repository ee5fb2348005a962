"""The online path equals the point-in-time path: same definitions, materialized ahead.

Property-based: hypothesis draws shipments from the data's own carriers, lanes and
postals, unseen and missing ones among them, at moments after the snapshot's end (the
online tables) and inside its history (the point-in-time path), and every feature
must be equal bit for bit, one at a time and as a whole batch.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.load import load_data_set
from features.build import FeatureSnapshot
from features.customer import customer_features
from features.pit import US_PER_DAY, US_PER_HOUR, columns_of, frame_of, micros, size, take
from features.shipment import shipment_features

TEXT = ("carrier", "service_level", "origin_region", "destination_region", "origin_postal", "destination_postal")


@pytest.fixture(scope="module")
def ds(sim_dir):
    return load_data_set(sim_dir)


@pytest.fixture(scope="module")
def snapshots(ds):
    """The same snapshot twice: as fitted (point in time only) and with online tables."""
    pit = FeatureSnapshot.fit(ds)
    online = copy.deepcopy(pit)
    online.history.materialize()
    return pit, online


@st.composite
def shipments(draw, ds, end_us: int):
    s = ds["shipments"]
    n = draw(st.integers(1, 12))
    cols = {}
    for c in TEXT:
        seen = sorted(s[c].dropna().astype(str).unique().tolist())[:40]
        cols[c] = np.array([draw(st.one_of(st.sampled_from(seen), st.just("never-seen"), st.none())) if c.endswith("postal")
                            or draw(st.booleans()) else draw(st.sampled_from(seen)) for _ in range(n)], dtype=object)
        if not c.endswith("postal"):  # required by the contract: unseen, never missing
            cols[c] = np.where(pd.isna(cols[c]), "never-seen", cols[c])
    # after the end (online), or up to 400 days inside the history (point in time)
    offsets = [draw(st.one_of(st.integers(1, 90 * 24), st.integers(-400 * 24, -1))) for _ in range(n)]
    cols["ordered_at"] = end_us + np.array(offsets, dtype=np.int64) * US_PER_HOUR
    cols["promised_at"] = np.where([draw(st.booleans()) for _ in range(n)], cols["ordered_at"] + 5 * US_PER_DAY,
                                   np.iinfo(np.int64).min)
    cols["shipment_id"] = np.array([f"S{i}" for i in range(n)], dtype=object)
    cols["weight_kg"] = np.array([draw(st.one_of(st.none(), st.floats(0, 50))) or np.nan for _ in range(n)])
    cols["value"] = np.full(n, np.nan)
    return cols


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), k  # bit for bit, NaN where NaN
        else:
            assert x.tolist() == y.tolist(), k


def test_online_features_equal_point_in_time_features(ds, snapshots):
    pit, online = snapshots
    end_us = int(micros(pd.Series([pit.end]))[0])

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(shipments(ds, end_us))
    def check(cols):
        slow = shipment_features(cols, pit.history, pit.locations, pit.country)
        fast = shipment_features(cols, online.history, online.locations, online.country)
        _equal(fast, slow)
        n = len(cols["shipment_id"])
        for i in range(n):  # one at a time equals the whole batch
            _equal(shipment_features(take(cols, [i]), online.history, online.locations, online.country), take(fast, [i]))

    check()


def test_requests_after_the_end_are_served_from_the_online_tables(ds, snapshots):
    """Not only equal: the later requests really read the tables (none are recomputed)."""
    _, online = snapshots
    cols = columns_of(ds["shipments"].tail(5))
    cols["ordered_at"] = cols["ordered_at"] + 400 * US_PER_DAY
    from features.history import LiveRows

    history = copy.deepcopy(online.history)
    history.live_rows = LiveRows()  # empty: these lanes are computed, from the online tables
    calls = []
    original = history._at_days.__func__

    def spy(self, name, table, codes, days):
        calls.append(bool((days == self.last_day + 1).all()))
        return original(self, name, table, codes, days)

    history._at_days = spy.__get__(history)
    try:
        shipment_features(cols, history, online.locations, online.country)
    finally:
        del history._at_days
    assert calls and all(calls)


def test_one_customers_rows_give_the_features_of_the_whole_history(ds, snapshots):
    """/churn looks its customer's rows up instead of copying every customer's history."""
    pit, _ = snapshots
    s = ds["shipments"]
    rng = np.random.default_rng(5)
    orders = rng.choice(s.order_id.unique(), 25, replace=False)
    parcels = s[s.order_id.isin(orders)]
    scans = ds["scans"][ds["scans"].shipment_id.isin(parcels.shipment_id)]
    experience = pit.customers.frame("experience").set_index("order_id")
    exp = micros(experience.ref.reindex(orders))
    judged = orders[exp != np.iinfo(np.int64).min]
    moments = pd.DataFrame({"order_id": judged, "as_of": pd.Series(
        pd.to_datetime(exp[exp != np.iinfo(np.int64).min] + 3 * US_PER_DAY, unit="us", utc=True)).astype("datetime64[us, UTC]")})
    whole = customer_features(parcels, scans, pit.customers.with_orders(parcels, scans), moments)
    looked_up = pit.customers.of_customers(parcels.customer_id.tolist() + ["never-seen"]).with_orders(parcels, scans)
    own = customer_features(parcels, scans, looked_up, moments)
    pd.testing.assert_frame_equal(frame_of(own), frame_of(whole))
    assert size(looked_up.orders) < size(pit.customers.orders) / 10


def test_live_rows_hold_each_lane_once_and_equal_the_computed_columns(ds, snapshots):
    """A repeated live lane is a lookup (nothing computed again), missing values of any
    kind are one combination, and a full cache starts again without changing a value."""
    import pickle

    from features.history import LiveRows

    pit, online = snapshots
    history = copy.deepcopy(online.history)
    assert len(history.live_rows) == 0  # a cache: copies and pickles start empty
    cols = columns_of(ds["shipments"].tail(40))
    cols["ordered_at"] = cols["ordered_at"] + 400 * US_PER_DAY
    for gap in (None, np.nan, pd.NA):
        cols["origin_postal"][:3] = gap
        history.live_rows = LiveRows(limit=4)
        computed = []
        original = history._columns_at.__func__
        history._columns_at = lambda shipments, days: computed.append(size(shipments)) or original(history, shipments, days)
        try:
            expected = pit.history.feature_columns(cols, cols["ordered_at"])
            for i in list(range(40)) + list(range(40)):
                _equal(history.feature_columns(take(cols, [i]), cols["ordered_at"][[i]]), take(expected, [i]))
                assert len(history.live_rows) <= 4
            history.live_rows = LiveRows()
            _equal(history.feature_columns(cols, cols["ordered_at"]), expected)
            held, computed[:] = len(history.live_rows), []
            for i in range(40):
                history.feature_columns(take(cols, [i]), cols["ordered_at"][[i]])
            again = take(cols, [0, 1, 2])
            for gap_again in (None, np.nan, pd.NA):  # one combination, whatever the missing value
                again["origin_postal"][:] = gap_again
                _equal(history.feature_columns(again, again["ordered_at"]), take(expected, [0, 1, 2]))
        finally:
            del history._columns_at
        assert computed == [] and len(history.live_rows) == held
        lanes = {tuple(None if pd.isna(v) else v for v in row) for row in zip(*(cols[c] for c in TEXT))}
        assert len({row[:4] for row in lanes}) <= held <= len(lanes)
    # Unseen postal lanes of one region lane are one live row (real postal pairs rarely repeat)
    one = take(cols, [5, 5, 5])
    one["origin_postal"] = np.array(["never-seen-1", "never-seen-2", None], dtype=object)
    history.live_rows = LiveRows()
    _equal(history.feature_columns(one, one["ordered_at"]), pit.history.feature_columns(one, one["ordered_at"]))
    assert len(history.live_rows) == 1
    assert len(pickle.loads(pickle.dumps(history)).live_rows) == 0


def test_a_saved_snapshot_fills_its_recent_lanes_at_load(ds, snapshots, tmp_path):
    """The combinations ordered in the snapshot's last quarter are live rows as soon as it
    is loaded: their first live request computes nothing, and reads the same numbers."""
    from features.history import KEY_COLUMNS, LANE_DAYS

    pit, _ = snapshots
    loaded = FeatureSnapshot.load(pit.save(tmp_path / "snapshot"))
    s = ds["shipments"]
    recent = s[s.ordered_at > pit.end - pd.Timedelta(days=LANE_DAYS)]
    assert loaded.history.lanes.n.sum() == len(recent)
    assert len(loaded.history.lanes) == len(recent[list(KEY_COLUMNS)].drop_duplicates())
    history = loaded.history.materialize()
    assert 0 < len(history.live_rows) <= len(loaded.history.lanes)
    cols = columns_of(recent.tail(30))
    cols["ordered_at"] = cols["ordered_at"] + 200 * US_PER_DAY
    computed = []
    original = history._columns_at.__func__
    history._columns_at = lambda shipments, days: computed.append(size(shipments)) or original(history, shipments, days)
    try:
        for i in range(30):
            _equal(history.feature_columns(take(cols, [i]), cols["ordered_at"][[i]]),
                   pit.history.feature_columns(take(cols, [i]), cols["ordered_at"][[i]]))
    finally:
        del history._columns_at
    assert computed == []
