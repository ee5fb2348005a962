"""Seasonal and calendar features of an order moment (pure functions of microsecond timestamps)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from data.calendar import black_friday_of, holiday_dates
from features.pit import NAT, US_PER_DAY, Columns, day_number, micros


def _next_date(day: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """For each day, days until the next anchor date on or after it."""
    pos = np.searchsorted(anchors, day, side="left")
    return (anchors[np.minimum(pos, len(anchors) - 1)] - day).astype("timedelta64[D]").astype(float)


def _civil(day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calendar year and month (1-12) of day numbers since 1970."""
    months = day.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
    return months // 12 + 1970, months % 12 + 1


def _iso_week(day: np.ndarray) -> np.ndarray:
    """ISO 8601 week number: the week of the year that holds the week's Thursday."""
    thursday = day - (day + 3) % 7 + 3  # day 0 (1970-01-01) was a Thursday
    year, _ = _civil(thursday)
    jan1 = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    return (thursday - jan1) // 7 + 1


@lru_cache(maxsize=64)
def _anchors(first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Black Fridays and Christmases of the years first..last, as datetime64[D]."""
    black_fridays = np.array([black_friday_of(y).to_datetime64() for y in range(first, last + 1)], dtype="datetime64[D]")
    christmases = np.array([np.datetime64(f"{y}-12-25") for y in range(first, last + 1)], dtype="datetime64[D]")
    return black_fridays, christmases


def calendar_features(ordered_at, promised_at, country: str) -> Columns:
    """Day of week and hour, peak proximity, business days and holidays to the promise."""
    # Integer microseconds and numpy, not the .dt accessors: the same numbers at a
    # fraction of the per-call cost, which a single live request is mostly made of.
    ordered_us = micros(ordered_at)
    day_n = day_number(ordered_us)
    day = day_n.astype("datetime64[D]")
    promised_us = micros(promised_at)
    has_promise = promised_us != NAT
    promise_day = np.where(has_promise, day_number(promised_us), day_n).astype("datetime64[D]")
    years, months = _civil(day_n)
    first, last = (int(years.min()) - 1, int(years.max()) + 1) if len(years) else (1999, 2001)
    hol = holiday_dates(country, first, last)
    black_fridays, christmases = _anchors(first, last)
    to_bf = _next_date(day, black_fridays)
    to_xmas = _next_date(day, christmases)
    business = np.busday_count(day, np.maximum(promise_day, day), holidays=hol).astype(float)
    hol_pos = np.searchsorted(hol, day, side="right")
    hol_today = hol_pos - np.searchsorted(hol, day, side="left")  # holidays on the day itself
    holidays_to_promise = np.searchsorted(hol, promise_day, side="right") - hol_pos
    minute_of_day = (ordered_us - day_n * US_PER_DAY) // 60_000_000
    cols = {
        "order_dow": (day_n + 3) % 7,
        "order_hour": minute_of_day / 60.0,
        "order_week": _iso_week(day_n).astype(float),
        "order_month": months,
        "days_to_black_friday": to_bf,
        "days_to_christmas": to_xmas,
        "in_peak": ((to_xmas <= 30) & (to_xmas > 0) & (to_bf > to_xmas)).astype(float),
        "holiday_today": (hol_today > 0).astype(float),
        "holidays_next_7d": (np.searchsorted(hol, day + 7, side="right") - hol_pos).astype(float),
        "business_days_to_promise": np.where(has_promise, business, np.nan),
        "holidays_to_promise": np.where(has_promise, holidays_to_promise, np.nan),
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in cols.items()}
