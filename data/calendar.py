"""Calendar facts shared by the simulator and the feature pipelines: holidays and peak.

Holidays come from the maintained ``holidays`` library, never a hand-typed list.
"""

from __future__ import annotations

from functools import lru_cache

import holidays as holidays_lib
import numpy as np
import pandas as pd

#: Region codes that mark a Brazilian data set (Olist); anything else uses US holidays
#: unless a country is given.
BRAZIL_STATES = frozenset(
    "AC AL AM AP BA CE DF ES GO MA MG MS MT PA PB PE PI PR RJ RN RO RR RS SC SE SP TO".split()
)


def black_friday_of(year: int) -> pd.Timestamp:
    """The day after the fourth Thursday of November."""
    nov1 = pd.Timestamp(year, 11, 1)
    first_thursday = nov1 + pd.Timedelta(days=(3 - nov1.weekday()) % 7)
    return first_thursday + pd.Timedelta(weeks=3, days=1)


@lru_cache(maxsize=16)
def holiday_dates(country: str, first_year: int, last_year: int) -> np.ndarray:
    """Public holidays of ``country`` as sorted ``datetime64[D]``."""
    days = holidays_lib.country_holidays(country, years=range(first_year, last_year + 1))
    return np.array(sorted(days), dtype="datetime64[D]")


def guess_country(regions: pd.Series) -> str:
    """'BR' when most destination regions are Brazilian states, else 'US'."""
    return country_of_counts(regions.value_counts())


def country_of_counts(counts: pd.Series) -> str:
    """``guess_country`` from shipments counted per destination region (counts of parts add up)."""
    total = counts.sum()
    if total and counts[counts.index.isin(BRAZIL_STATES)].sum() / total > 0.8:
        return "BR"
    return "US"
