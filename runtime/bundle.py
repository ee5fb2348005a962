"""A trained model version on disk, and the predictions it makes.

A bundle folder holds the feature snapshot, the EDD, delay and churn models (those
that could be trained), and ``meta.json`` (version, training time, data end, split,
headline metrics, models skipped and why). ``eddy predict``, ``eddy score-customers``
and the service all predict through :class:`ModelBundle`, so a shipment gets the same
answer from each.
"""

from __future__ import annotations

import bisect
import gc
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import FeatureSnapshot, usual_hours
from features.customer import customer_features
from features.pit import NAT, US_PER_DAY, US_PER_HOUR, Columns, as_columns, frame_of, groups, micros, take, timestamps_of
from features.rows import shipment_rows
from features.shipment import shipment_features
from runtime.models import EddModel, ProbabilityModel
from runtime.reasons import REASON_CONTEXT, actionable_share, lost_reason, plain_reasons

DEFAULT_CONFIDENCE = 0.95
REASONS = 3
CANDIDATES = 15  # contributions looked at per row (all are computed anyway); reasons that read alike merge
#: the reasons the nowcast's parts give, region and network (``features.spec.ADJUSTMENTS``)
NOWCASTS = ("region_nowcast", "network_nowcast")
CHURN_OUTPUT = ("order_id", "as_of", "carrier", "service_level", "origin_region", "destination_region", "days_late",
                "exceptions", "failed_attempts", "returned", "parcels_missing", "rating", "contacts", "orders_so_far")
TIMESTAMPS = ("as_of", "eta_p10", "eta_p50", "eta_p90", "promise_at")
#: from this many rows an answer is made with the cyclic garbage collector paused
BULK_ROWS = 10_000
#: A parcel is likely lost when nothing has been heard of it (no scan, no pickup, no
#: order) for ``LOST_FACTOR`` times the lead time within which ``LOST_SHARE`` of its
#: carrier and service level's deliveries of the last ``LOST_WINDOW_DAYS`` days arrived
#: (the whole network's where the carrier delivered fewer than ``LOST_MIN_DELIVERIES``).
#: Such a parcel gets no ETA. Measured point in time on both data sets (README, "Likely
#: lost"): of 10,786 such calls on the default set none was delivered later, of 30,084 on
#: Olist 4 (about one parcel).
LOST_SHARE, LOST_FACTOR, LOST_WINDOW_DAYS, LOST_MIN_DELIVERIES = 0.999, 1.5, 365, 1000
#: the shipment's own categorical fields: a value the model never saw in training (a
#: typo, "UPS" for "ups") is predicted from the fallback levels, and the answer says so
GIVEN = ("carrier", "service_level", "origin_region", "destination_region")


@dataclass
class ModelBundle:
    snapshot: FeatureSnapshot
    edd: EddModel | None
    delay: ProbabilityModel | None
    churn: ProbabilityModel | None
    meta: dict = field(default_factory=dict)

    # -- persistence
    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        self.snapshot.save(folder / "snapshot")
        for name in ("edd", "delay", "churn"):
            model = getattr(self, name)
            if model is not None:
                model.save(folder / name)
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: Path, online: bool = True) -> "ModelBundle":
        """The bundle in ``folder``. ``online`` (the service) builds what single requests
        read now, before the first one: the online tables and each model's packed forest
        and TreeSHAP tables. A batch command passes False: its rows take the point-in-time
        path (the same functions, the same values), and a forest or TreeSHAP table is made
        when first used: a run without reasons never builds the TreeSHAP tables. The
        demo champion loaded in 0.24-0.27 s this way against 0.84-1.83 s, of which the
        forests (about 0.3 s) are paid at the first prediction instead."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        edd = EddModel.load(folder / "edd") if (folder / "edd" / "edd.json").exists() else None
        delay = ProbabilityModel.load(folder / "delay", "delay") if (folder / "delay" / "delay.json").exists() else None
        churn = ProbabilityModel.load(folder / "churn", "churn") if (folder / "churn" / "churn.json").exists() else None
        bundle = cls(FeatureSnapshot.load(folder / "snapshot"), edd, delay, churn, meta)
        if not online:
            return bundle
        # Online tables: a later request's statistics and a customer's rows are lookups.
        bundle.snapshot.history.materialize()
        bundle.snapshot.customers.index()
        # Packed forests and TreeSHAP tables: the first answer pays for neither
        for model in (bundle.edd, bundle.delay, bundle.churn):
            if model is not None:
                model.ready(explain=model is not bundle.delay)  # no answer explains the delay
        return bundle

    # -- shipments
    def shipment_rows(self, shipments, scans, moments) -> Columns:
        return shipment_rows(shipments, scans, moments, self.snapshot)

    def predict_columns(self, rows, confidence=DEFAULT_CONFIDENCE, explain=True) -> Columns:
        """ETA quantiles (microseconds), promise at ``confidence`` (one value or one per row),
        late probability and, where ``explain`` (one value or one per row), reasons."""
        with _collector_paused(len(rows["as_of"]) >= BULK_ROWS):
            return self._predict_columns(rows, confidence, explain)

    def _predict_columns(self, rows, confidence, explain) -> Columns:
        if self.edd is None:
            raise RuntimeError("no EDD model in this version: " + self.meta.get("skipped", {}).get("edd", "not trained"))
        at = micros(rows["as_of"])
        if not len(at):  # nothing selected: an empty answer with every column, not an error
            return {"shipment_id": np.array([], dtype=object), "as_of": at,
                    **{k: np.array([], dtype=np.int64) for k in ("eta_p10", "eta_p50", "eta_p90", "promise_at")},
                    "late_probability": np.array([]), "likely_lost": np.array([], dtype=bool),
                    "confidence": np.array([], dtype=object),
                    "unseen": np.array([], dtype=object), "reasons": np.array([], dtype=object)}
        groups = rows["carrier"]
        X = self.edd._matrix(rows)  # once: reused by every EDD booster, the delay booster's columns and the reasons
        raw = self.edd.raw_log_quantiles(rows, X)
        parts = self.edd.nowcast_parts(rows)  # once, for the quantiles, the late probability and the reasons
        nowcast = parts.sum(axis=1)
        shifted = self.edd.shifted_quantiles(rows, groups, raw, nowcast)  # once, for the ETA, the promise and the reasons
        codes = self.edd.clock_codes(rows)  # once, for the same three
        hours, promise_h = self.edd.eta_and_promise_hours(rows, groups, confidence, shifted, codes)
        out = {"shipment_id": np.asarray(rows["shipment_id"], dtype=object), "as_of": at}
        for k, name in enumerate(("eta_p10", "eta_p50", "eta_p90")):
            out[name] = at + (hours[:, k] * US_PER_HOUR).astype(np.int64)
        out["promise_at"] = end_of_day(at + (promise_h * US_PER_HOUR).astype(np.int64))
        has_promise = ~np.isnan(np.asarray(rows["promise_hours"], dtype=float))
        late = np.where(has_promise, self.late_probability(rows, X, shifted[0], nowcast, codes), np.nan)
        lost, silent_h, usual_h, own = self.likely_lost(rows)
        out["late_probability"] = np.where(has_promise & lost, 1.0, late)  # a lost parcel misses its promise
        for name in ("eta_p10", "eta_p50", "eta_p90", "promise_at"):
            out[name] = np.where(lost, NAT, out[name])  # no date: a made-up one would be sent to the customer
        out["likely_lost"] = lost
        out["confidence"] = confidence_label(rows)
        out["unseen"] = self.unseen_fields(rows, X)
        explain = np.broadcast_to(np.asarray(explain, dtype=bool), len(at))
        reasons = [[] for _ in range(len(at))]
        pick = np.flatnonzero(explain & ~lost)  # a lost parcel's ETA is not given: nothing of it to explain
        if len(pick):
            context = {c: np.asarray(rows[c])[pick].tolist() for c in REASON_CONTEXT if c in rows}
            chosen = rows if len(pick) == len(at) else _take(rows, pick)  # all of them: no copy
            ranked = self._candidates(chosen, shifted[0][pick, 1], X[pick], CANDIDATES, parts[pick],
                                      None if codes is None else codes[pick])
            for k, (i, r) in enumerate(zip(pick, ranked)):
                reasons[i] = plain_reasons(r, {c: v[k] for c, v in context.items()}, REASONS)
        gone = np.flatnonzero(explain & lost)
        if len(gone):  # their one reason is why there is no ETA
            carriers, levels = np.asarray(rows["carrier"], dtype=object), np.asarray(rows["service_level"], dtype=object)
            handed = (np.asarray(rows["picked_up"]) > 0) | (np.asarray(rows["scans_so_far"]) > 0)
            for i in gone:
                reasons[i] = [lost_reason(silent_h[i], usual_h[i], (carriers[i], levels[i]) if own[i] else None,
                                          LOST_SHARE, bool(handed[i]))]
        out["reasons"] = reasons
        return out

    def likely_lost(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row: whether the parcel is likely lost (``LOST_FACTOR``), the hours since the
        latest news of it (its latest scan, pickup or order), the lead time ``LOST_SHARE``
        of its carrier's deliveries kept within, as known at the row's moment, and whether
        that is the carrier's own figure (else the network's)."""
        usual, own = self.snapshot.history.lead_time_quantile(rows, micros(rows["as_of"]), LOST_SHARE, LOST_WINDOW_DAYS,
                                                         LOST_MIN_DELIVERIES)
        silent = np.asarray(rows["hours_since_order"], dtype=float)
        for news in ("hours_since_pickup", "last_event_age_h"):
            silent = np.fmin(silent, np.asarray(rows[news], dtype=float))  # NaN: no such news
        with np.errstate(invalid="ignore"):
            return silent > LOST_FACTOR * usual, silent, usual, own

    def unseen_fields(self, rows, X: np.ndarray) -> np.ndarray:
        """Per row, the ``GIVEN`` fields (comma-separated, "" for none) whose value is there
        but was not among the EDD model's training levels: its code in ``X`` is missing."""
        given, spelled = self._given()
        bits = np.zeros(len(X), dtype=np.int64)
        for k, (j, c) in enumerate(given):
            missing = np.flatnonzero(np.isnan(X[:, j]))  # few, in bulk: only they are looked at again
            if len(missing) and c in rows:
                bits[missing] |= (~pd.isna(np.asarray(rows[c], dtype=object)[missing])).astype(np.int64) << k
        return spelled[bits]

    def _given(self) -> tuple[list[tuple[int, str]], np.ndarray]:
        """The EDD matrix's ``GIVEN`` columns (position, name), and every combination of
        them spelled out, indexed by its bits: worked out once per model."""
        if getattr(self, "_given_for", None) is not self.edd:
            given = [(j, c) for j, c, categorical in self.edd._columns() if categorical and c in GIVEN]
            names = [c for _, c in given]
            spelled = [",".join(c for k, c in enumerate(names) if b >> k & 1) for b in range(2 ** len(names))]
            self._given_cache = (given, np.array(spelled, dtype=object))
            self._given_for = self.edd
        return self._given_cache

    def late_probability(self, rows, X: np.ndarray | None = None, shifted: np.ndarray | None = None,
                         nowcast: np.ndarray | None = None, codes: np.ndarray | None = None) -> np.ndarray:
        """The delay model's probability of missing the promise, moved by the mass of the
        ETA distribution the nowcast (region and network) pushed past it (``EddModel.late_shift``);
        ``X``, ``shifted`` and ``nowcast`` (the EDD model's matrix, ``shifted_quantiles``
        and ``nowcast_shift``) and ``codes`` (its ``clock_codes``) when the caller has them.
        NaN without a delay model. A row past its promise (an open parcel's moment after
        it) is late already: 1, whatever the model says."""
        if self.delay is None:
            return np.full(len(np.asarray(rows["as_of"])), np.nan)
        late = self.delay.predict_proba(rows, None if X is None else self._delay_matrix(rows, X))
        if self.edd is not None:
            if shifted is None:
                shifted = self.edd.shifted_quantiles(rows, rows["carrier"])[0]
            if nowcast is None:
                nowcast = self.edd.nowcast_shift(rows)
            late = np.clip(late + self.edd.late_shift(rows, shifted, nowcast, codes), 0.0, 1.0)
        with np.errstate(invalid="ignore"):
            return np.where(np.asarray(rows["hours_to_promise"], dtype=float) < 0, 1.0, late)

    def _delay_matrix(self, rows, edd_X: np.ndarray) -> np.ndarray | None:
        # Same features, order and categorical levels (both train on the shipment rows): reuse.
        same = (self.delay.features == self.edd.features and self.delay.encoder_.levels_ == self.edd.encoder_.levels_)
        return edd_X if same else None

    def predict_rows(self, rows, confidence: float = DEFAULT_CONFIDENCE, explain: bool = True) -> pd.DataFrame:
        """``predict_columns`` as a table with UTC timestamps (the batch commands' edge)."""
        out = self.predict_columns(rows, confidence, explain)
        if not explain:
            out.pop("reasons")
        return pd.DataFrame({k: timestamps_of(v).array if k in TIMESTAMPS else v for k, v in out.items()})

    def reasons(self, rows, log_p50: np.ndarray, X: np.ndarray | None = None, top: int = REASONS,
                nowcast: np.ndarray | None = None, codes: np.ndarray | None = None) -> list[list[dict]]:
        """Top features by |effect| on the median ETA, in hours (TreeSHAP: ``_Model.contributions``),
        and the nowcast's parts where they moved it; ``log_p50`` is the median as the
        boosters speak it (log operating hours, level-shifted), ``nowcast`` the rows'
        ``EddModel.nowcast_parts`` and ``codes`` their ``clock_codes``, when the caller has them."""
        return [[{"feature": f, "value": v, "effect_hours": e} for f, v, e in row]
                for row in self._candidates(rows, log_p50, X, top, nowcast, codes)]

    def _candidates(self, rows, log_p50, X, top, nowcast, codes) -> list[list[tuple]]:
        """``reasons`` as (feature, value, effect in hours) triples: a bulk answer with
        reasons makes 15 per row, and a dict each cost more than the sentences."""
        values = self.edd.contributions(rows, self.edd.explained, X)
        order, raw = _ranked(values, rows, self.edd.features, top)
        log_p50 = np.asarray(log_p50, dtype=float)
        # The nowcast moves the median outside the boosters.
        parts = self.edd.nowcast_parts(rows) if nowcast is None else nowcast
        # A contribution is in log(1 + operating hours): its effect is the median with and
        # without it; the median, without each contribution and without each part of the
        # nowcast, in one pass through the clock.
        hours = self.edd.hours_from_log(rows, np.column_stack(
            [log_p50, log_p50[:, None] - np.take_along_axis(values, order, axis=1), log_p50[:, None] - parts]), codes)
        effect = np.round(hours[:, :1] - hours[:, 1:], 2).tolist()
        names = self.edd.features
        out = [[(names[j], raw[j][i], e[k]) for k, j in enumerate(js)]
               for i, (js, e) in enumerate(zip(order.tolist(), effect))]
        moved = np.flatnonzero((parts != 0).any(axis=1))
        if len(moved):  # a reason each, its value the share of the parcels it read that ran behind
            behind = self.edd.nowcast_behind(rows)
            for i in moved:
                for p, name in enumerate(NOWCASTS):
                    if parts[i, p] != 0:
                        out[i].append((name, _plain(round(float(behind[i, p]), 3)), effect[i][order.shape[1] + p]))
                out[i].sort(key=lambda r: -abs(r[2]))
        return out

    # -- customers
    def churn_rows(self, shipments, scans, moments, history=None) -> Columns:
        """Churn model rows per (order_id, as_of): the delivery and the customer's history.

        Tables are columns (DataFrames at the edge). Without ``history``, each order is
        scored on its own: its customer's rows are looked up in the snapshot (a copy per
        order when a customer has several, so none sees another) and the order added."""
        shipments = as_columns(shipments)
        scans = as_columns(scans) if scans is not None else None
        if history is None:
            code, first = groups(shipments["order_id"])
            customers, names = self.snapshot.customers.copies_for(shipments["customer_id"][first])
            shipments = {**shipments, "customer_id": names[code]}
            history = customers.with_orders(shipments, scans)
        snap = self.snapshot
        at_order = shipment_features(shipments, snap.history, snap.locations, snap.country)
        return customer_features(shipments, scans, history, moments, usual_hours(at_order))

    def score_orders(self, shipments, scans, moments, history=None, explain: bool = True) -> pd.DataFrame:
        """Churn risk per (order_id, as_of), the delivery it follows, and its reasons."""
        return self.score_churn_rows(self.churn_rows(shipments, scans, moments, history), explain)

    def require_churn(self) -> None:
        """Raises, with the training's reason, when this version has no churn model."""
        if self.churn is None:
            raise RuntimeError("no churn model in this version: " + self.meta.get("skipped", {}).get("churn", "not trained"))

    def score_churn(self, rows, explain: bool = True) -> Columns:
        """Churn risk and its percentile, the delivery facts a CX agent reads, and
        (``explain``) the reasons and the share of the risk the actionable ones explain."""
        self.require_churn()
        rows = self.churn._derived(rows)  # the rhythm columns, so reasons show their values
        n = len(np.asarray(rows["customer_id"]))
        X = self.churn._matrix(rows) if n else None  # once: the risk and the reasons read it
        risk, percentile = self.churn.predict_with_percentile(rows, X) if n else (np.array([]), np.array([]))
        out = {"customer_id": np.asarray(rows["customer_id"], dtype=object), "churn_risk": risk,
               "risk_percentile": percentile, **{c: np.asarray(rows[c]) for c in CHURN_OUTPUT}}
        out["new_customer"] = np.asarray(rows["orders_so_far"]) <= 1
        if explain and n:
            contrib, names = self.churn.explanation(rows, X), self.churn.explained_names
            out["reasons"] = _objects(_top_contributions(contrib, rows, names))
            out["actionable_share"] = actionable_share(contrib, names)
        elif explain:
            out["reasons"] = np.array([], dtype=object)
            out["actionable_share"] = np.array([])
        return out

    def score_churn_rows(self, rows, explain: bool = True) -> pd.DataFrame:
        """``score_churn`` as a table with UTC timestamps (the batch commands' edge)."""
        out = self.score_churn(rows, explain)
        out["as_of"] = micros(out["as_of"])
        return frame_of(out, timestamps=("as_of",))


@contextmanager
def _collector_paused(pause: bool):
    """The cyclic garbage collector off inside, when ``pause``. A bulk answer makes a list
    per row (its reasons), and each 100,000 new objects set off a full collection over
    everything the process holds: 112 ms with a 100,000-shipment data set and its rows
    loaded. Reference counting still frees all of it; only cycles wait. Whoever found
    the collector on turns it back on, so threads overlapping here never leave it off."""
    was_on = pause and gc.isenabled()
    if was_on:
        gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def _ranked(values: np.ndarray, rows, names: list[str], top: int):
    """Each row's top features by |contribution|, and the chosen features' values as
    reasons show them (``_shown``)."""
    order = np.argsort(-np.abs(values), axis=1)[:, :top]
    js = np.unique(order).tolist()
    shown = _shown(rows, [names[j] for j in js])
    return order, {j: shown.get(names[j], [None] * len(values)) for j in js}


#: up to this many rows (a request's), values are made plain one by one in Python: a few
#: numpy calls cost more than the values themselves
FEW_ROWS = 64


def _shown(rows, names: list[str]) -> dict[str, list]:
    """The named columns' values as reasons show them (``_plain_column``), the feature
    code's float32 numbers at float32's digits (``_digits``: 211.2097, not the
    211.20974731445312 of their float64 copy), all of them in one call, which a single
    request's row pays once."""
    arrays = {c: np.asarray(rows[c]) for c in names if c in rows}
    single = [c for c, a in arrays.items() if a.dtype == np.float32]
    if single and len(arrays[single[0]]) > FEW_ROWS:
        arrays.update(zip(single, _digits(np.stack([arrays[c] for c in single]))))
    elif single:  # a request's few rows: the same arithmetic on Python floats (tested equal), 2-3 us a column
        return {c: ([shown_number(v) for v in a.tolist()] if c in single else _plain_column(a))
                for c, a in arrays.items()}
    return {c: _plain_column(a) for c, a in arrays.items()}


def _objects(items: list) -> np.ndarray:
    """A list of lists as a one-dimensional object array (numpy would make it 2-D)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _take(rows, pick: np.ndarray):
    return take(rows, pick) if isinstance(rows, dict) else rows.iloc[pick]


def _top_contributions(values: np.ndarray, rows: pd.DataFrame, names: list[str], top: int = REASONS) -> list[list[dict]]:
    order, raw = _ranked(values, rows, names, top)
    return [[{"feature": names[j], "value": raw[j][i], "effect_log_odds": round(float(values[i, j]), 3)}
             for j in order[i]] for i in range(len(values))]


def _plain(v):
    if v is None or isinstance(v, str):
        return v
    try:
        v = float(v)
    except (TypeError, ValueError):  # pandas' NA and the like: not known
        return None
    return None if math.isnan(v) else v


def _plain_column(column) -> list:
    """``_plain`` of every value, numbers at C speed: a float, or None where not known."""
    a = np.asarray(column)
    if a.dtype.kind in "fiub" and len(a) > FEW_ROWS:
        a = a.astype(np.float64)
        out = a.astype(object)
        out[np.isnan(a)] = None
        return out.tolist()
    return [_plain(v) for v in a.tolist()]


#: exact powers of ten, for ``_digits``
_POW10 = np.array([10.0 ** k for k in range(23)])
#: the decades ``_digits`` rounds in, 1e-22 to 1e22 (a value's decade by search, not by
#: log10, whose last bit may differ between implementations)
_DECADES = np.array([10.0 ** e for e in range(-22, 23)])
_DECADES_LIST, _POW10_LIST = _DECADES.tolist(), _POW10.tolist()  # the same numbers, for ``_digit``
#: significant digits a float32 holds (24 bits: 7.2)
FLOAT32_DIGITS = 7


def _digits(a: np.ndarray, digits: int = FLOAT32_DIGITS) -> np.ndarray:
    """float64 copies of ``a`` rounded to ``digits`` significant digits: each is the double
    nearest a short decimal, so it prints as one. Zero, NaN, infinities and magnitudes
    outside 1e-22 to 1e22 stay as they are."""
    x = a.astype(np.float64)
    m = np.abs(x)
    k = digits + 22 - np.searchsorted(_DECADES, m, side="right")  # digits - 1 - the decade's exponent
    exact = (m >= _DECADES[0]) & (m < _DECADES[-1]) & (k >= -22) & (k <= 22)  # NaN: False
    k = np.where(exact, k, 0)
    up, down = _POW10[np.maximum(k, 0)], _POW10[np.maximum(-k, 0)]
    rounded = np.where(k >= 0, np.round(x * up) / up, np.round(x / down) * down)
    return np.where(exact, rounded, x)


def _digit(v: float, digits: int = FLOAT32_DIGITS) -> float:
    """``_digits`` of one value: the same comparisons and IEEE operations (Python's ``round``
    rounds half to even, as numpy's does), without a dozen numpy calls."""
    m = abs(v)
    if not _DECADES_LIST[0] <= m < _DECADES_LIST[-1]:  # NaN too
        return v
    k = digits + 22 - bisect.bisect_right(_DECADES_LIST, m)
    if not -22 <= k <= 22:
        return v
    if k >= 0:
        return round(v * _POW10_LIST[k]) / _POW10_LIST[k]
    return round(v / _POW10_LIST[-k]) * _POW10_LIST[-k]


def shown_number(v) -> float | None:
    """One number of the feature code as answers show it: None when not known, else at
    float32's digits (3.458333, not the 3.4583332538604736 of its float64 copy)."""
    v = float(v)
    return None if v != v else _digit(v)


CONFIDENCE = np.array(["low", "normal", "high"])


def confidence_label(rows) -> np.ndarray:
    """'low' for unseen or thin lanes, 'high' for busy lanes, else 'normal'."""
    n = np.nan_to_num(np.asarray(rows["carrier_lane_91d_n"], dtype=float))
    unseen_carrier = np.nan_to_num(np.asarray(rows["carrier_91d_n"], dtype=float)) == 0
    return CONFIDENCE[np.where(unseen_carrier | (n < 5), 0, np.where(n >= 50, 2, 1))]


def end_of_day(us: np.ndarray) -> np.ndarray:
    """The last second of each moment's UTC day."""
    return (us // US_PER_DAY + 1) * US_PER_DAY - 1_000_000
