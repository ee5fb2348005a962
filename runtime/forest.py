"""LightGBM boosters packed: every tree's nodes in one array, walked by compiled code.

A live request predicts one row with four boosters (the EDD model's three quantiles and
the delay model), 1,167 trees in the default champion (650 since the interval ends
start from the median). Through ``Booster.predict`` each call pays LightGBM's Python
set-up, and its trees keep their nodes in separate arrays per field, which the rest of
a request evicts from the cache: one row through the four boosters of the
100,000-shipment benchmark bundle took 1.5 ms when other work ran between requests
(0.6 ms in a tight loop; 0.4-0.5 and 0.1 ms here). Here each node is one 16-byte record
in depth-first order, so a left step reads the next record, and one compiled call
(``runtime.compiled.predict``, LightGBM's decision rule) sums every tree of several
boosters: the same numbers, bit for bit (tested). The rows may be float32 (the feature
code's numbers), compared with the float64 thresholds exactly as their float64 copy.

Bulk goes the same way, rows in blocks that walk one tree before the next (the tree
stays in the nearest cache) and row ranges on several threads (the compiled loop
releases the GIL): 2.0-2.4 s for the 100,000-shipment bundle's three EDD boosters on
100,000 rows on 2 cores, against LightGBM's 4.5-5.2 s, the same numbers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import lightgbm as lgb
import numpy as np

from runtime import model_text

#: a node: a split's threshold or a leaf's value; the split's feature; how many records
#: on its right child is (the left child is the next record); its row in ``left_set``
#: (categorical splits); flags (``runtime.compiled``: missing kind, categorical, default left, leaf)
NODE = np.dtype([("value", "f8"), ("feature", "u2"), ("right", "u2"), ("cat", "u2"), ("flags", "u1")], align=True)
#: a split's missing kinds, as LightGBM's model text names them (the flags' bits 0-1)
MISSING = {"None": 0, "Zero": 1, "NaN": 2}
CATEGORICAL, DEFAULT_LEFT, LEAF = 4, 8, 16  # the other flag bits
#: objectives whose output is the raw sum (binary's is its sigmoid; others are not covered)
_IDENTITY = {"regression", "regression_l1", "quantile", "huber", "fair", "mape"}
_LIMIT = np.iinfo(np.uint16).max


def split_of(node: dict) -> tuple[int, bool, float, bool, int, list[int]]:
    """A dumped split as (feature, categorical, threshold, default left, missing kind, left codes)."""
    categorical = node["decision_type"] == "=="
    codes = [int(c) for c in str(node["threshold"]).split("||")] if categorical else []
    threshold = np.nan if categorical else float(node["threshold"])
    return node["split_feature"], categorical, threshold, bool(node["default_left"]), MISSING[node["missing_type"]], codes


def left_set_of(codes: list[list[int]]) -> np.ndarray:
    """(categorical splits, largest code + 1) booleans: which codes go left at each."""
    width = max((max(c) + 1 for c in codes if c), default=0)
    out = np.zeros((len(codes), width), dtype=bool)
    for i, c in enumerate(codes):
        out[i, c] = True
    return out


class Forest:
    """Several boosters' trees as one node array; ``predict(X)`` equals
    ``np.column_stack([b.predict(X) for b in boosters])``."""

    def __init__(self, nodes: np.ndarray, roots: np.ndarray, outputs: np.ndarray, left_set: np.ndarray,
                 sigmoid: list[float | None]):
        self.nodes, self.roots, self.outputs, self.left_set = nodes, roots, outputs, left_set
        self.sigmoid = sigmoid  # per booster: the binary objective's sigmoid, None for raw sums

    @classmethod
    def of(cls, boosters: list[lgb.Booster], dumped: list[dict] | None = None) -> "Forest | None":
        """The boosters packed, or None for what this does not cover (several outputs per
        iteration, averaged or linear trees, other objectives, past 16-bit fields): those
        keep LightGBM's own predict. ``dumped``: their ``runtime.model_text.dumped``, when already read."""
        nodes: list[tuple] = []
        roots, outputs, codes, sigmoid = [], [], [], []
        for k, booster in enumerate(boosters):
            model = dumped[k] if dumped is not None else model_text.dumped(booster)
            transform = _transform(model)
            if transform is False:
                return None
            sigmoid.append(transform)
            for tree in model["tree_info"]:
                roots.append(len(nodes))
                outputs.append(k)
                if not _packed(tree["tree_structure"], nodes, codes):
                    return None
        if not roots or len(codes) > _LIMIT:
            return None
        return cls(np.array(nodes, dtype=NODE), np.array(roots, dtype=np.int64), np.array(outputs, dtype=np.int64),
                   left_set_of(codes), sigmoid)

    def predict(self, X: np.ndarray, threads: int = 1, raw: bool = False) -> np.ndarray:
        """(rows, boosters): what each booster's ``predict`` gives for ``X`` (``raw``: its
        ``predict(raw_score=True)``, the sums before a binary objective's sigmoid), the
        rows split over ``threads``."""
        from runtime import compiled  # numba: imported by code that predicts, not at import

        X = np.asarray(X)
        X = np.ascontiguousarray(X, dtype=np.float32 if X.dtype == np.float32 else np.float64)
        out = np.zeros((len(X), len(self.sigmoid)))
        in_parts(lambda a, b: compiled.predict(X[a:b], self.nodes, self.roots, self.outputs, self.left_set, out[a:b]),
                 len(X), threads)
        for k, s in enumerate(self.sigmoid):
            if s is not None and not raw:
                out[:, k] = compiled.binary_output(out[:, k], s)
        return out


def in_parts(run, rows: int, threads: int) -> None:
    """``run(start, stop)`` over consecutive row ranges, one per thread (at most ``rows``);
    for compiled loops that release the GIL."""
    if threads <= 1 or rows <= 1:  # a live request: no bounds to work out (linspace is 15 us)
        run(0, rows)
        return
    bounds = np.linspace(0, rows, min(threads, rows) + 1).astype(int)
    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        list(pool.map(run, bounds[:-1], bounds[1:]))


def _transform(model: dict) -> float | None | bool:
    """None for a raw sum, the sigmoid for binary, False for what is not covered."""
    if model.get("num_tree_per_iteration", 1) != 1 or model.get("average_output"):
        return False
    name, *params = str(model.get("objective", "")).split()
    if name in _IDENTITY:
        return None
    if name == "binary":
        return float(dict(p.split(":") for p in params).get("sigmoid", 1.0))
    return False


def _packed(node: dict, nodes: list[tuple], codes: list[list[int]]) -> bool:
    """Appends a (sub)tree's nodes depth first; False where a field would not fit."""
    i = len(nodes)
    if "split_index" not in node:
        if "leaf_coeff" in node:  # a linear tree's leaf is not a constant
            return False
        nodes.append((float(node["leaf_value"]), 0, 0, 0, LEAF))
        return True
    feature, categorical, threshold, default_left, missing, left_codes = split_of(node)
    cat = len(codes)
    if categorical:
        codes.append(left_codes)
    flags = missing | (CATEGORICAL if categorical else 0) | (DEFAULT_LEFT if default_left else 0)
    nodes.append((threshold, feature, 0, cat if categorical else 0, flags))
    if not _packed(node["left_child"], nodes, codes):
        return False
    right = len(nodes) - i
    if right > _LIMIT or feature > _LIMIT or not _packed(node["right_child"], nodes, codes):
        return False
    nodes[i] = (threshold, feature, right, cat if categorical else 0, flags)
    return True
