"""Distribution profiles of feature columns, and how far live rows moved from one.

Training keeps a profile of each model's features on its test window (the rows nearest
to the traffic it will answer); ``eddy monitor`` compares the features of live requests
with it by the population stability index (PSI):

    PSI = sum over bins of (live share - reference share) * ln(live share / reference share)

Numeric features are cut at the reference's deciles, categorical ones by their most
common levels (the rest pooled as "other"); missing values are a bin of their own, so
a feature that stops arriving shows as drift. The usual reading: below 0.1 stable,
0.1 to 0.25 a moderate shift, above 0.25 a shift worth acting on (``DRIFTED``).

Hand-written rather than a library (Evidently computes the same index): it is a few
lines over the numpy columns Eddy already has, where Evidently would add a large
dependency tree and a pandas report object to a service that never imports pandas on
its request path.
"""

from __future__ import annotations

import numpy as np

DRIFTED = 0.25
EPS = 1e-4  # a share of zero would make the index infinite
TOP_LEVELS = 30


def _numbers(values) -> np.ndarray:
    """As float32, whatever the source: training frames and request rows may hold the same
    value at different precisions, which must not land in different bins."""
    return np.asarray(values, dtype=np.float32).astype(float)


def numeric_profile(values: np.ndarray, bins: int = 10) -> dict:
    x = _numbers(values)
    known = x[~np.isnan(x)]
    edges = np.unique(np.quantile(known, np.linspace(0, 1, bins + 1)[1:-1])) if len(known) else np.array([])
    return {"kind": "numeric", "edges": edges.tolist(), "p": _numeric_shares(x, edges).tolist()}


def _numeric_shares(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    missing = np.isnan(x)
    counts = np.bincount(np.searchsorted(edges, x[~missing], side="right"), minlength=len(edges) + 1)
    return np.append(counts, missing.sum()) / max(len(x), 1)


def categorical_profile(values: np.ndarray) -> dict:
    v = _text(values)
    present = v[v != ""]
    levels, counts = np.unique(present, return_counts=True)
    top = levels[np.argsort(-counts, kind="stable")][:TOP_LEVELS].tolist()
    return {"kind": "categorical", "levels": top, "p": _categorical_shares(v, top).tolist()}


def _categorical_shares(v: np.ndarray, levels: list[str]) -> np.ndarray:
    index = {level: i for i, level in enumerate(levels)}
    other, missing = len(levels), len(levels) + 1
    codes = np.array([missing if x == "" else index.get(x, other) for x in v.tolist()], dtype=np.int64)
    return np.bincount(codes, minlength=len(levels) + 2) / max(len(v), 1)


def _text(values) -> np.ndarray:
    return np.array(["" if x is None or (isinstance(x, float) and np.isnan(x)) else str(x) for x in np.asarray(values).tolist()],
                    dtype=object)


def profile(rows, names: list[str], categorical: set[str]) -> dict[str, dict]:
    """Each named feature's profile on ``rows`` (a mapping of column to array)."""
    return {f: categorical_profile(rows[f]) if f in categorical else numeric_profile(rows[f]) for f in names if f in rows}


def live_shares(entry: dict, values) -> np.ndarray:
    """The share of ``values`` in each of the reference's bins."""
    if entry["kind"] == "numeric":
        return _numeric_shares(_numbers(values), np.asarray(entry["edges"], dtype=float))
    return _categorical_shares(_text(values), entry["levels"])


def psi(expected, actual) -> float:
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift(reference: dict[str, dict], rows) -> dict[str, float]:
    """PSI of each profiled feature present in ``rows``."""
    return {f: psi(entry["p"], live_shares(entry, rows[f])) for f, entry in reference.items() if f in rows}
