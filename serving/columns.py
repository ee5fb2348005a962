"""Requests as contract columns: what the service hands the feature code.

A request is shipment position ``i`` in the columns, so scans and moments carry ``pos``
and no id is looked up (ids need not be unique across a batch). The shadow scorer reads
the same columns, so the challenger sees exactly what the champion saw.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from features.pit import NAT
from serving.schemas import ChurnIn, ShipmentIn

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)
SHIPMENT_TEXT = ("carrier", "service_level", "origin_region", "destination_region", "origin_postal", "destination_postal")
SHIPMENT_TIMES = ("ordered_at", "shipped_at", "promised_at")


def micros_of(t: datetime | None) -> int:
    return NAT if t is None else (t - EPOCH) // ONE_US


def datetime_of(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def columns_of(shipments: list[ShipmentIn]) -> tuple[dict, dict, dict]:
    """Contract columns of shipments, their scans and their moments, straight from the requests.

    Request ``i`` is shipment position ``i``, so scans and moments carry ``pos`` and no id
    is looked up (ids need not be unique across a batch)."""
    ship = {
        "shipment_id": np.array([s.shipment_id for s in shipments], dtype=object),
        "customer_id": np.array([s.customer_id for s in shipments], dtype=object),
        **{c: np.array([getattr(s, c) for s in shipments], dtype=object) for c in SHIPMENT_TEXT},
        **{c: np.array([micros_of(getattr(s, c)) for s in shipments], dtype=np.int64) for c in SHIPMENT_TIMES},
        "delivered_at": np.full(len(shipments), NAT, dtype=np.int64),
        "weight_kg": np.array([np.nan if s.weight_kg is None else s.weight_kg for s in shipments], dtype=float),
        "value": np.array([np.nan if s.value is None else s.value for s in shipments], dtype=float),
    }
    scanned = [(i, sc) for i, s in enumerate(shipments) for sc in s.scans]
    scans = {
        "pos": np.array([i for i, _ in scanned], dtype=np.int64),
        "scanned_at": np.array([micros_of(sc.scanned_at) for _, sc in scanned], dtype=np.int64),
        "event": np.array([sc.event for _, sc in scanned], dtype=object),
        "region": np.array([sc.region for _, sc in scanned], dtype=object),
    }
    # Without as_of: at the order time, or just after the latest scan sent; never "now",
    # so an answer is reproducible and equals `eddy predict` for the same shipment.
    as_of = [micros_of(s.as_of) if s.as_of is not None else max([micros_of(s.ordered_at)] + [micros_of(sc.scanned_at) + 1_000_000 for sc in s.scans])
             for s in shipments]
    moments = {"shipment_id": ship["shipment_id"], "pos": np.arange(len(shipments)), "as_of": np.array(as_of, dtype=np.int64)}
    return ship, scans, moments


def deliveries_of(requests: list[ChurnIn]) -> tuple[dict, dict, dict]:
    """Each /churn request's delivery as contract columns: an order of its own, its scans
    and its moment (without as_of: just after the delivery, or the promise if none came)."""
    ship, scans, _ = columns_of([r.delivery for r in requests])
    ids = np.array([f"request-order-{i}" for i in range(len(requests))], dtype=object)
    delivered = np.array([micros_of(r.delivery.delivered_at) for r in requests], dtype=np.int64)
    ship.update(shipment_id=ids, order_id=ids, delivered_at=delivered,
                customer_id=np.array([r.customer_id for r in requests], dtype=object))
    scans["shipment_id"] = ids[scans.pop("pos")]
    judged = np.where(delivered != NAT, delivered, ship["promised_at"])
    as_of = np.array([micros_of(r.as_of) if r.as_of is not None else j + 1_000_000 for r, j in zip(requests, judged)], dtype=np.int64)
    return ship, scans, {"order_id": ids, "as_of": as_of}
