"""Import the Olist Brazilian e-commerce tables (Kaggle format) into the data contract.

Mapping:
- one shipment per order and seller (``<order_id>-<k>``); the seller's state and zip
  prefix are the origin, the customer's the destination;
- ``customer_unique_id`` is the customer (Olist's ``customer_id`` is per order);
- carrier handover and customer delivery dates become ``shipped_at``/``delivered_at``
  and the ``picked_up``/``delivered`` scans; the estimated date is the promise (a
  bare date: the end of that day in Sao Paulo);
- product weights summed per shipment, item prices as its value, payments as the
  order value, reviews as feedback, zip-prefix coordinates as locations.

Olist does not name its carriers: every shipment has carrier ``olist`` and service
level ``standard``. Olist timestamps are Brazilian local time and are converted to
UTC.

Nothing is dropped silently. Every order goes to ``orders`` (the customer did buy).
Orders that produce no shipment (no items so no seller, canceled/unavailable
before handover to the carrier, or a time or item number that cannot be read) are
listed with their reason in ``_import/excluded.csv``. Dates that contradict each other are passed through as
they are, so ``eddy validate`` quarantines them under the rule they break.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.load import unreadable_text
from data.write import write_data_set
from eddy.settings import TIMESTAMP_DTYPE

LOCAL_TZ = "America/Sao_Paulo"
CARRIER, SERVICE_LEVEL = "olist", "standard"
NEVER_SHIPPED_STATUSES = ("canceled", "unavailable")

FILES = {
    "orders": "olist_orders_dataset.csv",
    "items": "olist_order_items_dataset.csv",
    "customers": "olist_customers_dataset.csv",
    "sellers": "olist_sellers_dataset.csv",
    "products": "olist_products_dataset.csv",
    "reviews": "olist_order_reviews_dataset.csv",
    "payments": "olist_order_payments_dataset.csv",
    "geolocation": "olist_geolocation_dataset.csv",
}
#: the columns the import reads from each file (the Kaggle files have more)
COLUMNS = {
    "orders": ("order_id", "customer_id", "order_status", "order_purchase_timestamp", "order_delivered_carrier_date",
               "order_delivered_customer_date", "order_estimated_delivery_date"),
    "items": ("order_id", "order_item_id", "product_id", "seller_id", "price"),
    "customers": ("customer_id", "customer_unique_id", "customer_zip_code_prefix", "customer_state"),
    "sellers": ("seller_id", "seller_zip_code_prefix", "seller_state"),
    "products": ("product_id", "product_weight_g"),
    "reviews": ("order_id", "review_score", "review_creation_date", "review_answer_timestamp"),
    "payments": ("order_id", "payment_value"),
    "geolocation": ("geolocation_zip_code_prefix", "geolocation_lat", "geolocation_lng", "geolocation_state"),
}
# Brazil's bounding box: Olist's geolocation has a few points far outside it.
LAT_RANGE, LON_RANGE = (-34.0, 5.5), (-74.0, -34.0)


class OlistError(Exception):
    """The Olist folder cannot be imported; the message names the file."""


@dataclass
class OlistImport:
    tables: dict[str, pd.DataFrame]
    excluded: pd.DataFrame
    report: dict


def read_olist(src: Path) -> dict[str, pd.DataFrame]:
    """Read the Olist CSVs with every column as text (zip prefixes keep their zeros)."""
    frames = {}
    for key, name in FILES.items():
        path = Path(src) / name
        if not path.exists():
            raise OlistError(f"{path}: missing (expected the original Kaggle file names)")
        try:
            frames[key] = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:  # empty: a traceback before
            raise OlistError(unreadable_text(path, exc)) from None
        missing = [c for c in COLUMNS[key] if c not in frames[key]]
        if missing:
            raise OlistError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return frames


def as_written(s: pd.Series) -> pd.Series:
    """Olist's time texts as naive times (NaT where a text is not one): every reading of
    a time, so ``_unreadable`` calls unreadable exactly what the import would leave empty."""
    return pd.to_datetime(s, format="ISO8601", errors="coerce")


def local_to_utc(s: pd.Series) -> pd.Series:
    """Olist's naive local timestamps as UTC; an ambiguous DST hour counts as standard time."""
    parsed = as_written(s)
    local = parsed.dt.tz_localize(LOCAL_TZ, ambiguous=np.zeros(len(parsed), dtype=bool), nonexistent="shift_forward")
    return local.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)


def end_of_local_day(s: pd.Series) -> pd.Series:
    day = as_written(s).dt.normalize()
    return local_to_utc((day + pd.Timedelta(hours=23, minutes=59, seconds=59)).astype("str").where(day.notna()))


def import_olist(src: str | Path) -> OlistImport:
    raw = read_olist(Path(src))
    orders = raw["orders"]
    customer_of = raw["customers"].set_index("customer_id")

    orders_table = _orders_table(orders, customer_of, raw["payments"])
    shipments, excluded = _shipments_table(orders, customer_of, raw["items"], raw["sellers"], raw["products"])
    tables = {
        "shipments": shipments,
        "scans": _scans_table(shipments),
        "orders": orders_table,
        "feedback": _feedback_table(raw["reviews"]),
        "customers": _customers_table(raw["customers"]),
        "locations": _locations_table(raw["geolocation"]),
    }
    report = {
        "source": str(src),
        "orders_read": int(len(orders)),
        "orders_by_status": {k: int(v) for k, v in orders.order_status.value_counts().items()},
        "shipments_written": int(len(shipments)),
        "orders_without_shipment": int(len(excluded)),
        "excluded_by_reason": {k: int(v) for k, v in excluded.reason.value_counts().items()},
        "delivered_status_without_delivery_date": int(
            ((orders.order_status == "delivered") & orders.order_delivered_customer_date.isna()).sum()),
        "tables": {k: int(len(v)) for k, v in tables.items()},
        "carrier_note": "Olist does not name carriers: carrier 'olist', service level 'standard'.",
    }
    return OlistImport(tables, excluded, report)


def _orders_table(orders: pd.DataFrame, customer_of: pd.DataFrame, payments: pd.DataFrame) -> pd.DataFrame:
    paid = pd.to_numeric(payments.payment_value, errors="coerce").groupby(payments.order_id).sum()
    return pd.DataFrame({
        "order_id": orders.order_id,
        "customer_id": orders.customer_id.map(customer_of.customer_unique_id),
        "ordered_at": local_to_utc(orders.order_purchase_timestamp),
        "value": orders.order_id.map(paid).astype("float64"),
    })


def _shipments_table(orders, customer_of, items, sellers, products) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = items.copy()
    items["order_item_id"] = pd.to_numeric(items.order_item_id, errors="coerce")  # a bad one sorts last
    items["price"] = pd.to_numeric(items.price, errors="coerce")
    items["weight_kg"] = items.product_id.map(pd.to_numeric(products.set_index("product_id").product_weight_g, errors="coerce")) / 1000.0
    per_seller = (items.sort_values(["order_id", "order_item_id"])
                  .groupby(["order_id", "seller_id"], sort=False)
                  .agg(first_item=("order_item_id", "min"), value=("price", "sum"),
                       weight_kg=("weight_kg", lambda w: w.sum(min_count=len(w))))
                  .reset_index()
                  .sort_values(["order_id", "first_item"]))
    per_seller["k"] = per_seller.groupby("order_id").cumcount() + 1

    shipped = orders.order_delivered_carrier_date.notna()
    has_items = orders.order_id.isin(per_seller.order_id)
    never_shipped = orders.order_status.isin(NEVER_SHIPPED_STATUSES) & ~shipped
    unreadable = _unreadable(orders, items)
    reason = np.select(
        [unreadable != "", ~has_items, never_shipped],
        [unreadable, "no items, so no seller or origin (status " + orders.order_status + ")",
         orders.order_status + " before handover to the carrier"],
        default="",
    )
    excluded = pd.DataFrame({"order_id": orders.order_id, "order_status": orders.order_status, "reason": reason})
    excluded = excluded[excluded.reason != ""].reset_index(drop=True)

    kept = orders[~orders.order_id.isin(excluded.order_id)]
    ship = per_seller.merge(kept, on="order_id", how="inner")
    seller = sellers.set_index("seller_id")
    shipments = pd.DataFrame({
        "shipment_id": ship.order_id + "-" + ship.k.astype(str),
        "order_id": ship.order_id,
        "customer_id": ship.customer_id.map(customer_of.customer_unique_id),
        "carrier": CARRIER,
        "service_level": SERVICE_LEVEL,
        "origin_region": ship.seller_id.map(seller.seller_state),
        "destination_region": ship.customer_id.map(customer_of.customer_state),
        "origin_postal": ship.seller_id.map(seller.seller_zip_code_prefix),
        "destination_postal": ship.customer_id.map(customer_of.customer_zip_code_prefix),
        "ordered_at": local_to_utc(ship.order_purchase_timestamp),
        "shipped_at": local_to_utc(ship.order_delivered_carrier_date),
        "promised_at": end_of_local_day(ship.order_estimated_delivery_date),
        "delivered_at": local_to_utc(ship.order_delivered_customer_date),
        "weight_kg": ship.weight_kg.astype("float64"),
        "value": ship.value.astype("float64"),
    })
    return shipments.sort_values(["ordered_at", "shipment_id"], kind="stable").reset_index(drop=True), excluded


#: the orders' times a shipment is built from, each read by ``as_written``
ORDER_TIMES = ("order_purchase_timestamp", "order_delivered_carrier_date", "order_delivered_customer_date",
               "order_estimated_delivery_date")


def _unreadable(orders: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """Per order, why a value it needs cannot be read ("" when all can): a time that is
    not a time, or an item whose number or price is not a number. Such an order is set
    aside with the value rather than imported with the value left empty (a delivery
    date read as none would make a delivered parcel look lost)."""
    why = pd.Series("", index=orders.index, dtype=object)
    for col in ORDER_TIMES:
        bad = orders[col].notna() & as_written(orders[col]).isna()
        why = why.where(~bad | (why != ""), "unreadable " + col + ": " + orders[col].fillna("").map(repr))
    broken = items.order_item_id.isna() | items.price.isna()  # numbers already read with errors="coerce"
    bad_items = orders.order_id.isin(items.order_id[broken]) & (why == "")
    return why.where(~bad_items, "an item whose order_item_id or price is not a number")


def _scans_table(shipments: pd.DataFrame) -> pd.DataFrame:
    picked = shipments[shipments.shipped_at.notna()]
    delivered = shipments[shipments.delivered_at.notna()]
    scans = pd.concat([
        pd.DataFrame({"shipment_id": picked.shipment_id, "scanned_at": picked.shipped_at, "event": "picked_up",
                      "region": picked.origin_region, "postal": picked.origin_postal}),
        pd.DataFrame({"shipment_id": delivered.shipment_id, "scanned_at": delivered.delivered_at, "event": "delivered",
                      "region": delivered.destination_region, "postal": delivered.destination_postal}),
    ], ignore_index=True)
    scans["detail"] = pd.Series(np.nan, index=scans.index, dtype="str")
    return scans.sort_values("scanned_at", kind="stable").reset_index(drop=True)


def _feedback_table(reviews: pd.DataFrame) -> pd.DataFrame:
    # The answer moment is when Eddy could know the score; creation is when the survey went out.
    submitted = reviews.review_answer_timestamp.fillna(reviews.review_creation_date)
    return pd.DataFrame({
        "order_id": reviews.order_id,
        "submitted_at": local_to_utc(submitted),
        "rating": pd.to_numeric(reviews.review_score, errors="coerce").astype("Int64"),
        "contacts": pd.array([pd.NA] * len(reviews), dtype="Int64"),
    })


def _customers_table(customers: pd.DataFrame) -> pd.DataFrame:
    # A customer_unique_id may appear with several addresses: the last one listed wins.
    unique = customers.drop_duplicates("customer_unique_id", keep="last")
    return pd.DataFrame({
        "customer_id": unique.customer_unique_id,
        "region": unique.customer_state,
        "first_seen_at": pd.Series(pd.NaT, index=unique.index, dtype=TIMESTAMP_DTYPE),
    }).reset_index(drop=True)


def _locations_table(geo: pd.DataFrame) -> pd.DataFrame:
    lat = pd.to_numeric(geo.geolocation_lat, errors="coerce")
    lon = pd.to_numeric(geo.geolocation_lng, errors="coerce")
    inside = lat.between(*LAT_RANGE) & lon.between(*LON_RANGE)
    g = pd.DataFrame({"postal": geo.geolocation_zip_code_prefix, "region": geo.geolocation_state,
                      "lat": lat, "lon": lon})[inside]
    # Medians: robust to the odd mis-geocoded point inside the box.
    postal = g.groupby("postal")[["lat", "lon"]].median().reset_index()
    region = g.groupby("region")[["lat", "lon"]].median().reset_index()
    return pd.concat([
        pd.DataFrame({"key": region.region, "kind": "region", "latitude": region.lat, "longitude": region.lon}),
        pd.DataFrame({"key": postal.postal, "kind": "postal", "latitude": postal.lat, "longitude": postal.lon}),
    ], ignore_index=True).round({"latitude": 5, "longitude": 5})


#: where in the data set the import leaves its own files (``excluded.csv``, ``report.json``):
#: a folder whose name starts with "_", which the contract reader passes over without a
#: warning, as it does the quarantine report
IMPORT_DIR = "_import"


def write_import(result: OlistImport, out_dir: str | Path, fmt: str = "parquet") -> Path:
    out_dir = Path(out_dir)
    write_data_set(result.tables, out_dir, fmt)
    notes = out_dir / IMPORT_DIR
    notes.mkdir(exist_ok=True)
    result.excluded.to_csv(notes / "excluded.csv", index=False)
    (notes / "report.json").write_text(json.dumps(result.report, indent=2))
    return out_dir
