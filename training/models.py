"""Fitting and calibrating the three models (the fitted models live in ``runtime.models``).

Estimators in the scikit-learn manner: they learn in ``fit``/``calibrate`` and keep
what they learned in attributes ending in ``_``; the runtime classes they extend only
read that state, so a fitted estimator saves and loads as the runtime model.

EDD: LightGBM quantile boosters, then conformalized (CQR) on a later window per
carrier, so the 10-90% interval holds 80% of outcomes per carrier. A promise at
confidence c adds to the 90% point the c-quantile of its one-sided errors on the
calibration window, so "promise at 95%" is on time for 95% of calibration parcels of
that carrier. Probabilities (delay, churn): a LightGBM binary booster whose scores are
mapped through isotonic regression fitted on the calibration window, made strictly
increasing (``score_map``) so calibration does not merge customers into one value.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from data.calendar import holiday_dates
from features import spec
from features.pit import US_PER_DAY, US_PER_HOUR, micros
from runtime.clock import ANY, OperatingClock, pair_names
from runtime.models import PROMISE_GRID, QUANTILES, CategoricalEncoder, EddModel, ProbabilityModel, ScoreMap, logit

INTERVAL_COVERAGE = 0.8
#: half-life (days) of the weights of calibration errors; None weighs them alike. Chosen
#: by backtest (default set, 6 cutoffs): coverage at order in 77-83% at 3, 3, 5 and 6 of 6
#: cutoffs with 30, 14, 7 and 4 days: the network drifts, the freshest errors tell most.
#: It is at least one median lead time of the window's parcels (``conformal_half_life``).
CONFORMAL_HALF_LIFE_DAYS: float | None = 4.0
LEVEL_SHIFT = True  # move the quantiles by the calibration window's median error (chosen by backtest)
MIN_GROUP_ROWS = 200  # smaller carriers use the overall conformal correction
#: a nowcast read from n parcels weighs n / (n + 20) against its prior (the network's: no
#: shift; a region's: the network's)
NOWCAST_PRIOR = 20.0
#: a region's nowcast reads the parcels ordered in this many days before the end: a storm
#: is days old, and older calm parcels into the region would drown it
NOWCAST_REGION_DAYS = 10
#: rounds of backfitting the nowcast's parts: a storm's parcels, once their region's part
#: is taken out, no longer lift the network's (in the storm test 0.046 -> 0.023 log-hours)
NOWCAST_ROUNDS = 3
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
#: The median booster is the one per-request reasons explain (TreeSHAP). Measured on the
#: default data set (benchmarks/explained_booster.py): 483 trees of 31 leaves, depth 8:
#: MAE 0.970 days, TreeSHAP 3.6 ms a row; 346 trees of 15 leaves, depth 6, rate 0.15:
#: MAE 0.990 (+2%), 1.1 ms. Reasons on every answer are worth the 2%. Tuned parameters win.
#: The interval's ends use the same: they start from the median's prediction (LightGBM's
#: init_score) and learn only their distance from it. On the 100,000-shipment benchmark
#: set they stopped at 211 and 57 trees of 15 leaves, against 416 and 291 of 31 trained
#: from nothing (the 10%/90% boosters were 707 of the 1,328 trees bulk prediction walks);
#: after conformal calibration the interval was 2% wider (2.88 against 2.83 days).
EXPLAINED_PARAMS = {"num_leaves": 15, "max_depth": 6, "learning_rate": 0.15}


#: Dask training has no early stopping: the rounds are chosen by an in-process fit on a
#: sample of at most this many rows, drawn evenly from every week of the training window
DASK_ROUNDS_SAMPLE = 200_000


def train_booster(params: dict, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame, y_val: np.ndarray,
                  callbacks: list | None = None, weight: np.ndarray | None = None, client=None,
                  weeks: np.ndarray | None = None, init: tuple[np.ndarray, np.ndarray] | None = None) -> lgb.Booster:
    """A booster stopped early on the validation rows; with a Dask ``client``, trained by
    ``lightgbm.dask`` across the workers for the rounds a sample chose (``weeks``, each
    training row's week, stratifies that sample). ``init``: the training and validation
    rows' starting scores (LightGBM's ``init_score``), for a model with a base."""
    if client is not None:
        keep = _week_sample(len(X), weeks)
        sample = (X.iloc[keep], y[keep], None if weight is None else weight[keep])
        rounds = train_booster(params, *sample[:2], X_val, y_val, callbacks, sample[2],
                               init=None if init is None else (init[0][keep], init[1])).best_iteration
        return _train_on_dask(client, {**params, "rounds": max(rounds, 1)}, X, y, weight,
                              None if init is None else init[0])
    train = lgb.Dataset(X, y, weight=weight, init_score=None if init is None else init[0], free_raw_data=False)
    valid = lgb.Dataset(X_val, y_val, init_score=None if init is None else init[1], reference=train)
    return lgb.train({**BASE_PARAMS, **params}, train, num_boost_round=params.get("rounds", ROUNDS),
                     valid_sets=[valid], callbacks=[lgb.early_stopping(EARLY_STOP, verbose=False), *(callbacks or [])])


def monotone_params(model: str, features: list[str]) -> dict:
    """LightGBM's monotone constraints for the features the spec gives a direction
    (``features.spec.Feature.direction``); none when it gives none."""
    constraints = spec.monotone(model, features)
    if not any(constraints):
        return {}
    return {"monotone_constraints": constraints, "monotone_constraints_method": "advanced"}


def _week_sample(n: int, weeks: np.ndarray | None) -> np.ndarray:
    """Positions of at most ``DASK_ROUNDS_SAMPLE`` of ``n`` rows, the same share of every week."""
    if n <= DASK_ROUNDS_SAMPLE:
        return np.arange(n)
    rng = np.random.default_rng(0)
    strata = weeks if weeks is not None else np.zeros(n, dtype=np.int64)
    share = DASK_ROUNDS_SAMPLE / n
    keep = np.concatenate([rng.choice(idx, max(1, int(round(len(idx) * share))), replace=False)
                           for idx in pd.Series(np.arange(n)).groupby(strata).indices.values()])
    keep.sort()
    return keep


def _train_on_dask(client, params: dict, X: pd.DataFrame, y: np.ndarray, weight: np.ndarray | None,
                   init: np.ndarray | None = None) -> lgb.Booster:
    """``lightgbm.dask`` on the rows spread over the workers (each worker builds its
    histograms, LightGBM's network adds them up); categorical levels are fixed by the
    encoder before, so every partition agrees on the codes."""
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMClassifier, DaskLGBMRegressor

    # threads are the workers' own (lightgbm.dask ignores num_threads)
    options = {k: v for k, v in {**BASE_PARAMS, **params}.items() if k not in ("rounds", "num_threads")}
    options["n_estimators"] = params["rounds"]
    workers = len(client.scheduler_info()["workers"])
    # Categories as their codes (what the runtime's matrix holds), named categorical: the
    # workers then hand LightGBM plain float columns that agree across partitions.
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    codes = {c: X[c].cat.codes.astype(np.float64).where(X[c].cat.codes >= 0) for c in categorical}
    frame = X.assign(**codes).astype(np.float64).assign(_y=y, _w=weight if weight is not None else 1.0,
                                                        _i=init if init is not None else 0.0)
    # Shuffled, so every worker holds every period (the rows arrive in time order), and
    # scattered as pieces spread over the workers (not one large task graph).
    frame = frame.iloc[np.random.default_rng(0).permutation(len(frame))].reset_index(drop=True)
    edges = np.linspace(0, len(frame), max(workers, 2) + 1).astype(int)
    pieces = client.scatter([frame.iloc[a:b] for a, b in zip(edges[:-1], edges[1:])])
    data = dd.from_delayed(pieces, meta=frame.iloc[:0], verify_meta=False)
    estimator = (DaskLGBMClassifier if options.get("objective") == "binary" else DaskLGBMRegressor)(client=client, **options)
    estimator.fit(data[list(X.columns)], data["_y"], sample_weight=data["_w"], categorical_feature=categorical,
                  init_score=data["_i"] if init is not None else None)
    booster = estimator.booster_
    # the levels a pandas-trained booster would carry, so frames of categoricals (SHAP
    # plots, signatures) map to the same codes; saved with the model
    booster.pandas_categorical = [list(X[c].cat.categories) for c in categorical]
    return booster


#: A weekday is one of a carrier's operating days when it delivers on it at least this
#: share of its busiest weekday's daily deliveries (a public holiday likewise, against
#: the same weekdays). On the default set the carriers deliver 0.46-1 of that on the
#: days they work (Monday is low: nothing was picked up on Sunday) and 0-0.16 on the
#: days they do not (USPS's few Sunday parcels).
OPERATING_SHARE = 0.3
#: a (carrier, service level) with fewer training deliveries runs on the pooled clock
MIN_CLOCK_DELIVERIES = 200


def fit_clock(rows: pd.DataFrame, hours: np.ndarray, country: str) -> OperatingClock:
    """Each (carrier, service level)'s operating days, from the days its training
    deliveries landed on (one per shipment: its row at order), and the pooled clock."""
    first = (rows.hours_since_order.to_numpy() == 0) & ~np.isnan(hours)
    delivered = micros(rows.as_of)[first] + (np.asarray(hours)[first] * US_PER_HOUR).astype(np.int64)
    day = delivered // US_PER_DAY
    names = pair_names(rows.carrier.to_numpy()[first], rows.service_level.to_numpy()[first])
    years = (int(str(np.datetime64(int(day.min()), "D"))[:4]), int(str(np.datetime64(int(day.max()), "D"))[:4]))
    holidays = holiday_dates(country, *years).astype(np.int64)
    span = np.arange(day.min(), day.max() + 1)
    off = np.isin(span, holidays)
    days_per_weekday = np.bincount((span[~off] + 3) % 7, minlength=7)
    holiday_weekday = (span[off] + 3) % 7

    def operating(mask: np.ndarray) -> tuple[list[float], float]:
        d = day[mask]
        on_holiday = np.isin(d, holidays)
        rate = np.bincount((d[~on_holiday] + 3) % 7, minlength=7) / np.maximum(days_per_weekday, 1)
        week = (rate >= OPERATING_SHARE * rate.max()).astype(float)
        # holidays that fell on a working weekday: do parcels still arrive on them?
        working = week[holiday_weekday] > 0
        landed = np.isin(d[on_holiday], span[off][working]).sum()
        on_holidays = landed / working.sum() >= OPERATING_SHARE * rate.max() if working.any() else False
        return week.tolist(), float(on_holidays)

    counts = pd.Series(names).value_counts()
    fitted = {name: operating(names == name) for name in counts.index[counts >= MIN_CLOCK_DELIVERIES]}
    fitted[ANY] = operating(np.ones(len(day), dtype=bool))
    return OperatingClock({k: w for k, (w, _) in fitted.items()}, {k: h for k, (_, h) in fitted.items()},
                          country, years)


def edd_target(clock: OperatingClock, rows: pd.DataFrame, hours: np.ndarray) -> np.ndarray:
    """What the EDD boosters learn: log(1 + operating hours) from each row's moment to delivery."""
    hours = np.maximum(np.asarray(hours, dtype=float), 0)
    return np.log1p(clock.operating_hours(clock.codes(rows["carrier"], rows["service_level"]), rows["as_of"], hours))


class EddEstimator(EddModel):
    """Learns the operating clock, the EDD quantile boosters and their conformal corrections."""

    def fit(self, rows: pd.DataFrame, hours: np.ndarray, val_rows: pd.DataFrame, val_hours: np.ndarray,
            callbacks: list | None = None, weight: np.ndarray | None = None, client=None,
            country: str = "US") -> "EddEstimator":
        self.encoder_ = CategoricalEncoder(self.categorical).fit(rows)
        self.clock_ = fit_clock(rows, hours, country)
        X, Xv = self._X(rows), self._X(val_rows)
        y, yv = self.target(rows, hours), self.target(val_rows, val_hours)
        weeks = _weeks(rows)
        median = train_booster({**EXPLAINED_PARAMS, **self.params, "objective": "quantile", "alpha": 0.5},
                               X, y, Xv, yv, callbacks, weight, client, weeks)
        # The interval's ends learn how far each end lies from the median, starting from it.
        init = (median.predict(X), median.predict(Xv))
        low, high = (train_booster({**EXPLAINED_PARAMS, **self.params, "objective": "quantile", "alpha": q},
                                   X, y, Xv, yv, callbacks, weight, client, weeks, init=init)
                     for q in (QUANTILES[0], QUANTILES[2]))
        self.boosters_ = [low, median, high]
        self.ends_from_median_ = True
        return self

    def target(self, rows: pd.DataFrame, hours: np.ndarray) -> np.ndarray:
        return edd_target(self.clock_, rows, hours)

    def calibrate(self, rows: pd.DataFrame, hours: np.ndarray, groups: pd.Series) -> "EddEstimator":
        """Level, interval and promise per calibration group: ``groups`` (carriers) and the
        row's moment (``runtime.models.calibration_groups``)."""
        self.by_moment_ = True
        groups = pd.Series(self.calibration_groups(rows, groups))
        q = self.raw_log_quantiles(rows)
        y = self.target(rows, hours)
        error = y - q[:, 1]
        self.level_shift_ = _per_group(groups, lambda m: float(np.median(error[m]))) if LEVEL_SHIFT else {}
        q = self.level_shifted(q, groups)
        interval_scores = np.maximum(q[:, 0] - y, y - q[:, 2])
        promise_scores = y - q[:, 2]
        # recent errors count more: intervals follow a drifting network (issue 12)
        self.conformal_half_life_ = conformal_half_life(rows, hours)
        w = recency_weights(rows.as_of, self.conformal_half_life_) if "as_of" in rows else None
        of = (lambda m: None) if w is None else (lambda m: w[m])
        self.interval_shift_ = _per_group(
            groups, lambda m: _conformal_quantile(interval_scores[m], INTERVAL_COVERAGE, of(m)))
        self.promise_scores_ = _per_group(groups, lambda m: _quantile_grid(promise_scores[m], of(m)))
        return self

    def nowcast(self, rows: pd.DataFrame, hours: np.ndarray, end: pd.Timestamp) -> "EddEstimator":
        """How far behind the model the latest parcels ran at ``end``: over the whole network
        and per destination region (``runtime.models.EddModel.nowcast_parts`` applies both
        to later moments).

        ``rows`` are at-order rows of recently ordered shipments, ``hours`` their hours to
        delivery where known at ``end`` (NaN: still on the way). Among the parcels whose
        predicted median moment has passed by ``end`` (so whether they beat it is known),
        the median error in log operating hours, a parcel still on its way counting at its
        age: a lower bound, so the shift is at least what the parcels show. The network's
        reads every such parcel (a drift that lasts, as Olist's months after Black Friday),
        shrunk toward no shift; a region's reads those of the last ``NOWCAST_REGION_DAYS``,
        shrunk toward the network's, and the network's reads its parcels with their
        region's part taken out (``NOWCAST_ROUNDS`` of backfitting). A storm shows here
        days before its slow deliveries reach any trailing window; the boosters see too
        few storms to learn it from features (README, "Backtests")."""
        self.nowcast_, self.nowcast_behind_, self.nowcast_end_ = {}, {}, int(micros(pd.Series([end]))[0])
        self.nowcast_network_ = 0.0
        if not len(rows):
            return self
        age = (self.nowcast_end_ - micros(rows.as_of)) / US_PER_HOUR
        hours = np.asarray(hours, dtype=float)
        seen = np.where(np.isnan(hours) | (hours > age), age, hours)  # on its way at the end: its age so far
        q50 = self.shifted_quantiles(rows, rows.carrier)[0][:, 1]  # without a nowcast: emptied above
        due = (self.hours_from_log(rows, q50) < age) & (age > 0)
        error = self.target(rows, seen) - q50
        recent = due & (age <= NOWCAST_REGION_DAYS * 24)
        regions = rows.destination_region.to_numpy(dtype=object)
        network, beyond = 0.0, np.zeros(len(error))
        for _ in range(NOWCAST_ROUNDS):  # backfitting the sum of the two parts
            network = _shrunk(error[due] - beyond[due], 0.0)
            shift, behind, beyond = _region_shifts(error, regions, recent, network)
        behind = {"*": float(np.mean(error[due] > 0)) if due.any() else np.nan, **behind}
        self.nowcast_, self.nowcast_behind_, self.nowcast_network_ = shift, behind, network
        return self


def _region_shifts(error: np.ndarray, regions: np.ndarray, recent: np.ndarray,
                   network: float) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """Each region's shift from its ``recent`` parcels' errors, shrunk toward the
    ``network``'s ('*'); the share of those parcels behind the model; and per parcel its
    region's part beyond the network's (0 for a parcel not ``recent``)."""
    shift, behind, beyond = {"*": network}, {}, np.zeros(len(error))
    for region, at in pd.Series(np.flatnonzero(recent)).groupby(regions[recent]):
        pick = at.to_numpy()
        shift[str(region)] = _shrunk(error[pick], network)
        behind[str(region)] = float(np.mean(error[pick] > 0))
        beyond[pick] = shift[str(region)] - network
    return shift, behind, beyond


def _shrunk(errors: np.ndarray, prior: float) -> float:
    """The median of ``errors``, weighed n / (n + ``NOWCAST_PRIOR``) against ``prior``."""
    n = len(errors)
    return float((n * np.median(errors) + NOWCAST_PRIOR * prior) / (n + NOWCAST_PRIOR)) if n else prior


class ProbabilityEstimator(ProbabilityModel):
    """Learns a binary booster (from the base's log-odds, for a model with one; monotone
    in the features the spec gives a direction) and the isotonic map that calibrates its scores."""

    def fit(self, rows: pd.DataFrame, y: np.ndarray, val_rows: pd.DataFrame, val_y: np.ndarray,
            callbacks: list | None = None, weight: np.ndarray | None = None, client=None) -> "ProbabilityEstimator":
        self.encoder_ = CategoricalEncoder(self.categorical).fit(rows)
        shape, init = self.booster_setup(rows, val_rows)
        if init is not None:
            self.base_mean_ = float(np.mean(init[0]))
        self.booster_ = train_booster({**shape, **self.params, "objective": "binary"}, self._X(rows), y,
                                      self._X(val_rows), val_y, callbacks, weight, client, _weeks(rows), init)
        return self

    def booster_setup(self, rows: pd.DataFrame, val_rows: pd.DataFrame) -> tuple[dict, tuple | None]:
        """What a fit of this model's booster takes besides its rows and parameters (tuning's
        trials take the same): the spec's monotone constraints and, for a model with a base,
        the training and validation rows' starting log-odds (the booster learns what the
        base, churn's customer rhythm, leaves)."""
        init = (self.base_log_odds(rows), self.base_log_odds(val_rows)) if self.base_ else None
        return monotone_params(self.kind, self.features), init

    def calibrate(self, rows: pd.DataFrame, y: np.ndarray) -> "ProbabilityEstimator":
        self.calibration_ = score_map(self.raw_score(rows), y)
        return self


def _weeks(rows: pd.DataFrame) -> np.ndarray | None:
    return micros(rows.as_of) // (7 * US_PER_DAY) if "as_of" in rows else None


def score_map(raw: np.ndarray, y: np.ndarray) -> ScoreMap:
    """Isotonic regression of outcomes on scores, as a strictly increasing ``ScoreMap``:
    one knot per isotonic block (its rows' median log-odds score, its observed rate)."""
    z = logit(raw)
    level = IsotonicRegression(y_min=0.0, y_max=1.0).fit(z, y).predict(z)
    values, block = np.unique(level, return_inverse=True)
    x = np.array([np.median(z[block == k]) for k in range(len(values))])
    return ScoreMap(x, values, np.quantile(z, np.linspace(0, 1, 201)))


def conformal_half_life(rows: pd.DataFrame, hours: np.ndarray) -> float | None:
    """``CONFORMAL_HALF_LIFE_DAYS``, or the median lead time (days) of the window's at-order
    rows where that is longer: parcels a lead time apart were on the road together, so
    their errors speak to the same conditions. The default set's parcels take 3.75 days
    (4 days stand); Olist's about 10 (coverage at order in range at 3 of 6 cutoffs
    against 2 with 4 days, in transit 4 against 3; README, "Backtests")."""
    if not CONFORMAL_HALF_LIFE_DAYS:
        return None
    lead = np.asarray(hours, dtype=float)
    if "hours_since_order" in rows:
        lead = lead[np.asarray(rows.hours_since_order, dtype=float) == 0]
    lead = lead[~np.isnan(lead)]
    return max(CONFORMAL_HALF_LIFE_DAYS, float(np.median(lead)) / 24.0) if len(lead) else CONFORMAL_HALF_LIFE_DAYS


def recency_weights(moments: pd.Series, half_life_days: float | None) -> np.ndarray | None:
    """0.5 ** (age / half-life), age counted back from the newest moment; None: all alike."""
    if not half_life_days:
        return None
    t = micros(moments).astype(float)
    return 0.5 ** ((t.max() - t) / US_PER_DAY / half_life_days)


def _weighted_quantile(scores: np.ndarray, weights: np.ndarray | None, levels) -> np.ndarray:
    """The smallest score whose share of the weight at or below it reaches each level (the
    k-th smallest, k = ceil(level * n), when rows weigh alike or ``weights`` is None)."""
    weights = np.ones(len(scores)) if weights is None else weights
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(weights[order]) / weights.sum()
    return scores[order][np.minimum(np.searchsorted(cum, np.asarray(levels) - 1e-12), len(scores) - 1)]


def _per_group(groups: pd.Series, stat) -> dict:
    """``stat(mask)`` over every row ('*') and per group with enough rows (smaller groups
    use the overall value when predicting)."""
    g = groups.astype("str").to_numpy()
    out = {"*": stat(np.ones(len(g), dtype=bool))}
    for name in pd.unique(g):
        mask = g == name
        if mask.sum() >= MIN_GROUP_ROWS:
            out[name] = stat(mask)
    return out


def _conformal_quantile(scores: np.ndarray, coverage: float, weights: np.ndarray | None = None) -> float:
    """The finite-sample conformal quantile, ceil((n + 1) * coverage) / n, with n the
    effective number of rows when recent ones weigh more (Kish: sum(w)^2 / sum(w^2))."""
    n = len(scores) if weights is None else weights.sum() ** 2 / (weights ** 2).sum()
    level = min(np.ceil((n + 1) * coverage) / n, 1.0)
    return float(_weighted_quantile(scores, weights, level))


def _quantile_grid(scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    return _weighted_quantile(scores, weights, PROMISE_GRID)
