"""In-transit features: what the scans seen so far say about a parcel at a moment.

``transit_features`` works for any (shipment, moment) pairs: the snapshots training
takes at each scan of history, a batch ``--as-of`` moment, or a live request with
its scans so far. Only scans strictly before the moment count, and ``shipped_at``
only once it has happened.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from data.contract import EVENTS
from features.pit import NAT, US_PER_HOUR, Columns, EventIndex, Lookup, hours_between, micros, size, timestamps_of

FACILITY_EVENTS = ("arrived_at_facility", "departed_facility", "in_transit")
MAX_SNAPSHOT_GAP_H = 24.0
#: the contract's events; a scan's event is its position here
EVENT_CODES = Lookup(EVENTS)
EVENT_NAMES = np.array([*EVENTS, None], dtype=object)  # code -1 (no scan yet) reads None
#: the scan columns these features read (a table's others are not converted)
SCAN_COLUMNS = ("pos", "shipment_id", "scanned_at", "event", "region")


@lru_cache(maxsize=None)
def _event_mask(events: tuple[str, ...]) -> np.ndarray:
    """Indexed by event code, whether the event is one of ``events`` (the last entry,
    code -1, is an unknown event: never)."""
    return np.array([e in events for e in EVENTS] + [False])


def positions(shipments, keyed, lookup: Lookup | None = None) -> np.ndarray:
    """Each row of ``keyed`` (scans, moments) as a position in ``shipments``: its ``pos``
    column when the caller knows it, else looked up by ``shipment_id`` (-1: unknown) in
    ``lookup`` (``shipment_lookup(shipments)``, when the caller has made it already)."""
    if "pos" in keyed:
        return np.asarray(keyed["pos"], dtype=np.int64)
    ids = keyed["shipment_id"]
    if isinstance(ids, pd.Series) and isinstance(ids.dtype, pd.CategoricalDtype):
        # built on the shipments' ids (training moments): the codes are the positions
        return ids.cat.codes.to_numpy().astype(np.int64)
    return (lookup if lookup is not None else shipment_lookup(shipments)).codes(ids)


def shipment_lookup(shipments) -> Lookup:
    """The shipments' positions by id."""
    return Lookup(np.asarray(shipments["shipment_id"], dtype=object).tolist())


def _sorted_scans(shipments, scans, until: np.ndarray | None = None, lookup: Lookup | None = None) -> Columns:
    """Scans as arrays sorted by (shipment position, time), events as contract codes;
    with ``until`` (per shipment position), only the scans before it."""
    if scans is None or not len(scans["scanned_at"]):
        empty = np.array([], dtype=np.int64)
        return {"pos": empty, "at": empty, "event": empty, "region": np.array([], dtype=object)}
    pos = positions(shipments, scans, lookup)
    at = micros(scans["scanned_at"])
    rows = np.arange(len(pos)) if until is None else np.flatnonzero((pos >= 0) & (at < until[np.maximum(pos, 0)]))
    order = rows[np.lexsort((at[rows], pos[rows]))]
    region = np.asarray(scans["region"], dtype=object)[order] if "region" in scans else np.full(len(order), None)
    return {"pos": pos[order], "at": at[order], "event": EVENT_CODES.codes(np.asarray(scans["event"], dtype=object)[order]),
            "region": region}


def transit_features(shipments, scans, moments) -> Columns:
    """One row per (shipment_id, as_of) in ``moments``; every argument maps names to arrays."""
    lookup = shipment_lookup(shipments) if "pos" not in moments or (scans is not None and "pos" not in scans) else None
    pos = positions(shipments, moments, lookup)
    if (pos < 0).any():
        unknown = np.asarray(moments["shipment_id"], dtype=object)[pos < 0][0]
        raise KeyError(f"moment for unknown shipment {unknown!r}")
    at = micros(moments["as_of"])
    # A scan at or after a shipment's latest moment is seen by none of its moments: at
    # order time that is every scan, so a bulk prediction sorts none of them.
    until = np.full(size(shipments), NAT, dtype=np.int64)
    np.maximum.at(until, pos, at)
    sc = _sorted_scans(shipments, scans, until, lookup)

    # One search finds each moment's scans so far; a count of any kind of event is a
    # sum over them (no search per kind).
    seen = EventIndex(sc["pos"], sc["at"], presorted=True).before(pos, at)

    def count(events: tuple[str, ...]) -> np.ndarray:
        return seen.sum(_event_mask(events)[sc["event"]]).astype(np.float32)

    last = seen.last()
    has_last = last >= 0
    safe = np.maximum(last, 0)
    last_at = np.where(has_last, sc["at"][safe] if len(sc["at"]) else NAT, NAT)
    picked = _event_mask(("picked_up",))[sc["event"]]
    pickups = EventIndex(sc["pos"][picked], sc["at"][picked], presorted=True)
    first_pickup = np.where(seen.sum(picked) > 0, pickups.first_time(pos), NAT)
    shipped = micros(shipments["shipped_at"])[pos]
    shipped_known = (shipped != NAT) & (shipped < at)
    pickup = np.where(shipped_known & ((first_pickup == NAT) | (shipped < first_pickup)), shipped, first_pickup)
    last_event_code = np.where(has_last, sc["event"][safe] if len(sc["event"]) else -1, -1)
    destination = np.asarray(shipments["destination_region"], dtype=object)[pos]
    last_region = np.where(has_last, sc["region"][safe] if len(sc["region"]) else None, None)

    return {
        "shipment_id": np.asarray(moments["shipment_id"], dtype=object),
        "as_of": at,
        "hours_since_order": hours_between(at, micros(shipments["ordered_at"])[pos]).astype(np.float32),
        "picked_up": (pickup != NAT).astype(np.float32),
        "hours_since_pickup": hours_between(at, pickup).astype(np.float32),
        "last_event": EVENT_NAMES[last_event_code],
        "last_event_age_h": hours_between(at, last_at).astype(np.float32),
        "scans_so_far": seen.count().astype(np.float32),
        "facility_scans": count(FACILITY_EVENTS),
        "exceptions_so_far": count(("exception",)),
        "attempts_so_far": count(("delivery_attempted",)),
        "out_for_delivery_seen": count(("out_for_delivery",)),
        "in_destination_region": (has_last & ~pd.isna(last_region) & (last_region == destination)).astype(np.float32),
        "pos": pos,
    }


def keyed_uniform(ids: np.ndarray, at_us: np.ndarray, seed: int) -> np.ndarray:
    """A uniform draw in [0, 1) per (shipment id, moment, seed): a hash, not a random
    stream, so a shipment's draws do not depend on which other rows are drawn with it
    (one partition of the data or all of it give the same snapshots)."""
    x = pd.util.hash_array(ids) ^ (at_us.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(seed)
    # splitmix64's finaliser: every input bit moves every output bit
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def training_moments(shipments: pd.DataFrame, scans: pd.DataFrame | None, end: pd.Timestamp, seed: int = 0) -> pd.DataFrame:
    """In-transit snapshot moments: one after each scan from pickup on, before delivery.

    Each snapshot lands at a random point between its scan and the next one (at most a
    day later), so the age of the last event looks like it does for live requests.
    """
    sc = _sorted_scans(shipments, scans)
    skip = np.isin(sc["event"], EVENT_CODES.codes(np.array(["label_created", "delivered", "returned_to_sender"], dtype=object)))
    pos, t = sc["pos"][~skip], sc["at"][~skip]
    same_next = np.r_[pos[1:] == pos[:-1], False]
    max_gap = int(MAX_SNAPSHOT_GAP_H * US_PER_HOUR)
    next_t = np.where(same_next, np.r_[t[1:], 0], t + max_gap)
    gap = np.clip(next_t - t, 60_000_000, max_gap)
    ids = shipments.shipment_id.astype("str").to_numpy(dtype=object)
    # keyed by the scan's rank within its shipment too: two scans at one moment draw apart
    starts = np.r_[0, np.flatnonzero(pos[1:] != pos[:-1]) + 1] if len(pos) else np.array([], dtype=np.int64)
    rank = np.arange(len(pos)) - np.repeat(starts, np.diff(np.r_[starts, len(pos)]))
    as_of = t + ((0.02 + 0.96 * keyed_uniform(ids[pos], t + rank, seed)) * gap).astype(np.int64)
    delivered = micros(shipments.delivered_at)[pos]
    keep = ((delivered == NAT) | (as_of < delivered)) & (as_of <= micros(pd.Series([end]))[0])
    ids = pd.Index(shipments.shipment_id.astype("str"))
    return pd.DataFrame({
        # Categorical on the shipments' ids: its codes are the positions, so no lookup later.
        "shipment_id": pd.Categorical.from_codes(pos[keep], categories=ids),
        "as_of": timestamps_of(as_of[keep]).array,
    })
