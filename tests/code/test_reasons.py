"""Reason sentences without a model: values made plain in bulk, candidates merged into sentences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from runtime.bundle import _digit, _digits, _plain, _plain_column, _shown
from runtime.reasons import NOT_HANDED_OVER, plain_reasons


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or (type(x) is type(y) and (x == y or (math.isnan(x) and math.isnan(y))))
        for x, y in zip(a, b))


def test_a_column_made_plain_at_once_equals_each_value_made_plain():
    columns = [
        np.array([1.5, np.nan, -0.0, np.inf], dtype=np.float64),
        np.array([193.00305, np.nan, 2.5], dtype=np.float32),
        np.array([3, 0, -7], dtype=np.int64),
        np.array([True, False]),
        np.array(["usps", None, float("nan"), "ups"], dtype=object),
        pd.array(["a", pd.NA], dtype="string").to_numpy(dtype=object),
    ]
    for column in columns + [np.tile(c, 40) for c in columns]:  # a request's few rows and a bulk answer's many
        alone = [_plain(v) for v in np.asarray(column).tolist()]
        together = _plain_column(column)
        assert _same(together, alone), (column, together, alone)
        assert not any(isinstance(v, float) and math.isnan(v) for v in together)


def test_float32_values_go_out_as_the_short_decimals_float32_holds():
    """A reason's value is the feature code's float32: shown at its 7 significant digits,
    not with the tail of its float64 copy (211.20974731445312)."""
    column = np.array([211.20974731445312, 15.421926498413086, 0.1, -3.5e-7, 1.2345678e12, 0.0, np.nan, 1e-30],
                      dtype=np.float32)
    for values in (column, np.tile(column, 40)):  # a request's row and a bulk answer's many, the same numbers
        out = _shown({"x": values, "n": np.arange(len(values))}, ["x", "n", "absent"])
        assert list(out) == ["x", "n"] and out["n"][:3] == [0.0, 1.0, 2.0]  # other columns as they are
        out = out["x"][:8]
        assert out[:6] == [211.2097, 15.42193, 0.1, -3.5e-7, 1234568000000.0, 0.0] and out[6] is None
        assert [repr(v) for v in out[:3]] == ["211.2097", "15.42193", "0.1"]
        assert out[7] == float(np.float32(1e-30))  # too small for exact powers of ten: as it is
        np.testing.assert_allclose(out[:6], column[:6], rtol=5e-7)  # within float32's own precision


def test_a_requests_few_values_are_rounded_as_a_bulk_answers_many():
    """``_digit`` (a request's row, Python floats) and ``_digits`` (bulk, numpy) give the
    same double for every float32: random bit patterns, every decade's edges, zeros,
    NaN and infinities."""
    bits = np.random.default_rng(1).integers(0, 2 ** 32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    decades = np.array([10.0 ** e for e in range(-25, 26)])
    edges = np.concatenate([decades, np.nextafter(decades, 0), np.nextafter(decades, np.inf), -decades])
    values = np.concatenate([bits[~np.isnan(bits)], edges.astype(np.float32),
                             np.array([0.0, -0.0, np.nan, np.inf, -np.inf], dtype=np.float32)])
    bulk, one_by_one = _digits(values), np.array([_digit(v) for v in values.tolist()])
    assert np.array_equal(bulk, one_by_one, equal_nan=True)
    assert np.array_equal(np.signbit(bulk), np.signbit(one_by_one))


ROW = {"carrier": "usps", "service_level": "ground_advantage", "origin_region": "NJ", "destination_region": "CA",
       "last_event": "arrived_at_facility", "hours_since_order": 30.0, "scans_so_far": 3}


def test_reasons_that_read_alike_merge_and_sentences_fill_only_what_they_name():
    candidates = [("lane_28d_median_h", None, 6.0), ("lane_91d_median_h", 40.0, 2.5), ("distance_km", 3912.4, 3.0),
                  ("distance_km", None, -1.0), ("hours_to_promise", 90.0, 1.0)]
    out = plain_reasons(candidates, ROW, top=4)
    assert [r["text"] for r in out] == ["lane NJ → CA is usually slow", "3,912 km to go", "distance to go",
                                        "the promised date is far off"]
    assert out[0]["effect_hours"] == 8.5 and out[0]["value"] is None
    assert out[1]["value"] == 3912.4 and out[2]["value"] is None


def test_at_order_every_in_transit_reason_is_one_not_handed_over():
    at_order = {**ROW, "hours_since_order": 0.0, "scans_so_far": 0, "last_event": None}
    candidates = [("hours_since_order", 0.0, 4.0), ("last_event", None, 2.0), ("carrier_7d_median_h", 50.0, -1.5),
                  ("facility_scans", 0.0, 1.25)]
    out = plain_reasons(candidates, at_order, top=3)
    assert [r["text"] for r in out] == [NOT_HANDED_OVER, "usps ground advantage is faster lately"]
    assert out[0]["effect_hours"] == 7.25
    in_transit = plain_reasons(candidates, ROW, top=3)
    assert [r["text"] for r in in_transit] == ["time already spent in transit", "latest scan: arrived at facility",
                                               "usps ground advantage is faster lately"]


def test_the_chosen_reasons_are_listed_by_their_added_effect():
    """Three windows of one lane, each smaller than the distance, add up past it; the
    reasons chosen are those with the largest single contributions."""
    lane = [("lane_28d_median_h", None, 12.0), ("lane_91d_median_h", None, 10.0), ("lane_365d_median_h", None, 7.6)]
    out = plain_reasons([("distance_km", 3912.4, 16.8), *lane[:2], ("hours_to_promise", 90.0, 9.0), lane[2]], ROW, top=3)
    assert [(r["text"], r["effect_hours"]) for r in out] == [
        ("lane NJ → CA is usually slow", 29.6), ("3,912 km to go", 16.8), ("the promised date is far off", 9.0)]
    # Two larger single contributions keep their places though the lane's add up past both.
    out = plain_reasons([("distance_km", 3912.4, 20.0), ("hours_to_promise", 90.0, 15.0), *lane], ROW, top=2)
    assert [r["text"] for r in out] == ["3,912 km to go", "the promised date is far off"]


def test_a_promise_already_passed_is_said_so_whichever_way_it_moves_the_eta():
    ahead = plain_reasons([("hours_to_promise", 20.0, -3.0), ("business_days_to_promise", 1.0, 2.0)], ROW, top=3)
    assert [r["text"] for r in ahead] == ["the promised date is close", "the promised date is far off"]
    passed = plain_reasons([("hours_to_promise", -50.0, -3.0), ("business_days_to_promise", -2.0, 2.0)], ROW, top=3)
    assert [r["text"] for r in passed] == ["the promised date has passed"]  # the two read alike: one reason
    assert passed[0]["effect_hours"] == -1.0
