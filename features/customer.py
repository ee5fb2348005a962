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

from features.pit import (NAT, US_PER_DAY, Columns, EventIndex, Lookup, as_columns, columns_of, concat, frame_of,
                          groups, hours_between, positions_by_key, shared_strings, size, take)

CUSTOMER_CATEGORICAL = ("carrier", "service_level", "origin_region", "destination_region")
COPY = "\x1f"  # joins an id and its copy number: a character no real id holds
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "value")
TIMESTAMPS = {"orders": ("ordered_at",), "experience": ("ref",), "feedback": ("submitted_at",),
              "customers": ("first_seen_at",)}


def orders_table(shipments, orders=None) -> Columns:
    """Every order of every customer: the orders table, or the one implied by shipments."""
    s = as_columns(shipments)
    code, first = groups(s["order_id"])
    n = len(first)
    ordered = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(ordered, code, s["ordered_at"])
    implied = {"order_id": s["order_id"][first], "customer_id": s["customer_id"][first], "ordered_at": ordered,
               "value": np.bincount(code, np.nan_to_num(np.asarray(s["value"], dtype=float)), minlength=n)}
    if orders is None:
        return implied
    o = as_columns(orders)
    listed = set(o["order_id"].tolist())
    extra = np.array([k not in listed for k in implied["order_id"].tolist()], dtype=bool)
    return concat([{c: o[c] for c in ORDER_COLUMNS}, take(implied, extra)])


def shipment_reference(shipments) -> np.ndarray:
    """When a parcel's outcome is judged: its delivery, or its promise if never delivered."""
    delivered, promised = shipments["delivered_at"], shipments["promised_at"]
    return np.where(delivered != NAT, delivered, promised)


def order_experience(shipments, scans=None) -> Columns:
    """Per order with shipments: the moment it is judged (NAT while still open) and its lane."""
    s = as_columns(shipments)
    ref = shipment_reference(s)
    code, first = groups(s["order_id"])
    n = len(first)
    judged = np.full(n, NAT)
    np.maximum.at(judged, code, ref)
    late = np.zeros(n)
    np.maximum.at(late, code, _late_flag(s))
    still_open = np.bincount(code, ref == NAT, minlength=n) > 0
    return {"order_id": s["order_id"][first], "customer_id": s["customer_id"][first],
            "ref": np.where(still_open, NAT, judged), "late": late,
            **{c: s[c][first] for c in CUSTOMER_CATEGORICAL}}


def _late_flag(s: Columns) -> np.ndarray:
    delivered, promised = s["delivered_at"], s["promised_at"]
    return ((promised != NAT) & ((delivered == NAT) | (delivered > promised))).astype(float)


def churn_moments(experience, lag_days: float | np.ndarray = 0.0) -> pd.DataFrame:
    """(order_id, as_of) for every judged order, ``lag_days`` after its judgement.

    The lag is never zero: a moment at exactly the delivery would not see it (strictly
    before), so the smallest lag is one second.
    """
    ref = np.asarray(experience["ref"])
    judged = ref != NAT
    lag_us = np.maximum(np.asarray(lag_days, dtype=float) * US_PER_DAY, 1_000_000).astype(np.int64)
    if np.ndim(lag_days):
        lag_us = lag_us[judged]
    return frame_of({"order_id": np.asarray(experience["order_id"], dtype=object)[judged], "as_of": ref[judged] + lag_us},
                    timestamps=("as_of",))


@dataclass
class CustomerHistory:
    """What churn features need about customers besides the delivery being scored.

    Built from a whole data set for training, saved in the feature snapshot, and
    extended with a request's own order by the service: the same tables either way.
    Each table is columns (a mapping of name to array).
    """

    orders: Columns  # order_id, customer_id, ordered_at, value
    experience: Columns  # per order with shipments: ref (us, NAT while open), late, lane
    feedback: Columns | None
    customers: Columns | None

    TABLES = ("orders", "experience", "feedback", "customers")

    @classmethod
    def from_tables(cls, shipments, scans, orders, feedback, customers) -> "CustomerHistory":
        optional = lambda t: shared_strings(as_columns(t)) if t is not None else None  # noqa: E731
        return cls(shared_strings(orders_table(shipments, orders)), shared_strings(order_experience(shipments, scans)),
                   optional(feedback), optional(customers))

    def of_customers(self, customer_ids) -> "CustomerHistory":
        """Only these customers' rows: their features are the same as in the whole history
        (every customer feature reads the customer's own orders, deliveries and feedback),
        and the cost no longer grows with the number of customers. The rows come from an
        index built once (``index``), so a request looks its customer up."""
        rows = self.index()
        empty = np.zeros(0, dtype=np.int64)
        pick = {name: np.concatenate([empty, *(rows[name].get(c, empty) for c in dict.fromkeys(customer_ids))])
                for name in rows}
        part = lambda name: take(getattr(self, name), pick[name]) if getattr(self, name) is not None else None  # noqa: E731
        return CustomerHistory(*(part(name) for name in self.TABLES))

    def copies_for(self, customer_ids) -> tuple["CustomerHistory", np.ndarray]:
        """The rows of these customers, a separate copy for each time one is named again
        (its ids suffixed with a separator and 2, 3...), and the id each position should use: so
        several deliveries of one customer are scored in one pass, each against the
        customer's history alone and never against the others."""
        ids = [str(c) for c in customer_ids]
        seen: dict[str, int] = {}
        names = []
        for c in ids:
            seen[c] = seen.get(c, 0) + 1
            names.append(c if seen[c] == 1 else f"{c}{COPY}{seen[c]}")
        base = self.of_customers(list(dict.fromkeys(ids)))
        copies = [base]
        for k in range(2, max(seen.values(), default=1) + 1):
            again = base.of_customers([c for c, n in seen.items() if n >= k])
            copies.append(again._suffixed(f"{COPY}{k}"))
        return CustomerHistory.joined(copies), np.array(names, dtype=object)

    @classmethod
    def joined(cls, parts: list["CustomerHistory"]) -> "CustomerHistory":
        """The histories of different customers as one (partitions of a data set, copies)."""
        tables = lambda name: [getattr(p, name) for p in parts if getattr(p, name) is not None]  # noqa: E731
        return cls(*(concat(tables(name)) if tables(name) else None for name in cls.TABLES))

    def _suffixed(self, suffix: str) -> "CustomerHistory":
        def rename(table: Columns | None) -> Columns | None:
            if table is None:
                return None
            out = dict(table)
            for key in ("customer_id", "order_id"):
                if key in out:
                    out[key] = np.array([f"{v}{suffix}" for v in out[key].tolist()], dtype=object)
            return out

        return CustomerHistory(*(rename(getattr(self, name)) for name in self.TABLES))

    def index(self) -> dict[str, dict[str, np.ndarray]]:
        """Per table, each customer's row positions (feedback through its order's customer):
        the online table a request reads its customer's rows from."""
        if getattr(self, "_index", None) is None:
            owner = dict(zip(self.orders["order_id"].tolist(), self.orders["customer_id"].tolist()))
            self._index = {
                "orders": positions_by_key(self.orders["customer_id"]),
                "experience": positions_by_key(self.experience["customer_id"]),
                "feedback": positions_by_key(np.array([owner.get(o) for o in self.feedback["order_id"].tolist()],
                                                      dtype=object)) if self.feedback is not None else {},
                "customers": positions_by_key(self.customers["customer_id"]) if self.customers is not None else {},
            }
        return self._index

    def with_orders(self, shipments, scans=None) -> "CustomerHistory":
        """This history plus the orders of ``shipments`` (replacing any with the same id)."""
        new_exp = order_experience(shipments, scans)
        new_orders = orders_table(shipments)

        def without(table: Columns, ids: np.ndarray) -> Columns:
            drop = set(ids.tolist())
            return take(table, np.array([o not in drop for o in table["order_id"].tolist()], dtype=bool))

        return CustomerHistory(concat([without(self.orders, new_orders["order_id"]), new_orders]),
                               concat([without(self.experience, new_exp["order_id"]), new_exp]),
                               self.feedback, self.customers)

    def frame(self, name: str) -> pd.DataFrame | None:
        """One table as a DataFrame with UTC timestamps (an edge: writing it, a baseline's fit)."""
        table = getattr(self, name)
        return frame_of(table, timestamps=TIMESTAMPS[name]) if table is not None else None

    def save(self, folder: Path) -> None:
        for name in self.TABLES:
            if getattr(self, name) is not None:
                self.frame(name).to_parquet(Path(folder) / f"customers_{name}.parquet", index=False)

    @classmethod
    def load(cls, folder: Path) -> "CustomerHistory":
        def read(name):
            path = Path(folder) / f"customers_{name}.parquet"
            return columns_of(pd.read_parquet(path)) if path.exists() else None

        return cls(*(read(name) for name in cls.TABLES))


def customer_features(shipments, scans, history: CustomerHistory, moments, usual: Columns | None = None) -> Columns:
    """One row per (order_id, as_of): the delivery just completed and the customer's history.

    ``shipments`` and ``scans`` must hold the parcels of the scored orders (more is
    fine); tables are columns or, at the edge, DataFrames. ``usual`` (columns
    ``shipment_id`` and ``usual_hours``, optional) is the lane's usual lead time at order
    time, to say how slow this delivery was against it.
    """
    s, m = as_columns(shipments), as_columns(moments)
    scans = as_columns(scans) if scans is not None else None
    exp = history.experience
    order_ids = np.asarray(m["order_id"], dtype=object)
    exp_row = Lookup(exp["order_id"]).codes(order_ids)
    if (exp_row < 0).any():
        raise KeyError(f"churn moment for an order without shipments: {order_ids[exp_row < 0][0]!r}")
    at = m["as_of"]
    cur = take(exp, exp_row)
    ref = cur["ref"]
    return {
        "order_id": order_ids,
        "customer_id": cur["customer_id"],
        "as_of": at,
        **{c: cur[c] for c in CUSTOMER_CATEGORICAL},
        "days_since_delivery": np.where(ref == NAT, np.nan, (at - ref) / US_PER_DAY),
        **_current_delivery(s, scans, history.feedback, order_ids, at, usual),
        **_history(history, cur, at),
    }


def _current_delivery(s: Columns, scans, feedback, order_ids: np.ndarray, at: np.ndarray, usual) -> Columns:
    """The order's parcels as of each moment: lateness, transit, exceptions, feedback."""
    row, sp = parcels_of(s["order_id"], order_ids)
    n = len(order_ids)
    t = at[row]
    delivered, promised, ordered = s["delivered_at"][sp], s["promised_at"][sp], s["ordered_at"][sp]
    known = (delivered != NAT) & (delivered < t)
    end = np.where(known, delivered, t)
    late_days = np.where((promised != NAT) & (known | (promised < t)), (end - promised) / US_PER_DAY, np.nan)
    transit_h = np.where(known, hours_between(delivered, ordered), np.nan)
    usual_h = _usual_hours(usual, s["shipment_id"])[sp]
    has_parcels = np.bincount(row, minlength=n) > 0
    total = lambda v: np.where(has_parcels, np.bincount(row, v, minlength=n), np.nan)  # noqa: E731
    out = {"parcels": total(np.ones(len(row))), "parcels_missing": total((~known).astype(float)),
           "days_late": _group_max(late_days, row, n), "transit_days": _group_max(transit_h / 24.0, row, n),
           "transit_vs_usual": _group_max(transit_h / usual_h, row, n),
           **{k: total(v) for k, v in _scan_counts(s, scans, sp, t).items()}}
    out["not_delivered_by_promise"] = ((out["parcels_missing"] > 0) & (out["days_late"] > 0)).astype(float)
    out["rating"], out["contacts"] = _order_feedback(feedback, order_ids, at)
    return {k: v.astype(np.float32) for k, v in out.items()}


def _group_max(values: np.ndarray, row: np.ndarray, n: int) -> np.ndarray:
    """Largest value per row, missing values skipped (NaN when all are missing)."""
    out = np.full(n, np.nan)
    np.fmax.at(out, row, values)
    return out


def _usual_hours(usual: Columns | None, shipment_ids: np.ndarray) -> np.ndarray:
    if usual is None:
        return np.full(len(shipment_ids), np.nan)
    return _value_of(usual, "shipment_id", shipment_ids, "usual_hours", missing=np.nan)


def parcels_of(ship_order: np.ndarray, order_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand each queried order into its parcels: (query row, shipment position) pairs."""
    vocab = Lookup.of(ship_order, order_ids)
    code = vocab.codes(ship_order)
    by_code = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(vocab))
    starts = np.concatenate([[0], np.cumsum(counts)])
    q = vocab.codes(order_ids)
    n = counts[q]
    row = np.repeat(np.arange(len(order_ids)), n)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
    return row, by_code[starts[q][row] + offset]


def _scan_counts(s: Columns, scans, sp: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    names = {"exceptions": "exception", "failed_attempts": "delivery_attempted", "returned": "returned_to_sender"}
    if scans is None or not size(scans):
        return {k: np.zeros(len(sp)) for k in names}
    pos = Lookup(s["shipment_id"]).codes(scans["shipment_id"])
    seen = EventIndex(pos, scans["scanned_at"]).before(sp, t)  # one search; each kind is a sum over it
    return {k: seen.sum(scans["event"] == e) for k, e in names.items()}


def _order_feedback(feedback, order_ids: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order's latest rating and its contacts, from feedback submitted before the moment."""
    if feedback is None or not size(feedback):
        return np.full(len(order_ids), np.nan), np.full(len(order_ids), np.nan)
    vocab = Lookup.of(feedback["order_id"], order_ids)
    fb_key, q_key = vocab.codes(feedback["order_id"]), vocab.codes(order_ids)
    submitted, ratings, contacts = feedback["submitted_at"], feedback["rating"], feedback["contacts"]
    rated = ~np.isnan(ratings)
    last = EventIndex(fb_key[rated], submitted[rated]).last_before(q_key, at)
    rating = np.where(last >= 0, ratings[rated][np.maximum(last, 0)] if rated.any() else np.nan, np.nan)
    has_contacts = ~np.isnan(contacts)
    contacted = EventIndex(fb_key[has_contacts], submitted[has_contacts]).before(q_key, at)
    contact_sum = np.where(contacted.count() > 0, contacted.sum(contacts[has_contacts]), np.nan)
    return rating, contact_sum


def _history(history: CustomerHistory, cur: Columns, at: np.ndarray) -> Columns:
    """The customer's orders, spend, earlier deliveries and feedback before the moment."""
    orders, exp, customers = history.orders, history.experience, history.customers
    vocab = Lookup.of(orders["customer_id"], exp["customer_id"])
    q = vocab.codes(cur["customer_id"])
    o_at = orders["ordered_at"]
    placed = EventIndex(vocab.codes(orders["customer_id"]), o_at)
    cur_ordered = _value_of(orders, "order_id", cur["order_id"], "ordered_at")
    ref = cur["ref"]
    so_far = placed.before(q, at)  # one search for the count, the spend and the latest order
    orders_so_far = so_far.count()
    first = placed.first_time(q)
    if customers is not None and "first_seen_at" in customers:
        seen = _value_of(customers, "customer_id", cur["customer_id"], "first_seen_at")
        first = np.where((seen != NAT) & ((first == NAT) | (seen < first)) & (seen < at), seen, first)
    previous = placed.last_before(q, cur_ordered)
    latest = so_far.last()
    previous_at = np.where(previous >= 0, o_at[np.maximum(previous, 0)] if len(o_at) else NAT, NAT)

    judged = exp["ref"] != NAT
    j_idx = EventIndex(vocab.codes(exp["customer_id"][judged]), exp["ref"][judged])
    # Earlier deliveries: every judged order before the moment, minus the current one.
    judged_before = j_idx.before(q, at)
    earlier = judged_before.count() - 1
    earlier_late = judged_before.sum(exp["late"][judged]) - cur["late"]

    out = {
        "orders_so_far": orders_so_far,
        "orders_since_delivery": orders_so_far - placed.count_before(q, np.where(ref == NAT, at, ref + 1)),
        "tenure_days": np.where(first == NAT, np.nan, (at - first) / US_PER_DAY),
        "days_since_previous_order": np.where((previous_at == NAT) | (cur_ordered == NAT), np.nan,
                                              (cur_ordered - previous_at) / US_PER_DAY),
        "days_since_last_order": np.where(latest >= 0, (at - (o_at[np.maximum(latest, 0)] if len(o_at) else at))
                                          / US_PER_DAY, np.nan),
        "spend_so_far": so_far.sum(orders["value"]),
        # The customer's own buying rate: what RFM and BG/NBD live on, given to the trees directly.
        "orders_per_year": np.where(first == NAT, np.nan, orders_so_far / np.maximum((at - first) / US_PER_DAY, 30.0) * 365.0),
        "earlier_deliveries": earlier,
        "earlier_late": earlier_late,
        "earlier_late_share": np.where(earlier > 0, earlier_late / np.maximum(earlier, 1), np.nan),
    }
    out.update(_feedback_history(history.feedback, orders, vocab, q, at, cur["order_id"]))
    return {k: np.asarray(v).astype(np.float32) for k, v in out.items()}


def _value_of(table: Columns, key: str, wanted: np.ndarray, column: str, missing=NAT) -> np.ndarray:
    """``column`` of the row whose ``key`` is each wanted value (``missing`` when there is none)."""
    code = Lookup(table[key]).codes(wanted)
    values = table[column]
    return np.where(code >= 0, values[np.maximum(code, 0)] if len(values) else missing, missing)


def _feedback_history(feedback, orders: Columns, vocab: Lookup, q, at, current_orders) -> Columns:
    """Ratings and contacts the customer gave about earlier orders, before the moment."""
    nan = np.full(len(q), np.nan)
    if feedback is None or not size(feedback):
        return {"earlier_mean_rating": nan, "earlier_low_ratings": nan, "earlier_contacts": nan}
    owner = Lookup(orders["order_id"]).codes(feedback["order_id"])
    fb = take(feedback, owner >= 0)
    everything = _feedback_sums(fb, vocab.codes(orders["customer_id"][owner[owner >= 0]]), q, at)
    # Feedback about the current order is the current delivery's, not history.
    order_vocab = Lookup.of(fb["order_id"], current_orders)
    own = _feedback_sums(fb, order_vocab.codes(fb["order_id"]), order_vocab.codes(current_orders), at)
    earlier = {k: everything[k] - own[k] for k in everything}
    return {
        "earlier_mean_rating": np.where(earlier["n_rated"] > 0, earlier["rating_sum"] / np.maximum(earlier["n_rated"], 1), np.nan),
        "earlier_low_ratings": earlier["low"],
        "earlier_contacts": earlier["contacts"],
    }


def _feedback_sums(fb: Columns, key: np.ndarray, q, at) -> dict[str, np.ndarray]:
    """Ratings given, their sum, low ratings and contacts of feedback keyed ``key``, before each moment."""
    given = EventIndex(key, fb["submitted_at"]).before(q, at)
    rating = fb["rating"]
    return {
        "n_rated": given.sum(~np.isnan(rating)),
        "rating_sum": given.sum(rating),
        "low": given.sum(rating <= 2),
        "contacts": given.sum(fb["contacts"]),
    }
