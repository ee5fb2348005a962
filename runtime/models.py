"""Fitted models as the runtime sees them: load, predict, explain, save.

The EDD model holds LightGBM quantile boosters for the 10/50/90% points of
log(1 + hours left), sorted per row so they never cross, plus the conformal
corrections learned on a later window per carrier. A probability model (delay,
churn) holds a LightGBM binary booster and the isotonic map that calibrates it.
Fitting and calibrating are training's job (``training.models`` subclasses these);
here the learned state (attributes ending in ``_``) is only read.

Boosters predict from a float matrix of categorical codes (the numbers LightGBM
itself feeds its categorical splits), bit-identical to pandas categoricals without
LightGBM's per-call pandas conversion. Small batches predict on one thread: on a busy
2-core machine a second OpenMP thread spins (one row: 11.6 ms against 0.22 ms).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from features.pit import Lookup

QUANTILES = (0.1, 0.5, 0.9)
#: up to this many rows a booster predicts on one thread
ONE_THREAD_ROWS = 512


def threads_for(rows: int) -> int:
    """LightGBM threads for a batch: one for small batches, every core (0) for bulk."""
    return 1 if rows <= ONE_THREAD_ROWS else 0


def booster_predict(booster: lgb.Booster, X: np.ndarray, **kwargs) -> np.ndarray:
    return booster.predict(X, num_threads=threads_for(len(X)), **kwargs)


class CategoricalEncoder:
    """Categorical columns as codes of the training levels; unseen levels become missing."""

    def __init__(self, columns: tuple[str, ...]):
        self.columns = tuple(columns)

    def fit(self, X: pd.DataFrame) -> "CategoricalEncoder":
        self.levels_ = {c: sorted(X[c].dropna().astype("str").unique().tolist()) for c in self.columns if c in X}
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Pandas categoricals with the training levels (fitting, SHAP plots, signatures)."""
        X = X.copy()
        for c, levels in self.levels_.items():
            values = X[c].astype("str") if c in X else pd.Series(np.nan, index=X.index, dtype="str")
            X[c] = pd.Categorical(values, categories=levels)
        return X

    def codes(self, values, column: str) -> np.ndarray:
        """Positions of ``values`` in the training levels of ``column`` as floats (unseen: NaN)."""
        lookup = self._lookups().get(column)
        if lookup is None:
            return np.full(len(values), np.nan)
        codes = lookup.codes(values)
        return np.where(codes >= 0, codes, np.nan)

    def _lookups(self) -> dict[str, Lookup]:
        if getattr(self, "_lookup_", None) is None:
            self._lookup_ = {c: Lookup(levels) for c, levels in self.levels_.items()}
        return self._lookup_

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "levels": self.levels_}

    @classmethod
    def from_dict(cls, d: dict) -> "CategoricalEncoder":
        enc = cls(tuple(d["columns"]))
        enc.levels_ = d["levels"]
        return enc


class _Model:
    """Shared: feature list, encoder, native save/load."""

    kind = "model"

    def __init__(self, features: list[str], categorical: tuple[str, ...], params: dict | None = None):
        self.features = list(features)
        self.categorical = tuple(c for c in categorical if c in features)
        self.params = dict(params or {})

    def _X(self, rows) -> pd.DataFrame:
        """Training-shaped frame (pandas categoricals): for fitting, SHAP and signatures."""
        if not isinstance(rows, pd.DataFrame):
            rows = pd.DataFrame({c: rows[c] for c in self.features if c in rows})
        return self.encoder_.transform(rows.reindex(columns=self.features))

    def _matrix(self, rows) -> np.ndarray:
        """The features as a float64 matrix with categorical codes, for predicting.

        ``rows`` is a mapping of column name to array (a DataFrame is one too)."""
        n = len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)
        out = np.full((n, len(self.features)), np.nan, dtype=np.float64)
        categorical = self.encoder_.levels_
        for j, c in enumerate(self.features):
            if c not in rows:
                continue
            values = rows[c]
            if c in categorical:
                out[:, j] = self.encoder_.codes(values, c)
            else:
                out[:, j] = np.asarray(values, dtype=np.float64) if not isinstance(values, pd.Series) \
                    else values.to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def _meta(self) -> dict:
        return {"kind": self.kind, "features": self.features, "categorical": list(self.categorical),
                "params": self.params, "encoder": self.encoder_.to_dict()}

    def _restore(self, meta: dict) -> None:
        self.encoder_ = CategoricalEncoder.from_dict(meta["encoder"])

    def contributions(self, rows, booster: lgb.Booster, X: np.ndarray | None = None) -> np.ndarray:
        """Per-row feature contributions (SHAP values of the tree model), in ``features`` order.

        The bias (expected value) column LightGBM appends is left out."""
        return booster_predict(booster, self._matrix(rows) if X is None else X, pred_contrib=True)[:, :-1]


class EddModel(_Model):
    kind = "edd"

    def raw_log_quantiles(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        X = self._matrix(rows) if X is None else X
        q = np.column_stack([booster_predict(b, X) for b in self.boosters_])
        return np.sort(q, axis=1)  # quantile boosters can cross; sorting never hurts coverage

    def predict_hours(self, rows, groups, raw: np.ndarray | None = None) -> np.ndarray:
        """Calibrated (p10, p50, p90) hours from the moment, one row each."""
        q = self.raw_log_quantiles(rows) if raw is None else raw
        shift = per_group(self.interval_shift_, groups)
        low = np.expm1(q[:, 0] - shift)
        high = np.expm1(q[:, 2] + shift)
        mid = np.expm1(q[:, 1])
        return np.clip(np.column_stack([np.minimum(low, mid), mid, np.maximum(high, mid)]), 0, None)

    def promise_hours(self, rows, groups, confidence, raw: np.ndarray | None = None) -> np.ndarray:
        """Hours from the moment within which a share ``confidence`` of parcels arrive.

        ``confidence`` is one value or one per row."""
        c = np.asarray(confidence, dtype=float)
        if ((c < 0.5) | (c > 0.995)).any():
            raise ValueError(f"confidence must be between 0.5 and 0.995, not {confidence}")
        q90 = (self.raw_log_quantiles(rows) if raw is None else raw)[:, 2]
        grid = np.linspace(0, 1, 201)
        names = list(self.promise_scores_)
        pos = _group_positions(names, groups)
        c = np.broadcast_to(c, len(pos))
        shift = np.empty(len(pos))
        for k in np.unique(pos):  # one interpolation per carrier, over every row of it
            rows_k = pos == k
            shift[rows_k] = np.interp(c[rows_k], grid, self.promise_scores_[names[k]])
        return np.maximum(np.expm1(q90 + shift), 0)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for q, b in zip(QUANTILES, self.boosters_):
            b.save_model(str(folder / f"edd_q{int(q * 100)}.txt"))
        meta = {**self._meta(), "interval_shift": self.interval_shift_,
                "promise_scores": {k: list(map(float, v)) for k, v in self.promise_scores_.items()}}
        (folder / "edd.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> "EddModel":
        meta = json.loads((folder / "edd.json").read_text())
        m = cls(meta["features"], tuple(meta["categorical"]), meta["params"])
        m._restore(meta)
        m.boosters_ = [lgb.Booster(model_file=str(folder / f"edd_q{int(q * 100)}.txt")) for q in QUANTILES]
        m.interval_shift_ = meta["interval_shift"]
        m.promise_scores_ = {k: np.array(v) for k, v in meta["promise_scores"].items()}
        return m


class ProbabilityModel(_Model):
    """A calibrated probability of a yes/no outcome (late delivery, churn)."""

    def __init__(self, kind: str, features: list[str], categorical: tuple[str, ...], params: dict | None = None):
        super().__init__(features, categorical, params)
        self.kind = kind

    def raw_score(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        return booster_predict(self.booster_, self._matrix(rows) if X is None else X)

    def predict_proba(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        return np.clip(self.isotonic_.predict(self.raw_score(rows, X)), 0.0, 1.0)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(folder / f"{self.kind}.txt"))
        meta = {**self._meta(), "isotonic_x": self.isotonic_.X_thresholds_.tolist(),
                "isotonic_y": self.isotonic_.y_thresholds_.tolist()}
        (folder / f"{self.kind}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, kind: str) -> "ProbabilityModel":
        meta = json.loads((folder / f"{kind}.json").read_text())
        m = cls(kind, meta["features"], tuple(meta["categorical"]), meta["params"])
        m._restore(meta)
        m.booster_ = lgb.Booster(model_file=str(folder / f"{kind}.txt"))
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(np.array(meta["isotonic_x"]), np.array(meta["isotonic_y"]))
        m.isotonic_ = iso
        return m


def _group_positions(names: list[str], groups) -> np.ndarray:
    """Each row's position in ``names`` (a per-group table's keys), '*' when its group has none."""
    pos = Lookup(names).codes(groups)
    return np.where(pos >= 0, pos, names.index("*"))


def per_group(table: dict, groups) -> np.ndarray:
    """Each row's group value; groups without their own use the overall one ('*')."""
    names = list(table)
    return np.array([table[k] for k in names], dtype=float)[_group_positions(names, groups)]
