"""TreeSHAP contributions read from tables worked out once per booster.

LightGBM's ``pred_contrib`` runs path-dependent TreeSHAP for every row: its cost grows
with trees x leaves x depth squared, and on one live request it was the largest single
cost (0.86 ms of a 3.7 ms answer with reasons). The same numbers come cheaper from a
table: a leaf's share of each feature's contribution depends only on its value, the
cover fractions along its path (fixed by training) and which of its path's features
the row follows (one of 2^m subsets for m distinct features). So the tables hold, per
leaf, a sum for every subset, and a row costs one decision per split, one step per
edge down each tree (depth first, carrying the subset of followed features) and one
lookup per (leaf, path feature): no per-row path arithmetic.

For a leaf with value v and distinct path features U (|U| = m), each with zero fraction
z_j (the product of child cover / parent cover where it splits on the path) and one
fraction o_j (1 when the row goes the path's way at every split on j), the Shapley value
of feature k is

    v * (o_k - z_k) * sum over S subset of O - {k} of |S|! (m - |S| - 1)! / m! * prod_{j in U - S - {k}} z_j

where O is the set of features the row follows. Taking prod_{j in U} z_j out of the sum
leaves H(O - {k}), with H(A) = sum over S within A of |S|! (m - |S| - 1)! / m! * prod_{j in S}
1 / z_j: one number per subset, whatever k, which is what the tables hold. It is the
quantity LightGBM's ``TreeSHAP`` recursion computes (tested equal to ``pred_contrib``).
Leaves with more distinct path features than ``MAX_PATH_FEATURES``, or tables past
``MAX_TABLE_ENTRIES``, are left to LightGBM (``ContributionTables.of`` returns None).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial

import lightgbm as lgb
import numpy as np

from runtime import model_text
from runtime.forest import in_parts, left_set_of, split_of

#: 2^m entries per leaf: at 8 distinct path features a leaf's table is 2 KB
MAX_PATH_FEATURES = 8
MAX_TABLE_ENTRIES = 8_000_000  # 64 MB of float64; past it, LightGBM's own TreeSHAP


@dataclass
class _Splits:
    """Every split of every tree, as arrays: how a row decides at each."""

    feature: np.ndarray  # int
    threshold: np.ndarray  # float (numerical splits)
    categorical: np.ndarray  # bool
    default_left: np.ndarray  # bool
    missing: np.ndarray  # 0 none, 1 zero, 2 NaN
    left_set: np.ndarray  # (categorical splits, max code + 1) bool: codes that go left
    cat_row: np.ndarray  # split -> its row in left_set (-1 for numerical)


class ContributionTables:
    """One booster's TreeSHAP as lookups; ``contributions(X)`` equals
    ``booster.predict(X, pred_contrib=True)[:, :-1]`` (the bias column left out)."""

    def __init__(self, splits: _Splits, leaf_slots: np.ndarray, edges: np.ndarray, slot_feature: np.ndarray,
                 slot_inv_z: np.ndarray, leaf_offset: np.ndarray, leaf_vz: np.ndarray, table: np.ndarray,
                 n_features: int):
        self.splits = splits
        self.leaf_slots = leaf_slots  # each leaf's first (leaf, path feature) slot
        self.edge_split, self.edge_left, self.edge_bit, self.edge_first, self.edge_depth, self.edge_leaf = (
            np.ascontiguousarray(c) for c in edges.T)
        self.max_depth = int(self.edge_depth.max(initial=0))
        self.slot_feature, self.slot_inv_z = slot_feature, slot_inv_z
        self.leaf_offset, self.leaf_vz, self.table = leaf_offset, leaf_vz, table
        self.n_features = n_features

    @classmethod
    def of(cls, booster: lgb.Booster, dumped: dict | None = None) -> "ContributionTables | None":
        """The booster's tables, or None where LightGBM's own TreeSHAP is the better way
        (a leaf with too many distinct path features, tables too large, several outputs,
        linear trees, whose leaves are not constants).
        ``dumped``: its ``runtime.model_text.dumped``, when already read."""
        model = dumped if dumped is not None else model_text.dumped(booster)
        if model.get("num_tree_per_iteration", 1) != 1:
            return None
        paths = _Paths()
        for tree in model["tree_info"]:
            paths.walk(tree["tree_structure"])
        if not paths.leaves or paths.linear:
            return None
        m = np.array([len(leaf[1]) for leaf in paths.leaves])
        if m.max() > MAX_PATH_FEATURES or int(np.sum(2 ** m)) > MAX_TABLE_ENTRIES:
            return None
        return cls._built(paths, m, model["max_feature_idx"] + 1)

    @classmethod
    def _built(cls, paths: "_Paths", m: np.ndarray, n_features: int) -> "ContributionTables":
        leaf_offset = np.concatenate([[0], np.cumsum(2 ** m)[:-1]]).astype(np.int64)
        table = np.empty(int(np.sum(2 ** m)))
        leaf_vz = np.empty(len(m))
        for size in np.unique(m):  # leaves with the same number of path features together
            pick = np.flatnonzero(m == size)
            z = np.array([[f[1] for f in paths.leaves[i][1]] for i in pick])
            v = np.array([paths.leaves[i][0] for i in pick])
            table[leaf_offset[pick][:, None] + np.arange(2 ** size)[None, :]] = _subset_sums(1.0 / z)
            leaf_vz[pick] = v * z.prod(axis=1)
        slot_feature = [feature for _, feats in paths.leaves for feature, _ in feats]
        slot_z = [z for _, feats in paths.leaves for _, z in feats]
        edges = np.array(paths.edges, dtype=np.int64).reshape(-1, 6)
        leaf_slots = np.concatenate([[0], np.cumsum(m)]).astype(np.int64)
        return cls(paths.splits(), leaf_slots, edges, np.array(slot_feature, dtype=np.int64), 1.0 / np.array(slot_z),
                   leaf_offset, leaf_vz, table, n_features)

    def contributions(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """(rows, features) contributions of ``X`` (the booster's columns, as floats),
        the rows split over ``threads`` (the compiled loop releases the GIL)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.zeros((len(X), self.n_features))
        in_parts(lambda a, b: self._into(X[a:b], out[a:b]), len(X), threads)
        return out

    def ready(self) -> "ContributionTables":
        """Both walks compiled (or read from numba's cache) now, not on the first request
        of one row or of a batch."""
        from runtime import compiled

        for rows in (1, compiled.SHAP_BLOCK_ROWS):
            self.contributions(np.zeros((rows, self.n_features)))
        return self

    def _into(self, X: np.ndarray, out: np.ndarray) -> None:
        from runtime import compiled  # numba: only code that explains pays for importing it

        sp = self.splits
        walk = compiled.contributions_in_blocks if len(X) >= compiled.SHAP_BLOCK_ROWS else compiled.contributions
        walk(X, sp.feature, sp.threshold, sp.categorical, sp.default_left, sp.missing, sp.cat_row, sp.left_set,
             self.leaf_slots, self.edge_split, self.edge_left, self.edge_bit, self.edge_first, self.edge_depth,
             self.edge_leaf, self.max_depth, self.slot_feature, self.slot_inv_z, self.leaf_offset, self.leaf_vz,
             self.table, out)


class _Paths:
    """A dumped model's splits, its edges in depth-first order, and per leaf its value
    and, per distinct feature on its path, (feature, zero fraction)."""

    def __init__(self):
        self.leaves: list[tuple[float, list[tuple[int, float]]]] = []
        self._split_rows: list[tuple] = []
        #: every edge in depth-first order: (split, goes left, bit of its feature on the
        #: path, first split on that feature, depth of the child, leaf number or -1)
        self.edges: list[tuple[int, bool, int, bool, int, int]] = []
        self.linear = False  # a leaf with coefficients: no tables

    def walk(self, node: dict, path: tuple = ()) -> None:
        if "split_index" not in node:
            self.linear |= "leaf_coeff" in node
            if path:  # a tree of one leaf adds only to the bias
                self.leaves.append((float(node["leaf_value"]), _merged(path)))
            return
        split = len(self._split_rows)
        self._split_rows.append(split_of(node))
        parent = float(node["internal_count"])
        seen = list(dict.fromkeys(p[0] for p in path))  # the path's features, in the leaves' bit order
        feature = node["split_feature"]
        bit, first = (seen.index(feature), False) if feature in seen else (len(seen), True)
        for child, left in ((node["left_child"], True), (node["right_child"], False)):
            leaf = "split_index" not in child
            self.edges.append((split, left, bit, first, len(path) + 1, len(self.leaves) if leaf else -1))
            count = child["leaf_count"] if leaf else child["internal_count"]
            self.walk(child, path + ((feature, count / parent),))

    def splits(self) -> _Splits:
        rows = self._split_rows
        cats = [r[5] for r in rows if r[1]]
        left_set = left_set_of(cats)
        cat_row = np.full(len(rows), -1)
        cat_row[[i for i, r in enumerate(rows) if r[1]]] = np.arange(len(cats))
        return _Splits(np.array([r[0] for r in rows], dtype=np.int64), np.array([r[2] for r in rows], dtype=float),
                       np.array([r[1] for r in rows], dtype=bool), np.array([r[3] for r in rows], dtype=bool),
                       np.array([r[4] for r in rows], dtype=np.int8), left_set, cat_row)


def _merged(path: tuple) -> list[tuple[int, float]]:
    """A path's distinct features in order of first split (the leaf's bit order), each
    with its zero fraction: the product of its splits' cover fractions."""
    out: dict[int, float] = {}
    for feature, fraction in path:
        out[feature] = out.get(feature, 1.0) * fraction
    return list(out.items())


def _subset_sums(inv_z: np.ndarray) -> np.ndarray:
    """(leaves, 2^m): per subset A of a leaf's m path features (bit j: feature j),
    H(A) = sum over S within A of |S|! (m - |S| - 1)! / m! x product over S of 1 / z_j."""
    n, m = inv_z.shape
    bits = ((np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1).astype(bool)  # (2^m, m)
    weight = np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)] + [0.0])
    h = np.where(bits[None, :, :], inv_z[:, None, :], 1.0).prod(axis=2) * weight[bits.sum(axis=1)][None, :]
    for b in range(m):  # the sum over subsets, one feature at a time
        shaped = h.reshape(n, 2 ** (m - b - 1), 2, 2 ** b)
        shaped[:, :, 1, :] += shaped[:, :, 0, :]
    return h
