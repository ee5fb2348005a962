"""The compiled loops over LightGBM trees (its decision rule, prediction, TreeSHAP) and the operating clock.

One definition of how a row goes at a split (``goes_left``, LightGBM's own rule) serves
both loops that walk trees: ``predict`` (``runtime.forest``) and ``contributions``
(``runtime.treeshap``). numba compiles them, cached on disk. They sit at module level
because a cached numba function that calls another compiled function only finds its
cache when both are module globals (from a closure it compiles again every process).
Importing this module imports numba (about 0.4 s), so only the code that walks trees
imports it, inside the functions that need it.
"""

from __future__ import annotations

import numba
import numpy as np

from runtime.forest import CATEGORICAL, DEFAULT_LEFT, LEAF

#: LightGBM's kZeroThreshold (a float32 1e-35): |x| at or under it is zero for "Zero" missing splits
ZERO = float(np.float32(1e-35))


@numba.njit(cache=True, nogil=True, inline="always")
def goes_left(x, categorical, missing, default_left, threshold, cat_row, left_set):
    """LightGBM's decision at one split for value ``x`` (``missing``: ``runtime.forest.MISSING``).

    Categorical: missing, negative (after truncation toward zero) or unseen codes go
    right; otherwise the code's entry in the split's row of ``left_set``. Numerical: NaN is
    0 unless NaN has its own side; a missing value (NaN, or zero for "Zero" splits) goes
    the default way; otherwise left when ``x <= threshold``."""
    if categorical:
        if np.isnan(x) or x <= -1.0 or x >= left_set.shape[1]:
            return False
        return left_set[cat_row, int(x)]
    if np.isnan(x):
        if missing == 2:
            return default_left
        x = 0.0
    if missing == 1 and -ZERO <= x <= ZERO:
        return default_left
    return x <= threshold


#: rows that go through one tree before the next: a tree stays in the nearest cache
#: while a block's rows walk it, and the block's rows (about 1 KB each) in the next
BLOCK_ROWS = 256


@numba.njit(cache=True, nogil=True)
def predict(X, nodes, roots, outputs, left_set, out):
    """Adds each tree's leaf value for each row of ``X`` to ``out[row, outputs[tree]]``, trees
    in order (LightGBM's sum, bit for bit). ``nodes`` is ``runtime.forest.NODE`` records in
    depth-first order: a split's left child is the next node, its right child ``right``
    nodes on; a leaf holds its value in ``value``. Rows go in blocks, tree by tree."""
    for start in range(0, X.shape[0], BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, X.shape[0])
        for t in range(roots.shape[0]):
            root, o = roots[t], outputs[t]
            for r in range(start, stop):
                n = root
                while True:
                    node = nodes[n]
                    flags = node.flags
                    if flags & LEAF:
                        out[r, o] += node.value
                        break
                    if goes_left(X[r, node.feature], (flags & CATEGORICAL) != 0, flags & 3,
                                 (flags & DEFAULT_LEFT) != 0, node.value, node.cat, left_set):
                        n += 1
                    else:
                        n += node.right
    return out


@numba.njit(cache=True, nogil=True)
def binary_output(raw, sigmoid):
    """LightGBM's binary objective's output from raw sums: 1 / (1 + exp(-sigmoid x raw)),
    with the C library's exp as LightGBM has it (numpy's may differ in the last bit)."""
    out = np.empty_like(raw)
    for i in range(raw.shape[0]):
        out[i] = 1.0 / (1.0 + np.exp(-sigmoid * raw[i]))
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _decisions(x, feature, threshold, categorical, default_left, missing, cat_row, left_set, left):
    """``goes_left`` of one row at every split of the TreeSHAP tables, into ``left``."""
    for s in range(feature.shape[0]):
        left[s] = goes_left(x[feature[s]], categorical[s], missing[s], default_left[s], threshold[s], cat_row[s],
                            left_set)


@numba.njit(cache=True, nogil=True, inline="always")
def _subset(parent, first_bit, bit, away):
    """A node's subset of followed path features: its parent's with the edge's feature set
    (first split on it) and cleared when the row goes the other way. Branch-free: which
    way a row goes is as good as random, and a mispredicted branch costs more than the arithmetic."""
    return (parent | first_bit) & ~(away * bit)


@numba.njit(cache=True, nogil=True, inline="always")
def _leaf_shares(out_row, followed_set, first, last, base, vz, slot_feature, slot_inv_z, table):
    """One leaf's share of each of its path features' contributions for a row that follows ``followed_set``."""
    for k in range(first, last):
        j = k - first
        followed = (followed_set >> j) & 1
        # followed: (1 - z_k) / z_k x H(O without k); not: -z_k / z_k x H(O)
        out_row[slot_feature[k]] += vz * (followed * slot_inv_z[k] - 1.0) * table[base + (followed_set & ~(1 << j))]


@numba.njit(cache=True, nogil=True)
def contributions(X, feature, threshold, categorical, default_left, missing, cat_row, left_set,
                  leaf_slots, edge_split, edge_left, edge_bit, edge_first, edge_depth, edge_leaf, max_depth,
                  slot_feature, slot_inv_z, leaf_offset, leaf_vz, table, out):
    """TreeSHAP from ``runtime.treeshap``'s tables, a row at a time (a live request): a
    row is one decision per split, one step per edge down each tree (depth first) and
    one table entry per (leaf, path feature)."""
    left = np.empty(feature.shape[0], dtype=np.bool_)
    subset = np.zeros(max_depth + 1, dtype=np.int64)
    for r in range(X.shape[0]):
        _decisions(X[r], feature, threshold, categorical, default_left, missing, cat_row, left_set, left)
        for e in range(edge_split.shape[0]):
            d = edge_depth[e]
            subset[d] = _subset(subset[d - 1], edge_first[e] << edge_bit[e], np.int64(1) << edge_bit[e],
                                np.int64(left[edge_split[e]] != edge_left[e]))
            leaf = edge_leaf[e]
            if leaf >= 0:
                _leaf_shares(out[r], subset[d], leaf_slots[leaf], leaf_slots[leaf + 1], leaf_offset[leaf],
                             leaf_vz[leaf], slot_feature, slot_inv_z, table)
    return out


#: rows that go down every tree's edges together in bulk TreeSHAP: a leaf's table (up to
#: 2 KB) and the edge arrays are read once for the block, not once a row. The tables of
#: a 465-tree booster are 1.7 MB and a row reads most of them: 3,000 rows on one thread
#: took 0.62-0.68 s a row at a time and 0.38-0.46 s in blocks of 16 (5,000 rows on 2
#: cores: 0.65-0.80 s, blocks of 4 0.42-0.50, of 16 0.33-0.37, of 64 0.36-0.40); one row
#: alone is quicker through ``contributions`` (200 against 318 us)
SHAP_BLOCK_ROWS = 16


@numba.njit(cache=True, nogil=True)
def contributions_in_blocks(X, feature, threshold, categorical, default_left, missing, cat_row, left_set,
                            leaf_slots, edge_split, edge_left, edge_bit, edge_first, edge_depth, edge_leaf, max_depth,
                            slot_feature, slot_inv_z, leaf_offset, leaf_vz, table, out):
    """``contributions`` of ``SHAP_BLOCK_ROWS`` rows at a time, each row's sums in the same
    order as alone (bit for bit)."""
    block = SHAP_BLOCK_ROWS
    left = np.empty((block, feature.shape[0]), dtype=np.bool_)
    subset = np.zeros((max_depth + 1, block), dtype=np.int64)
    for start in range(0, X.shape[0], block):
        rows = min(block, X.shape[0] - start)
        for i in range(rows):
            _decisions(X[start + i], feature, threshold, categorical, default_left, missing, cat_row, left_set, left[i])
        for e in range(edge_split.shape[0]):
            d, split, way = edge_depth[e], edge_split[e], edge_left[e]
            first_bit, bit = edge_first[e] << edge_bit[e], np.int64(1) << edge_bit[e]
            for i in range(rows):
                subset[d, i] = _subset(subset[d - 1, i], first_bit, bit, np.int64(left[i, split] != way))
            leaf = edge_leaf[e]
            if leaf >= 0:
                first, last, base, vz = leaf_slots[leaf], leaf_slots[leaf + 1], leaf_offset[leaf], leaf_vz[leaf]
                for i in range(rows):
                    _leaf_shares(out[start + i], subset[d, i], first, last, base, vz, slot_feature, slot_inv_z, table)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def clock_reading(cum, rate, first, c, days):
    """Operating days on clock ``c`` from its first day to ``days`` (float days since 1970):
    the running total at the start of that day plus the day's rate for the part of it gone
    (days outside the laid-out span read at the nearest day's rate)."""
    n_days = rate.shape[1]
    t = days - first
    day = min(max(int(np.floor(t)), 0), n_days - 1)
    return cum[c, day] + rate[c, day] * (t - day)


@numba.njit(cache=True, nogil=True)
def clock_readings(cum, rate, first, codes, days, out):
    """``clock_reading`` of every row."""
    for i in range(codes.shape[0]):
        out[i] = clock_reading(cum, rate, first, codes[i], days[i])
    return out


@numba.njit(cache=True, nogil=True)
def calendar_hours(cum, rate, first, codes, start_days, operating_hours, out):
    """``runtime.clock.OperatingClock.calendar_hours``'s loop: per row, read its clock
    (``codes``: rows of ``cum`` and ``rate``) at ``start_days``, add each of its
    ``operating_hours``, and find the first moment the clock shows that reading (the last
    day whose running total is at or under it; a stopped day holds no time). One call
    for any batch: a live request pays no per-array set-up."""
    n_days = rate.shape[1]
    for i in range(codes.shape[0]):
        c = codes[i]
        start = clock_reading(cum, rate, first, c, start_days[i])
        for j in range(operating_hours.shape[1]):
            target = start + operating_hours[i, j] / 24.0
            lo, hi = 0, n_days + 1  # cum's row has a running total at every day's start and the end
            while lo < hi:
                mid = (lo + hi) // 2
                if cum[c, mid] <= target:
                    lo = mid + 1
                else:
                    hi = mid
            d = min(max(lo - 1, 0), n_days - 1)
            r = rate[c, d]
            frac = (target - cum[c, d]) / r if r > 0 else 0.0
            out[i, j] = max((first + d + frac - start_days[i]) * 24.0, 0.0)
    return out

