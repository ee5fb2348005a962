"""Fitted models as the runtime sees them: load, predict, explain, save.

The EDD model holds LightGBM quantile boosters for the 10/50/90% points of
log(1 + hours left) on the carrier's operating clock (``runtime.clock``: its working
days only), sorted per row so they never cross, plus the conformal
corrections learned on a later window per carrier, and a nowcast per destination region
(how far behind the model the region's latest parcels ran at the data's end), which
fades over the days after it. A probability model (delay,
churn) holds a LightGBM binary booster and the monotone map that calibrates it
(isotonic regression made strictly increasing, so customers stay apart; see ``ScoreMap``).
Fitting and calibrating are training's job (``training.models`` subclasses these);
here the learned state (attributes ending in ``_``) is only read.

Boosters predict from a float matrix of categorical codes (the numbers LightGBM
itself feeds its categorical splits), bit-identical to pandas categoricals without
LightGBM's per-call pandas conversion. They predict through the model's boosters
packed into one compiled walk (``runtime.forest``: the same numbers, without LightGBM's
per-call set-up and cache misses, and twice its speed in bulk), on one thread up to
``ONE_THREAD_ROWS`` and on every core above; what the forest does not cover stays with
LightGBM, on the same threads (on a busy 2-core machine a second OpenMP thread spins:
one row took 11.6 ms against 0.22 ms).
Reasons are TreeSHAP values, LightGBM's ``pred_contrib`` numbers read from tables
worked out once per booster (``runtime.treeshap``).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.pit import US_PER_DAY, Lookup, micros
from features.rhythm import RHYTHM_FEATURES, rhythm_features
from runtime import model_text
from runtime.clock import OperatingClock
from runtime.forest import Forest
from runtime.treeshap import ContributionTables

QUANTILES = (0.1, 0.5, 0.9)
#: a region's nowcast, beyond the network's (``EddModel.nowcast_parts``), halves every this
#: many days after the data's end: the simulator's storms last 2 to 5 days, and so do most
#: real disruptions of one region
NOWCAST_HALF_LIFE_DAYS = 2.0
#: the network's nowcast halves every this many days: a slow-down of the whole network
#: lasts (Olist's lead times rose for months after Black Friday 2017; chosen by backtest)
NOWCAST_NETWORK_HALF_LIFE_DAYS = 60.0
#: the levels (0 to 1) at which a version keeps each group's one-sided errors
#: (``EddModel.promise_scores_``); a promise at any confidence interpolates between them
PROMISE_GRID = np.linspace(0, 1, 201)
PROMISE_GRID.flags.writeable = False
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
        self._explainers: dict[int, tuple[lgb.Booster, ContributionTables | None]] = {}  # by booster
        self._forest: tuple[tuple[lgb.Booster, ...], Forest | None] = ((), None)

    @property
    def boosters(self) -> list[lgb.Booster]:
        """Every booster the model predicts with, in its output order."""
        raise NotImplementedError

    def ready(self, explain: bool = True) -> "_Model":
        """Everything a request needs, made now (loading a bundle): the packed forest and,
        for a model whose answers carry reasons, the explained booster's TreeSHAP tables,
        compiled or read from numba's cache."""
        dumped = [model_text.dumped(b) for b in self.boosters]  # once each, for the forest and the tables
        self.forest(dumped)
        if explain:
            self.explainer(self.explained, dumped[self.boosters.index(self.explained)])
        return self

    def predicted(self, X: np.ndarray, raw: bool = False) -> np.ndarray:
        """(rows, boosters): each booster's ``predict`` of ``X`` (``raw``: raw scores), through
        the packed forest (bit for bit the same numbers) where it covers the boosters."""
        forest = self.forest()
        if forest is not None:
            return forest.predict(X, threads=1 if threads_for(len(X)) == 1 else os.cpu_count() or 1, raw=raw)
        return np.column_stack([booster_predict(b, X, raw_score=raw) for b in self.boosters])

    def forest(self, dumped: list[dict] | None = None) -> Forest | None:
        """The boosters packed (``runtime.forest``), made on first use; None where not covered."""
        boosters = tuple(self.boosters)
        held, forest = self._forest
        if len(held) != len(boosters) or any(a is not b for a, b in zip(held, boosters)):
            forest = Forest.of(list(boosters), dumped)
            if forest is not None:  # compiled (or read from numba's cache) now, not on a live request
                for dtype in (np.float32, np.float64):  # the feature code's rows; other tables
                    forest.predict(np.zeros((1, boosters[0].num_feature()), dtype=dtype))
            self._forest = (boosters, forest)
        return forest

    def _derived(self, rows):
        """``rows`` plus the columns the model derives from them with its learned state."""
        return rows

    def _X(self, rows) -> pd.DataFrame:
        """Training-shaped frame (pandas categoricals): for fitting, SHAP and signatures."""
        rows = self._derived(rows)
        if not isinstance(rows, pd.DataFrame):
            rows = pd.DataFrame({c: rows[c] for c in self.features if c in rows})
        return self.encoder_.transform(rows.reindex(columns=self.features))

    def _matrix(self, rows) -> np.ndarray:
        """The features as a float matrix with categorical codes, for predicting.

        ``rows`` is a mapping of column name to array (a DataFrame is one too). float32
        when every number is one already (the feature code makes them so): the same
        values in half the memory, and a float32 compares with LightGBM's float64
        thresholds exactly as its float64 copy would. A bulk prediction's first matrix
        (100,000 rows) cost 0.3 s as float64, most of it the new memory's page faults."""
        rows = self._derived(rows)
        n = len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)
        out = np.full((n, len(self.features)), np.nan, dtype=self._matrix_dtype(rows))
        for j, c, categorical in self._columns():
            if c not in rows:
                continue
            values = rows[c]
            if categorical:
                out[:, j] = self.encoder_.codes(values, c)
            elif isinstance(values, pd.Series):
                out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                out[:, j] = values  # numpy casts to the matrix's dtype as it copies
        return out

    def _matrix_dtype(self, rows) -> type:
        """float32 where it holds every value exactly: each number column a float32 array
        and every categorical code below 2 ** 24; float64 otherwise."""
        columns = self._columns()
        exact = self._codes_fit_float32_ and all(
            categorical or c not in rows or (isinstance(rows[c], np.ndarray) and rows[c].dtype == np.float32)
            for _, c, categorical in columns)
        return np.float32 if exact else np.float64

    def _columns(self) -> list[tuple[int, str, bool]]:
        """(position, name, is categorical) per feature, worked out once per fitted encoder
        (with whether every categorical code fits a float32 exactly)."""
        if getattr(self, "_columns_for_", None) is not self.encoder_:
            self._columns_ = [(j, c, c in self.encoder_.levels_) for j, c in enumerate(self.features)]
            self._codes_fit_float32_ = all(len(levels) < 2 ** 24 for levels in self.encoder_.levels_.values())
            self._columns_for_ = self.encoder_
        return self._columns_

    def _meta(self) -> dict:
        return {"kind": self.kind, "features": self.features, "categorical": list(self.categorical),
                "params": self.params, "encoder": self.encoder_.to_dict()}

    def _restore(self, meta: dict) -> None:
        self.encoder_ = CategoricalEncoder.from_dict(meta["encoder"])

    def contributions(self, rows, booster: lgb.Booster, X: np.ndarray | None = None) -> np.ndarray:
        """Per-row feature contributions (SHAP values of the tree model), in ``features`` order:
        LightGBM's ``pred_contrib`` numbers, read from the booster's TreeSHAP tables where it
        has them (``runtime.treeshap``), without the bias column LightGBM appends."""
        X = self._matrix(rows) if X is None else X
        tables = self.explainer(booster)
        if tables is None:
            return booster_predict(booster, X, pred_contrib=True)[:, :-1]
        return tables.contributions(X, threads=1 if threads_for(len(X)) == 1 else os.cpu_count() or 1)

    def explainer(self, booster: lgb.Booster, dumped: dict | None = None) -> ContributionTables | None:
        """The booster's TreeSHAP tables, worked out on first use (loading a bundle does it)."""
        held = self._explainers.get(id(booster))
        if held is None or held[0] is not booster:  # an id can be reused once a booster is gone
            tables = ContributionTables.of(booster, dumped)
            if tables is not None:
                tables.ready()
            held = self._explainers[id(booster)] = (booster, tables)
        return held[1]


class EddModel(_Model):
    """Boosters for the 10%, 50% and 90% quantiles of log operating hours. With
    ``ends_from_median_`` (trained since 2026-12-04) the two ends' boosters predict their
    distance from the median booster's answer, which they were trained starting from."""

    kind = "edd"

    @property
    def explained(self) -> lgb.Booster:
        """The booster reasons explain: the median's."""
        return self.boosters_[1]

    @property
    def boosters(self) -> list[lgb.Booster]:
        return self.boosters_

    def raw_log_quantiles(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        q = self.predicted(self._matrix(rows) if X is None else X)
        if getattr(self, "ends_from_median_", False):  # the ends' boosters hold their distance from the median
            q[:, 0] += q[:, 1]
            q[:, 2] += q[:, 1]
        return np.sort(q, axis=1)  # quantile boosters can cross; sorting never hurts coverage

    def calibration_groups(self, rows, carriers) -> np.ndarray:
        """Each row's calibration group: its carrier and moment (``calibration_groups``), or
        the carrier alone for a version calibrated before the moments were apart."""
        return calibration_groups(rows, carriers) if getattr(self, "by_moment_", False) else carriers

    def level_shifted(self, q: np.ndarray, groups, nowcast: np.ndarray | None = None) -> np.ndarray:
        """The sorted quantiles moved by the group's median error on the latest calibration
        window (log hours): a lane network that slowed since the boosters' data shows there.
        ``groups`` are calibration groups (``calibration_groups``); each row's whole
        ``nowcast`` (``nowcast_shift``: region and network) is added too, when given."""
        level = getattr(self, "level_shift_", None)
        q = q if not level else q + per_group(level, groups)[:, None]
        return q if nowcast is None else q + nowcast[:, None]

    def nowcast_shift(self, rows) -> np.ndarray:
        """Per row, the whole nowcast: the sum of ``nowcast_parts``."""
        return self.nowcast_parts(rows).sum(axis=1)

    def nowcast_parts(self, rows) -> np.ndarray:
        """(rows, 2): how far behind the model the parcels ran at the data's end (log
        operating hours, ``training.models.EddEstimator.nowcast``): those into the row's
        destination region beyond the network's (fading with ``NOWCAST_HALF_LIFE_DAYS``
        after that end), and the network's (``NOWCAST_NETWORK_HALF_LIFE_DAYS``); 0 for a
        moment before the end, which the data already speaks of, and for a version without."""
        at = rows["as_of"]
        shift = getattr(self, "nowcast_", None)
        if not shift:
            return np.zeros((len(at), 2))
        at_us = micros(at)
        after = at_us >= self.nowcast_end_
        age_days = np.maximum((at_us - self.nowcast_end_) / US_PER_DAY, 0.0)
        network = getattr(self, "nowcast_network_", 0.0)
        region = per_group(shift, np.asarray(rows["destination_region"], dtype=object)) - network
        return np.column_stack([np.where(after, region * 0.5 ** (age_days / NOWCAST_HALF_LIFE_DAYS), 0.0),
                                np.where(after, network * 0.5 ** (age_days / NOWCAST_NETWORK_HALF_LIFE_DAYS), 0.0)])

    def late_shift(self, rows, shifted: np.ndarray, nowcast: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """How much each row's nowcast raises its chance of missing the promise: the mass of
        its ETA distribution the nowcast moved past the promise (a normal in log operating
        hours, median and spread from the ``shifted`` quantiles). The delay model sees no
        storm either, so its probability moves with the ETA (``ModelBundle``); 0 where
        nothing was moved, NaN without a promise. ``codes``: the rows' ``clock_codes``, when
        the caller has them."""
        out = np.zeros(len(nowcast))
        moved = nowcast != 0
        if not moved.any():
            return out
        from scipy.special import ndtr  # the normal distribution function, vectorised

        left = np.maximum(np.asarray(rows["hours_to_promise"], dtype=float), 0.0)
        clock = getattr(self, "clock_", None)
        if clock is not None:
            left = clock.operating_hours(self.clock_codes(rows) if codes is None else codes, rows["as_of"], left)
        spread = np.maximum((shifted[:, 2] - shifted[:, 0]) / (2 * 1.2815515655446004), 1e-6)  # z of the 90% point
        gap = np.log1p(left) - shifted[:, 1]
        return np.where(moved, ndtr((gap + nowcast) / spread) - ndtr(gap / spread), 0.0)

    def nowcast_behind(self, rows) -> np.ndarray:
        """(rows, 2): the shares of the parcels that ran behind the model at the data's end,
        into the row's destination region and over the network (what ``nowcast_parts``
        read; NaN where none was read)."""
        behind = {"*": np.nan, **getattr(self, "nowcast_behind_", {})}
        region = per_group(behind, np.asarray(rows["destination_region"], dtype=object))
        return np.column_stack([region, np.full(len(region), behind["*"])])

    def shifted_quantiles(self, rows, carriers, raw: np.ndarray | None = None,
                          nowcast: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The sorted quantiles as the boosters speak them (log operating hours), level-shifted
        and nowcast (``nowcast``: the rows' ``nowcast_shift``, when the caller has it), and
        each row's calibration group: what ``predict_hours``, ``promise_hours`` and the
        reasons read, worked out once for all three."""
        groups = self.calibration_groups(rows, carriers)
        nowcast = self.nowcast_shift(rows) if nowcast is None else nowcast
        return self.level_shifted(self.raw_log_quantiles(rows) if raw is None else raw, groups, nowcast), groups

    def clock_codes(self, rows) -> np.ndarray | None:
        """Each row's operating clock (``runtime.clock``); None for a version without clocks.
        An answer reads them three times (interval and promise, late shift, reasons): its
        caller works them out once and passes them on."""
        clock = getattr(self, "clock_", None)
        return None if clock is None else clock.codes(rows["carrier"], rows["service_level"])

    def hours_from_log(self, rows, log_hours: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray:
        """Calendar hours from each row's moment for the boosters' log(1 + operating hours)
        (a value per row, or a matrix with a row per row): the operating clock run forward
        from ``as_of`` (``runtime.clock``; a version without one learned calendar hours).
        ``codes``: the rows' ``clock_codes``, when the caller has them."""
        hours = np.maximum(np.expm1(log_hours), 0.0)
        clock = getattr(self, "clock_", None)
        if clock is None:
            return hours
        return clock.calendar_hours(self.clock_codes(rows) if codes is None else codes, rows["as_of"], hours)

    def predict_hours(self, rows, groups, raw: np.ndarray | None = None, shifted=None) -> np.ndarray:
        """Calibrated (p10, p50, p90) hours from the moment, one row each (``groups``: carriers;
        ``shifted``: ``shifted_quantiles`` of the rows, when the caller has them)."""
        q, groups = self.shifted_quantiles(rows, groups, raw) if shifted is None else shifted
        return _ordered(self.hours_from_log(rows, self._interval_log(q, groups)))

    def promise_hours(self, rows, groups, confidence, raw: np.ndarray | None = None, shifted=None) -> np.ndarray:
        """Hours from the moment within which a share ``confidence`` of parcels arrive.

        ``confidence`` is one value or one per row; ``groups``: carriers; ``shifted`` as
        for ``predict_hours``."""
        q, groups = self.shifted_quantiles(rows, groups, raw) if shifted is None else shifted
        return self.hours_from_log(rows, self._promise_log(q, groups, confidence, self._interval_log(q, groups)))

    def eta_and_promise_hours(self, rows, groups, confidence, shifted,
                              codes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``predict_hours`` and ``promise_hours`` together, through the clock in one pass
        (an answer needs both; a live request pays the clock's set-up once)."""
        q, groups = shifted
        interval = self._interval_log(q, groups)
        hours = self.hours_from_log(rows, np.column_stack([interval, self._promise_log(q, groups, confidence, interval)]),
                                    codes)
        return _ordered(hours[:, :3]), hours[:, 3]

    def _interval_log(self, q: np.ndarray, groups) -> np.ndarray:
        """The 10-90% interval's ends widened by the group's conformal shift, and the median."""
        shift = per_group(self.interval_shift_, groups)
        return np.column_stack([q[:, 0] - shift, q[:, 1], q[:, 2] + shift])

    def _promise_log(self, q: np.ndarray, groups, confidence, interval: np.ndarray) -> np.ndarray:
        """The 90% point plus the group's one-sided error at ``confidence`` (log operating hours),
        never before ``interval``'s (``_interval_log``) own point at it (``_interval_floor_log``)."""
        c = np.asarray(confidence, dtype=float)
        if ((c < 0.5) | (c > 0.995)).any():
            raise ValueError(f"confidence must be between 0.5 and 0.995, not {confidence}")
        grid = PROMISE_GRID
        names = list(self.promise_scores_)
        pos = _group_positions(names, groups)
        c = np.broadcast_to(c, len(pos))
        shift = np.empty(len(pos))
        for k in np.unique(pos):  # one interpolation per carrier, over every row of it
            rows_k = pos == k
            shift[rows_k] = np.interp(c[rows_k], grid, self.promise_scores_[names[k]])
        return np.maximum(q[:, 2] + shift, _interval_floor_log(interval, c))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for q, b in zip(QUANTILES, self.boosters_):
            b.save_model(str(folder / f"edd_q{int(q * 100)}.txt"))
        clock = getattr(self, "clock_", None)
        meta = {**self._meta(), "interval_shift": self.interval_shift_, "level_shift": getattr(self, "level_shift_", {}),
                "clock": None if clock is None else clock.to_dict(), "by_moment": getattr(self, "by_moment_", False),
                "ends_from_median": getattr(self, "ends_from_median_", False),
                "nowcast": {"end_us": getattr(self, "nowcast_end_", 0), "shift": getattr(self, "nowcast_", {}),
                            "behind": getattr(self, "nowcast_behind_", {}),
                            "network": getattr(self, "nowcast_network_", 0.0)},
                "promise_scores": {k: list(map(float, v)) for k, v in self.promise_scores_.items()}}
        (folder / "edd.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> "EddModel":
        meta = json.loads((folder / "edd.json").read_text())
        m = cls(meta["features"], tuple(meta["categorical"]), meta["params"])
        m._restore(meta)
        m.boosters_ = [lgb.Booster(model_file=str(folder / f"edd_q{int(q * 100)}.txt")) for q in QUANTILES]
        m.interval_shift_ = meta["interval_shift"]
        m.level_shift_ = meta.get("level_shift", {})
        m.clock_ = OperatingClock.from_dict(meta["clock"]) if meta.get("clock") else None
        m.by_moment_ = meta.get("by_moment", False)
        m.ends_from_median_ = meta.get("ends_from_median", False)
        nowcast = meta.get("nowcast") or {}
        m.nowcast_, m.nowcast_end_ = nowcast.get("shift", {}), int(nowcast.get("end_us", 0))
        m.nowcast_behind_, m.nowcast_network_ = nowcast.get("behind", {}), float(nowcast.get("network", 0.0))
        m.promise_scores_ = {k: np.array(v) for k, v in meta["promise_scores"].items()}
        return m


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class ScoreMap:
    """A booster's probability to a calibrated one, and to a percentile.

    The knots are isotonic regression's blocks, each at the median score of its
    calibration rows (in log-odds) with the block's observed rate: linear between knots
    and, past the outer ones, logit-linear with the end slope (at most 1), so the map is
    strictly increasing. Isotonic's own step function gives hundreds of customers one
    identical risk; here two customers the booster tells apart stay apart, and the
    calibration is the same within each block. ``percentile``: the share (0-100) of the
    calibration window's rows that scored lower, one definition for a request and a batch.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, quantiles: np.ndarray):
        self.x_, self.y_, self.quantiles_ = (np.asarray(a, dtype=float) for a in (x, y, quantiles))
        lo, hi = logit(self.y_[[0, -1]])
        if len(self.x_) > 1:
            slopes = np.diff(logit(self.y_[[0, 1, -2, -1]]))[[0, 2]] / np.diff(self.x_[[0, 1, -2, -1]])[[0, 2]]
        else:
            slopes = np.zeros(2)
        self._tails = (lo, hi, *np.clip(slopes, 0.0, 1.0))

    def probability(self, p: np.ndarray) -> np.ndarray:
        z = logit(p)
        lo, hi, s_lo, s_hi = self._tails
        out = np.interp(z, self.x_, self.y_)
        below, above = z < self.x_[0], z > self.x_[-1]
        out[below] = _expit(lo + s_lo * (z[below] - self.x_[0]))
        out[above] = _expit(hi + s_hi * (z[above] - self.x_[-1]))
        return out

    def percentile(self, p: np.ndarray) -> np.ndarray:
        return np.interp(logit(p), self.quantiles_, np.linspace(0, 100, len(self.quantiles_)))

    def to_dict(self) -> dict:
        return {"x": self.x_.tolist(), "y": self.y_.tolist(), "quantiles": self.quantiles_.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreMap":
        return cls(d["x"], d["y"], d["quantiles"])


def _expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class ProbabilityModel(_Model):
    """A calibrated probability of a yes/no outcome (late delivery, churn)."""

    def __init__(self, kind: str, features: list[str], categorical: tuple[str, ...], params: dict | None = None):
        super().__init__(features, categorical, params)
        self.kind = kind
        self.rhythm_: dict | None = None  # churn: BG/NBD parameters and horizon (features.rhythm)
        #: churn: the column whose log-odds the booster starts from (``features.spec.BASES``),
        #: and its mean over the training rows (the base's reference in the reasons)
        self.base_: str | None = None
        self.base_mean_ = 0.0

    @property
    def explained(self) -> lgb.Booster:
        return self.booster_

    @property
    def boosters(self) -> list[lgb.Booster]:
        return [self.booster_]

    def _derived(self, rows):
        if not self.rhythm_ or RHYTHM_FEATURES[0] in rows:
            return rows
        extra = rhythm_features(rows, self.rhythm_["params"], self.rhythm_["horizon_days"])
        return rows.assign(**extra) if isinstance(rows, pd.DataFrame) else {**rows, **extra}

    def raw_score(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        """The booster's probability before calibration: for a model with a base, the
        sigmoid of the base's log-odds plus the booster's raw score."""
        if not self.base_:
            return self.predicted(self._matrix(rows) if X is None else X)[:, 0]
        rows = self._derived(rows)  # once: the matrix and the base both read the rhythm
        X = self._matrix(rows) if X is None else X
        return _expit(self.base_log_odds(rows) + self.predicted(X, raw=True)[:, 0])

    def base_log_odds(self, rows) -> np.ndarray | None:
        """Each row's starting log-odds, the logit of its ``base_`` column (churn: the
        customer's BG/NBD chance of no order within the horizon); None without a base."""
        if not self.base_:
            return None
        return logit(self._derived(rows)[self.base_])

    @property
    def explained_names(self) -> list[str]:
        """``explanation``'s columns: the features, then the base where there is one."""
        return self.features + ([self.base_] if self.base_ else [])

    def explanation(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        """Per-row log-odds contributions in ``explained_names`` order: the booster's TreeSHAP
        values and, for a model with a base, the base's log-odds against its training mean.
        With the booster's expected value and that mean they add up to the row's log-odds."""
        if not self.base_:
            return self.contributions(rows, self.explained, X)
        rows = self._derived(rows)  # once: the matrix and the base both read the rhythm
        return np.column_stack([self.contributions(rows, self.explained, X), self.base_log_odds(rows) - self.base_mean_])

    def predict_proba(self, rows, X: np.ndarray | None = None) -> np.ndarray:
        return self.calibration_.probability(self.raw_score(rows, X))

    def predict_with_percentile(self, rows, X: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated probability and its percentile among the calibration window's rows."""
        raw = self.raw_score(rows, X)
        return self.calibration_.probability(raw), self.calibration_.percentile(raw)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(folder / f"{self.kind}.txt"))
        meta = {**self._meta(), "calibration": self.calibration_.to_dict(), "rhythm": self.rhythm_,
                "base": {"column": self.base_, "mean": self.base_mean_} if self.base_ else None}
        (folder / f"{self.kind}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path, kind: str) -> "ProbabilityModel":
        meta = json.loads((folder / f"{kind}.json").read_text())
        m = cls(kind, meta["features"], tuple(meta["categorical"]), meta["params"])
        m._restore(meta)
        m.booster_ = lgb.Booster(model_file=str(folder / f"{kind}.txt"))
        m.calibration_ = ScoreMap.from_dict(meta["calibration"])
        m.rhythm_ = meta.get("rhythm")
        base = meta.get("base") or {}  # a version trained before the base: none
        m.base_, m.base_mean_ = base.get("column"), float(base.get("mean", 0.0))
        return m


def _interval_floor_log(interval: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The earliest a promise at ``c`` may be: the ETA's own ``c`` point as the interval
    (``_interval_log``: low end, median, upper end) gives it, the median at 50% and the
    upper end from 90% on, in between interpolated (log operating hours). The promise and
    the interval are calibrated apart (one-sided errors against the conformal ends), and a
    promise at 90% before the interval's 90% end, or at 50% before the median, says two
    things at once."""
    median, top = QUANTILES[1], QUANTILES[2]
    return interval[:, 1] + np.clip((c - median) / (top - median), 0.0, 1.0) * (interval[:, 2] - interval[:, 1])


def _ordered(hours: np.ndarray) -> np.ndarray:
    """(p10, p50, p90) hours with the ends never inside the median (a conformal shift can
    be negative where the boosters' interval was too wide)."""
    low, mid, high = hours.T
    return np.column_stack([np.minimum(low, mid), mid, np.maximum(high, mid)])


def _group_positions(names: list[str], groups) -> np.ndarray:
    """Each row's position in ``names`` (a per-group table's keys), '*' when its group has none."""
    lookup, star = _group_lookup(tuple(names))
    pos = lookup.codes(groups)
    return np.where(pos >= 0, pos, star)


@functools.lru_cache(maxsize=256)
def _group_lookup(names: tuple[str, ...]) -> tuple[Lookup, int]:
    # a model's few tables, asked on every request: each looked up once, not rebuilt per call
    return Lookup(names), names.index("*")


def calibration_groups(rows, carriers) -> np.ndarray:
    """Carrier and moment ("ups@order", "ups@transit"): the EDD model's intervals, level
    and promises are calibrated apart at order and in transit. One shift for both moments
    covered 83.5% at order and 76.2% in transit at two backtest cutoffs; apart, every
    cutoff is in 77-83% at both moments (README, "Backtests")."""
    at_order = (np.asarray(rows["hours_since_order"], dtype=float) == 0).tolist()
    return np.array([f"{c}@order" if o else f"{c}@transit"
                     for c, o in zip(np.asarray(carriers, dtype=object).tolist(), at_order)], dtype=object)


def per_group(table: dict, groups) -> np.ndarray:
    """Each row's group value; groups without their own use the overall one ('*')."""
    names = list(table)
    return np.array([table[k] for k in names], dtype=float)[_group_positions(names, groups)]
