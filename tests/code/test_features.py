"""Feature pipelines beyond point-in-time: fallbacks, snapshots, thin data, the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.load import DataSet, load_data_set
from features.build import FeatureSnapshot, after_delivery, at_order, in_transit
from features.pit import columns_of, frame_of
from features.shipment import shipment_features as shipment_columns


def shipment_features(shipments: pd.DataFrame, history, locations, country) -> pd.DataFrame:
    """The feature function at the test's edge: a table in, a table out."""
    return frame_of(shipment_columns(columns_of(shipments), history, locations, country))

EDDY = str(Path(sys.executable).parent / "eddy")


@pytest.fixture(scope="module")
def sim(sim_dir) -> DataSet:
    return load_data_set(sim_dir)


@pytest.fixture(scope="module")
def snap(sim) -> FeatureSnapshot:
    return FeatureSnapshot.fit(sim)


def new_shipment(**overrides) -> pd.DataFrame:
    row = {"shipment_id": "NEW1", "order_id": "ONEW", "customer_id": "CNEW", "carrier": "ups", "service_level": "ground",
           "origin_region": "NJ", "destination_region": "CA", "origin_postal": "088", "destination_postal": "100",
           "ordered_at": pd.Timestamp("2026-03-02T10:00:00Z"), "shipped_at": pd.NaT, "promised_at": pd.Timestamp("2026-03-09T23:59:59Z"),
           "delivered_at": pd.NaT, "weight_kg": 2.0, "value": 30.0}
    row.update(overrides)
    df = pd.DataFrame([row])
    for c in ("ordered_at", "shipped_at", "promised_at", "delivered_at"):
        df[c] = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
    return df


def test_country_is_guessed_from_regions(snap):
    assert snap.country == "US"


def test_an_unseen_lane_and_carrier_fall_back_to_parent_levels(snap):
    known = shipment_features(new_shipment(), snap.history, snap.locations, snap.country).iloc[0]
    unseen = shipment_features(new_shipment(carrier="newco", origin_region="ZZ", origin_postal=None),
                               snap.history, snap.locations, snap.country).iloc[0]
    assert unseen.carrier_lane_91d_n == 0 and unseen.carrier_91d_n == 0
    # Not null and not wild: the shrunk value falls back to the global figure.
    assert unseen.carrier_lane_median_h == pytest.approx(unseen.global_median_h)
    assert unseen.lane_median_h == pytest.approx(unseen.global_median_h)
    assert known.carrier_lane_91d_n > 0
    assert known.carrier_lane_median_h != pytest.approx(known.global_median_h)


def test_shrinkage_moves_from_parent_to_own_value_with_count(snap):
    rows = shipment_features(pd.concat([new_shipment(destination_region=r, shipment_id=r) for r in ("CA", "MT")]),
                             snap.history, snap.locations, snap.country)
    for _, r in rows.iterrows():
        w = r.lane_91d_n / (r.lane_91d_n + 20.0)
        own = r.lane_91d_median_h if r.lane_91d_n > 0 else 0.0
        assert r.lane_median_h == pytest.approx(w * own + (1 - w) * r.global_median_h, rel=1e-5)
    assert rows.lane_91d_n.iloc[0] > rows.lane_91d_n.iloc[1]  # a busy lane and a thin one


def test_snapshot_round_trip_gives_identical_features(snap, tmp_path):
    snap.save(tmp_path / "snap")
    loaded = FeatureSnapshot.load(tmp_path / "snap")
    requests = pd.concat([new_shipment(shipment_id=f"N{i}", destination_region=r) for i, r in enumerate(["CA", "NY", "FL", "MT"])])
    a = shipment_features(requests, snap.history, snap.locations, snap.country)
    b = shipment_features(requests, loaded.history, loaded.locations, loaded.country)
    pd.testing.assert_frame_equal(a, b)
    assert loaded.end == snap.end


def test_a_request_after_the_snapshot_sees_the_snapshot_not_an_empty_window(snap):
    soon = shipment_features(new_shipment(), snap.history, snap.locations, snap.country).iloc[0]
    later = shipment_features(new_shipment(ordered_at=pd.Timestamp("2026-05-01T10:00:00Z")),
                              snap.history, snap.locations, snap.country).iloc[0]
    assert soon.lane_91d_n == later.lane_91d_n > 0


def test_shifting_the_order_by_a_minute_barely_changes_features(snap):
    a = shipment_features(new_shipment(), snap.history, snap.locations, snap.country).iloc[0]
    b = shipment_features(new_shipment(ordered_at=pd.Timestamp("2026-03-02T10:01:00Z")), snap.history, snap.locations,
                          snap.country).iloc[0]
    numeric = a.index[[isinstance(v, (float, np.floating)) for v in a.values]]
    changed = [c for c in numeric if not np.isclose(a[c], b[c], rtol=1e-3, equal_nan=True)]
    assert changed == ["order_hour"] and b.order_hour - a.order_hour == pytest.approx(1 / 60, abs=1e-4)


def test_shipments_only_data_set_builds_every_moment(sim, tmp_path):
    only = DataSet(tmp_path, {"shipments": sim["shipments"]}, {}, {})
    snap = FeatureSnapshot.fit(only)
    rows = at_order(only, snap)
    assert len(rows) == len(sim["shipments"])
    assert rows.distance_km.isna().all()  # no locations: unknown, not invented
    assert (rows.carrier_lane_365d_exception_rate.dropna() == 0).all()  # no scans: no exceptions seen
    assert len(in_transit(only, snap, rows)) == 0  # no scans: no in-transit snapshots
    churn = after_delivery(only, snap, rows)
    assert len(churn) > 0 and churn.rating.isna().all() and (churn.orders_so_far >= 1).all()


def run(*args):
    return subprocess.run([EDDY, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("moment, key", [("at-order", ["shipment_id"]), ("in-transit", ["shipment_id", "as_of"]),
                                         ("after-delivery", ["order_id", "as_of"])])
def test_features_command_on_the_simulated_set(sim_dir, tmp_path, moment, key):
    out = tmp_path / "f.parquet"
    r = run("features", str(sim_dir), "--out", str(out), "--moment", moment)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote ") and str(out) in r.stdout
    df = pd.read_parquet(out)
    assert len(df) > 1000 and not df.duplicated(key).any()


def test_features_command_on_the_olist_import_and_a_bare_data_set(olist_src, sim_dir, tmp_path):
    assert run("import-olist", str(olist_src), "--out", str(tmp_path / "olist")).returncode == 0
    r = run("features", str(tmp_path / "olist"), "--out", str(tmp_path / "o.parquet"))
    assert r.returncode == 0, r.stderr
    olist = pd.read_parquet(tmp_path / "o.parquet")
    assert olist.shipment_id.is_unique and olist.distance_km.notna().mean() > 0.9

    bare = tmp_path / "bare"
    bare.mkdir()
    pd.read_parquet(sim_dir / "shipments.parquet").to_parquet(bare / "shipments.parquet")
    for moment in ("at-order", "in-transit", "after-delivery"):
        r = run("features", str(bare), "--out", str(tmp_path / f"b-{moment}.parquet"), "--moment", moment)
        assert r.returncode == 0, (moment, r.stderr)


def test_features_command_in_transit_as_of(sim_dir, tmp_path):
    r = run("features", str(sim_dir), "--out", str(tmp_path / "t.parquet"), "--moment", "in-transit",
            "--as-of", "2025-06-01T12:00:00")
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(tmp_path / "t.parquet")
    assert (df.as_of == pd.Timestamp("2025-06-01T12:00:00Z")).all() and len(df) > 10
    assert (df.hours_since_order > 0).all()


def test_features_command_rejects_a_bad_moment(sim_dir, tmp_path):
    r = run("features", str(sim_dir), "--out", str(tmp_path / "x.parquet"), "--moment", "yesterday")
    assert r.returncode == 2 and "--moment must be one of" in r.stderr and "Traceback" not in r.stderr


def test_churn_features_from_a_loaded_snapshot_plus_the_request_equal_training_features(sim, snap, tmp_path):
    from features.build import after_delivery
    from features.customer import churn_moments, customer_features

    snap.save(tmp_path / "snap")
    loaded = FeatureSnapshot.load(tmp_path / "snap")
    moments = churn_moments(snap.customers.experience, 2.0).tail(25).reset_index(drop=True)
    training = after_delivery(sim, snap, moments=moments)
    s = sim["shipments"]
    for k, m in moments.iterrows():
        parcels = s[s.order_id == m.order_id]
        scans = sim["scans"][sim["scans"].shipment_id.isin(parcels.shipment_id)]
        served = customer_features(parcels, scans, loaded.customers.with_orders(parcels, scans), moments.iloc[[k]])
        pd.testing.assert_frame_equal(frame_of(served, timestamps=("as_of",)), training.iloc[[k]].reset_index(drop=True),
                                      check_dtype=False)


def test_one_shipment_at_a_time_gets_exactly_the_features_of_the_whole_batch(sim, snap):
    """One code path for any size: a single live request must get exactly the numbers
    the whole batch gets (unseen and missing groups included)."""
    s = sim["shipments"].sample(300, random_state=3)
    s.loc[s.index[:3], "destination_region"] = ["ZZ", None, "CA"]  # unseen and missing groups too
    s.loc[s.index[2], "carrier"] = "newco"
    batch = shipment_features(s, snap.history, snap.locations, snap.country)
    one_by_one = pd.concat([shipment_features(s.iloc[[i]], snap.history, snap.locations, snap.country)
                            for i in range(len(s))], ignore_index=True)
    again = pd.concat([shipment_features(s.iloc[[i]], snap.history, snap.locations, snap.country)
                       for i in range(len(s))], ignore_index=True)  # nothing left over from the first pass
    pd.testing.assert_frame_equal(one_by_one, batch)
    pd.testing.assert_frame_equal(again, batch)


def test_calendar_features_equal_pandas_own_calendar(snap):
    from features.calendar import calendar_features
    rng = np.random.default_rng(0)
    us = rng.integers(pd.Timestamp("2019-12-20").value // 1000, pd.Timestamp("2027-01-10").value // 1000, 5000)
    ordered = pd.Series(pd.to_datetime(us, unit="us", utc=True)).astype("datetime64[us, UTC]")
    promised = (ordered + pd.to_timedelta(rng.integers(0, 20 * 86400, len(ordered)), unit="s")).where(np.arange(5000) % 7 > 0)
    cal = pd.DataFrame(calendar_features(ordered, promised, "US"))
    assert (cal.order_dow.to_numpy() == ordered.dt.dayofweek.to_numpy()).all()
    assert (cal.order_week.to_numpy() == ordered.dt.isocalendar().week.to_numpy()).all()
    assert (cal.order_month.to_numpy() == ordered.dt.month.to_numpy()).all()
    assert np.allclose(cal.order_hour, ordered.dt.hour + ordered.dt.minute / 60, atol=1e-4)
    assert cal.business_days_to_promise.isna().to_numpy().tolist() == promised.isna().to_numpy().tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["a", "b", "c", "S1", "S2", ""]), st.none(), st.just(float("nan")), st.integers(0, 3)),
                min_size=0, max_size=8),
       st.integers(0, 3))
def test_lookup_in_bulk_gives_the_dicts_codes(words, seed):
    """Bulk lookups (factorize) give the per-key dict's codes: unknown and missing values
    -1, and a vocabulary with repeated or missing words keeps the dict's own answer."""
    from features.pit import BULK_KEYS, Lookup

    rng = np.random.default_rng(seed)
    pool = np.array(words + ["zz", None, np.nan, 2, 2.0, "b"], dtype=object)
    values = pool[rng.integers(0, len(pool), BULK_KEYS + 5)]
    lookup = Lookup(words)
    get = lookup._code.get
    np.testing.assert_array_equal(lookup.codes(values), [get(v, -1) for v in values.tolist()])
    assert lookup.codes(values[:3]).tolist() == [get(v, -1) for v in values[:3].tolist()]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["a", "b", "S1", "", "é"]), st.none()), min_size=0, max_size=8),
       st.lists(st.one_of(st.sampled_from(["a", "b", "S1", "", "é", "zz"]), st.none()), min_size=0, max_size=20),
       st.sampled_from(["str", "string", "object"]))
def test_positions_in_a_table_are_the_lookups_codes_or_none(ids, keys, dtype):
    """The edge's positions (both columns factorized together) are the codes a Lookup of
    the ids gives, unknown and missing keys -1; with repeated or missing ids, None (a
    position would not be one row's: the Lookup decides)."""
    from features.pit import Lookup, positions_in

    got = positions_in(pd.Series(ids, dtype=dtype), pd.Series(keys, dtype=dtype))
    if len(set(ids)) < len(ids) or any(i is None for i in ids):
        assert got is None
    else:
        get = Lookup(ids)._code.get
        assert got.tolist() == [get(k, -1) if k is not None else -1 for k in keys]


def test_rows_from_tables_equal_rows_from_columns(sim, snap):
    """``shipment_rows`` on tables (scans placed at the edge) and on columns (scans looked
    up by id) give the same rows, bit for bit, scans of other shipments included."""
    from features.rows import order_moments, shipment_rows

    s = sim["shipments"].sample(400, random_state=5).reset_index(drop=True)
    scans = sim["scans"][sim["scans"].shipment_id.isin(set(s.shipment_id[:300]) | set(sim["shipments"].shipment_id[:50]))]
    later = order_moments(s).assign(as_of=lambda m: m.as_of + pd.Timedelta(days=2, hours=5))  # scans seen by then
    moments = pd.concat([order_moments(s), later], ignore_index=True)
    from_tables = shipment_rows(s, scans, moments, snap)
    from_columns = shipment_rows(columns_of(s), columns_of(scans), columns_of(moments), snap)
    assert from_tables.keys() == from_columns.keys() and len(from_tables["as_of"]) > 400
    assert (from_tables["scans_so_far"] > 0).sum() > 100
    from features.rows import _scan_columns
    assert "pos" in _scan_columns(s, scans) and "pos" not in _scan_columns(columns_of(s), scans)
    for k in from_tables:
        np.testing.assert_array_equal(from_tables[k], from_columns[k], err_msg=k)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["a", "b", "S1", "", "é"]), st.none()), min_size=0, max_size=12),
       st.sampled_from(["str", "string"]))
def test_text_columns_become_the_same_objects_whichever_way_they_are_read(texts, dtype):
    """A text column (Arrow's strings) reads as its values one by one would, None where
    missing, whether it holds repeats, only gaps or nothing; writing to the answer leaves
    the table alone."""
    table = pd.DataFrame({"t": pd.Series(texts, dtype=dtype)})
    col = columns_of(table)["t"]
    assert col.dtype == object
    assert col.tolist() == [None if pd.isna(v) else v for v in table.t.tolist()]
    if len(col):
        col[0] = "changed"
        assert "changed" not in table.t.dropna().tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.one_of(st.sampled_from(["a", "b", "UPS", ""]), st.none(), st.just(float("nan")))] * 4),
                min_size=0, max_size=30),
       st.sampled_from(["global", "carrier", "lane", "carrier_lane", "destination"]))
def test_distinct_groups_give_every_row_its_group_key(values, level):
    """Keys made once per distinct combination name each row's group as its own key
    would: missing parts, empty text, repeats and no rows at all."""
    from features.history import distinct_groups, group_keys

    names = ("carrier", "service_level", "origin_region", "destination_region")
    cols = {c: np.array([v[i] for v in values], dtype=object) for i, c in enumerate(names)}
    cols["as_of"] = np.zeros(len(values), dtype=np.int64)
    keys, inverse = distinct_groups(cols, level)
    assert keys[inverse].tolist() == group_keys(cols, level).tolist()
    assert len(keys) <= len({tuple(map(str, v)) for v in values}) or level == "global"


def test_parcels_returned_to_their_sender_are_not_open_from_the_return_scan_on():
    """``moments_at`` (predict --as-of, features --as-of): a parcel returned to its sender
    is never delivered, so from its return scan on it has no ETA to give; before the scan
    it was still on its way (point in time: the scan must be strictly earlier)."""
    import pandas as pd

    from data.load import DataSet
    from features.build import moments_at

    t0 = pd.Timestamp("2026-01-05", tz="UTC")
    ids = ["on-its-way", "returned", "lost"]
    ship = pd.DataFrame({"shipment_id": ids, "ordered_at": pd.Series([t0] * 3),
                         "delivered_at": pd.Series([pd.NaT] * 3, dtype="datetime64[us, UTC]")})
    scans = pd.DataFrame({"shipment_id": ["on-its-way", "returned", "returned"],
                          "scanned_at": pd.Series([t0 + pd.Timedelta(days=1)] * 2 + [t0 + pd.Timedelta(days=3)]),
                          "event": ["picked_up", "picked_up", "returned_to_sender"]})
    ds = DataSet("mem", {"shipments": ship, "scans": scans}, {}, {})
    open_at = lambda days: moments_at(ds, t0 + pd.Timedelta(days=days)).shipment_id.tolist()  # noqa: E731
    assert open_at(2) == ids and open_at(3) == ids  # the scan at exactly day 3 is not before day 3
    assert open_at(4) == ["on-its-way", "lost"]
