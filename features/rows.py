"""Model rows for (shipment, moment) pairs: the one way EDD and delay rows are made.

``shipment_rows`` turns (shipment_id, as_of) pairs into rows for the EDD and delay
models in training, ``eddy predict`` and the service alike: the at-order features of
the shipment joined with what its scans say at the moment. At order time the moment
is ``ordered_at`` itself, so no scan is seen yet and one model serves both moments.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.build import FeatureSnapshot, add_progress
from features.shipment import CATEGORICAL, shipment_features
from features.transit import TRANSIT_CATEGORICAL, transit_features

SHIPMENT_CATEGORICAL = CATEGORICAL + TRANSIT_CATEGORICAL


def shipment_rows(shipments: pd.DataFrame, scans: pd.DataFrame | None, moments: pd.DataFrame,
                  snapshot: FeatureSnapshot, at_order_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Model rows for (shipment_id, as_of) pairs: at-order features + scans so far."""
    if at_order_rows is None:
        at_order_rows = shipment_features(shipments, snapshot.history, snapshot.locations, snapshot.country)
    transit = add_progress(transit_features(shipments, scans, moments), at_order_rows)
    # A positional join: at-order rows are unique per shipment (get_indexer insists).
    where = pd.Index(at_order_rows.shipment_id).get_indexer(transit.shipment_id)
    if (where < 0).any():
        raise KeyError(f"no at-order row for shipment {transit.shipment_id[where < 0].iloc[0]!r}")
    at = at_order_rows.take(where)
    rows = pd.concat([transit, at.drop(columns="shipment_id").reset_index(drop=True)], axis=1)
    rows["hours_to_promise"] = (rows.promise_hours - rows.hours_since_order).astype(np.float32)
    return rows


def order_moments(shipments: pd.DataFrame) -> pd.DataFrame:
    """Each shipment at its order moment."""
    return pd.DataFrame({"shipment_id": shipments.shipment_id.astype("str").to_numpy(),
                         "as_of": shipments.ordered_at.reset_index(drop=True)})
