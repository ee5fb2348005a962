"""At-order model rows: what is known about a shipment when the customer checks out.

``shipment_features`` is the one function that turns shipments (columns) into model
rows for training, batch scoring and a single HTTP request alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.calendar import calendar_features
from features.history import History
from features.pit import NAT, US_PER_HOUR, Columns, Lookup, micros

CATEGORICAL = ("carrier", "service_level", "origin_region", "destination_region")
EARTH_RADIUS_KM = 6371.0


class Locations:
    """Coordinates by region and postal value, for distances."""

    def __init__(self, locations: pd.DataFrame | None):
        loc = locations if locations is not None else pd.DataFrame(columns=["key", "kind", "latitude", "longitude"])
        self.table = loc[["key", "kind", "latitude", "longitude"]].reset_index(drop=True)
        self._by_kind = {}
        for kind, g in self.table.groupby("kind"):
            points = np.column_stack([g.latitude.to_numpy(dtype=float), g.longitude.to_numpy(dtype=float)])
            # The extra last row is an unknown key (code -1): NaN coordinates.
            self._by_kind[kind] = (Lookup(g.key.astype("str").tolist()), np.vstack([points, [np.nan, np.nan]]))

    def coords(self, keys: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
        found = self._by_kind.get(kind)
        if found is None:
            nan = np.full(len(keys), np.nan)
            return nan, nan
        lookup, points = found
        at = points[lookup.codes(keys)]
        return at[:, 0], at[:, 1]

    def distance_km(self, shipments) -> np.ndarray:
        """Great-circle distance, postal to postal where both are known, else region to region."""
        best = np.full(len(shipments["carrier"]), np.nan)
        for kind, origin, destination in (("postal", "origin_postal", "destination_postal"),
                                          ("region", "origin_region", "destination_region")):
            if origin not in shipments or destination not in shipments:
                continue
            lat1, lon1 = self.coords(shipments[origin], kind)
            lat2, lon2 = self.coords(shipments[destination], kind)
            best = np.where(np.isnan(best), _haversine(lat1, lon1, lat2, lon2), best)
        return best


def _haversine(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def shipment_features(shipments, history: History, locations: Locations, country: str) -> Columns:
    """One row per shipment with its at-order features (as of its ``ordered_at``).

    ``shipments`` maps the contract's column names to arrays (see ``features.pit``)."""
    ordered_us = micros(shipments["ordered_at"])
    promised_us = micros(shipments["promised_at"])
    n = len(ordered_us)
    return {
        "shipment_id": np.asarray(shipments["shipment_id"], dtype=object),
        **{c: np.asarray(shipments[c], dtype=object) for c in CATEGORICAL},
        "weight_kg": _floats(shipments, "weight_kg", n),
        "value": _floats(shipments, "value", n),
        "distance_km": locations.distance_km(shipments).astype(np.float32),
        "promise_hours": np.where(promised_us == NAT, np.nan, (promised_us - ordered_us) / US_PER_HOUR).astype(np.float32),
        **calendar_features(ordered_us, promised_us, country),
        **history.feature_columns(shipments, ordered_us),
    }


def _floats(cols, name: str, n: int) -> np.ndarray:
    return np.asarray(cols[name], dtype=np.float32) if name in cols else np.full(n, np.nan, dtype=np.float32)
