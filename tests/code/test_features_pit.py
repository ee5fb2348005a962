"""Point-in-time correctness of every feature, shown two ways.

1. Against slow, obviously-correct loop references on a small data set: for each
   sampled moment, walk over the raw rows and keep only what happened strictly before.
2. By truncation: features on the full data and on the same data cut at a moment T
   (later rows and scans removed, later outcomes blanked) are identical for every
   prediction moment before T.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.known import known_at
from data.load import DataSet, load_data_set
from data.simulate import SimConfig, simulate
from data.write import write_data_set
from features.build import FeatureSnapshot, after_delivery, at_order, in_transit
from features.customer import churn_moments, order_experience
from features.history import BIN_EDGES_H, N_BINS, WINDOWS, History
from features.pit import EventIndex, micros, shared_strings, size
from features.transit import training_moments


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> DataSet:
    """About 1,300 shipments over two years: small enough for loops over raw rows."""
    folder = tmp_path_factory.mktemp("tiny")
    write_data_set(simulate(SimConfig(customers=400, seed=21)).tables, folder)
    return load_data_set(folder)


@pytest.fixture(scope="module")
def tiny_features(tiny):
    snap = FeatureSnapshot.fit(tiny, country="US")
    rows = at_order(tiny, snap)
    return snap, rows


def day_of(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.floor("D")


# ------------------------------------------------------------- loop references


def reference_quantile(hist: np.ndarray, p: float) -> float:
    """The lead time below which a share ``p`` of a window's deliveries fall, read from its
    histogram: the bin where the running count reaches ``p`` x total, interpolated inside it."""
    total = int(hist.sum())
    if total == 0:
        return np.nan
    target, running = p * total, 0
    for b in range(N_BINS):
        if running + hist[b] >= target or b == N_BINS - 1:
            break
        running += hist[b]
    frac = (target - running) / hist[b] if hist[b] > 0 else 0.5
    upper = BIN_EDGES_H[b + 1] if np.isfinite(BIN_EDGES_H[b + 1]) else BIN_EDGES_H[b] * 1.5
    return BIN_EDGES_H[b] + frac * (upper - BIN_EDGES_H[b])


def reference_lane_stats(ds: DataSet, ship: pd.Series, width: int, cols: tuple[str, ...]) -> dict[str, float]:
    """Deliveries of the same group whose delivery day lies in [day - width, day)."""
    s = ds["shipments"]
    exc_first = ds["scans"][ds["scans"].event == "exception"].groupby("shipment_id").scanned_at.min()
    today = day_of(ship.ordered_at)
    hist = np.zeros(N_BINS, dtype=np.int64)
    n = n_promised = n_late = n_exc = 0
    for _, other in s.iterrows():
        if pd.isna(other.delivered_at) or any(other[c] != ship[c] for c in cols):
            continue
        d = day_of(other.delivered_at)
        if not (today - pd.Timedelta(days=width) <= d < today):
            continue
        lead = (other.delivered_at - other.ordered_at) / pd.Timedelta(hours=1)
        hist[min(np.searchsorted(BIN_EDGES_H, lead, side="right") - 1, N_BINS - 1)] += 1
        n += 1
        if pd.notna(other.promised_at):
            n_promised += 1
            n_late += other.delivered_at > other.promised_at
        e = exc_first.get(other.shipment_id)
        n_exc += e is not None and e <= other.delivered_at
    p10, p90 = reference_quantile(hist, 0.1), reference_quantile(hist, 0.9)
    return {"n": n, "median_h": reference_quantile(hist, 0.5), "p90_h": p90, "spread_h": p90 - p10, "late_rate": n_late / n_promised if n_promised else np.nan,
            "exception_rate": n_exc / n if n else np.nan}


@pytest.mark.parametrize("level, cols, width", [
    ("lane", ("origin_region", "destination_region"), 91),
    ("carrier", ("carrier", "service_level"), 28),
    ("carrier_lane", ("carrier", "service_level", "origin_region", "destination_region"), 365),
    ("destination", ("destination_region",), 7),
])
def test_history_statistics_match_a_loop_over_raw_rows(tiny, tiny_features, level, cols, width):
    _, rows = tiny_features
    s = tiny["shipments"]
    sample = np.random.default_rng(1).choice(len(s), 40, replace=False)
    for i in sample:
        ref = reference_lane_stats(tiny, s.iloc[i], width, cols)
        got = rows.iloc[i]
        prefix = f"{level}_{width}d"
        assert got[f"{prefix}_n"] == ref["n"]
        for stat in ("median_h", "p90_h", "spread_h", "late_rate", "exception_rate"):
            np.testing.assert_allclose(got[f"{prefix}_{stat}"], ref[stat], rtol=1e-5, atol=1e-3, equal_nan=True,
                                       err_msg=f"{prefix}_{stat} of {s.shipment_id.iloc[i]}")


def test_window_statistics_equal_a_loop_over_the_daily_rows_to_the_last_bit(tiny):
    """The compiled window pass against sums over the daily table's rows, for groups the
    table has (first, last and unseen) and days before, inside and after its span; the
    order-volume table too, whose counts go through the same pass."""
    history = History.build(tiny["shipments"], tiny["scans"])
    rng = np.random.default_rng(5)
    tables = {**{level: (history.tables[level], WINDOWS[level]) for level in ("lane", "carrier", "destination", "postal_lane")},
              "volume": (history.volume, (7, 91))}  # orders per carrier-service and day
    for level, (table, widths) in tables.items():
        codes = np.r_[-1, 0, len(table.groups) - 1, rng.integers(-1, len(table.groups), 120)].astype(np.int64)
        days = np.r_[table.day.min(), table.day.max() + 1, history.last_day + 1,
                     rng.integers(table.day.min() - 40, history.last_day + 40, 120)].astype(np.int64)
        for width in widths:
            got = table.window_stats(codes, days, width)
            for i, (code, day) in enumerate(zip(codes, days)):
                rows = (table.group == code) & (table.day >= day - width) & (table.day < day)
                n, hist = int(table.sums["n"][rows].sum()), table.hist[rows].sum(axis=0, dtype=np.int64)
                promised, late = int(table.sums["n_promised"][rows].sum()), int(table.sums["n_late"][rows].sum())
                p10, p50, p90 = (reference_quantile(hist, p) for p in (0.1, 0.5, 0.9))
                want = {"n": float(n), "median_h": p50, "p90_h": p90, "spread_h": p90 - p10,
                        "late_rate": late / promised if promised else np.nan,
                        "exception_rate": int(table.sums["n_exception"][rows].sum()) / n if n else np.nan}
                for stat, value in want.items():
                    assert got[stat][i] == value or (np.isnan(value) and np.isnan(got[stat][i])), \
                        (level, width, int(code), int(day), stat, got[stat][i], value)


def test_transit_features_match_a_loop_over_scans(tiny):
    s, scans = tiny["shipments"], tiny["scans"]
    moments = training_moments(s, scans, s.ordered_at.max(), seed=3).sample(150, random_state=0)
    got = in_transit(tiny, FeatureSnapshot.fit(tiny, country="US"), at_order(tiny, FeatureSnapshot.fit(tiny, country="US")),
                     moments).reset_index(drop=True)
    for k, m in enumerate(moments.itertuples(index=False)):
        seen = scans[(scans.shipment_id == m.shipment_id) & (scans.scanned_at < m.as_of)].sort_values("scanned_at")
        ship = s[s.shipment_id == m.shipment_id].iloc[0]
        row = got.iloc[k]
        assert row.scans_so_far == len(seen)
        assert row.exceptions_so_far == (seen.event == "exception").sum()
        assert row.facility_scans == seen.event.isin(["arrived_at_facility", "departed_facility", "in_transit"]).sum()
        assert row.attempts_so_far == (seen.event == "delivery_attempted").sum()
        assert row.out_for_delivery_seen == (seen.event == "out_for_delivery").sum()
        assert row.last_event == (seen.event.iloc[-1] if len(seen) else None) or (pd.isna(row.last_event) and not len(seen))
        pickups = list(seen.scanned_at[seen.event == "picked_up"])
        if pd.notna(ship.shipped_at) and ship.shipped_at < m.as_of:
            pickups.append(ship.shipped_at)
        expected = (m.as_of - min(pickups)) / pd.Timedelta(hours=1) if pickups else np.nan
        np.testing.assert_allclose(row.hours_since_pickup, expected, rtol=1e-5, equal_nan=True)


def test_customer_features_match_a_loop_over_orders_and_feedback(tiny):
    s, scans, orders, feedback = tiny["shipments"], tiny["scans"], tiny["orders"], tiny["feedback"]
    exp = order_experience(s, scans)
    lags = np.random.default_rng(2).uniform(0, 30, size(exp))
    moments = churn_moments(exp, lags).sample(120, random_state=1).reset_index(drop=True)
    got = after_delivery(tiny, FeatureSnapshot.fit(tiny, country="US"), moments=moments)
    cust_of_order = orders.set_index("order_id").customer_id
    for k, m in enumerate(moments.itertuples(index=False)):
        c = cust_of_order[m.order_id]
        mine = orders[(orders.customer_id == c) & (orders.ordered_at < m.as_of)]
        parcels = s[s.order_id == m.order_id]
        ref = max(p.delivered_at if pd.notna(p.delivered_at) else p.promised_at for p in parcels.itertuples())
        fb = feedback[feedback.order_id.isin(orders.order_id[orders.customer_id == c]) & (feedback.submitted_at < m.as_of)]
        own = fb[fb.order_id == m.order_id]
        earlier = fb[fb.order_id != m.order_id]
        my_scans = scans[scans.shipment_id.isin(parcels.shipment_id) & (scans.scanned_at < m.as_of)]
        row = got.iloc[k]
        assert row.orders_so_far == len(mine)
        assert row.orders_since_delivery == (mine.ordered_at > ref).sum()
        latest = (m.as_of - mine.ordered_at.max()) / pd.Timedelta(days=1) if len(mine) else np.nan
        np.testing.assert_allclose(row.days_since_last_order, latest, rtol=1e-4, equal_nan=True)
        np.testing.assert_allclose(row.spend_so_far, mine.value.sum(), rtol=1e-4)
        assert row.exceptions == (my_scans.event == "exception").sum()
        assert row.failed_attempts == (my_scans.event == "delivery_attempted").sum()
        np.testing.assert_allclose(row.contacts, own.contacts.sum() if len(own) else np.nan, equal_nan=True)
        np.testing.assert_allclose(row.earlier_contacts, earlier.contacts.sum(), rtol=1e-6)
        rated = own.dropna(subset=["rating"]).sort_values("submitted_at")
        np.testing.assert_allclose(row.rating, rated.rating.iloc[-1] if len(rated) else np.nan, equal_nan=True)
        late_days = [((min(p.delivered_at, m.as_of) if pd.notna(p.delivered_at) and p.delivered_at < m.as_of else m.as_of)
                      - p.promised_at) / pd.Timedelta(days=1) for p in parcels.itertuples() if pd.notna(p.promised_at)]
        np.testing.assert_allclose(row.days_late, max(late_days) if late_days else np.nan, rtol=1e-4, equal_nan=True)


def test_event_index_is_strict():
    idx = EventIndex(np.array([0, 0, 1]), np.array([10, 20, 10]))
    assert idx.count_before(np.array([0, 0, 0, 1]), np.array([10, 11, 21, 10])).tolist() == [0, 1, 2, 0]


def test_shared_strings_keep_every_value_and_hold_each_once():
    """The customer tables a bundle serves hold a lane or a customer id on many rows:
    each text value is kept once, every value and missing one as it was."""
    ids = np.array([f"customer-{i % 3}" for i in range(9)] + [None], dtype=object)
    cols = shared_strings({"customer_id": ids, "value": np.arange(10.0)})
    assert cols["customer_id"].tolist() == ids.tolist() and cols["customer_id"].dtype == object
    assert len({id(v) for v in cols["customer_id"].tolist()}) == 4  # three ids and None
    assert cols["value"] is not None and cols["value"].tolist() == list(np.arange(10.0))


# ------------------------------------------------------------------- truncation


def assert_same_rows(full: pd.DataFrame, cut: pd.DataFrame, keys: list[str]) -> None:
    a = full.sort_values(keys).reset_index(drop=True)
    b = cut.set_index(keys).loc[pd.MultiIndex.from_frame(a[keys]) if len(keys) > 1 else a[keys[0]]].reset_index()
    pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)


def check_truncation(ds: DataSet, cut: pd.Timestamp, country: str) -> None:
    small = known_at(ds, cut)  # data.known: later rows gone, later outcomes unknown
    full_snap = FeatureSnapshot.fit(ds, country=country)
    cut_snap = FeatureSnapshot.fit(small, country=country, end=cut)

    full_rows, cut_rows = at_order(ds, full_snap), at_order(small, cut_snap)
    before = full_rows.shipment_id.isin(small["shipments"].shipment_id)
    assert before.sum() > 100
    assert_same_rows(full_rows[before], cut_rows, ["shipment_id"])

    moments = training_moments(ds["shipments"], ds.get("scans"), cut, seed=5)
    moments = moments[moments.as_of < cut]
    if len(moments):
        full_t = in_transit(ds, full_snap, full_rows, moments)
        cut_t = in_transit(small, cut_snap, cut_rows, moments)
        assert_same_rows(full_t, cut_t, ["shipment_id", "as_of"])

    exp = order_experience(ds["shipments"], ds.get("scans"))
    lags = np.random.default_rng(0).uniform(0, 20, size(exp))
    cm = churn_moments(exp, lags)
    cm = cm[cm.as_of < cut]
    assert len(cm) > 50
    full_c = after_delivery(ds, full_snap, full_rows, cm)
    cut_c = after_delivery(small, cut_snap, cut_rows, cm)
    assert_same_rows(full_c, cut_c, ["order_id", "as_of"])


def test_truncation_on_simulated_data(tiny):
    check_truncation(tiny, pd.Timestamp("2025-06-17T13:30:00Z"), "US")


def test_truncation_on_the_olist_import(olist_src, tmp_path):
    from data.olist import import_olist, write_import

    write_import(import_olist(olist_src), tmp_path)
    check_truncation(load_data_set(tmp_path), pd.Timestamp("2017-12-01T00:00:00Z"), "BR")


def reference_lead_quantile(ds: DataSet, ship: pd.Series, moment: pd.Timestamp, last_day: pd.Timestamp, p: float,
                            width: int, least: int) -> float:
    """The lead time a share ``p`` of the carrier and service level's deliveries of the
    ``width`` days before the moment's day kept within (never past the history's last
    day + 1), the whole network's when the carrier had fewer than ``least`` of them."""
    s = ds["shipments"]
    today = min(day_of(moment), last_day + pd.Timedelta(days=1))
    hist = {"own": np.zeros(N_BINS, dtype=np.int64), "all": np.zeros(N_BINS, dtype=np.int64)}
    for _, other in s.iterrows():
        if pd.isna(other.delivered_at) or not (today - pd.Timedelta(days=width) <= day_of(other.delivered_at) < today):
            continue
        b = min(np.searchsorted(BIN_EDGES_H, (other.delivered_at - other.ordered_at) / pd.Timedelta(hours=1),
                                side="right") - 1, N_BINS - 1)
        hist["all"][b] += 1
        if other.carrier == ship.carrier and other.service_level == ship.service_level:
            hist["own"][b] += 1
    for name in ("own", "all"):
        if hist[name].sum() >= least:
            return reference_quantile(hist[name], p)
    return np.nan


def test_the_lead_time_a_parcel_is_judged_lost_against_is_point_in_time(tiny):
    """``History.lead_time_quantile`` (what "likely lost" reads) against a loop over the raw
    deliveries strictly before each moment's day, at moments before, inside and after the
    data; a thin carrier falls back to the network, a thin network gives none; one row
    at a time (the live path, memoized) equals the batch bit for bit."""
    s = tiny["shipments"]
    history = History.build(s, tiny["scans"])
    last_day = pd.Timestamp(history.last_day, unit="D", tz="UTC")
    rng = np.random.default_rng(11)
    pick = rng.choice(len(s), 30, replace=False)
    span = (s.ordered_at.max() - s.ordered_at.min()) / pd.Timedelta(days=1)
    moments = [s.ordered_at.min() + pd.Timedelta(days=float(d)) for d in rng.uniform(-20, span + 60, len(pick))]
    cols = {c: s[c].to_numpy(dtype=object)[pick] for c in ("carrier", "service_level")}
    at_us = micros(pd.Series(moments, dtype="datetime64[us, UTC]"))
    counts = s[s.delivered_at.notna()].groupby(["carrier", "service_level"]).size()
    least = int(counts.median())  # some carriers above it in a year, some below
    got, own = history.lead_time_quantile(cols, at_us, 0.999, 365, least)
    want = [reference_lead_quantile(tiny, s.iloc[i], m, last_day, 0.999, 365, least) for i, m in zip(pick, moments)]
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert own.any() and (~own & ~np.isnan(got)).any() and np.isnan(got).any()  # every branch was taken
    for k in range(len(pick)):
        one = history.lead_time_quantile({c: v[k:k + 1] for c, v in cols.items()}, at_us[k:k + 1], 0.999, 365, least)
        assert one[0][0] == got[k] or (np.isnan(one[0][0]) and np.isnan(got[k]))
        assert one[1][0] == own[k]
