"""Seasonal and calendar features of an order moment (pure functions of timestamps)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data.calendar import black_friday_of, holiday_dates


def _next_date(day: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """For each day, days until the next anchor date on or after it."""
    pos = np.searchsorted(anchors, day, side="left")
    return (anchors[np.minimum(pos, len(anchors) - 1)] - day).astype("timedelta64[D]").astype(float)


def calendar_features(ordered_at: pd.Series, promised_at: pd.Series, country: str) -> pd.DataFrame:
    """Day of week and hour, peak proximity, business days and holidays to the promise."""
    ordered = ordered_at.dt.tz_convert("UTC")
    day = ordered.dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    promise_day = promised_at.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[D]")
    years = ordered.dt.year
    first, last = int(years.min()) - 1, int(years.max()) + 1
    hol = holiday_dates(country, first, last)
    black_fridays = np.array([black_friday_of(y).to_datetime64() for y in range(first, last + 1)], dtype="datetime64[D]")
    christmases = np.array([np.datetime64(f"{y}-12-25") for y in range(first, last + 1)], dtype="datetime64[D]")
    to_bf = _next_date(day, black_fridays)
    to_xmas = _next_date(day, christmases)
    has_promise = ~np.isnat(promise_day)
    safe_promise = np.where(has_promise, promise_day, day)
    business = np.busday_count(day, np.maximum(safe_promise, day), holidays=hol).astype(float)
    hol_pos = np.searchsorted(hol, day, side="right")
    holidays_to_promise = np.searchsorted(hol, safe_promise, side="right") - hol_pos
    return pd.DataFrame({
        "order_dow": ordered.dt.dayofweek.to_numpy(),
        "order_hour": ordered.dt.hour.to_numpy() + ordered.dt.minute.to_numpy() / 60.0,
        "order_week": ordered.dt.isocalendar().week.to_numpy(dtype=float),
        "order_month": ordered.dt.month.to_numpy(),
        "days_to_black_friday": to_bf,
        "days_to_christmas": to_xmas,
        "in_peak": ((to_xmas <= 30) & (to_xmas > 0) & (to_bf > to_xmas)).astype(float),
        "holiday_today": np.isin(day, hol).astype(float),
        "holidays_next_7d": (np.searchsorted(hol, day + 7, side="right") - hol_pos).astype(float),
        "business_days_to_promise": np.where(has_promise, business, np.nan),
        "holidays_to_promise": np.where(has_promise, holidays_to_promise, np.nan),
    }, index=ordered_at.index).astype(np.float32)
