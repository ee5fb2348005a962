"""A realistic e-commerce delivery simulator whose ground truth is known exactly.

The simulated world: US regions with coordinates, five warehouses, carriers and
service levels with their own speed, spread, weekend, holiday and peak behaviour,
persistent lane effects, rural postal areas, weekday-dependent handling before
handover, storms that slow deliveries into one region, exceptions, failed delivery
attempts, lost and returned parcels, a retailer promise that is blind to peak and
storms, and customers whose chance of never ordering again rises after a bad delivery.

How the truth stays exact. Every calendar effect (weekends, holidays, peak, storms)
changes only the *rate* at which a carrier's "operating clock" runs for a destination
region on a given day. Transit is a lognormal amount of operating time, shifted by a
random handling branch, an exception and a failed attempt (each a Bernoulli with a
known probability). The delivered moment is a monotone map of the clock value, so the
noise-free delivery distribution of every parcel is a mixture of eight shifted
lognormals pushed through that map: its quantiles and the probability of missing the
promise are computed exactly, not sampled. Likewise a customer's next order comes from
a Poisson process on a peak-boosted intensity clock, so P(no order within 90 days) is
exact as well.

All internal times are float days since ``origin``; everything is UTC.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr, ndtri

from data.calendar import black_friday_of, holiday_dates
from data.contract import TRUTH_DIR
from eddy.settings import TIMESTAMP_DTYPE

# --------------------------------------------------------------------------- world

#: (region, latitude, longitude, relative population)
REGIONS: tuple[tuple[str, float, float, float], ...] = (
    ("CA", 36.8, -119.4, 39), ("TX", 31.0, -97.6, 30), ("FL", 28.1, -81.6, 22), ("NY", 42.9, -75.5, 20),
    ("PA", 40.9, -77.8, 13), ("IL", 40.0, -89.2, 12.6), ("OH", 40.3, -82.8, 11.8), ("GA", 32.7, -83.4, 11),
    ("NC", 35.6, -79.4, 10.8), ("MI", 43.3, -84.5, 10), ("NJ", 40.1, -74.7, 9.3), ("VA", 37.5, -78.9, 8.7),
    ("WA", 47.4, -120.5, 7.8), ("AZ", 34.2, -111.7, 7.4), ("MA", 42.3, -71.8, 7), ("TN", 35.9, -86.4, 7),
    ("IN", 39.9, -86.3, 6.8), ("MO", 38.4, -92.5, 6.2), ("MD", 39.0, -76.8, 6.2), ("WI", 44.6, -89.8, 5.9),
    ("CO", 39.0, -105.5, 5.8), ("MN", 46.3, -94.3, 5.7), ("SC", 33.9, -80.9, 5.3), ("AL", 32.8, -86.8, 5),
    ("LA", 31.1, -92.0, 4.6), ("KY", 37.5, -85.3, 4.5), ("OR", 43.9, -120.6, 4.2), ("OK", 35.6, -97.5, 4),
    ("UT", 39.3, -111.7, 3.4), ("NV", 39.3, -116.6, 3.2), ("NM", 34.4, -106.1, 2.1), ("MT", 47.0, -109.6, 1.1),
)
WEST = {"CA", "WA", "OR", "AZ", "NV", "UT", "CO", "NM", "MT"}
POSTALS_PER_REGION = 4  # the last one of each region is rural: slower and more exceptions

#: (region, postal) of each origin warehouse
WAREHOUSES: tuple[tuple[str, str], ...] = (("NJ", "088"), ("TX", "752"), ("CA", "917"), ("IL", "606"), ("GA", "303"))


@dataclass(frozen=True)
class CarrierService:
    carrier: str
    service_level: str
    base_days: float  # mean operating days for a zero-distance lane
    days_per_1000km: float
    sigma: float  # lognormal spread of transit
    weekday_rates: tuple[float, ...]  # clock rate Mon..Sun
    holiday_rate: float
    peak_rate: float  # clock rate multiplier between Black Friday and Christmas Eve
    exception_rate: float
    failed_attempt_rate: float
    lost_rate: float
    return_rate: float
    nominal_days: tuple[int, int, int]  # promised transit days for <800, <2000, >=2000 km
    share: float  # how often the retailer picks it
    west_only: bool = False


CARRIER_SERVICES: tuple[CarrierService, ...] = (
    CarrierService("ups", "ground", 1.1, 0.85, 0.20, (1, 1, 1, 1, 1, 0, 0), 0.0, 0.86, 0.020, 0.025, 0.002, 0.002, (2, 3, 5), 0.26),
    CarrierService("ups", "express", 0.7, 0.20, 0.15, (1, 1, 1, 1, 1, 0, 0), 0.0, 0.92, 0.012, 0.020, 0.001, 0.001, (1, 2, 2), 0.07),
    CarrierService("fedex", "ground", 1.2, 0.80, 0.24, (1, 1, 1, 1, 1, 0.6, 0), 0.0, 0.80, 0.025, 0.030, 0.003, 0.002, (2, 3, 5), 0.20),
    CarrierService("fedex", "express", 0.8, 0.22, 0.18, (1, 1, 1, 1, 1, 0, 0), 0.3, 0.88, 0.015, 0.020, 0.001, 0.001, (1, 2, 2), 0.06),
    CarrierService("usps", "ground_advantage", 1.5, 0.95, 0.34, (1, 1, 1, 1, 1, 1, 0.2), 0.0, 0.70, 0.030, 0.045, 0.004, 0.004, (2, 4, 5), 0.25),
    CarrierService("usps", "priority", 1.0, 0.45, 0.28, (1, 1, 1, 1, 1, 1, 0.2), 0.0, 0.74, 0.025, 0.040, 0.003, 0.003, (1, 2, 3), 0.10),
    CarrierService("ontrac", "ground", 0.8, 0.90, 0.30, (1, 1, 1, 1, 1, 1, 0), 0.0, 0.62, 0.040, 0.050, 0.005, 0.004, (2, 3, 4), 0.06, west_only=True),
)

CUTOFF_HOUR = 14.0  # orders after this hour ship the next warehouse business day
PICKUP_HOUR = 17.0  # carriers collect from warehouses at this hour
DELIVERY_START_HOUR, DELIVERY_HOURS = 9.0, 11.0  # deliveries land between 09:00 and 20:00
EXCEPTION_DAYS, FAILED_ATTEMPT_DAYS = 2.0, 1.0  # operating days each one adds
STORM_RATE = 0.30
PEAK_ORDER_INTENSITY = 1.7
CHURN_HORIZON_DAYS = 90.0
LANE_EFFECT_SD = 0.35  # operating days a lane's hidden effect adds, normal around 0
#: a customer's orders a year: gamma (shape, scale), clipped; their churn log-odds after
#: a perfect delivery: normal (mean, sd)
ORDER_RATE_GAMMA, ORDER_RATE_CLIP = (1.6, 3.2 / 1.6), (0.4, 30.0)
CHURN_BASELINE = (-1.9, 0.7)


@dataclass(frozen=True)
class SimConfig:
    customers: int = 6000
    seed: int = 7
    start: str = "2024-01-01"
    end: str = "2026-02-28T23:59:59"
    promise_buffer_days: int = 1
    storms_per_month: float = 2.0
    two_parcel_share: float = 0.12
    no_promise_share: float = 0.02
    missing_scan_share: float = 0.04
    skewed_scan_share: float = 0.02
    slice: int = 0  # slices of one world: same lanes and storms, their own customers
    id_prefix: str = ""  # in every id of a slice, so ids stay unique across slices


@dataclass
class SimResult:
    tables: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]
    summary: dict[str, float] = field(default_factory=dict)
    #: what no table holds, for measuring what the data could tell at best
    #: (``benchmarks/knowable_bounds.py``): the ``World``, the ``Parcels`` in the shipments
    #: table's row order and the customers' hidden traits (``Customers``)
    latent: dict = field(default_factory=dict)


@dataclass
class Customers:
    """Each customer's hidden traits, by customer index (ids ``C`` + index + 1)."""

    home: np.ndarray
    home_postal: np.ndarray
    rate_per_day: np.ndarray  # orders a day, on the peak-boosted order clock
    baseline: np.ndarray  # churn log-odds after a perfect delivery
    first_seen: np.ndarray
    existing: np.ndarray  # a customer before the data's start: first order an exponential wait from it


# ------------------------------------------------------------------ calendar clock


class World:
    """Geography, lanes, storms and the per-(carrier-service, region) operating clock."""

    def __init__(self, cfg: SimConfig, rng: np.random.Generator):
        self.cfg = cfg
        self.start = pd.Timestamp(cfg.start, tz="UTC")
        self.end = pd.Timestamp(cfg.end, tz="UTC")
        self.origin = (self.start - pd.Timedelta(days=30)).normalize()
        self.t_start = (self.start - self.origin) / pd.Timedelta(days=1)
        self.t_end = (self.end - self.origin) / pd.Timedelta(days=1)
        self.n_days = int(math.ceil(self.t_end)) + 150  # room for transit past the end
        self.dates = pd.date_range(self.origin, periods=self.n_days, freq="D")
        self.weekday = self.dates.weekday.to_numpy()
        us_holidays = holiday_dates("US", self.dates[0].year, self.dates[-1].year)
        self.holiday = np.isin(self.dates.values.astype("datetime64[D]"), us_holidays)
        self.business = (self.weekday < 5) & ~self.holiday
        self.peak = self._peak_days()

        self.region_codes = np.array([r[0] for r in REGIONS])
        self.lat = np.array([r[1] for r in REGIONS])
        self.lon = np.array([r[2] for r in REGIONS])
        self.population = np.array([r[3] for r in REGIONS]) / sum(r[3] for r in REGIONS)
        self.postal_offsets = rng.uniform(-1.2, 1.2, size=(len(REGIONS), POSTALS_PER_REGION, 2))
        self.wh_region = np.array([np.flatnonzero(self.region_codes == r)[0] for r, _ in WAREHOUSES])
        self.distance_km = self._distances()  # (warehouse, region)
        n_cs = len(CARRIER_SERVICES)
        self.lane_effect = rng.normal(0.0, LANE_EFFECT_SD, size=(len(WAREHOUSES), len(REGIONS), n_cs))
        self.storms = self._storms(rng)
        self.storm_days = self._storm_mask()  # (region, day)
        self._run_clocks()
        self.order_intensity_cum = np.concatenate([[0.0], np.cumsum(np.where(self.peak, PEAK_ORDER_INTENSITY, 1.0))])

    def without_storms(self) -> "World":
        """The same world with no storm: the clocks a forecaster without foresight runs
        (``benchmarks/knowable_bounds.py``)."""
        calm = copy.copy(self)
        calm.storm_days = np.zeros_like(self.storm_days)
        calm._run_clocks()
        return calm

    def _run_clocks(self) -> None:
        """Each (carrier service, region)'s daily rates and operating clock from the calendar and the storms."""
        self.rates = self._rates()  # (cs, region, day)
        n_cs = len(CARRIER_SERVICES)
        self.clock_at_midnight = np.concatenate(
            [np.zeros((n_cs, len(REGIONS), 1)), np.cumsum(self.rates, axis=2)], axis=2
        )
        # A strictly increasing flattened copy for vectorised inverse look-ups: each
        # (cs, region) row is offset far above the previous one.
        self._offset = float(self.clock_at_midnight.max() + 10.0)
        n_rows = n_cs * len(REGIONS)
        self._flat = (self.clock_at_midnight.reshape(n_rows, -1) + self._offset * np.arange(n_rows)[:, None]).ravel()

    # -- calendar
    def _peak_days(self) -> np.ndarray:
        peak = np.zeros(self.n_days, dtype=bool)
        for year in sorted(set(self.dates.year)):
            black_friday = black_friday_of(year)
            lo = (black_friday.tz_localize("UTC") - self.origin).days
            hi = (pd.Timestamp(year, 12, 24, tz="UTC") - self.origin).days
            peak[max(lo, 0): max(min(hi + 1, self.n_days), 0)] = True
        return peak

    def _distances(self) -> np.ndarray:
        lat1, lon1 = np.radians(self.lat[self.wh_region])[:, None], np.radians(self.lon[self.wh_region])[:, None]
        lat2, lon2 = np.radians(self.lat)[None, :], np.radians(self.lon)[None, :]
        a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
        return 2 * 6371.0 * np.arcsin(np.sqrt(a)) * 1.2 + 60.0  # road factor and a local leg

    def _storms(self, rng: np.random.Generator) -> pd.DataFrame:
        months = (self.t_end - self.t_start) / 30.4
        n = rng.poisson(self.cfg.storms_per_month * months)
        start = rng.uniform(self.t_start - 10, self.t_end, size=n).astype(int)
        duration = rng.integers(2, 6, size=n)
        region = rng.integers(0, len(REGIONS), size=n)
        return pd.DataFrame({"region": region, "start_day": start, "days": duration})

    def _storm_mask(self) -> np.ndarray:
        mask = np.zeros((len(REGIONS), self.n_days), dtype=bool)
        for r, s, d in self.storms.itertuples(index=False):
            mask[r, max(s, 0): max(s + d, 0)] = True
        return mask

    def _rates(self) -> np.ndarray:
        n_cs = len(CARRIER_SERVICES)
        rates = np.empty((n_cs, len(REGIONS), self.n_days))
        for k, cs in enumerate(CARRIER_SERVICES):
            day_rate = np.asarray(cs.weekday_rates, dtype=float)[self.weekday]
            day_rate = np.where(self.holiday, cs.holiday_rate, day_rate)
            day_rate = np.where(self.peak, day_rate * cs.peak_rate, day_rate)
            rates[k] = day_rate[None, :] * np.where(self.storm_days, STORM_RATE, 1.0)
        return rates

    # -- clock
    def clock(self, cs: np.ndarray, region: np.ndarray, t: np.ndarray) -> np.ndarray:
        day = np.clip(np.floor(t).astype(np.int64), 0, self.n_days - 1)
        return self.clock_at_midnight[cs, region, day] + self.rates[cs, region, day] * (t - day)

    def clock_inverse(self, cs: np.ndarray, region: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Calendar time (float days) at which the clock of (cs, region) reaches ``v``."""
        row = cs * len(REGIONS) + region
        width = self.n_days + 1
        pos = np.searchsorted(self._flat, v + row * self._offset, side="right") - 1
        day = np.clip(pos - row * width, 0, self.n_days - 1)
        base = self.clock_at_midnight[cs, region, day]
        rate = self.rates[cs, region, day]
        frac = np.where(rate > 0, (v - base) / np.where(rate > 0, rate, 1.0), 0.0)
        return day + np.clip(frac, 0.0, 1.0 - 1e-9)

    def delivery_moment(self, cs: np.ndarray, region: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Delivered moment for a clock value: the same day, squeezed into delivery hours."""
        t = self.clock_inverse(cs, region, v)
        day = np.floor(t)
        return day + (DELIVERY_START_HOUR + DELIVERY_HOURS * (t - day)) / 24.0

    def next_business_day(self, day: np.ndarray) -> np.ndarray:
        """The first warehouse business day on or after ``day``."""
        idx = np.flatnonzero(self.business)
        pos = np.searchsorted(idx, np.clip(day, 0, self.n_days - 1))
        return idx[np.clip(pos, 0, len(idx) - 1)]

    def add_business_days(self, day: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Mon-Fri business days after ``day`` (blind to holidays, as promise engines are)."""
        weekdays = (self.weekday < 5)
        idx = np.flatnonzero(weekdays)
        pos = np.searchsorted(idx, day, side="right") - 1 + n
        return idx[np.clip(pos, 0, len(idx) - 1)]

    def to_timestamps(self, t: np.ndarray) -> pd.Series:
        """Float days since origin as UTC timestamps, whole seconds like real systems."""
        t = np.asarray(t, dtype=float)
        missing = np.isnan(t)
        seconds = np.round(np.where(missing, 0.0, t) * 86_400).astype("int64")
        values = self.origin.tz_localize(None).to_datetime64().astype("datetime64[us]") + seconds.astype("timedelta64[s]")
        out = pd.Series(values.astype("datetime64[us]")).dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE)
        return out.where(~missing)

    def orders_clock(self, t: np.ndarray) -> np.ndarray:
        day = np.clip(np.floor(t).astype(np.int64), 0, self.n_days - 1)
        rate = np.where(self.peak[day], PEAK_ORDER_INTENSITY, 1.0)
        return self.order_intensity_cum[day] + rate * (t - day)

    def orders_clock_inverse(self, v: np.ndarray) -> np.ndarray:
        grid = np.arange(self.n_days + 1, dtype=float)
        return np.interp(v, self.order_intensity_cum, grid)


# ------------------------------------------------------------------------- parcels


@dataclass
class Parcels:
    """Everything about a batch of parcels, latent and observed (float days)."""

    order_idx: np.ndarray
    warehouse: np.ndarray
    region: np.ndarray
    postal: np.ndarray
    cs: np.ndarray
    weight: np.ndarray
    value: np.ndarray
    ordered: np.ndarray
    shipped: np.ndarray
    ship_clock: np.ndarray
    promised: np.ndarray  # nan = no promise
    delivered: np.ndarray  # nan = never delivered
    outcome: np.ndarray  # 0 delivered, 1 lost, 2 returned
    exception: np.ndarray
    failed_attempt: np.ndarray
    delivered_clock: np.ndarray
    truth: dict[str, np.ndarray]


def _lognormal_mixture_quantiles(shifts: np.ndarray, weights: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                                 probs: tuple[float, ...], bisections: int = 12, newton_steps: int = 5) -> list[np.ndarray]:
    """Quantiles of sum_k w_k * (s_k + LogNormal(mu, sigma)), per row.

    All components share mu and sigma, so the p-quantile lies between
    min_k s_k + c and max_k s_k + c with c the lognormal's own p-quantile: a tight
    bracket: bisection narrows it to a few minutes, then safeguarded Newton steps
    polish (Newton alone can stall inside a bracket where the density is uneven).
    """
    result = []
    for p in probs:
        c = np.exp(mu + sigma * ndtri(p))
        lo, hi = shifts.min(axis=1) + c, shifts.max(axis=1) + c
        for _ in range(bisections):
            mid = 0.5 * (lo + hi)
            below = mixture_cdf(mid, shifts, weights, mu, sigma) < p
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        x = 0.5 * (lo + hi)
        for _ in range(newton_steps):
            cdf, pdf = _mixture_cdf_pdf(x, shifts, weights, mu, sigma)
            below = cdf < p
            lo, hi = np.where(below, x, lo), np.where(below, hi, x)
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = x - (cdf - p) / pdf
            inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
            x = np.where(inside, newton, 0.5 * (lo + hi))
        result.append(x)
    return result


def _mixture_cdf_pdf(v: np.ndarray, shifts: np.ndarray, weights: np.ndarray, mu: np.ndarray,
                     sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gap = v[:, None] - shifts
    positive = gap > 0
    safe_gap = np.where(positive, gap, 1.0)
    z = (np.log(safe_gap) - mu[:, None]) / sigma[:, None]
    cdf = (weights * np.where(positive, ndtr(z), 0.0)).sum(axis=1)
    density = np.exp(-0.5 * z * z) / (np.sqrt(2 * np.pi) * sigma[:, None] * safe_gap)
    pdf = (weights * np.where(positive, density, 0.0)).sum(axis=1)
    return cdf, pdf


def mixture_cdf(v: np.ndarray, shifts: np.ndarray, weights: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return _mixture_cdf_pdf(v, shifts, weights, mu, sigma)[0]


def simulate_parcels(world: World, rng: np.random.Generator, order_idx: np.ndarray, ordered: np.ndarray,
                     region: np.ndarray, postal: np.ndarray) -> Parcels:
    """Ship, carry and deliver one parcel per row; compute its exact truth alongside."""
    n = len(order_idx)
    cfg = world.cfg
    day0 = np.floor(ordered).astype(np.int64)

    warehouse = _pick_warehouse(world, rng, region)
    cs = _pick_carrier_service(rng, world.region_codes[region], warehouse)
    spec = _cs_arrays()
    dist = world.distance_km[warehouse, region]
    rural = postal == POSTALS_PER_REGION - 1
    weight = np.round(rng.lognormal(np.log(1.4), 0.9, size=n), 2)
    value = np.round(rng.lognormal(np.log(45.0), 0.8, size=n), 2)

    # Handling: next business day after the cut-off, sometimes a day more (stock, peak).
    after_cutoff = (ordered - day0) * 24.0 >= CUTOFF_HOUR
    first = world.next_business_day(day0 + after_cutoff)
    second = world.next_business_day(first + 1)
    in_peak = world.peak[np.clip(day0, 0, world.n_days - 1)]
    p_slow = np.where(in_peak, 0.25, 0.10)
    slow = rng.random(n) < p_slow
    ship_day = np.where(slow, second, first)
    shipped = ship_day + PICKUP_HOUR / 24.0 + rng.uniform(-0.5, 0.5, n) / 24.0
    clock_fast = world.clock(cs, region, first + PICKUP_HOUR / 24.0)
    clock_slow = world.clock(cs, region, second + PICKUP_HOUR / 24.0)
    ship_clock = np.where(slow, clock_slow, clock_fast)

    # Transit in operating days: lognormal with a lane-, distance-, area- and weight-dependent mean.
    route = spec["base"][cs] + spec["per_km"][cs] * dist / 1000.0
    heavy = (weight > 10) & spec["ground"][cs]
    mean = transit_mean(route, world.lane_effect[warehouse, region, cs], rural, heavy)
    sigma = spec["sigma"][cs]
    mu = np.log(mean) - 0.5 * sigma ** 2

    storm_soon = _storm_within(world, region, ship_day, 4)
    p_exc_calm = spec["exc"][cs] * np.where(in_peak, 2.0, 1.0) * np.where(rural, 1.5, 1.0)
    p_exc = np.minimum(p_exc_calm * np.where(storm_soon, 3.0, 1.0), 0.5)
    p_att = np.minimum(spec["att"][cs] * np.where(rural, 1.5, 1.0), 0.5)
    p_lost = spec["lost"][cs] * np.where(in_peak, 2.0, 1.0)
    p_ret = spec["ret"][cs]

    exception = rng.random(n) < p_exc
    failed = rng.random(n) < p_att
    draw = rng.random(n)
    outcome = np.where(draw < p_lost, 1, np.where(draw < p_lost + p_ret, 2, 0))
    transit = rng.lognormal(mu, sigma)
    delivered_clock = ship_clock + EXCEPTION_DAYS * exception + FAILED_ATTEMPT_DAYS * failed + transit
    delivered = world.delivery_moment(cs, region, delivered_clock)
    delivered = np.where(outcome == 0, delivered, np.nan)

    # Promise: nominal service days by distance band plus a buffer, in Mon-Fri days from
    # the order day, end of that day. Blind to peak, storms and holidays on purpose.
    band = np.digitize(dist, [800.0, 2000.0])
    nominal = spec["nominal"][cs, band]
    promise_day = world.add_business_days(day0 + after_cutoff - 1, 1 + nominal + cfg.promise_buffer_days)
    promised = promise_day + (86_399.0 / 86_400.0)
    promised = np.where(rng.random(n) < cfg.no_promise_share, np.nan, promised)

    # Exact truth: the mixture over handling branch x exception x failed attempt.
    shifts_m, weights_m = delivery_mixture(clock_fast, clock_slow, p_slow, p_exc, p_att)
    q10, q50, q90 = _lognormal_mixture_quantiles(shifts_m, weights_m, mu, sigma, (0.1, 0.5, 0.9))
    promise_clock = world.clock(cs, region, np.where(np.isnan(promised), 0.0, np.floor(promised) + 1.0))
    p_on_time = mixture_cdf(promise_clock, shifts_m, weights_m, mu, sigma)
    p_not_delivered = p_lost + p_ret
    truth = {
        "p10": world.delivery_moment(cs, region, q10),
        "p50": world.delivery_moment(cs, region, q50),
        "p90": world.delivery_moment(cs, region, q90),
        "p_late": np.where(np.isnan(promised), np.nan, p_not_delivered + (1 - p_not_delivered) * (1 - p_on_time)),
        "p_not_delivered": p_not_delivered,
        "mean_transit_days": mean,
        "storm_soon": storm_soon,
        "peak": in_peak,
        # the law's inputs, for references that know it but not what the data could not show
        "first_day": first, "second_day": second, "p_slow": p_slow, "p_exc": p_exc, "p_exc_calm": np.minimum(p_exc_calm, 0.5),
        "p_att": p_att, "sigma": sigma, "route_days": route, "rural": rural, "heavy": heavy,
    }
    return Parcels(order_idx, warehouse, region, postal, cs, weight, value, ordered, shipped, ship_clock,
                   promised, delivered, outcome, exception, failed, delivered_clock, truth)


def transit_mean(route: np.ndarray, lane_effect: np.ndarray, rural: np.ndarray, heavy: np.ndarray) -> np.ndarray:
    """Mean operating days of transit: the service's days for the distance, the lane's
    hidden effect, and a rural area's and a heavy ground parcel's extra."""
    return np.maximum(route + lane_effect + 0.5 * rural + 0.3 * heavy, 0.4)


def delivery_mixture(clock_fast: np.ndarray, clock_slow: np.ndarray, p_slow: np.ndarray, p_exc: np.ndarray,
                     p_att: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per parcel, the eight shifts (operating clock at handover, plus an exception's and a
    failed attempt's days) and their weights that the lognormal transit is added to."""
    shifts, weights = [], []
    for branch_clock, p_branch in ((clock_fast, 1 - p_slow), (clock_slow, p_slow)):
        for e in (0, 1):
            for a in (0, 1):
                shifts.append(branch_clock + EXCEPTION_DAYS * e + FAILED_ATTEMPT_DAYS * a)
                weights.append(p_branch * (p_exc if e else 1 - p_exc) * (p_att if a else 1 - p_att))
    return np.stack(shifts, axis=1), np.stack(weights, axis=1)


def _cs_arrays() -> dict[str, np.ndarray]:
    css = CARRIER_SERVICES
    return {
        "base": np.array([c.base_days for c in css]),
        "per_km": np.array([c.days_per_1000km for c in css]),
        "sigma": np.array([c.sigma for c in css]),
        "exc": np.array([c.exception_rate for c in css]),
        "att": np.array([c.failed_attempt_rate for c in css]),
        "lost": np.array([c.lost_rate for c in css]),
        "ret": np.array([c.return_rate for c in css]),
        "nominal": np.array([c.nominal_days for c in css]),
        "ground": np.array([c.service_level != "express" and c.service_level != "priority" for c in css]),
    }


def _pick_warehouse(world: World, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    nearest = np.argmin(world.distance_km[:, region], axis=0)
    other = rng.integers(0, len(WAREHOUSES), size=len(region))
    return np.where(rng.random(len(region)) < 0.7, nearest, other)


def _pick_carrier_service(rng: np.random.Generator, region_code: np.ndarray, warehouse: np.ndarray) -> np.ndarray:
    shares = np.array([c.share for c in CARRIER_SERVICES])
    west_only = np.array([c.west_only for c in CARRIER_SERVICES])
    allowed_west = np.isin(region_code, list(WEST)) & (np.array([r for r, _ in WAREHOUSES])[warehouse] == "CA")
    probs = np.where(west_only[None, :] & ~allowed_west[:, None], 0.0, shares[None, :])
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    return (rng.random(len(region_code))[:, None] > cum).sum(axis=1).clip(0, len(CARRIER_SERVICES) - 1)


def _storm_within(world: World, region: np.ndarray, day: np.ndarray, horizon: int) -> np.ndarray:
    cum = np.concatenate([np.zeros((len(REGIONS), 1)), np.cumsum(world.storm_days, axis=1)], axis=1)
    lo = np.clip(day, 0, world.n_days)
    hi = np.clip(day + horizon, 0, world.n_days)
    return (cum[region, hi] - cum[region, lo]) > 0


# ----------------------------------------------------------------------- customers


def simulate(cfg: SimConfig, progress: Callable[[str, float], None] | None = None,
             keep_latent: bool = False) -> SimResult:
    """Run the whole simulation and return the contract tables and the truth tables (and,
    with ``keep_latent``, what no table holds: ``SimResult.latent``)."""
    rng = np.random.default_rng(cfg.seed if not cfg.slice else [cfg.seed, 2, cfg.slice])
    world = World(cfg, np.random.default_rng([cfg.seed, 1]))
    n = cfg.customers
    report = progress or (lambda stage, frac: None)

    people = _customers(world, rng, n)
    home, home_postal, rate_per_day = people.home, people.home_postal, people.rate_per_day
    baseline, first_seen, existing = people.baseline, people.first_seen, people.existing
    next_order = np.where(
        existing,
        world.orders_clock_inverse(world.orders_clock(np.full(n, world.t_start)) + rng.exponential(1.0, n) / rate_per_day),
        first_seen + rng.exponential(3.0, n),
    )

    orders_parts, parcel_parts = [], []
    active = np.flatnonzero(next_order <= world.t_end)
    count = np.zeros(n, dtype=np.int64)
    next_order_id = 0
    step = 0
    while len(active):
        step += 1
        report("customers", min(step / 40.0, 0.99))
        m = len(active)
        o_time = next_order[active]
        order_ids = np.arange(next_order_id, next_order_id + m)
        next_order_id += m
        two = rng.random(m) < cfg.two_parcel_share
        p_order = np.concatenate([np.arange(m), np.flatnonzero(two)])
        parcels = simulate_parcels(world, rng, order_ids[p_order], o_time[p_order], home[active][p_order], home_postal[active][p_order])
        parcel_parts.append(parcels)

        exp = _order_experience(parcels, p_order, m)
        contacts = rng.poisson(0.05 + 0.5 * np.minimum(exp["days_late"], 5) + 0.8 * exp["exception"]
                               + 2.0 * exp["not_delivered"] + 0.4 * exp["failed_attempt"])
        latent = 4.5 - 0.6 * np.minimum(exp["days_late"], 5) - 0.8 * exp["exception"] - 2.5 * exp["not_delivered"] \
            - 0.3 * exp["failed_attempt"] + rng.normal(0, 0.7, m)
        rating = np.clip(np.round(latent), 1, 5).astype(np.int64)
        answered = rng.random(m) < np.where(latent < 3, 0.6, 0.35)
        feedback_delay = rng.exponential(3.0, m) + 0.2

        logit = (baseline[active] + 0.45 * np.minimum(exp["days_late"], 7) + 0.9 * exp["exception"]
                 + 2.2 * exp["not_delivered"] + 0.3 * np.minimum(contacts, 5) + 0.35 * exp["failed_attempt"]
                 - 0.15 * np.minimum(count[active], 6))
        p_churn = expit(logit)
        ref = exp["reference"]
        lam = rate_per_day[active]
        exposure = world.orders_clock(ref + CHURN_HORIZON_DAYS) - world.orders_clock(ref)
        p_no_order = p_churn + (1 - p_churn) * np.exp(-lam * exposure)
        churned = rng.random(m) < p_churn
        gap = rng.exponential(1.0, m) / lam
        nxt = world.orders_clock_inverse(world.orders_clock(ref) + gap)

        orders_parts.append(pd.DataFrame({
            "order_idx": order_ids, "customer_idx": active, "ordered": o_time,
            "value": np.bincount(np.searchsorted(order_ids, parcels.order_idx), weights=parcels.value, minlength=m),
            "reference": ref, "days_late": exp["days_late"], "exception": exp["exception"],
            "not_delivered": exp["not_delivered"], "failed_attempt": exp["failed_attempt"],
            "contacts": contacts, "rating": np.where(answered, rating, -1),
            "feedback_at": np.where(answered | (contacts > 0), ref + feedback_delay, np.nan),
            "p_churn": p_churn, "p_no_order_90d": p_no_order,
        }))
        count[active] += 1
        next_order[active] = np.where(churned, np.inf, nxt)
        active = active[next_order[active] <= world.t_end]

    report("tables", 0.99)
    orders = pd.concat(orders_parts, ignore_index=True)
    parcels = _sorted(_concat_parcels(parcel_parts))
    result = _build_tables(world, cfg, rng, orders, parcels, home, home_postal, first_seen)
    if keep_latent:
        result.latent = {"world": world, "parcels": parcels, "customers": people}
    report("done", 1.0)
    return result


def _customers(world: World, rng: np.random.Generator, n: int) -> Customers:
    home = rng.choice(len(REGIONS), size=n, p=world.population)
    home_postal = rng.integers(0, POSTALS_PER_REGION, size=n)
    rate_per_day = np.clip(rng.gamma(*ORDER_RATE_GAMMA, size=n), *ORDER_RATE_CLIP) / 365.0
    baseline = rng.normal(*CHURN_BASELINE, size=n)
    first_seen = rng.uniform(world.t_start - 240, world.t_end - 20, size=n)
    return Customers(home, home_postal, rate_per_day, baseline, first_seen, first_seen < world.t_start)


def _sorted(p: Parcels) -> Parcels:
    """Parcels by order time (ties by order), the order the shipments table numbers them in."""
    order_of = np.lexsort((p.order_idx, p.ordered))
    return Parcels(**{f: getattr(p, f)[order_of] for f in Parcels.__dataclass_fields__ if f != "truth"},
                   truth={k: v[order_of] for k, v in p.truth.items()})


def _order_experience(p: Parcels, p_order: np.ndarray, m: int) -> dict[str, np.ndarray]:
    """Per order: the worst of its parcels, and the moment the customer judges it."""
    late_days = np.where(np.isnan(p.promised) | np.isnan(p.delivered), 0.0,
                         np.maximum(np.floor(p.delivered) - np.floor(p.promised), 0.0))
    not_delivered = p.outcome > 0
    judged_at = np.where(not_delivered, np.where(np.isnan(p.promised), p.ordered + 10.0, p.promised), p.delivered)

    def worst(x):
        out = np.full(m, -np.inf)
        np.maximum.at(out, p_order, x)
        return out

    return {
        "days_late": worst(late_days),
        "exception": worst(p.exception.astype(float)) > 0,
        "not_delivered": worst(not_delivered.astype(float)) > 0,
        "failed_attempt": worst(p.failed_attempt.astype(float)) > 0,
        "reference": worst(judged_at),
    }


def _concat_parcels(parts: list[Parcels]) -> Parcels:
    fields = [f for f in Parcels.__dataclass_fields__ if f != "truth"]
    merged = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
    truth = {k: np.concatenate([p.truth[k] for p in parts]) for k in parts[0].truth}
    return Parcels(**merged, truth=truth)


# -------------------------------------------------------------------- the tables


def _ids(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in idx.tolist()], dtype=object)


def _postal_code(region: np.ndarray, postal: np.ndarray) -> np.ndarray:
    codes = np.array([[f"{100 + 20 * r + k:03d}" for k in range(POSTALS_PER_REGION)] for r in range(len(REGIONS))], dtype=object)
    return codes[region, postal]


def _build_tables(world: World, cfg: SimConfig, rng: np.random.Generator, orders: pd.DataFrame, p: Parcels,
                  home: np.ndarray, home_postal: np.ndarray, first_seen: np.ndarray) -> SimResult:
    t_end = world.t_end
    # Parcels come sorted by order time (``_sorted``), numbered in that order.
    n = len(p.order_idx)
    width = max(7, len(str(n)))
    shipment_ids = _ids(f"S{cfg.id_prefix}", np.arange(1, n + 1), width)
    # Orders were numbered 0..n-1 in the order they were placed, so index = order_idx.
    assert (orders.order_idx.to_numpy() == np.arange(len(orders))).all()
    order_ids_all = _ids(f"O{cfg.id_prefix}", np.arange(1, len(orders) + 1), width)
    customer_ids = _ids(f"C{cfg.id_prefix}", np.arange(1, len(home) + 1), max(6, len(str(len(home)))))
    cust_idx = orders.customer_idx.to_numpy()[p.order_idx]

    # What the data knows at its end: later events have not happened yet.
    shipped = np.where(p.shipped <= t_end, p.shipped, np.nan)
    delivered = np.where(p.delivered <= t_end, p.delivered, np.nan)
    carrier = np.array([c.carrier for c in CARRIER_SERVICES], dtype=object)[p.cs]
    service = np.array([c.service_level for c in CARRIER_SERVICES], dtype=object)[p.cs]
    wh_regions = np.array([r for r, _ in WAREHOUSES], dtype=object)
    wh_postals = np.array([z for _, z in WAREHOUSES], dtype=object)

    shipments = pd.DataFrame({
        "shipment_id": shipment_ids,
        "order_id": order_ids_all[p.order_idx],
        "customer_id": customer_ids[cust_idx],
        "carrier": carrier,
        "service_level": service,
        "origin_region": wh_regions[p.warehouse],
        "destination_region": world.region_codes[p.region].astype(object),
        "origin_postal": wh_postals[p.warehouse],
        "destination_postal": _postal_code(p.region, p.postal),
        "ordered_at": world.to_timestamps(p.ordered),
        "shipped_at": world.to_timestamps(shipped),
        "promised_at": world.to_timestamps(p.promised),
        "delivered_at": world.to_timestamps(delivered),
        "weight_kg": p.weight,
        "value": p.value,
    })
    for col in ("carrier", "service_level", "origin_region", "destination_region", "origin_postal", "destination_postal"):
        shipments[col] = shipments[col].astype("category")

    orders_table = pd.DataFrame({
        "order_id": order_ids_all,
        "customer_id": customer_ids[orders.customer_idx.to_numpy()],
        "ordered_at": world.to_timestamps(orders.ordered.to_numpy()),
        "value": np.round(orders.value.to_numpy(), 2),
    }).sort_values("ordered_at", kind="stable").reset_index(drop=True)

    fb = orders[orders.feedback_at.notna() & (orders.feedback_at <= t_end)]
    feedback = pd.DataFrame({
        "order_id": order_ids_all[fb.index.to_numpy()],
        "submitted_at": world.to_timestamps(fb.feedback_at.to_numpy()),
        "rating": pd.array(np.where(fb.rating.to_numpy() > 0, fb.rating.to_numpy(), 0), dtype="Int64"),
        "contacts": pd.array(fb.contacts.to_numpy(), dtype="Int64"),
    })
    feedback.loc[fb.rating.to_numpy() <= 0, "rating"] = pd.NA
    feedback = feedback.sort_values("submitted_at", kind="stable").reset_index(drop=True)

    seen = np.unique(cust_idx)
    customers = pd.DataFrame({
        "customer_id": customer_ids[seen],
        "region": world.region_codes[home[seen]].astype(object),
        "first_seen_at": world.to_timestamps(np.minimum(first_seen[seen], world.t_end)),
    })

    locations = _locations(world)
    scans = _scans(world, cfg, rng, p, shipment_ids, t_end)

    truth_shipments = pd.DataFrame({
        "shipment_id": shipment_ids,
        "p10_at": world.to_timestamps(p.truth["p10"]),
        "p50_at": world.to_timestamps(p.truth["p50"]),
        "p90_at": world.to_timestamps(p.truth["p90"]),
        "p10_hours": (p.truth["p10"] - p.ordered) * 24.0,
        "p50_hours": (p.truth["p50"] - p.ordered) * 24.0,
        "p90_hours": (p.truth["p90"] - p.ordered) * 24.0,
        "p_late": p.truth["p_late"],
        "p_not_delivered": p.truth["p_not_delivered"],
        "mean_transit_days": p.truth["mean_transit_days"],
        "storm_soon": p.truth["storm_soon"],
        "peak": p.truth["peak"],
        "outcome": np.array(["delivered", "lost", "returned"], dtype=object)[p.outcome],
        "actual_delivered_at": world.to_timestamps(p.delivered),
    })
    truth_orders = pd.DataFrame({
        "order_id": order_ids_all,
        "customer_id": customer_ids[orders.customer_idx.to_numpy()],
        "judged_at": world.to_timestamps(orders.reference.to_numpy()),
        "p_churn": orders.p_churn.to_numpy(),
        "p_no_order_90d": orders.p_no_order_90d.to_numpy(),
        "days_late": orders.days_late.to_numpy(),
        "exception": orders.exception.to_numpy(),
        "not_delivered": orders.not_delivered.to_numpy(),
        "contacts": orders.contacts.to_numpy(),
    })
    storms = pd.DataFrame({
        "region": world.region_codes[world.storms.region.to_numpy()],
        "start": world.to_timestamps(world.storms.start_day.to_numpy().astype(float)),
        "end": world.to_timestamps((world.storms.start_day + world.storms.days).to_numpy().astype(float)),
    })

    has_promise = ~np.isnan(p.promised)
    delivered_known = ~np.isnan(delivered) & has_promise
    late = np.floor(delivered[delivered_known]) > np.floor(p.promised[delivered_known])
    peak_known = p.truth["peak"][delivered_known]
    summary = {
        "customers": float(len(seen)),
        "orders": float(len(orders_table)),
        "shipments": float(n),
        "scans": float(len(scans)),
        "late_share": float(late.mean()) if len(late) else float("nan"),
        "late_share_peak": float(late[peak_known].mean()) if peak_known.any() else float("nan"),
        "late_share_off_peak": float(late[~peak_known].mean()) if (~peak_known).any() else float("nan"),
    }
    tables = {"shipments": shipments, "scans": scans, "orders": orders_table, "feedback": feedback,
              "customers": customers, "locations": locations}
    return SimResult(tables, {"shipments": truth_shipments, "orders": truth_orders, "storms": storms}, summary)


def _locations(world: World) -> pd.DataFrame:
    keys, kinds, lats, lons = [], [], [], []
    for r, code in enumerate(world.region_codes):
        keys.append(code), kinds.append("region"), lats.append(world.lat[r]), lons.append(world.lon[r])
        for k in range(POSTALS_PER_REGION):
            keys.append(_postal_code(np.array([r]), np.array([k]))[0]), kinds.append("postal")
            lats.append(round(world.lat[r] + world.postal_offsets[r, k, 0], 4))
            lons.append(round(world.lon[r] + world.postal_offsets[r, k, 1], 4))
    return pd.DataFrame({"key": keys, "kind": kinds, "latitude": lats, "longitude": lons})


EVENT_CODES = {e: i for i, e in enumerate((
    "label_created", "picked_up", "departed_facility", "arrived_at_facility", "in_transit",
    "out_for_delivery", "delivery_attempted", "exception", "delivered", "returned_to_sender"))}


def _scans(world: World, cfg: SimConfig, rng: np.random.Generator, p: Parcels, shipment_ids: np.ndarray,
           t_end: float) -> pd.DataFrame:
    """Carrier tracking events with realistic timing, some missing, some skewed."""
    n = len(shipment_ids)
    idx_all = np.arange(n)
    dist = world.distance_km[p.warehouse, p.region]
    n_hops = np.clip(1 + (dist // 700).astype(np.int64), 1, 5)
    # How far along the route (in clock units) a parcel got before it was lost.
    total = np.where(p.outcome == 0, p.delivered_clock - p.ship_clock, rng.uniform(0.5, 3.0, n))
    stop_frac = np.where(p.outcome == 1, rng.uniform(0.2, 0.8, n), 1.0)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # idx, time, event, region

    def add(idx, t, event, region):
        parts.append((idx, t, np.full(len(idx), EVENT_CODES[event]), region))

    origin_region = world.wh_region[p.warehouse]
    label = p.ordered + rng.uniform(0.05, 0.6, n) * (p.shipped - p.ordered)
    add(idx_all, label, "label_created", origin_region)
    add(idx_all, p.shipped, "picked_up", origin_region)

    # Facility hops spaced along the route's operating time.
    rep = np.repeat(idx_all, n_hops)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(n_hops) - n_hops, n_hops) + 1
    frac = k / (n_hops[rep] + 1.0) + rng.uniform(-0.08, 0.08, len(rep))
    reached = frac < stop_frac[rep]
    rep, k, frac = rep[reached], k[reached], frac[reached]
    arrive = world.clock_inverse(p.cs[rep], p.region[rep], p.ship_clock[rep] + frac * total[rep])
    arrive = np.maximum(arrive, p.shipped[rep] + 0.05)
    hop_region = np.where(k <= n_hops[rep] // 2, origin_region[rep], p.region[rep])
    depart = arrive + rng.uniform(2, 8, len(rep)) / 24.0
    # A share of hub scans come with a clock skew: recorded before the event before them.
    skew = rng.random(len(rep)) < cfg.skewed_scan_share
    arrive = np.where(skew, arrive - rng.uniform(3, 10, len(rep)) / 24.0, arrive)
    add(rep, arrive, "arrived_at_facility", hop_region)
    add(rep, depart, "departed_facility", hop_region)
    mid = rep[rng.random(len(rep)) < 0.25]
    add(mid, depart[np.searchsorted(rep, mid)] + 0.3, "in_transit", p.region[mid])

    exc = idx_all[p.exception | (p.outcome == 2)]
    exc_t = world.clock_inverse(p.cs[exc], p.region[exc], p.ship_clock[exc] + 0.5 * total[exc])
    add(exc, exc_t, "exception", p.region[exc])

    ret = idx_all[p.outcome == 2]
    add(ret, world.clock_inverse(p.cs[ret], p.region[ret], p.ship_clock[ret] + total[ret]) + rng.uniform(3, 8, len(ret)),
        "returned_to_sender", origin_region[ret])

    dlv = idx_all[p.outcome == 0]
    deliver_day = np.floor(p.delivered[dlv])
    add(dlv, deliver_day + rng.uniform(6.5, 8.5, len(dlv)) / 24.0, "out_for_delivery", p.region[dlv])
    add(dlv, p.delivered[dlv], "delivered", p.region[dlv])
    att = dlv[p.failed_attempt[dlv]]
    att_t = world.clock_inverse(p.cs[att], p.region[att], p.delivered_clock[att] - FAILED_ATTEMPT_DAYS)
    add(att, np.floor(att_t) + rng.uniform(10, 19, len(att)) / 24.0, "delivery_attempted", p.region[att])

    idx = np.concatenate([a[0] for a in parts])
    t = np.concatenate([a[1] for a in parts])
    ev = np.concatenate([a[2] for a in parts])
    reg = np.concatenate([a[3] for a in parts])
    # Scans never precede the order and only those seen by the end of the data exist.
    t = np.maximum(t, p.ordered[idx] + 1.0 / 1440.0)
    keep = (t <= t_end) & ((ev == EVENT_CODES["delivered"]) | (rng.random(len(idx)) >= cfg.missing_scan_share))
    idx, t, ev, reg = idx[keep], t[keep], ev[keep], reg[keep]
    order = np.argsort(t, kind="stable")  # a carrier feed: by time across shipments
    idx, t, ev, reg = idx[order], t[order], ev[order], reg[order]

    events = np.array(list(EVENT_CODES), dtype=object)
    detail = np.full(len(idx), None, dtype=object)
    detail[ev == EVENT_CODES["exception"]] = np.where(
        rng.random(int((ev == EVENT_CODES["exception"]).sum())) < 0.5, "weather or operational delay", "address issue")
    return pd.DataFrame({
        "shipment_id": pd.Categorical.from_codes(idx, categories=shipment_ids),
        "scanned_at": world.to_timestamps(t),
        "event": pd.Categorical.from_codes(ev, categories=events),
        "region": pd.Categorical.from_codes(reg, categories=world.region_codes),
        "postal": pd.Series(np.where(ev == EVENT_CODES["delivered"], _postal_code(p.region[idx], p.postal[idx]), None), dtype="str"),
        "detail": pd.Series(detail, dtype="str"),
    })


#: shipments per simulated customer over the default two years (measured: 3.83)
SHIPMENTS_PER_CUSTOMER = 3.8


def simulate_in_slices(cfg: SimConfig, slices: int, folder: Path,
                       progress: Callable[[str, float], None] | None = None) -> dict[str, float]:
    """``cfg.customers`` customers in ``slices`` independent slices of one world, each
    written as part ``i`` of every table (and of the truth) before the next is made, so
    memory holds one slice whatever the total. Returns the summed counts."""
    from dataclasses import replace

    from data.write import write_part, write_table

    from data.contract import TABLES

    report = progress or (lambda stage, frac: None)
    for name in [*TABLES, *(f"truth/{t}" for t in ("shipments", "orders"))]:  # an earlier set's files would mix in
        for old in [*(folder / name).glob("part-*.parquet"), folder / f"{name}.parquet", folder / f"{name}.csv"]:
            old.unlink(missing_ok=True)
    per = int(np.ceil(cfg.customers / slices))
    totals: dict[str, float] = {}
    for i in range(slices):
        report(f"slice {i + 1} of {slices}", i / slices)
        result = simulate(replace(cfg, customers=per, slice=i, id_prefix=f"{i:04d}-" if slices > 1 else ""))
        for name, table in result.tables.items():
            if name != "locations":
                write_part(table, folder / name, name, i)
            elif i == 0:
                write_table(table, folder, name)  # one world: the same locations in every slice
        for name, table in result.truth.items():
            if name != "storms":
                table.to_parquet(_fresh(folder / TRUTH_DIR / name) / f"part-{i:05d}.parquet", index=False)
            elif i == 0:
                table.to_parquet(_fresh(folder / TRUTH_DIR) / "storms.parquet", index=False)
        for k in ("customers", "orders", "shipments", "scans"):
            totals[k] = totals.get(k, 0.0) + result.summary[k]
        del result
    report("done", 1.0)
    return totals


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_truth(truth: dict[str, pd.DataFrame], folder: Path) -> Path:
    """The truth tables go to ``truth/`` inside the data set: models never read it."""
    target = Path(folder) / TRUTH_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name, df in truth.items():
        df.to_parquet(target / f"{name}.parquet", index=False)
    return target
