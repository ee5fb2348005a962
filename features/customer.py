"""After-delivery customer features: the delivery just completed and the history before it.

A churn moment is a pair (order_id, as_of): the order whose delivery (or unmet
promise) the customer is reacting to, and the moment we score. Everything is as of
``as_of``: scans, deliveries and feedback strictly before it, orders placed before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.pit import NAT, US_PER_DAY, US_PER_HOUR, EventIndex, hours_between, micros

CUSTOMER_CATEGORICAL = ("carrier", "service_level", "origin_region", "destination_region")


def orders_table(shipments: pd.DataFrame, orders: pd.DataFrame | None) -> pd.DataFrame:
    """Every order of every customer: the orders table, or the one implied by shipments."""
    implied = (shipments.groupby("order_id", observed=True)
               .agg(customer_id=("customer_id", "first"), ordered_at=("ordered_at", "min"), value=("value", "sum"))
               .reset_index())
    if orders is None:
        return implied
    extra = implied[~implied.order_id.isin(orders.order_id)]
    return pd.concat([orders[["order_id", "customer_id", "ordered_at", "value"]], extra], ignore_index=True)


def shipment_reference(shipments: pd.DataFrame) -> np.ndarray:
    """When a parcel's outcome is judged: its delivery, or its promise if never delivered."""
    delivered, promised = micros(shipments.delivered_at), micros(shipments.promised_at)
    return np.where(delivered != NAT, delivered, promised)


def order_experience(shipments: pd.DataFrame, scans: pd.DataFrame | None) -> pd.DataFrame:
    """Per order with shipments: the moment it is judged (NaT while still open) and its lane."""
    ref = shipment_reference(shipments)
    s = pd.DataFrame({
        "order_id": shipments.order_id.astype("str").to_numpy(),
        "customer_id": shipments.customer_id.astype("str").to_numpy(),
        "ref": ref,
        "open": ref == NAT,
        "late": _late_flag(shipments),
        **{c: shipments[c].astype("str").to_numpy() for c in CUSTOMER_CATEGORICAL},
    })
    g = s.groupby("order_id", sort=False)
    exp = g.agg(customer_id=("customer_id", "first"), ref=("ref", "max"), open=("open", "any"), late=("late", "max"),
                **{c: (c, "first") for c in CUSTOMER_CATEGORICAL}).reset_index()
    exp["ref"] = np.where(exp.open.to_numpy(), NAT, exp.ref.to_numpy())
    return exp.drop(columns="open")


def _late_flag(shipments: pd.DataFrame) -> np.ndarray:
    delivered, promised = micros(shipments.delivered_at), micros(shipments.promised_at)
    return ((promised != NAT) & ((delivered == NAT) | (delivered > promised))).astype(float)


def churn_moments(experience: pd.DataFrame, lag_days: float | np.ndarray = 0.0) -> pd.DataFrame:
    """(order_id, as_of) for every judged order, ``lag_days`` after its judgement.

    The lag is never zero: a moment at exactly the delivery would not see it (strictly
    before), so the smallest lag is one second.
    """
    judged = experience[experience.ref != NAT]
    lag_us = np.maximum(np.asarray(lag_days, dtype=float) * US_PER_DAY, 1_000_000).astype(np.int64)
    if np.ndim(lag_days):
        lag_us = lag_us[(experience.ref != NAT).to_numpy()]
    as_of = judged.ref.to_numpy() + lag_us
    return pd.DataFrame({"order_id": judged.order_id.to_numpy(),
                         "as_of": pd.to_datetime(as_of, unit="us", utc=True).astype("datetime64[us, UTC]")})


@dataclass
class CustomerHistory:
    """What churn features need about customers besides the delivery being scored.

    Built from a whole data set for training, saved in the feature snapshot, and
    extended with a request's own order by the service: the same tables either way.
    """

    orders: pd.DataFrame  # order_id, customer_id, ordered_at, value
    experience: pd.DataFrame  # per order with shipments: ref (us, NAT while open), late, lane
    feedback: pd.DataFrame | None
    customers: pd.DataFrame | None

    TABLES = ("orders", "experience", "feedback", "customers")

    @classmethod
    def from_tables(cls, shipments, scans, orders, feedback, customers) -> "CustomerHistory":
        return cls(orders_table(shipments, orders), order_experience(shipments, scans), feedback, customers)

    def of_customers(self, customer_ids) -> "CustomerHistory":
        """Only these customers' rows: their features are the same as in the whole history
        (every customer feature reads the customer's own orders, deliveries and feedback),
        and the cost no longer grows with the number of customers. The rows come from an
        index built once (``index``), so a request looks its customer up."""
        rows = self.index()
        pick = {name: np.concatenate([[], *(rows[name].get(c, ()) for c in dict.fromkeys(customer_ids))]).astype(np.int64)
                for name in rows}
        take = lambda t, name: t.iloc[pick[name]].reset_index(drop=True) if t is not None else None  # noqa: E731
        return CustomerHistory(take(self.orders, "orders"), take(self.experience, "experience"),
                               take(self.feedback, "feedback"), take(self.customers, "customers"))

    def index(self) -> dict[str, dict[str, np.ndarray]]:
        """Per table, each customer's row positions (feedback through its order's customer)."""
        if getattr(self, "_index", None) is None:
            def positions(keys) -> dict[str, np.ndarray]:
                keys = pd.Series(np.asarray(keys, dtype=object))
                return dict(keys.groupby(keys, sort=False).indices) if len(keys) else {}

            owner = dict(zip(self.orders.order_id.astype("str"), self.orders.customer_id.astype("str")))
            self._index = {
                "orders": positions(self.orders.customer_id.astype("str")),
                "experience": positions(self.experience.customer_id.astype("str")),
                "feedback": positions(self.feedback.order_id.astype("str").map(owner)) if self.feedback is not None else {},
                "customers": positions(self.customers.customer_id.astype("str")) if self.customers is not None else {},
            }
        return self._index

    def with_orders(self, shipments: pd.DataFrame, scans: pd.DataFrame | None) -> "CustomerHistory":
        """This history plus the orders of ``shipments`` (replacing any with the same id)."""
        new_exp = order_experience(shipments, scans)
        new_orders = orders_table(shipments, None)
        keep_exp = self.experience[~self.experience.order_id.isin(new_exp.order_id)]
        keep_orders = self.orders[~self.orders.order_id.astype("str").isin(new_orders.order_id.astype("str"))]
        return CustomerHistory(pd.concat([keep_orders, new_orders], ignore_index=True),
                               pd.concat([keep_exp, new_exp], ignore_index=True), self.feedback, self.customers)

    def save(self, folder: Path) -> None:
        for name in self.TABLES:
            table = getattr(self, name)
            if table is not None:
                table.to_parquet(Path(folder) / f"customers_{name}.parquet", index=False)

    @classmethod
    def load(cls, folder: Path) -> "CustomerHistory":
        def read(name):
            path = Path(folder) / f"customers_{name}.parquet"
            return pd.read_parquet(path) if path.exists() else None

        return cls(*(read(name) for name in cls.TABLES))


def customer_features(shipments: pd.DataFrame, scans: pd.DataFrame | None, history: CustomerHistory,
                      moments: pd.DataFrame, usual_hours: pd.Series | None = None) -> pd.DataFrame:
    """One row per (order_id, as_of): the delivery just completed and the customer's history.

    ``shipments`` and ``scans`` must hold the parcels of the scored orders (more is
    fine). ``usual_hours`` (per shipment_id, optional) is the lane's usual lead time at
    order time, to say how slow this delivery was against it.
    """
    exp = history.experience
    exp_row = pd.Index(exp.order_id).get_indexer(moments.order_id.astype("str"))
    if (exp_row < 0).any():
        raise KeyError(f"churn moment for an order without shipments: {moments.order_id[exp_row < 0].iloc[0]!r}")
    at = micros(moments.as_of)
    cur = exp.iloc[exp_row].reset_index(drop=True)
    current = _current_delivery(shipments, scans, history.feedback, moments.order_id.astype("str").to_numpy(), at,
                                usual_hours)
    history = _history(exp, history.orders, history.feedback, history.customers, cur, at)
    out = pd.DataFrame({
        "order_id": moments.order_id.astype("str").to_numpy(),
        "customer_id": cur.customer_id.to_numpy(),
        "as_of": moments.as_of.to_numpy(),
        **{c: cur[c].to_numpy() for c in CUSTOMER_CATEGORICAL},
        "days_since_delivery": np.where(cur.ref.to_numpy() == NAT, np.nan, (at - cur.ref.to_numpy()) / US_PER_DAY),
    })
    return pd.concat([out, current, history], axis=1)


def _current_delivery(shipments, scans, feedback, order_ids: np.ndarray, at: np.ndarray, usual_hours) -> pd.DataFrame:
    """The order's parcels as of each moment: lateness, transit, exceptions, feedback."""
    row, sp = parcels_of(shipments.order_id.astype("str").to_numpy(), order_ids)
    t = at[row]
    delivered = micros(shipments.delivered_at)[sp]
    promised = micros(shipments.promised_at)[sp]
    ordered = micros(shipments.ordered_at)[sp]
    known = (delivered != NAT) & (delivered < t)
    end = np.where(known, delivered, t)
    late_days = np.where((promised != NAT) & ((known) | (promised < t)), (end - promised) / US_PER_DAY, np.nan)
    transit_h = np.where(known, hours_between(delivered, ordered), np.nan)
    usual = (shipments.shipment_id.astype("str").map(usual_hours).to_numpy(dtype=float)[sp]
             if usual_hours is not None else np.full(len(sp), np.nan))
    counts = _scan_counts(shipments, scans, sp, t)
    frame = pd.DataFrame({
        "row": row, "parcels": 1.0, "missing": (~known).astype(float), "late_days": late_days,
        "transit_days": transit_h / 24.0, "transit_vs_usual": transit_h / usual, **counts,
    })
    agg = frame.groupby("row").agg(parcels=("parcels", "sum"), parcels_missing=("missing", "sum"),
                                   days_late=("late_days", "max"), transit_days=("transit_days", "max"),
                                   transit_vs_usual=("transit_vs_usual", "max"), exceptions=("exceptions", "sum"),
                                   failed_attempts=("failed_attempts", "sum"), returned=("returned", "sum"))
    agg = agg.reindex(np.arange(len(order_ids)))
    agg["not_delivered_by_promise"] = ((agg.parcels_missing > 0) & (agg.days_late > 0)).astype(float)
    rating, contacts = _order_feedback(feedback, order_ids, at)
    agg["rating"], agg["contacts"] = rating, contacts
    return agg.reset_index(drop=True).astype(np.float32)


def parcels_of(ship_order: np.ndarray, order_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand each queried order into its parcels: (query row, shipment position) pairs."""
    vocab = pd.Index(pd.unique(np.concatenate([ship_order, order_ids])))
    code = vocab.get_indexer(ship_order)
    by_code = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(vocab))
    starts = np.concatenate([[0], np.cumsum(counts)])
    q = vocab.get_indexer(order_ids)
    n = counts[q]
    row = np.repeat(np.arange(len(order_ids)), n)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
    return row, by_code[starts[q][row] + offset]


def _scan_counts(shipments, scans, sp: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    names = {"exceptions": "exception", "failed_attempts": "delivery_attempted", "returned": "returned_to_sender"}
    if scans is None or not len(scans):
        return {k: np.zeros(len(sp)) for k in names}
    ids = pd.Index(shipments.shipment_id.astype("str"))
    pos = ids.get_indexer(scans.shipment_id.astype("str"))
    scan_at = micros(scans.scanned_at)
    event = scans.event.astype("str").to_numpy()
    return {k: EventIndex(pos[event == e], scan_at[event == e]).count_before(sp, t).astype(float) for k, e in names.items()}


def _order_feedback(feedback, order_ids: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order's latest rating and its contacts, from feedback submitted before the moment."""
    if feedback is None or not len(feedback):
        return np.full(len(order_ids), np.nan), np.full(len(order_ids), np.nan)
    vocab = pd.Index(pd.unique(np.concatenate([feedback.order_id.astype("str").to_numpy(), order_ids])))
    fb_key, q_key = vocab.get_indexer(feedback.order_id.astype("str")), vocab.get_indexer(order_ids)
    rated = feedback.rating.notna().to_numpy()
    ratings = EventIndex(fb_key[rated], micros(feedback.submitted_at)[rated])
    last = ratings.last_before(q_key, at)
    rating_values = feedback.rating.to_numpy(dtype=float, na_value=np.nan)[rated]
    rating = np.where(last >= 0, rating_values[np.maximum(last, 0)] if len(rating_values) else np.nan, np.nan)
    has_contacts = feedback.contacts.notna().to_numpy()
    cidx = EventIndex(fb_key[has_contacts], micros(feedback.submitted_at)[has_contacts])
    contact_values = feedback.contacts.to_numpy(dtype=float, na_value=np.nan)[has_contacts]
    contacts = np.where(cidx.count_before(q_key, at) > 0, cidx.sum_before(contact_values, q_key, at), np.nan)
    return rating, contacts


def _history(exp, orders, feedback, customers, cur: pd.DataFrame, at: np.ndarray) -> pd.DataFrame:
    """The customer's orders, spend, earlier deliveries and feedback before the moment."""
    cust_vocab = pd.Index(pd.unique(np.concatenate([orders.customer_id.astype("str").to_numpy(),
                                                    exp.customer_id.to_numpy()])))
    q = cust_vocab.get_indexer(cur.customer_id)
    o_key = cust_vocab.get_indexer(orders.customer_id.astype("str"))
    o_at = micros(orders.ordered_at)
    placed = EventIndex(o_key, o_at)
    cur_ordered = micros(orders.set_index(orders.order_id.astype("str")).ordered_at.reindex(cur.order_id))
    ref = cur.ref.to_numpy()
    orders_so_far = placed.count_before(q, at)
    first = placed.first_time(q)
    if customers is not None and "first_seen_at" in customers:
        seen = micros(customers.set_index(customers.customer_id.astype("str")).first_seen_at.reindex(cur.customer_id))
        first = np.where((seen != NAT) & ((first == NAT) | (seen < first)) & (seen < at), seen, first)
    previous = placed.last_before(q, cur_ordered)
    previous_at = np.where(previous >= 0, o_at[np.maximum(previous, 0)], NAT)

    judged = exp[exp.ref != NAT]
    j_key = cust_vocab.get_indexer(judged.customer_id)
    j_idx = EventIndex(j_key, judged.ref.to_numpy())
    # Earlier deliveries: every judged order before the moment, minus the current one.
    earlier = j_idx.count_before(q, at) - 1
    earlier_late = j_idx.sum_before(judged.late.to_numpy(), q, at) - cur.late.to_numpy()

    out = {
        "orders_so_far": orders_so_far,
        "orders_since_delivery": orders_so_far - placed.count_before(q, np.where(ref == NAT, at, ref + 1)),
        "tenure_days": np.where(first == NAT, np.nan, (at - first) / US_PER_DAY),
        "days_since_previous_order": np.where(previous_at == NAT, np.nan, (cur_ordered - previous_at) / US_PER_DAY),
        "spend_so_far": placed.sum_before(orders.value.to_numpy(dtype=float), q, at),
        # The customer's own buying rate: what RFM and BG/NBD live on, given to the trees directly.
        "orders_per_year": np.where(first == NAT, np.nan, orders_so_far / np.maximum((at - first) / US_PER_DAY, 30.0) * 365.0),
        "earlier_deliveries": earlier,
        "earlier_late": earlier_late,
        "earlier_late_share": np.where(earlier > 0, earlier_late / np.maximum(earlier, 1), np.nan),
    }
    out.update(_feedback_history(feedback, orders, cust_vocab, q, at, cur.order_id.to_numpy()))
    return pd.DataFrame(out).astype(np.float32)


def _feedback_history(feedback, orders, cust_vocab, q, at, current_orders) -> dict[str, np.ndarray]:
    """Ratings and contacts the customer gave about earlier orders, before the moment."""
    nan = np.full(len(q), np.nan)
    if feedback is None or not len(feedback):
        return {"earlier_mean_rating": nan, "earlier_low_ratings": nan, "earlier_contacts": nan}
    cust_of_order = orders.set_index(orders.order_id.astype("str")).customer_id.astype("str")
    fb = feedback[feedback.order_id.astype("str").isin(cust_of_order.index)]
    order_ids = fb.order_id.astype("str")
    everything = _feedback_sums(fb, cust_vocab.get_indexer(order_ids.map(cust_of_order)), q, at)
    # Feedback about the current order is the current delivery's, not history.
    order_vocab = pd.Index(pd.unique(np.concatenate([order_ids.to_numpy(), current_orders])))
    own = _feedback_sums(fb, order_vocab.get_indexer(order_ids), order_vocab.get_indexer(current_orders), at)
    earlier = {k: everything[k] - own[k] for k in everything}
    return {
        "earlier_mean_rating": np.where(earlier["n_rated"] > 0, earlier["rating_sum"] / np.maximum(earlier["n_rated"], 1), np.nan),
        "earlier_low_ratings": earlier["low"],
        "earlier_contacts": earlier["contacts"],
    }


def _feedback_sums(fb: pd.DataFrame, key: np.ndarray, q: np.ndarray, at: np.ndarray) -> dict[str, np.ndarray]:
    """Ratings given, their sum, low ratings and contacts of feedback keyed ``key``, before each moment."""
    idx = EventIndex(key, micros(fb.submitted_at))
    rating = fb.rating.to_numpy(dtype=float, na_value=np.nan)
    return {
        "n_rated": idx.sum_before(~np.isnan(rating), q, at),
        "rating_sum": idx.sum_before(rating, q, at),
        "low": idx.sum_before(rating <= 2, q, at),
        "contacts": idx.sum_before(fb.contacts.to_numpy(dtype=float, na_value=np.nan), q, at),
    }
