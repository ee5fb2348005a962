"""The carriers' operating clock (``runtime.clock``) and how training learns it (``training.models.fit_clock``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.calendar import holiday_dates
from runtime.clock import ANY, OperatingClock
from training.models import MIN_CLOCK_DELIVERIES, fit_clock

WEEKDAYS = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
SIX_DAYS = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def clock(holiday_works: float = 0.0) -> OperatingClock:
    return OperatingClock({"ups/ground": WEEKDAYS, "usps/priority": SIX_DAYS, ANY: SIX_DAYS},
                          {"ups/ground": holiday_works, "usps/priority": 0.0, ANY: 0.0}, "US", (2025, 2025))


def at(*stamps: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(stamps), utc=True)).astype("datetime64[us, UTC]")


def codes(c: OperatingClock, *pairs: str) -> np.ndarray:
    carrier, service = zip(*(p.split("/") for p in pairs))
    return c.codes(np.array(carrier, dtype=object), np.array(service, dtype=object))


def test_a_weekend_does_not_count_for_a_carrier_that_rests_on_it():
    c = clock()
    friday_noon = at("2025-11-14 12:00", "2025-11-14 12:00")
    k = codes(c, "ups/ground", "usps/priority")
    # one operating day from Friday noon: Monday noon for UPS, Saturday noon for USPS
    np.testing.assert_allclose(c.calendar_hours(k, friday_noon, np.array([24.0, 24.0])), [72.0, 24.0])
    # and back: Friday noon to Monday noon is 24 operating hours for UPS, 48 for USPS
    np.testing.assert_allclose(c.operating_hours(k, friday_noon, np.array([72.0, 72.0])), [24.0, 48.0])


def test_a_moment_years_outside_the_laid_out_span_keeps_its_weekdays():
    """The clock is laid out from a year before training to ten after; a moment outside
    (a backfill of old orders, say) moves in by whole 52-week years, so a Friday stays a
    Friday in the same season. Before, a clock standing still there sent a 2016 order's
    ETA to 2023."""
    c = clock()  # trained on 2025: laid out 2024 to 2035
    k = codes(c, "ups/ground", "usps/priority")
    # they land on 2024-02-23 and 2034-05-19, Fridays with no holiday the Monday after
    for friday in ("2012-03-09 12:00", "2045-05-05 12:00", "2025-11-14 12:00"):
        assert pd.Timestamp(friday).dayofweek == 4
        moment = at(friday, friday)
        np.testing.assert_allclose(c.calendar_hours(k, moment, np.array([24.0, 24.0])), [72.0, 24.0])
        np.testing.assert_allclose(c.operating_hours(k, moment, np.array([72.0, 72.0])), [24.0, 48.0])
    # inside the span and outside it in one call: each row on its own
    both = at("2012-03-09 12:00", "2025-11-14 12:00")
    np.testing.assert_allclose(c.calendar_hours(codes(c, "ups/ground", "ups/ground"), both, np.array([24.0, 24.0])),
                               [72.0, 72.0])


def test_a_public_holiday_counts_only_where_the_carrier_works_on_holidays():
    wednesday_noon = at("2025-11-26 12:00")  # Thanksgiving is Thursday 2025-11-27
    for works, expected in ((0.0, 48.0), (1.0, 24.0)):
        c = clock(works)
        np.testing.assert_allclose(c.calendar_hours(codes(c, "ups/ground"), wednesday_noon, np.array([24.0])),
                                   [expected])


def test_a_pair_training_did_not_see_runs_on_the_pooled_clock():
    c = clock()
    k = codes(c, "dhl/express", "ups/ground")
    np.testing.assert_allclose(c.calendar_hours(k, at("2025-11-14 12:00", "2025-11-14 12:00"), np.array([24.0, 24.0])),
                               [24.0, 72.0])  # the pooled clock works Saturdays


def test_operating_hours_and_calendar_hours_invert_each_other_and_keep_order():
    """From a moment on a working day, calendar -> operating -> calendar is the identity
    wherever the end is on a working day; calendar hours never fall as operating hours rise."""
    c = clock()
    rng = np.random.default_rng(3)
    start = pd.Timestamp("2025-03-03", tz="UTC") + pd.to_timedelta(rng.uniform(0, 300, 2000), unit="D")
    start = pd.Series(start).astype("datetime64[us, UTC]")
    k = codes(c, *(["ups/ground", "usps/priority"] * 1000))
    op = rng.uniform(0, 400, 2000)
    cal = c.calendar_hours(k, start, op)
    assert (cal >= op - 1e-6).all()  # the clock never runs faster than the calendar
    np.testing.assert_allclose(c.operating_hours(k, start, cal), op, atol=1e-6)
    grid = np.linspace(0, 300, 601)
    wide = c.calendar_hours(k[:50], start[:50], np.tile(grid, (50, 1)))
    assert (np.diff(wide, axis=1) >= 0).all()
    # the matrix form is the column form, column by column
    np.testing.assert_array_equal(wide[:, 7], c.calendar_hours(k[:50], start[:50], np.full(50, grid[7])))


def test_the_clock_reads_back_as_saved():
    c = clock(1.0)
    again = OperatingClock.from_dict(c.to_dict())
    k = codes(c, "ups/ground", "usps/priority", "dhl/express")
    s = at("2025-12-24 18:00", "2026-01-02 08:00", "2025-07-03 23:00")
    np.testing.assert_array_equal(again.calendar_hours(k, s, np.array([30.0, 50.0, 70.0])),
                                  c.calendar_hours(k, s, np.array([30.0, 50.0, 70.0])))


def deliveries(carrier: str, service: str, n: int, weekday_weight: list[float], seed: int,
               on_holidays: bool = False) -> pd.DataFrame:
    """Orders over a year and their delivery moments, landing on weekdays in proportion to
    the weights, and on US public holidays only with ``on_holidays``."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2025-01-01", "2025-12-31", freq="D", tz="UTC")
    w = np.array([weekday_weight[d] for d in days.dayofweek])
    holiday = np.isin(days.tz_localize(None).to_numpy().astype("datetime64[D]"), holiday_dates("US", 2025, 2025))
    w = np.where(holiday & (not on_holidays), 0.0, w)
    landed = days[rng.choice(len(days), n, p=w / w.sum())] + pd.to_timedelta(rng.uniform(9, 20, n), unit="h")
    ordered = landed - pd.to_timedelta(rng.uniform(20, 120, n), unit="h")
    hours = (landed - ordered) / pd.Timedelta(hours=1)
    return pd.DataFrame({"as_of": pd.Series(ordered).astype("datetime64[us, UTC]"), "hours_since_order": 0.0,
                         "carrier": carrier, "service_level": service, "_hours": hours.to_numpy()})


def test_training_learns_each_carriers_working_days_from_its_deliveries():
    """UPS delivers Monday to Friday, USPS also Saturdays and a few parcels on Sundays (under
    the share that makes a day a working day), a rare pair too few times for its own clock."""
    rows = pd.concat([deliveries("ups", "ground", 3000, [0.6, 1, 1, 0.9, 0.8, 0, 0], 1),
                      deliveries("usps", "priority", 3000, [0.6, 0.7, 1, 1, 0.9, 0.9, 0.15], 2),
                      deliveries("fedex", "express", 3000, [0.6, 1, 1, 0.9, 0.8, 0, 0], 4, on_holidays=True),
                      deliveries("dhl", "express", MIN_CLOCK_DELIVERIES - 1, [1, 1, 1, 1, 1, 1, 1], 3)],
                     ignore_index=True)
    # in-transit rows of the same shipments are not counted again
    rows = pd.concat([rows, rows.assign(hours_since_order=5.0, carrier="dhl", service_level="express")],
                     ignore_index=True)
    c = fit_clock(rows, rows._hours.to_numpy(), "US")
    assert c.weeks["ups/ground"] == WEEKDAYS
    assert c.weeks["usps/priority"] == SIX_DAYS
    assert "dhl/express" not in c.weeks and ANY in c.weeks
    assert c.weeks["fedex/express"] == WEEKDAYS
    assert (c.holidays["ups/ground"], c.holidays["usps/priority"], c.holidays["fedex/express"]) == (0.0, 0.0, 1.0)
    with pytest.raises(KeyError):
        c.holidays["dhl/express"]
