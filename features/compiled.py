"""The compiled loop behind every trailing-window statistic of ``features.history``.

One query is a (group, day) pair: find the group's rows among the daily table's sorted
(group, day) rows, take the cumulative sums' difference over the days in
``[day - width, day)``, and read the lead-time quantiles from the window's 64-bin
histogram. The numpy version of the same arithmetic built (queries x 64) temporaries and
walked them a dozen times per window (1.2 s of the 3 s that 100,000 bulk rows' features
took); here each query is one pass over its bins, with the same floating-point
operations in the same order, so the numbers are the same to the last bit (tested
against loops over the daily rows and over raw deliveries, tests/code/test_features_pit.py).

numba compiles it, cached on disk; importing this module imports numba (about 0.4 s),
so ``features.history`` imports it inside the function that needs it.
"""

from __future__ import annotations

import numba
import numpy as np

#: the statistics a window gives, in the rows of ``window_stats``'s output
STATS = ("n", "median_h", "p90_h", "spread_h", "late_rate", "exception_rate")


@numba.njit(cache=True, nogil=True, inline="always")
def _first_at_or_after(day, lo, hi, target_day):
    """Index of the first row in ``[lo, hi)`` (one group, days sorted) whose day is >= target."""
    while lo < hi:
        mid = (lo + hi) // 2
        if day[mid] < target_day:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, nogil=True, inline="always")
def _window_rows(group, day, code, query_day, width):
    """The daily rows ``[lo, hi)`` of group ``code`` whose day lies in ``[query_day - width,
    query_day)``, as positions in the cumulative sums; (0, 0), an empty window, for -1."""
    if code < 0:
        return 0, 0
    start = np.searchsorted(group, code, side="left")
    end = np.searchsorted(group, code, side="right")
    hi = _first_at_or_after(day, start, end, query_day)
    return _first_at_or_after(day, start, hi, query_day - width), hi


@numba.njit(cache=True, nogil=True, inline="always")
def _quantile(hist_lo, hist_hi, cum_hist, total, p, edges):
    """The lead time below which a share ``p`` of the window's deliveries fall: the first bin
    where the running count of ``cum_hist[hist_hi] - cum_hist[hist_lo]`` reaches ``p`` x
    ``total`` (the last bin if none does), interpolated inside it (half way in an empty
    one; the open last bin is taken as half again as wide as its lower edge)."""
    n_bins = edges.shape[0] - 1
    target = p * total
    b = n_bins - 1
    below = 0  # deliveries in the bins before b
    for k in range(n_bins - 1):
        in_k = cum_hist[hist_hi, k] - cum_hist[hist_lo, k]
        if below + in_k >= target:
            b = k
            break
        below += in_k
    in_bin = cum_hist[hist_hi, b] - cum_hist[hist_lo, b]
    frac = (target - below) / max(in_bin, 1) if in_bin > 0 else 0.5
    lo_edge = edges[b]
    hi_edge = edges[b] * 1.5 if np.isinf(edges[b + 1]) else edges[b + 1]
    return lo_edge + frac * (hi_edge - lo_edge)


@numba.njit(cache=True, nogil=True)
def window_stats(group, day, cum_n, cum_promised, cum_late, cum_exception, cum_hist, edges, codes, days, width, out):
    """``STATS`` per query into ``out`` (6, queries): the window ``[days - width, days)`` of
    group ``codes`` (-1: a group never seen, an empty window) in the daily table whose
    rows are sorted by (``group``, ``day``); ``cum_*`` are the table's cumulative sums with a
    leading zero row."""
    nan = np.nan
    for i in range(codes.shape[0]):
        lo, hi = _window_rows(group, day, codes[i], days[i], width)
        n = float(cum_n[hi] - cum_n[lo])
        promised = cum_promised[hi] - cum_promised[lo]
        late = cum_late[hi] - cum_late[lo]
        exception = cum_exception[hi] - cum_exception[lo]
        total = 0
        for k in range(cum_hist.shape[1]):
            total += cum_hist[hi, k] - cum_hist[lo, k]
        if total > 0:
            p10 = _quantile(lo, hi, cum_hist, total, 0.1, edges)
            p50 = _quantile(lo, hi, cum_hist, total, 0.5, edges)
            p90 = _quantile(lo, hi, cum_hist, total, 0.9, edges)
        else:
            p10 = p50 = p90 = nan
        out[0, i] = n
        out[1, i] = p50
        out[2, i] = p90
        out[3, i] = p90 - p10
        out[4, i] = late / max(promised, 1) if promised > 0 else nan
        out[5, i] = exception / max(n, 1.0) if n > 0 else nan
    return out


@numba.njit(cache=True, nogil=True)
def window_quantile(group, day, cum_n, cum_hist, edges, codes, days, width, p, out):
    """The lead-time quantile ``p`` and the deliveries of the window ``[days - width, days)``
    of group ``codes`` per query, into ``out`` (2, queries): as ``window_stats`` reads its
    quantiles (NaN for an empty window), at a share of the caller's choosing."""
    for i in range(codes.shape[0]):
        lo, hi = _window_rows(group, day, codes[i], days[i], width)
        total = 0
        for k in range(cum_hist.shape[1]):
            total += cum_hist[hi, k] - cum_hist[lo, k]
        out[0, i] = _quantile(lo, hi, cum_hist, total, p, edges) if total > 0 else np.nan
        out[1, i] = float(cum_n[hi] - cum_n[lo])
    return out
