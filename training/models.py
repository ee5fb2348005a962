"""The three models: EDD quantiles with conformal intervals, and calibrated probabilities.

Estimators in the scikit-learn manner: they learn in ``fit``/``calibrate`` and keep
what they learned in attributes ending in ``_``. LightGBM boosters are saved in their
native text format (MLflow's pyfunc path mangles pandas categoricals).

EDD: LightGBM quantile boosters for the 10/50/90% points of log(1 + hours left), sorted
per row so they never cross, then conformalized (CQR) on a later window per carrier,
so the 10-90% interval holds 80% of outcomes per carrier. A promise at confidence c
adds to the 90% point the c-quantile of its one-sided errors on the calibration
window, so "promise at 95%" is on time for 95% of calibration parcels of that carrier.

Probabilities (delay, churn): a LightGBM binary booster whose scores are mapped
through isotonic regression fitted on the calibration window.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from features.pit import SMALL

QUANTILES = (0.1, 0.5, 0.9)
INTERVAL_COVERAGE = 0.8
MIN_GROUP_ROWS = 200  # smaller carriers use the overall conformal correction
#: Depth is capped: per-request reasons run TreeSHAP (pred_contrib), whose cost grows
#: with trees x leaves x depth squared; unbalanced 20-deep trees made it 8 ms a row.
BASE_PARAMS = {
    "learning_rate": 0.08,
    "num_leaves": 31,
    "max_depth": 8,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.85,
    "bagging_fraction": 0.85,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 255,
    "num_threads": 2,
    "verbose": -1,
    "seed": 7,
}
ROUNDS, EARLY_STOP = 500, 40


class CategoricalEncoder:
    """Pandas categoricals with the training levels; unseen levels become missing."""

    def __init__(self, columns: tuple[str, ...]):
        self.columns = tuple(columns)

    def fit(self, X: pd.DataFrame) -> "CategoricalEncoder":
        self.levels_ = {c: sorted(X[c].dropna().astype("str").unique().tolist()) for c in self.columns if c in X}
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X.copy()
        for c, levels in self.levels_.items():
            values = X[c].astype("str") if c in X else pd.Series(np.nan, index=X.index, dtype="str")
            X[c] = pd.Categorical(values, categories=levels)
        return X

    def codes(self, values, column: str) -> np.ndarray:
        """Positions of ``values`` in the training levels of ``column`` as floats (unseen: NaN).

        These are the numbers LightGBM itself feeds its categorical splits when given
        pandas categoricals, so a numeric matrix built from them predicts identically
        without LightGBM's per-call pandas conversion (most of a single request's cost).
        """
        if len(values) > SMALL:
            codes = pd.Index(self.levels_[column], dtype="str").get_indexer(pd.Series(values).astype("str"))
            return np.where(codes >= 0, codes, np.nan)
        lookup = self._lookups().get(column, {})
        return np.array([lookup.get(v, np.nan) if isinstance(v, str) else np.nan for v in values], dtype=float)

    def _lookups(self) -> dict[str, dict[str, float]]:
        # Plain dicts: for a handful of rows a dict lookup is ~100x cheaper than an Index.
        if getattr(self, "_lookup_", None) is None:
            self._lookup_ = {c: {v: float(i) for i, v in enumerate(levels)} for c, levels in self.levels_.items()}
        return self._lookup_

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "levels": self.levels_}

    @classmethod
    def from_dict(cls, d: dict) -> "CategoricalEncoder":
        enc = cls(tuple(d["columns"]))
        enc.levels_ = d["levels"]
        return enc


def train_booster(params: dict, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray,
                  callbacks: list | None = None) -> lgb.Booster:
    train = lgb.Dataset(X, y, free_raw_data=False)
    valid = lgb.Dataset(X_val, y_val, reference=train)
    return lgb.train({**BASE_PARAMS, **params}, train, num_boost_round=params.get("rounds", ROUNDS),
                     valid_sets=[valid], callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False), *(callbacks or [])])


class _Model:
    """Shared: feature list, encoder, native save/load."""

    kind = "model"

    def __init__(self, features: list[str], categorical: tuple[str, ...], params: dict | None = None):
        self.features = list(features)
        self.categorical = tuple(c for c in categorical if c in features)
        self.params = dict(params or {})

    def _X(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Training-shaped frame (pandas categoricals): for fitting, SHAP and signatures."""
        return self.encoder_.transform(rows.reindex(columns=self.features))

    def _matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """The same features as a float64 matrix with categorical codes, for predicting."""
        categorical = self.encoder_.levels_
        numeric = [c for c in self.features if c not in categorical]
        # One reindex + to_numpy over the numeric block: per-column access costs ~40 us each.
        block = rows.reindex(columns=numeric).to_numpy(dtype=np.float64, na_value=np.nan)
        out = np.empty((len(rows), len(self.features)), dtype=np.float64)
        out[:, [self.features.index(c) for c in numeric]] = block
        for c in categorical:
            values = rows[c] if c in rows else pd.Series([None] * len(rows), dtype=object)
            out[:, self.features.index(c)] = self.encoder_.codes(values, c)
        return out

    def _meta(self) -> dict:
        return {"kind": self.kind, "features": self.features, "categorical": list(self.categorical),
                "params": self.params, "encoder": self.encoder_.to_dict()}

    def _restore(self, meta: dict) -> None:
        self.encoder_ = CategoricalEncoder.from_dict(meta["encoder"])

    def contributions(self, rows: pd.DataFrame, booster: lgb.Booster, X: np.ndarray | None = None) -> np.ndarray:
        """Per-row feature contributions (SHAP values of the tree model), in ``features`` order.

        The bias (expected value) column LightGBM appends is left out."""
        return booster.predict(self._matrix(rows) if X is None else X, pred_contrib=True)[:, :-1]


class EddModel(_Model):
    kind = "edd"

    def fit(self, rows: pd.DataFrame, hours: np.ndarray, val_rows: pd.DataFrame, val_hours: np.ndarray,
            callbacks: list | None = None) -> "EddModel":
        self.encoder_ = CategoricalEncoder(self.categorical).fit(rows)
        X, Xv = self._X(rows), self._X(val_rows)
        y, yv = np.log1p(np.maximum(hours, 0)), np.log1p(np.maximum(val_hours, 0))
        self.boosters_ = [train_booster({**self.params, "objective": "quantile", "alpha": q}, X, y, Xv, yv, callbacks)
                          for q in QUANTILES]
        return self

    def raw_log_quantiles(self, rows: pd.DataFrame, X: np.ndarray | None = None) -> np.ndarray:
        X = self._matrix(rows) if X is None else X
        q = np.column_stack([b.predict(X) for b in self.boosters_])
        return np.sort(q, axis=1)  # quantile boosters can cross; sorting never hurts coverage

    def calibrate(self, rows: pd.DataFrame, hours: np.ndarray, groups: pd.Series) -> "EddModel":
        q = self.raw_log_quantiles(rows)
        y = np.log1p(np.maximum(hours, 0))
        interval_scores = np.maximum(q[:, 0] - y, y - q[:, 2])
        promise_scores = y - q[:, 2]
        self.interval_shift_ = {"*": _conformal_quantile(interval_scores, INTERVAL_COVERAGE)}
        self.promise_scores_ = {"*": _quantile_grid(promise_scores)}
        g = groups.astype("str").to_numpy()
        for name in pd.unique(g):
            mask = g == name
            if mask.sum() >= MIN_GROUP_ROWS:
                self.interval_shift_[name] = _conformal_quantile(interval_scores[mask], INTERVAL_COVERAGE)
                self.promise_scores_[name] = _quantile_grid(promise_scores[mask])
        return self

    def predict_hours(self, rows: pd.DataFrame, groups: pd.Series, raw: np.ndarray | None = None) -> np.ndarray:
        """Calibrated (p10, p50, p90) hours from the moment, one row each."""
        q = self.raw_log_quantiles(rows) if raw is None else raw
        shift = _per_group(self.interval_shift_, groups)
        low = np.expm1(q[:, 0] - shift)
        high = np.expm1(q[:, 2] + shift)
        mid = np.expm1(q[:, 1])
        return np.clip(np.column_stack([np.minimum(low, mid), mid, np.maximum(high, mid)]), 0, None)

    def promise_hours(self, rows: pd.DataFrame, groups: pd.Series, confidence: float,
                      raw: np.ndarray | None = None) -> np.ndarray:
        """Hours from the moment within which a share ``confidence`` of parcels arrive."""
        if not 0.5 <= confidence <= 0.995:
            raise ValueError(f"confidence must be between 0.5 and 0.995, not {confidence}")
        q90 = (self.raw_log_quantiles(rows) if raw is None else raw)[:, 2]
        grid = np.linspace(0, 1, 201)
        per_group = {g: float(np.interp(confidence, grid, scores)) for g, scores in self.promise_scores_.items()}
        return np.maximum(np.expm1(q90 + _per_group(per_group, groups)), 0)

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

    def fit(self, rows: pd.DataFrame, y: np.ndarray, val_rows: pd.DataFrame, val_y: np.ndarray,
            callbacks: list | None = None) -> "ProbabilityModel":
        self.encoder_ = CategoricalEncoder(self.categorical).fit(rows)
        self.booster_ = train_booster({**self.params, "objective": "binary"}, self._X(rows), y,
                                      self._X(val_rows), val_y, callbacks)
        return self

    def raw_score(self, rows: pd.DataFrame) -> np.ndarray:
        return self.booster_.predict(self._matrix(rows))

    def calibrate(self, rows: pd.DataFrame, y: np.ndarray) -> "ProbabilityModel":
        self.isotonic_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(self.raw_score(rows), y)
        return self

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        return np.clip(self.isotonic_.predict(self.raw_score(rows)), 0.0, 1.0)

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


def _conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The finite-sample conformal quantile: ceil((n + 1) * coverage) / n."""
    n = len(scores)
    level = min(np.ceil((n + 1) * coverage) / n, 1.0)
    return float(np.quantile(scores, level, method="higher"))


def _quantile_grid(scores: np.ndarray) -> np.ndarray:
    return np.quantile(scores, np.linspace(0, 1, 201))


def _per_group(table: dict, groups: pd.Series) -> np.ndarray:
    """Each row's group value; groups without their own use the overall one ('*')."""
    if len(groups) <= SMALL:
        return np.array([table.get(g, table["*"]) if isinstance(g, str) else table["*"] for g in groups.tolist()], dtype=float)
    return groups.astype("str").map(table).fillna(table["*"]).to_numpy(dtype=float)
