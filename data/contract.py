"""The input data contract (``shared/DATA_CONTRACT.md``, version 1) as data.

One :class:`Table` per contract table, listing its columns, their kinds and which are
required. The reader, the writer, the simulator and every importer use these specs, so
the contract lives in exactly one place in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTRACT_VERSION = 1

EVENTS = (
    "label_created",
    "picked_up",
    "departed_facility",
    "arrived_at_facility",
    "in_transit",
    "out_for_delivery",
    "delivery_attempted",
    "exception",
    "delivered",
    "returned_to_sender",
)

LOCATION_KINDS = ("region", "postal")

#: not a contract table: the simulator's exact answers beside its tables, for the oracle
#: figures of evaluations; no model reads it, and readers pass it by without a warning
TRUTH_DIR = "truth"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "id" | "str" | "timestamp" | "float" | "int"
    required: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    required_table: bool = False
    key: tuple[str, ...] = field(default_factory=tuple)  # unique key, if any

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_names(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def of_kind(self, *kinds: str) -> list[str]:
        return [c.name for c in self.columns if c.kind in kinds]


def _cols(*specs: tuple[str, str, bool]) -> tuple[Column, ...]:
    return tuple(Column(n, k, r) for n, k, r in specs)


SHIPMENTS = Table(
    "shipments",
    _cols(
        ("shipment_id", "id", True),
        ("order_id", "id", True),
        ("customer_id", "id", True),
        ("carrier", "str", True),
        ("service_level", "str", True),
        ("origin_region", "str", True),
        ("destination_region", "str", True),
        ("origin_postal", "id", False),
        ("destination_postal", "id", False),
        ("ordered_at", "timestamp", True),
        ("shipped_at", "timestamp", False),
        ("promised_at", "timestamp", False),
        ("delivered_at", "timestamp", False),
        ("weight_kg", "float", False),
        ("value", "float", False),
    ),
    required_table=True,
    key=("shipment_id",),
)

SCANS = Table(
    "scans",
    _cols(
        ("shipment_id", "id", True),
        ("scanned_at", "timestamp", True),
        ("event", "str", True),
        ("region", "str", False),
        ("postal", "id", False),
        ("detail", "str", False),
    ),
)

ORDERS = Table(
    "orders",
    _cols(
        ("order_id", "id", True),
        ("customer_id", "id", True),
        ("ordered_at", "timestamp", True),
        ("value", "float", False),
    ),
    key=("order_id",),
)

FEEDBACK = Table(
    "feedback",
    _cols(
        ("order_id", "id", True),
        ("submitted_at", "timestamp", True),
        ("rating", "int", False),
        ("contacts", "int", False),
    ),
)

CUSTOMERS = Table(
    "customers",
    _cols(
        ("customer_id", "id", True),
        ("region", "str", False),
        ("first_seen_at", "timestamp", False),
    ),
    key=("customer_id",),
)

LOCATIONS = Table(
    "locations",
    _cols(
        ("key", "id", True),
        ("kind", "str", True),
        ("latitude", "float", True),
        ("longitude", "float", True),
    ),
    key=("key", "kind"),
)

TABLES: dict[str, Table] = {t.name: t for t in (SHIPMENTS, SCANS, ORDERS, FEEDBACK, CUSTOMERS, LOCATIONS)}
