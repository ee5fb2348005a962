"""Carriers' operating days: a clock that runs on the days a carrier delivers and stands still on the others.

The EDD boosters learn the time to delivery on this clock (log of operating hours), not
on the calendar. A parcel that needs two of UPS's working days takes two whether a
weekend falls between them or not, so the boosters no longer have to rebuild each
carrier's week from the order's weekday, hour and the lane's length. Measured on the
default set's test window, the median booster alone: MAE 0.968 -> 0.875 days at order
and 0.522 -> 0.411 in transit (README, "Models").

Each (carrier, service level) has a weight per weekday and one for public holidays,
1 where it delivers and 0 where it does not (``training.models.fit_clock`` learns them
from the training window's deliveries). A pair not seen in training runs on the clock
of every carrier together. The clock is monotone in time, so a quantile of operating
hours maps to the same quantile of calendar hours: an interval keeps its coverage.
"""

from __future__ import annotations

import numpy as np

from data.calendar import holiday_dates
from features.pit import US_PER_DAY, Lookup, micros

#: the clock of a (carrier, service level) pair training did not see: every carrier together
ANY = "*"
#: years of days the clock is laid out for around the training data (a moment outside
#: them moves into them by whole 52-week years); a version is retrained long before
YEARS_BEFORE, YEARS_AFTER = 1, 10
#: days at the span's end an interval may still run into (``OperatingClock._in_span``)
SPARE_DAYS = 366


def pair_names(carrier, service) -> np.ndarray:
    """The clock's name of each row's (carrier, service level)."""
    return np.array([f"{c}/{s}" for c, s in zip(np.asarray(carrier, dtype=object).tolist(),
                                                  np.asarray(service, dtype=object).tolist())], dtype=object)


class OperatingClock:
    """Operating hours between moments, and the calendar hours some operating hours take.

    ``weeks``: per pair name (and ``ANY``), seven weights Monday to Sunday; ``holidays``:
    per pair name the weight of a public holiday of ``country``; ``years``: the first and
    last calendar year of the training data."""

    def __init__(self, weeks: dict[str, list[float]], holidays: dict[str, float], country: str,
                 years: tuple[int, int]):
        self.weeks, self.holidays, self.country, self.years = weeks, holidays, country, tuple(years)
        names = list(weeks)
        pairs = [name.split("/", 1) for name in names if name != ANY]
        self._carriers = Lookup(dict.fromkeys(c for c, _ in pairs))
        self._services = Lookup(dict.fromkeys(s for _, s in pairs))
        # clock row of (carrier code, service code); the last row and column are for unseen ones
        self._pair = np.full((len(self._carriers) + 1, len(self._services) + 1), names.index(ANY), dtype=np.int64)
        for c, s in pairs:
            self._pair[self._carriers.keys.index(c), self._services.keys.index(s)] = names.index(f"{c}/{s}")
        first_year, last_year = years[0] - YEARS_BEFORE, years[1] + YEARS_AFTER
        self._first = int(np.datetime64(f"{first_year}-01-01", "D").astype(np.int64))
        days = np.arange(self._first, int(np.datetime64(f"{last_year + 1}-01-01", "D").astype(np.int64)))
        holiday = np.isin(days, holiday_dates(country, first_year, last_year).astype(np.int64))
        weekday = (days + 3) % 7  # day 0 (1970-01-01) was a Thursday
        self._rate = np.stack([np.where(holiday, holidays[name], np.asarray(weeks[name], dtype=float)[weekday])
                               for name in names])
        # each clock's running total at the start of every day, and at the end of the last
        self._cum = np.concatenate([np.zeros((len(self._rate), 1)), np.cumsum(self._rate, axis=1)], axis=1)

    def codes(self, carrier, service) -> np.ndarray:
        """Each row's clock (the pooled one where training did not see the pair)."""
        return self._pair[self._carriers.codes(np.asarray(carrier, dtype=object)),
                          self._services.codes(np.asarray(service, dtype=object))]  # -1: the unseen row

    def reading(self, codes: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Operating days on each row's clock (``codes``, one per row) from its first day to
        ``days`` (float days since 1970): ``runtime.compiled.clock_reading``, the one
        definition ``calendar_hours`` reads too."""
        from runtime import compiled  # numba: imported by the code that uses the clock

        days = np.ascontiguousarray(days, dtype=float)
        return compiled.clock_readings(self._cum, self._rate, float(self._first),
                                       np.ascontiguousarray(codes, dtype=np.int64), days, np.empty(days.shape))

    def operating_hours(self, codes: np.ndarray, start, hours) -> np.ndarray:
        """Operating hours from ``start`` (timestamps) to ``hours`` calendar hours later."""
        start_days = self._in_span(micros(start) / US_PER_DAY)
        end_days = start_days + np.asarray(hours, dtype=float) / 24.0
        return (self.reading(codes, end_days) - self.reading(codes, start_days)) * 24.0

    def _in_span(self, days: np.ndarray) -> np.ndarray:
        """``days`` (float days since 1970), each moved by whole 52-week years into the
        laid-out span where it lies outside it (with a year to spare at the end), so an
        interval from it keeps its weekdays and, within days, its season; the holidays are
        the span's. Without it a moment years before the training data read a clock that
        stood still there: an Olist order of 2016 predicted by a model of 2025 got an ETA
        in 2023."""
        lo, hi = self._first, self._first + self._rate.shape[1] - SPARE_DAYS
        if not len(days) or (days.min() >= lo and days.max() <= hi):  # every training row and live request
            return days
        years = np.where(days < lo, np.ceil((lo - days) / 364), np.where(days > hi, -np.ceil((days - hi) / 364), 0))
        return days + 364 * years

    def calendar_hours(self, codes: np.ndarray, start, operating_hours) -> np.ndarray:
        """Calendar hours from ``start`` (timestamps) until each row's clock has run
        ``operating_hours`` (one value per row, or a matrix with a row per start): the
        reading and its inverse in one compiled loop (``runtime.compiled``)."""
        from runtime import compiled  # numba: imported by the code that uses the clock

        h = np.asarray(operating_hours, dtype=float)
        matrix = h.reshape(len(h), -1) if h.ndim else h.reshape(1, 1)
        out = np.empty(matrix.shape)
        compiled.calendar_hours(self._cum, self._rate, float(self._first), np.asarray(codes, dtype=np.int64),
                                self._in_span(micros(start) / US_PER_DAY), np.ascontiguousarray(matrix), out)
        return out.reshape(h.shape)

    def to_dict(self) -> dict:
        return {"weeks": self.weeks, "holidays": self.holidays, "country": self.country, "years": list(self.years)}

    @classmethod
    def from_dict(cls, d: dict) -> "OperatingClock":
        return cls(d["weeks"], d["holidays"], d["country"], tuple(d["years"]))
