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
    """Positions of ids in the vocabulary; categorical ids built on it map for free."""
    if isinstance(ids.dtype, pd.CategoricalDtype) and ids.cat.categories.equals(vocabulary):
        return ids.cat.codes.to_numpy().astype(np.int64)
    return vocabulary.get_indexer(ids.astype("str"))


def _sorted_scans(shipments: pd.DataFrame, scans: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Scans as arrays sorted by (shipment position, time), events and regions as codes."""
    if scans is None or not len(scans):
        empty = np.array([], dtype=np.int64)
        return {"pos": empty, "at": empty, "event": empty, "events": pd.Index([]), "region": empty, "regions": pd.Index([])}
    ids = pd.Index(shipments.shipment_id.astype("str"))
    pos = _codes(scans.shipment_id, ids)
    at = micros(scans.scanned_at)
    order = np.lexsort((at, pos))
    event, events = pd.factorize(scans.event.iloc[order])
    region, regions = pd.factorize(scans.region.iloc[order]) if "region" in scans else (np.full(len(order), -1), pd.Index([]))
    return {"pos": pos[order], "at": at[order], "event": event, "events": pd.Index(events.astype("str")),
            "region": region, "regions": pd.Index(regions.astype("str"))}


def transit_features(shipments: pd.DataFrame, scans: pd.DataFrame | None, moments: pd.DataFrame) -> pd.DataFrame:
    """One row per (shipment_id, as_of) in ``moments``."""
    ids = pd.Index(shipments.shipment_id.astype("str"))
    pos = _codes(moments.shipment_id, ids)
    if (pos < 0).any():
        unknown = moments.shipment_id[pos < 0].iloc[0]
        raise KeyError(f"moment for unknown shipment {unknown!r}")
    at = micros(moments.as_of)
    sc = _sorted_scans(shipments, scans)

    def is_event(*names: str) -> np.ndarray:
        codes = [c for c in sc["events"].get_indexer(list(names)) if c >= 0]
        return np.isin(sc["event"], codes)

    def count(mask: np.ndarray) -> np.ndarray:
        return EventIndex(sc["pos"][mask], sc["at"][mask], presorted=True).count_before(pos, at).astype(np.float32)

    last = EventIndex(sc["pos"], sc["at"], presorted=True).last_before(pos, at)
    has_last = last >= 0
    safe = np.maximum(last, 0)
    last_at = np.where(has_last, sc["at"][safe] if len(sc["at"]) else NAT, NAT)
    picked = is_event("picked_up")
    pickups = EventIndex(sc["pos"][picked], sc["at"][picked], presorted=True)
    first_pickup = np.where(pickups.count_before(pos, at) > 0, pickups.first_time(pos), NAT)
    shipped = micros(shipments.shipped_at)[pos]
    shipped_known = (shipped != NAT) & (shipped < at)
    pickup = np.where(shipped_known & ((first_pickup == NAT) | (shipped < first_pickup)), shipped, first_pickup)
    last_event_code = np.where(has_last, sc["event"][safe] if len(sc["event"]) else -1, -1)
    destination = sc["regions"].get_indexer(shipments.destination_region.astype("str"))[pos]
    last_region = np.where(has_last, sc["region"][safe] if len(sc["region"]) else -1, -1)

    return pd.DataFrame({
        "shipment_id": moments.shipment_id.reset_index(drop=True),
        "as_of": moments.as_of.reset_index(drop=True),
        "hours_since_order": hours_between(at, micros(shipments.ordered_at)[pos]).astype(np.float32),
        "picked_up": (pickup != NAT).astype(np.float32),
        "hours_since_pickup": hours_between(at, pickup).astype(np.float32),
        "last_event": pd.Categorical.from_codes(last_event_code, categories=sc["events"]).astype("str"),
        "last_event_age_h": hours_between(at, last_at).astype(np.float32),
        "scans_so_far": count(np.ones(len(sc["pos"]), dtype=bool)),
        "facility_scans": count(is_event(*FACILITY_EVENTS)),
        "exceptions_so_far": count(is_event("exception")),
        "attempts_so_far": count(is_event("delivery_attempted")),
        "out_for_delivery_seen": count(is_event("out_for_delivery")),
        "in_destination_region": (has_last & (last_region >= 0) & (last_region == destination)).astype(np.float32),
    })


def training_moments(shipments: pd.DataFrame, scans: pd.DataFrame | None, end: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """In-transit snapshot moments: one after each scan from pickup on, before delivery.

    Each snapshot lands at a random point between its scan and the next one (at most a
    day later), so the age of the last event looks like it does for live requests.
    """
    sc = _sorted_scans(shipments, scans)
    skip = np.isin(sc["event"], [c for c in sc["events"].get_indexer(["label_created", "delivered", "returned_to_sender"]) if c >= 0])
    pos, t = sc["pos"][~skip], sc["at"][~skip]
    same_next = np.r_[pos[1:] == pos[:-1], False]
    max_gap = int(MAX_SNAPSHOT_GAP_H * US_PER_HOUR)
    next_t = np.where(same_next, np.r_[t[1:], 0], t + max_gap)
    gap = np.clip(next_t - t, 60_000_000, max_gap)
    as_of = t + (np.random.default_rng(seed).uniform(0.02, 0.98, len(t)) * gap).astype(np.int64)
    delivered = micros(shipments.delivered_at)[pos]
    keep = ((delivered == NAT) | (as_of < delivered)) & (as_of <= micros(pd.Series([end]))[0])
    ids = pd.Index(shipments.shipment_id.astype("str"))
    return pd.DataFrame({
        # Categorical on the shipments' ids: its codes are the positions, so no lookup later.
        "shipment_id": pd.Categorical.from_codes(pos[keep], categories=ids),
        "as_of": pd.to_datetime(as_of[keep], unit="us", utc=True).astype("datetime64[us, UTC]"),
    })
