"""Point-in-time primitives every feature is built from.

The one rule: a feature for a moment ``t`` uses only facts that happened strictly
before ``t``. These helpers implement "how many / which events of this key happened
before t" with sorted composite keys and ``searchsorted``, so every feature module
gets strictness from the same few lines instead of re-deriving it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
US_UTC = pd.DatetimeTZDtype("us", "UTC")
#: up to this many rows (a live request), per-value Python beats vectorised pandas set-up
SMALL = 64


def micros(ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC timestamps as int64 microseconds since 1970 (NaT becomes INT64 min)."""
    if isinstance(ts, pd.Series) and ts.dtype == US_UTC:  # the contract's own dtype: no conversion
        return ts.array.asi8
    values = pd.Series(ts)
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        values = pd.to_datetime(values, utc=True)  # e.g. all-missing floats from a failed lookup
    return values.astype("datetime64[us, UTC]").array.asi8  # NaT is INT64 min


def day_number(us: np.ndarray) -> np.ndarray:
    """Whole UTC days since 1970 for microsecond timestamps."""
    return np.floor_divide(us, US_PER_DAY)


def hours_between(later_us: np.ndarray, earlier_us: np.ndarray) -> np.ndarray:
    """(later - earlier) in hours, NaN when either side is unknown."""
    missing = (later_us == NAT) | (earlier_us == NAT)
    out = (later_us - earlier_us) / US_PER_HOUR
    return np.where(missing, np.nan, out)


NAT = np.iinfo(np.int64).min


class EventIndex:
    """Events per key sorted by time, answering "which of them happened before t".

    ``key`` is an integer code per event (e.g. a shipment's position), ``time_us`` its
    microsecond timestamp. Queries are strict: an event at exactly ``t`` is not
    before ``t``.
    """

    def __init__(self, key: np.ndarray, time_us: np.ndarray, presorted: bool = False):
        # Positions in the caller's arrays; a subset of sorted events is still sorted.
        self.order = np.arange(len(key)) if presorted else np.lexsort((time_us, key))
        self.key = key[self.order]
        self.time = time_us[self.order]

    def _bounds(self, key: np.ndarray, time_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = np.searchsorted(self.key, key, side="left")
        end = np.searchsorted(self.key, key, side="right")
        return start, start + count_less_in_ranges(self.time, start, end, time_us)

    def count_before(self, key: np.ndarray, time_us: np.ndarray) -> np.ndarray:
        start, before = self._bounds(key, time_us)
        return before - start

    def sum_before(self, values: np.ndarray, key: np.ndarray, time_us: np.ndarray) -> np.ndarray:
        """Sum of ``values`` (aligned with the caller's events) over events before t."""
        cum = np.concatenate([[0.0], np.cumsum(np.nan_to_num(np.asarray(values, dtype=float)[self.order]))])
        start, before = self._bounds(key, time_us)
        return cum[before] - cum[start]

    def first_time(self, key: np.ndarray) -> np.ndarray:
        """Each key's earliest event time (any time), NAT when the key has none."""
        start = np.searchsorted(self.key, key, side="left")
        if not len(self.key):
            return np.full(len(key), NAT)
        hit = self.key[np.minimum(start, len(self.key) - 1)] == key
        return np.where(hit, self.time[np.minimum(start, len(self.key) - 1)], NAT)

    def last_before(self, key: np.ndarray, time_us: np.ndarray) -> np.ndarray:
        """Caller positions of the latest event before t per query, -1 when none."""
        start, before = self._bounds(key, time_us)
        if not len(self.order):
            return np.full(len(key), -1)
        return np.where(before > start, self.order[np.maximum(before - 1, 0)], -1)


def count_less_in_ranges(values: np.ndarray, start: np.ndarray, end: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per query, how many of ``values[start:end]`` (sorted) are < target.

    One vectorised binary search for all queries: log2(longest range) passes.
    """
    lo, hi = start.astype(np.int64), end.astype(np.int64)
    last = max(len(values) - 1, 0)
    while True:
        active = lo < hi
        if not active.any():
            return lo - start
        mid = (lo + hi) // 2
        less = active & (values[np.minimum(mid, last)] < target)
        lo = np.where(less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)
