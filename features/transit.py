"""In-transit features: what the scans seen so far say about a parcel at a moment.

``transit_features`` works for any (shipment, moment) pairs: the snapshots training
takes at each scan of history, a batch ``--as-of`` moment, or a live request with
its scans so far. Only scans strictly before the moment count, and ``shipped_at``
only once it has happened.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.pit import NAT, US_PER_HOUR, EventIndex, hours_between, micros

FACILITY_EVENTS = ("arrived_at_facility", "departed_facility", "in_transit")
TRANSIT_CATEGORICAL = ("last_event",)
MAX_SNAPSHOT_GAP_H = 24.0


def _codes(ids: pd.Series, vocabulary: pd.Index) -> np.ndarray:
    return vocabulary.get_indexer(ids.astype("str"))


def transit_features(shipments: pd.DataFrame, scans: pd.DataFrame | None, moments: pd.DataFrame) -> pd.DataFrame:
    """One row per (shipment_id, as_of) in ``moments``."""
    ids = pd.Index(shipments.shipment_id.astype("str"))
    pos = _codes(moments.shipment_id, ids)
    if (pos < 0).any():
        unknown = moments.shipment_id[pos < 0].iloc[0]
        raise KeyError(f"moment for unknown shipment {unknown!r}")
    at = micros(moments.as_of)
    scans = scans if scans is not None else pd.DataFrame({"shipment_id": [], "scanned_at": pd.Series([], dtype="datetime64[us, UTC]"), "event": [], "region": []})
    scan_pos = _codes(scans.shipment_id, ids)
    scan_at = micros(scans.scanned_at)
    event = scans.event.astype("str").to_numpy()
    region = scans.region.astype("str").to_numpy() if "region" in scans else np.full(len(scans), None)

    def count(mask: np.ndarray) -> np.ndarray:
        return EventIndex(scan_pos[mask], scan_at[mask]).count_before(pos, at).astype(np.float32)

    last = EventIndex(scan_pos, scan_at).last_before(pos, at)
    has_last = last >= 0
    last_at = np.where(has_last, scan_at[np.maximum(last, 0)] if len(scan_at) else NAT, NAT)
    pickups = EventIndex(scan_pos[event == "picked_up"], scan_at[event == "picked_up"])
    first_pickup = np.where(pickups.count_before(pos, at) > 0, pickups.first_time(pos), NAT)
    shipped = micros(shipments.shipped_at)[pos]
    shipped_known = (shipped != NAT) & (shipped < at)
    pickup = np.where(shipped_known & ((first_pickup == NAT) | (shipped < first_pickup)), shipped, first_pickup)
    destination = shipments.destination_region.astype("str").to_numpy()[pos]
    last_region = np.where(has_last, region[np.maximum(last, 0)] if len(region) else None, None)

    return pd.DataFrame({
        "shipment_id": moments.shipment_id.astype("str").to_numpy(),
        "as_of": moments.as_of.to_numpy(),
        "hours_since_order": hours_between(at, micros(shipments.ordered_at)[pos]).astype(np.float32),
        "picked_up": (pickup != NAT).astype(np.float32),
        "hours_since_pickup": hours_between(at, pickup).astype(np.float32),
        "last_event": pd.Series(np.where(has_last, event[np.maximum(last, 0)] if len(event) else None, None), dtype="str").to_numpy(),
        "last_event_age_h": hours_between(at, last_at).astype(np.float32),
        "scans_so_far": count(np.ones(len(scans), dtype=bool)),
        "facility_scans": count(np.isin(event, FACILITY_EVENTS)),
        "exceptions_so_far": count(event == "exception"),
        "attempts_so_far": count(event == "delivery_attempted"),
        "out_for_delivery_seen": count(event == "out_for_delivery"),
        "in_destination_region": (has_last & (last_region == destination)).astype(np.float32),
    })


def training_moments(shipments: pd.DataFrame, scans: pd.DataFrame | None, end: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """In-transit snapshot moments: one after each scan from pickup on, before delivery.

    Each snapshot lands at a random point between its scan and the next one (at most a
    day later), so the age of the last event looks like it does for live requests.
    """
    if scans is None or not len(scans):
        return pd.DataFrame({"shipment_id": pd.Series([], dtype="str"), "as_of": pd.Series([], dtype="datetime64[us, UTC]")})
    s = scans[~scans.event.isin(["label_created", "delivered", "returned_to_sender"])]
    s = s.assign(shipment_id=s.shipment_id.astype("str")).sort_values(["shipment_id", "scanned_at"], kind="stable")
    t = micros(s.scanned_at)
    same_next = np.r_[s.shipment_id.to_numpy()[1:] == s.shipment_id.to_numpy()[:-1], False]
    next_t = np.where(same_next, np.r_[t[1:], 0], t + int(MAX_SNAPSHOT_GAP_H * US_PER_HOUR))
    gap = np.clip(next_t - t, 60_000_000, int(MAX_SNAPSHOT_GAP_H * US_PER_HOUR))
    rng = np.random.default_rng(seed)
    as_of = t + (rng.uniform(0.02, 0.98, len(t)) * gap).astype(np.int64)
    delivered = micros(s.shipment_id.map(shipments.set_index(shipments.shipment_id.astype("str")).delivered_at))
    end_us = micros(pd.Series([end]))[0]
    keep = ((delivered == NAT) | (as_of < delivered)) & (as_of <= end_us)
    return pd.DataFrame({
        "shipment_id": s.shipment_id.to_numpy()[keep],
        "as_of": pd.to_datetime(as_of[keep], unit="us", utc=True).astype("datetime64[us, UTC]"),
    })
