"""Historical lane, carrier and region statistics, point in time, from daily sums.

The heavy reduction is scans -> shipments -> one row per (group, day) holding only
sums and counts: deliveries, promised, late, exceptions and a 64-bin histogram of
lead time (order to delivery). Every statistic for a trailing window is a difference
of cumulative sums, and quantiles come from the summed histogram, so the same logic
runs on any engine that can group and add.

Point in time: a delivery counts from its ``delivered_at`` day, and a moment ``t``
sees whole days strictly before ``day(t)`` (a daily batch, as feature stores refresh).
Queries are clipped to the history's last day + 1, so a history built from training
data and the same history saved as a snapshot and queried later by the service
answer through exactly this code.

Online tables: every request later than the history sees the same day (last day + 1),
where a statistic depends on the group alone. ``History.materialize`` evaluates the
window code once for every group at that day (Feast's online store, built from the
same definitions); rows at that day read it, every other row takes the
point-in-time path. Both are the same function; tests hold them equal bit for bit.
On top, ``LiveRows`` keeps each combination of group keys' finished columns (the
statistics shrunk toward their parents included) once a live row has met it, so a
repeated lane is one lookup; a new one is computed by the same code and kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.pit import NAT, US_PER_DAY, US_PER_HOUR, Columns, Lookup, day_number, micros, size, take

#: Lead-time histogram: 64 log-spaced bins from 2 hours to 180 days (about 10% wide).
BIN_EDGES_H = np.concatenate([[0.0], np.geomspace(2.0, 180 * 24.0, 63), [np.inf]])
N_BINS = len(BIN_EDGES_H) - 1

#: level -> the shipment columns that define its groups
LEVELS: dict[str, tuple[str, ...]] = {
    "global": (),
    "carrier": ("carrier", "service_level"),
    "lane": ("origin_region", "destination_region"),
    "carrier_lane": ("carrier", "service_level", "origin_region", "destination_region"),
    "postal_lane": ("origin_postal", "destination_postal"),
    "destination": ("destination_region",),
}
#: trailing windows (days) computed per level
WINDOWS: dict[str, tuple[int, ...]] = {
    "global": (28, 91),
    "carrier": (7, 28, 91),
    "lane": (28, 91, 365),
    "carrier_lane": (91, 365),
    "postal_lane": (365,),
    "destination": (7, 28),
}
#: sparse levels shrink toward their parent (lane -> carrier-service -> global)
PARENT: dict[str, str] = {"carrier": "global", "lane": "global", "carrier_lane": "carrier",
                          "postal_lane": "lane", "destination": "global"}
#: the window whose statistics are shrunk toward the parent, per level
SHRINK_ORDER = ("global", "carrier", "lane", "destination", "carrier_lane", "postal_lane")  # parents first
SHRINK_WINDOW = {"global": 91, "carrier": 91, "lane": 91, "carrier_lane": 91, "postal_lane": 365, "destination": 28}
PRIOR_COUNT = 20.0  # a group with n deliveries weighs n / (n + 20) against its parent
SCALAR_SUMS = ("n", "n_promised", "n_late", "n_exception")
#: the statistics shrunk toward the parent (hours end in "_h"; the rest are rates)
SHRUNK_STATS = ("median_h", "p90_h", "late_rate", "exception_rate")
_HOURS = np.array([stat.endswith("_h") for stat in SHRUNK_STATS])[:, None]
#: days of daily rows a snapshot keeps: two of the longest window, so any moment in the
#: final year before the end (and every later request) sees complete windows
HISTORY_SPAN = 731
#: every shipment column a row's statistics depend on (with the day)
KEY_COLUMNS = tuple(sorted({c for cols in LEVELS.values() for c in cols}))
#: levels whose groups are mostly new (a postal pair): a live row is keyed by its group code
#: there, so every unseen postal lane of a region lane shares one live row
FINE_LEVELS = ("postal_lane",)
COARSE_COLUMNS = tuple(sorted({c for level, cols in LEVELS.items() if level not in FINE_LEVELS for c in cols}))
#: up to this many rows, ``lead_time_quantile`` answers from a memo per group and day
FEW_ROWS = 16
LIVE_COMBINATIONS = 200_000  # combinations ``LiveRows`` holds before it starts again (~100 MB)
ONE_GROUP = "all"  # the key of a level with no columns (the whole network)
LANE_DAYS = 91  # a snapshot lists the combinations ordered in its last quarter: filled in at load


def group_keys(cols, level: str) -> np.ndarray:
    """One key per row naming its group at ``level`` (None when a part is missing)."""
    names = LEVELS[level]
    if not names:
        return np.full(size(cols) if isinstance(cols, dict) else len(cols), ONE_GROUP, dtype=object)
    parts = [np.asarray(cols[c], dtype=object) for c in names]
    gaps = [pd.isna(p) for p in parts]
    key = np.where(gaps[0], "", parts[0])
    for p, gap in zip(parts[1:], gaps[1:]):
        key = key + "|" + np.where(gap, "", p)
    return np.where(np.logical_or.reduce(gaps), None, key)


def distinct_groups(cols, level: str, factorized: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``group_keys`` of the distinct combinations of the level's values, and each row's
    position among them: ``keys[inverse]`` is ``group_keys(cols, level)``, its strings
    made once per combination rather than once per row (100,000 shipments fall in a few
    thousand). ``factorized`` caches each column's ``pd.factorize``, for callers keying
    several levels."""
    names = LEVELS[level]
    n = size(cols) if isinstance(cols, dict) else len(cols)
    if not names:  # one group
        return np.array([ONE_GROUP], dtype=object), np.zeros(n, dtype=np.int64)
    factorized = {} if factorized is None else factorized
    for c in names:
        if c not in factorized:
            factorized[c] = pd.factorize(np.asarray(cols[c], dtype=object))
    if np.prod([float(len(factorized[c][1]) + 1) for c in names]) >= 2.0 ** 62:  # past int64: one key per row
        return group_keys(cols, level), np.arange(n)
    combined = np.zeros(n, dtype=np.int64)
    for c in names:
        codes, values = factorized[c]
        combined = combined * (len(values) + 1) + (codes + 1)  # 0: missing
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    return group_keys({c: np.asarray(cols[c], dtype=object)[first] for c in names}, level), inverse.reshape(-1)


def first_exceptions(scans: pd.DataFrame | None) -> pd.Series:
    """Each shipment's first exception scan (by shipment id); a minimum, so partial results
    from parts of the scans combine by taking the minimum again."""
    if scans is None or not len(scans):
        return pd.Series([], dtype="datetime64[us, UTC]", index=pd.Index([], dtype="str"), name="scanned_at")
    exc = scans[scans.event == "exception"]
    return exc.assign(shipment_id=exc.shipment_id.astype("str")).groupby("shipment_id").scanned_at.min()


def delivery_outcomes(shipments: pd.DataFrame, exceptions: pd.Series) -> pd.DataFrame:
    """One row per delivered shipment: the facts that enter history on its delivery day;
    ``exceptions`` is ``first_exceptions`` of the scans."""
    done = shipments[shipments.delivered_at.notna()]
    delivered = micros(done.delivered_at)
    lead_h = (delivered - micros(done.ordered_at)) / US_PER_HOUR
    promised = micros(done.promised_at)
    has_promise = promised != NAT
    exception = np.zeros(len(done), dtype=bool)
    if len(exceptions):
        # Only exceptions scanned by the delivery count, so nothing later leaks in.
        first_exc = micros(exceptions.reindex(done.shipment_id.astype("str").to_numpy()))
        exception = (first_exc != NAT) & (first_exc <= delivered)
    return pd.DataFrame({
        "shipment_id": done.shipment_id.to_numpy(),
        "day": day_number(delivered),
        "lead_h": lead_h,
        "promised": has_promise,
        "late": has_promise & (delivered > promised),
        "exception": exception,
        **{c: done[c].to_numpy() for c in sorted({c for cols in LEVELS.values() for c in cols})},
    })


@dataclass
class DailyTable:
    """Daily sums for one level: sorted (group, day) rows and their cumulative sums."""

    level: str
    groups: pd.Index  # group key strings; a group's code is its position
    group: np.ndarray  # per row, sorted by (group, day)
    day: np.ndarray
    sums: dict[str, np.ndarray]  # per row
    hist: np.ndarray  # (rows, N_BINS) int32
    _cum: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _cum_hist: np.ndarray | None = field(default=None, repr=False)
    _lookup: Lookup | None = field(default=None, repr=False)

    @classmethod
    def from_outcomes(cls, outcomes: pd.DataFrame, level: str) -> "DailyTable":
        keys = group_keys(outcomes, level)
        ok = ~pd.isna(keys)
        codes, groups = pd.factorize(keys[ok], sort=True)
        day = outcomes.day.to_numpy()[ok]
        span = int(day.max() - day.min() + 1) if ok.any() else 1
        combined = codes.astype(np.int64) * span + (day - (day.min() if ok.any() else 0))
        uniq, inverse = np.unique(combined, return_inverse=True)
        sums = {
            "n": np.bincount(inverse, minlength=len(uniq)),
            "n_promised": np.bincount(inverse, weights=outcomes.promised.to_numpy()[ok], minlength=len(uniq)),
            "n_late": np.bincount(inverse, weights=outcomes.late.to_numpy()[ok], minlength=len(uniq)),
            "n_exception": np.bincount(inverse, weights=outcomes.exception.to_numpy()[ok], minlength=len(uniq)),
        }
        bins = np.clip(np.searchsorted(BIN_EDGES_H, outcomes.lead_h.to_numpy()[ok], side="right") - 1, 0, N_BINS - 1)
        hist = np.bincount(inverse * N_BINS + bins, minlength=len(uniq) * N_BINS).reshape(len(uniq), N_BINS)
        return cls(level, pd.Index(groups, dtype="str"), (uniq // span).astype(np.int64),
                   (uniq % span + (day.min() if ok.any() else 0)).astype(np.int64),
                   {k: v.astype(np.int64) for k, v in sums.items()}, hist.astype(np.int32))

    def frame(self) -> pd.DataFrame:
        """The rows as a table: group key, day, the sums and the histogram bins ``h0``..."""
        groups = self.groups.to_numpy()[self.group] if len(self.group) else np.array([], dtype=object)
        return pd.DataFrame({"group": pd.array(groups, dtype="str"), "day": self.day, **self.sums,
                             **{f"h{i}": self.hist[:, i] for i in range(N_BINS)}})

    @classmethod
    def from_frame(cls, df: pd.DataFrame, level: str) -> "DailyTable":
        """The inverse of ``frame``, for any row order (and for sums added up elsewhere)."""
        codes, groups = pd.factorize(df["group"], sort=True)
        order = np.lexsort((df.day.to_numpy(), codes))
        return cls(level, pd.Index(groups, dtype="str"), codes[order].astype(np.int64),
                   df.day.to_numpy(dtype=np.int64)[order], {k: df[k].to_numpy(dtype=np.int64)[order] for k in SCALAR_SUMS},
                   df[[f"h{i}" for i in range(N_BINS)]].to_numpy(dtype=np.int32)[order])

    def since(self, first_day: int) -> "DailyTable":
        keep = self.day >= first_day
        return DailyTable(self.level, self.groups, self.group[keep], self.day[keep],
                          {k: v[keep] for k, v in self.sums.items()}, self.hist[keep])

    def _cumulative(self) -> None:
        if self._cum_hist is None:
            self._cum = {k: np.concatenate([[0], np.cumsum(v)]) for k, v in self.sums.items()}
            self._cum_hist = np.concatenate([np.zeros((1, N_BINS), np.int64), np.cumsum(self.hist, axis=0, dtype=np.int64)])

    def codes(self, keys: np.ndarray) -> np.ndarray:
        """Each key's group code, -1 for a group the table has never seen."""
        if self._lookup is None:
            self._lookup = Lookup(self.groups.tolist())
        return self._lookup.codes(keys)

    def window_stats(self, codes: np.ndarray, days: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """The statistics of the window ``[day - width, day)`` of each (group ``codes``, query
        ``days``) pair: ``features.compiled``'s one pass per pair over the cumulative sums
        and histogram (a group never seen, code -1, has an empty window)."""
        from features import compiled  # numba: imported by the code that computes statistics

        self._cumulative()
        c = self._cum
        out = np.empty((len(compiled.STATS), len(codes)))
        compiled.window_stats(self.group, self.day, c["n"], c["n_promised"], c["n_late"], c["n_exception"],
                              self._cum_hist, BIN_EDGES_H, np.asarray(codes, dtype=np.int64),
                              np.asarray(days, dtype=np.int64), int(width), out)
        return dict(zip(compiled.STATS, out))

    def window_quantile(self, codes: np.ndarray, days: np.ndarray, width: int, p: float) -> tuple[np.ndarray, np.ndarray]:
        """The lead-time quantile ``p`` (hours) and the number of deliveries of the window
        ``[day - width, day)`` of each (group ``codes``, query ``days``) pair, read from
        the histogram as ``window_stats`` reads its quantiles (NaN for an empty window)."""
        from features import compiled

        self._cumulative()
        out = np.empty((2, len(codes)))
        compiled.window_quantile(self.group, self.day, self._cum["n"], self._cum_hist, BIN_EDGES_H,
                                 np.asarray(codes, dtype=np.int64), np.asarray(days, dtype=np.int64), int(width),
                                 float(p), out)
        return out[0], out[1]


@dataclass
class History:
    """Daily tables for every level plus the last day they cover."""

    tables: dict[str, DailyTable]
    volume: DailyTable  # shipments ordered per carrier-service and day
    last_day: int  # the last (UTC) day whose facts are in the tables
    lanes: pd.DataFrame | None = None  # recent_lanes: the combinations live rows start with
    online: dict[str, tuple[list[str], np.ndarray]] | None = field(default=None, repr=False)  # see materialize
    live_rows: "LiveRows | None" = field(default=None, repr=False)  # see materialize
    #: ``lead_time_quantile`` per (share, width, minimum): (carrier, service level, day) -> answer
    _lead_memo: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, shipments: pd.DataFrame, scans: pd.DataFrame | None, as_of: pd.Timestamp | None = None) -> "History":
        """History from a data set; ``as_of`` (default: the data's end) bounds it."""
        end = as_of if as_of is not None else data_end(shipments, scans)
        return cls.from_daily(daily_tables(shipments, first_exceptions(scans)), end, recent_lanes(shipments, end))

    @classmethod
    def from_daily(cls, tables: dict[str, DailyTable], end: pd.Timestamp, lanes: pd.DataFrame | None = None) -> "History":
        """History from ``daily_tables`` (or their sums over parts of the shipments)."""
        return cls({level: tables[level] for level in LEVELS}, tables["volume"], int(day_number(micros(pd.Series([end])))[0]),
                   lanes)

    def query_days(self, moments_us: np.ndarray) -> np.ndarray:
        """The day each moment sees: its own day, but never past what history holds."""
        return np.minimum(day_number(moments_us), self.last_day + 1)

    def snapshot(self) -> "History":
        """The part the service needs: the last two years of daily rows."""
        first = self.last_day + 1 - HISTORY_SPAN
        return History({k: t.since(first) for k, t in self.tables.items()}, self.volume.since(first), self.last_day,
                       self.lanes)

    def materialize(self) -> "History":
        """Fill the online tables: each group's statistics at the day every later request sees.

        Each table is its statistics' names and a matrix with one row per statistic (a
        lookup is one take of columns, each statistic contiguous): column ``code`` holds
        group ``code``, and the extra last column is an unseen group (code -1), so a lookup
        needs no special case."""
        day = self.last_day + 1
        online = {}
        for name, table in {**self.tables, "volume": self.volume}.items():
            codes = np.r_[np.arange(len(table.groups)), -1].astype(np.int64)
            stats = _statistics(table, name, codes, np.full(len(codes), day, dtype=np.int64))
            online[name] = (list(stats), np.vstack(list(stats.values())))
        self.online = online
        self.live_rows = LiveRows()
        if self.lanes is not None and len(self.lanes):
            # the busiest recent combinations first, filled in one batch: a lane's first
            # live request is a lookup too
            busiest = self.lanes.nlargest(self.live_rows.limit // 2, "n")
            keys = {c: busiest[c].to_numpy(dtype=object) for c in KEY_COLUMNS}
            days = np.full(len(busiest), day, dtype=np.int64)
            self.live_rows.columns(self._live_keys(keys), lambda rows: self._columns_at(take(keys, rows), days[rows]))
        return self

    def feature_columns(self, shipments, moments_us: np.ndarray) -> Columns:
        """The statistics as float32 columns; ``shipments`` maps column names to arrays."""
        days = self.query_days(moments_us)
        live = days == self.last_day + 1
        if self.live_rows is None or not live.any():
            return self._columns_at(shipments, days)
        keys = {c: np.asarray(shipments[c], dtype=object) for c in KEY_COLUMNS}
        if live.all():
            return self.live_rows.columns(self._live_keys(keys), lambda rows: self._columns_at(take(keys, rows), days[rows]))
        at_live = np.flatnonzero(live)
        now = self.live_rows.columns(self._live_keys(take(keys, at_live)),
                                     lambda rows: self._columns_at(take(keys, at_live[rows]), days[at_live[rows]]))
        past = self._columns_at(take(keys, ~live), days[~live])
        out = {name: np.empty(len(days), dtype=column.dtype) for name, column in past.items()}
        for name, column in out.items():
            column[live], column[~live] = now[name], past[name]
        return out

    def lead_time_quantile(self, shipments, moments_us: np.ndarray, p: float, width: int,
                           min_deliveries: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the lead time (order to delivery, hours) within which a share ``p`` of
        its carrier and service level's deliveries of the ``width`` days before its moment
        arrived, point in time as every statistic here; the whole network's where the
        carrier delivered fewer than ``min_deliveries`` then, NaN where the network did too;
        and whether it is the carrier's own."""
        days = self.query_days(np.asarray(moments_us, dtype=np.int64))
        if len(days) > FEW_ROWS:
            return self._lead_time_quantile(shipments, days, p, width, min_deliveries)
        # A live request: one dictionary lookup per row (the arrays' set-up costs 0.3 ms)
        memo = self._lead_memo.setdefault((p, width, min_deliveries), {})
        if len(memo) > LIVE_COMBINATIONS:  # a new one, not cleared: a call in another thread keeps reading its own
            memo = self._lead_memo[(p, width, min_deliveries)] = {}
        keys = list(zip(*(np.asarray(shipments[c], dtype=object).tolist() for c in LEVELS["carrier"]), days.tolist()))
        new = [i for i, k in enumerate(keys) if k not in memo]
        fresh = {}
        if new:
            q, own = self._lead_time_quantile(take(shipments, np.array(new)), days[new], p, width, min_deliveries)
            fresh = dict(zip(new, zip(q.tolist(), own.tolist())))
            memo.update({keys[i]: answer for i, answer in fresh.items()})
        found = [fresh[i] if i in fresh else memo[k] for i, k in enumerate(keys)]
        return np.array([f[0] for f in found], dtype=float), np.array([f[1] for f in found], dtype=bool)

    def _lead_time_quantile(self, shipments, days: np.ndarray, p: float, width: int,
                            min_deliveries: int) -> tuple[np.ndarray, np.ndarray]:
        keys, inverse = distinct_groups(shipments, "carrier")
        carrier = self.tables["carrier"]
        codes = carrier.codes(keys)[inverse]
        u_codes, u_pair_days, back = distinct_pairs(codes, days)
        own, n = carrier.window_quantile(u_codes, u_pair_days, width, p)
        network = self.tables["global"]
        u_days, day_back = np.unique(u_pair_days, return_inverse=True)
        whole, n_whole = network.window_quantile(network.codes(np.array([ONE_GROUP], dtype=object)).repeat(len(u_days)),
                                                 u_days, width, p)
        whole = np.where(n_whole >= min_deliveries, whole, np.nan)[day_back.reshape(-1)]
        mine = (n >= min_deliveries)[back]
        return np.where(mine, own[back], whole[back]), mine

    def _live_keys(self, keys: dict[str, np.ndarray]) -> list[tuple]:
        """One hashable key per row that fixes its statistics at the live day: its values of
        ``COARSE_COLUMNS`` (every missing value as None: NaN is not equal to itself, so it
        would never be found again) and its group code at each of ``FINE_LEVELS``. A row's
        statistics depend on nothing but its group at every level, and the coarse values
        fix the coarse groups."""
        coarse = ([_known(v) for v in keys[c].tolist()] for c in COARSE_COLUMNS)
        fine = (self.tables[level].codes(group_keys(keys, level)).tolist() for level in FINE_LEVELS)
        return list(zip(*coarse, *fine))

    def _columns_at(self, shipments, days: np.ndarray) -> Columns:
        """The statistics of ``shipments`` at their query ``days``."""
        factorized: dict[str, tuple] = {}  # each key column's codes, found once for every level
        groups = {level: distinct_groups(shipments, level, factorized) for level in self.tables}
        cols: Columns = {}
        for level, table in self.tables.items():
            keys, inverse = groups[level]
            cols.update(self._at_days(level, table, table.codes(keys)[inverse], days))
        self._add_shrunk(cols)
        keys, inverse = groups["carrier"]
        volume = self._at_days("volume", self.volume, self.volume.codes(keys)[inverse], days)
        self._add_carrier_trend(cols, volume)
        return {k: v.astype(np.float32, copy=False) for k, v in cols.items()}

    def _at_days(self, name: str, table: DailyTable, codes: np.ndarray, days: np.ndarray) -> Columns:
        """Statistics per row: rows at the materialized day read the online table, the rest
        compute them point in time (the same function)."""
        online = self.online.get(name) if self.online is not None else None
        if online is None:
            return _statistics(table, name, codes, days)
        names, matrix = online
        live = days == self.last_day + 1
        if live.all():
            return dict(zip(names, matrix[:, codes]))
        past = _statistics(table, name, codes[~live], days[~live])
        picked = np.empty((len(names), len(codes)), dtype=matrix.dtype)
        picked[:, live] = matrix[:, codes[live]]
        picked[:, ~live] = np.vstack([past[k] for k in names])
        return dict(zip(names, picked))

    def _add_shrunk(self, cols: Columns) -> None:
        # Parents are shrunk first so each level leans on an already-stable parent. The
        # four statistics go through together as rows of one array: the same arithmetic,
        # a quarter of the calls (a live request is mostly per-call cost).
        for level in SHRINK_ORDER:
            w = SHRINK_WINDOW[level]
            raw = np.stack([cols[f"{level}_{w}d_{stat}"] for stat in SHRUNK_STATS])
            if level == "global":
                shrunk = raw
            else:
                n = cols[f"{level}_{w}d_n"]
                parent = self._parent_values(cols, level)
                weight = n / (n + PRIOR_COUNT)
                known = np.where(raw == raw, raw, raw.dtype.type(0))  # NaN as 0, as nan_to_num would, at a tenth of its cost
                shrunk = np.where(n > 0, weight * known + (1 - weight) * parent, parent).astype(np.float32)
            cols.update({f"{level}_{stat}": row for stat, row in zip(SHRUNK_STATS, shrunk)})

    @staticmethod
    def _parent_values(cols: Columns, level: str) -> np.ndarray:
        """A level's prior, one row per statistic of ``SHRUNK_STATS``. A carrier's lane
        leans on the carrier's speed applied to the lane's relative length (carrier x
        lane / global), so a thin carrier lane keeps the distance that the carrier-wide
        figure alone would lose."""
        parent = np.stack([cols[f"{PARENT[level]}_{stat}"] for stat in SHRUNK_STATS])
        if level != "carrier_lane":
            return parent
        lane = np.stack([cols[f"lane_{stat}"] for stat in SHRUNK_STATS])
        glob = np.stack([cols[f"global_{stat}"] for stat in SHRUNK_STATS])
        with np.errstate(invalid="ignore", divide="ignore"):
            blended = np.where(_HOURS, parent * lane / glob, np.clip(parent + lane - glob, 0.0, 1.0))
        return np.where(np.isfinite(blended), blended, parent)

    @staticmethod
    def _add_carrier_trend(cols: Columns, volume: Columns) -> None:
        with np.errstate(invalid="ignore", divide="ignore"):
            cols["carrier_trend_7_91"] = cols["carrier_7d_median_h"] / cols["carrier_91d_median_h"]
        last7, last91 = volume["volume_7d"], volume["volume_91d"]
        cols["carrier_volume_7d"] = last7
        cols["carrier_volume_ratio_7_91"] = np.where(last91 > 0, (last7 / 7.0) / np.maximum(last91 / 91.0, 1e-9), np.nan)


class LiveRows:
    """Finished statistics per combination of group keys at the live day, filled as live
    rows meet them: a lane seen before costs a dictionary lookup, not the window and
    shrinkage arithmetic. Values come only from ``History._columns_at`` (the same code,
    so the same numbers bit for bit); a cache, so it is neither saved nor pickled."""

    def __init__(self, limit: int = LIVE_COMBINATIONS):
        self.limit = limit
        self._lock = threading.Lock()  # requests run on several threads
        self._clear()

    def _clear(self) -> None:
        self._slot: dict[tuple, int] = {}
        self._names: list[str] | None = None
        self._values: np.ndarray | None = None  # (statistics, capacity) float32; column = slot

    def __getstate__(self) -> dict:
        return {"limit": self.limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["limit"])

    def __len__(self) -> int:
        return len(self._slot)

    def columns(self, combos: list[tuple], compute) -> Columns:
        """Columns for rows keyed ``combos`` (``History._live_keys``); ``compute(rows)``
        gives the columns of the rows at those positions, for combinations not held yet."""
        with self._lock:
            slots = [self._slot.get(c, -1) for c in combos]
        if min(slots) < 0:
            new = {}  # combination -> a row that has it, once each
            for i, (c, at) in enumerate(zip(combos, slots)):
                if at < 0:
                    new.setdefault(c, i)
            if len(new) > self.limit // 2:  # a bulk batch of new lanes: computed, not kept
                return compute(np.arange(len(combos)))
            self._keep(list(new), compute(np.fromiter(new.values(), dtype=np.int64, count=len(new))))
            with self._lock:
                slots = [self._slot.get(c, -1) for c in combos]
            if min(slots) < 0:  # started again meanwhile: compute them all, keep nothing
                return compute(np.arange(len(combos)))
        with self._lock:
            return dict(zip(self._names, self._values[:, slots]))

    def _keep(self, combos: list[tuple], cols: Columns) -> None:
        with self._lock:
            if len(self._slot) + len(combos) > self.limit:
                self._clear()
            if self._values is None:
                self._names = list(cols)
                self._values = np.empty((len(cols), max(64, len(combos))), dtype=np.float32)
            start = len(self._slot)
            if start + len(combos) > self._values.shape[1]:
                grown = np.empty((len(self._names), max(2 * self._values.shape[1], start + len(combos))), dtype=np.float32)
                grown[:, :start] = self._values[:, :start]
                self._values = grown
            self._values[:, start:start + len(combos)] = np.vstack([cols[name] for name in self._names])
            self._slot.update(zip(combos, range(start, start + len(combos))))


def _known(value):
    """A key value, or None where ``pd.isna`` would call it missing (None, NA, NaN, NaT)."""
    return None if value is None or value is pd.NA or value != value else value


def recent_lanes(shipments: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    """Shipments ordered per combination of ``KEY_COLUMNS`` (missing values kept) in the
    ``LANE_DAYS`` before ``end``; counts of a data set's parts add up to the whole's."""
    ordered = micros(shipments.ordered_at)
    end_us = int(micros(pd.Series([end]))[0])
    recent = shipments.loc[(ordered <= end_us) & (ordered > end_us - LANE_DAYS * US_PER_DAY), list(KEY_COLUMNS)]
    return add_lanes([recent.assign(n=1)])  # one count per shipment, summed per combination


def add_lanes(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """``recent_lanes`` of several parts as one table."""
    whole = pd.concat(parts, ignore_index=True).astype({c: object for c in KEY_COLUMNS})
    return whole.groupby(list(KEY_COLUMNS), dropna=False, sort=True).n.sum().reset_index()


def daily_tables(shipments: pd.DataFrame, exceptions: pd.Series) -> dict[str, DailyTable]:
    """Every level's daily sums, and ``volume`` (orders per carrier-service and day), of
    ``shipments``; sums of a data set's parts add up to the whole's (``features.distributed``)."""
    outcomes = delivery_outcomes(shipments, exceptions)
    volume_rows = pd.DataFrame({
        "day": day_number(micros(shipments.ordered_at)), "lead_h": 0.0, "promised": False, "late": False,
        "exception": False, "carrier": shipments.carrier.to_numpy(), "service_level": shipments.service_level.to_numpy(),
    })
    return {**{level: DailyTable.from_outcomes(outcomes, level) for level in LEVELS},
            "volume": DailyTable.from_outcomes(volume_rows, "carrier")}


def _statistics(table: DailyTable, name: str, codes: np.ndarray, days: np.ndarray) -> Columns:
    """What a table contributes per row: window statistics for a level, order counts for volume."""
    if name == "volume":
        return {f"volume_{w}d": table.window_stats(codes, days, w)["n"] for w in (7, 91)}
    return _level_features_all(table, codes, days, name)


def distinct_pairs(codes: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (group code, day) pairs as two arrays, and each row's position among
    them: a window is computed once per pair and broadcast back (``[inverse]``)."""
    first = int(days.min()) if len(days) else 0
    span = int(days.max()) - first + 1 if len(days) else 1
    uniq, inverse = np.unique((np.asarray(codes, dtype=np.int64) + 1) * span + (days - first), return_inverse=True)
    return uniq // span - 1, uniq % span + first, inverse.reshape(-1)


def _level_features_all(table: DailyTable, codes: np.ndarray, days: np.ndarray, level: str) -> dict[str, np.ndarray]:
    """Window statistics for unique (group, day) pairs, broadcast back to every row."""
    u_codes, u_days, inverse = distinct_pairs(codes, days)
    out: dict[str, np.ndarray] = {}
    for width in WINDOWS[level]:
        for stat, values in table.window_stats(u_codes, u_days, width).items():
            out[f"{level}_{width}d_{stat}"] = values.astype(np.float32)[inverse]
    return out


def data_end(shipments: pd.DataFrame, scans: pd.DataFrame | None = None) -> pd.Timestamp:
    """The latest moment any fact in the data set speaks of."""
    candidates = [shipments[c].max() for c in ("ordered_at", "shipped_at", "delivered_at") if shipments[c].notna().any()]
    if scans is not None and len(scans):
        candidates.append(scans.scanned_at.max())
    return max(candidates)
