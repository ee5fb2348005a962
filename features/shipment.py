"""At-order model rows: what is known about a shipment when the customer checks out.

``shipment_features`` is the one function that turns shipments into model rows for
training, batch scoring and a single HTTP request alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.calendar import calendar_features
from features.history import History
from features.pit import SMALL, US_PER_HOUR, micros

CATEGORICAL = ("carrier", "service_level", "origin_region", "destination_region")
EARTH_RADIUS_KM = 6371.0


class Locations:
    """Coordinates by region and postal value, for distances."""

    def __init__(self, locations: pd.DataFrame | None):
        loc = locations if locations is not None else pd.DataFrame(columns=["key", "kind", "latitude", "longitude"])
        self.table = loc[["key", "kind", "latitude", "longitude"]].reset_index(drop=True)
        self._by_kind = {kind: g.set_index("key")[["latitude", "longitude"]] for kind, g in self.table.groupby("kind")}
        self._points: dict[str, dict] = {}

    def coords(self, keys: pd.Series, kind: str) -> tuple[np.ndarray, np.ndarray]:
        table = self._by_kind.get(kind)
        if table is None:
            nan = np.full(len(keys), np.nan)
            return nan, nan
        if len(keys) <= SMALL:  # a live request: dict lookups instead of an index set-up
            if kind not in self._points:
                self._points[kind] = dict(zip(table.index.astype("str"), zip(table.latitude.astype(float), table.longitude.astype(float))))
            found = [self._points[kind].get(k, (np.nan, np.nan)) if isinstance(k, str) else (np.nan, np.nan)
                     for k in keys.tolist()]
            return np.array([f[0] for f in found], dtype=float), np.array([f[1] for f in found], dtype=float)
        found = table.reindex(keys.astype("str").to_numpy())
        return found.latitude.to_numpy(dtype=float), found.longitude.to_numpy(dtype=float)

    def distance_km(self, shipments: pd.DataFrame) -> np.ndarray:
        """Great-circle distance, postal to postal where both are known, else region to region."""
        best = np.full(len(shipments), np.nan)
        for kind, origin, destination in (("postal", "origin_postal", "destination_postal"),
                                          ("region", "origin_region", "destination_region")):
            lat1, lon1 = self.coords(shipments[origin], kind)
            lat2, lon2 = self.coords(shipments[destination], kind)
            best = np.where(np.isnan(best), _haversine(lat1, lon1, lat2, lon2), best)
        return best


def _haversine(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def shipment_features(shipments: pd.DataFrame, history: History, locations: Locations, country: str) -> pd.DataFrame:
    """One row per shipment with its at-order features (as of its ``ordered_at``)."""
    ordered_us = micros(shipments.ordered_at)
    promised_us = micros(shipments.promised_at)
    calendar = calendar_features(shipments.ordered_at, shipments.promised_at, country)
    # One frame built once from arrays: at a million rows every intermediate copy is ~0.5 GB.
    return pd.DataFrame({
        "shipment_id": shipments.shipment_id.astype("str").reset_index(drop=True),
        **{c: shipments[c].astype("str").reset_index(drop=True) for c in CATEGORICAL},
        "weight_kg": shipments.weight_kg.to_numpy(dtype=np.float32),
        "value": shipments.value.to_numpy(dtype=np.float32),
        "distance_km": locations.distance_km(shipments).astype(np.float32),
        "promise_hours": np.where(promised_us == np.iinfo(np.int64).min, np.nan,
                                  (promised_us - ordered_us) / US_PER_HOUR).astype(np.float32),
        **{c: calendar[c].to_numpy() for c in calendar.columns},
        **history.feature_columns(shipments, ordered_us),
    })
