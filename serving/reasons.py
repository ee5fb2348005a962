"""Feature contributions in plain words: "lane NJ → CA is usually slow", "ordered on Saturday"."""

from __future__ import annotations

#: the row fields a sentence may mention
REASON_CONTEXT = ("carrier", "service_level", "origin_region", "destination_region", "last_event")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _direction(effect_hours: float, slow: str = "slow", fast: str = "fast") -> str:
    return slow if effect_hours > 0 else fast


def plain_reason(reason: dict, row: dict) -> dict:
    """A reason from ``ModelBundle.reasons`` with a sentence a CX agent can read."""
    f, v, e = reason["feature"], reason["value"], float(reason["effect_hours"])
    lane = f"{row.get('origin_region')} → {row.get('destination_region')}"
    if f.startswith(("lane_", "carrier_lane_", "postal_lane_")):
        text = f"lane {lane} is usually {_direction(e)}"
    elif f.startswith("carrier_"):
        text = f"{row.get('carrier')} {row.get('service_level')} is {_direction(e, 'slower', 'faster')} lately"
    elif f.startswith("destination_"):
        text = f"deliveries into {row.get('destination_region')} are {_direction(e, 'delayed', 'quick')} lately"
    elif f == "order_dow" and v is not None:
        text = f"ordered on {DAYS[int(v) % 7]}"
    elif f in ("in_peak", "days_to_christmas", "days_to_black_friday", "order_week", "order_month"):
        text = "peak season" if e > 0 else "off-peak season"
    elif f in ("holidays_next_7d", "holiday_today", "holidays_to_promise"):
        text = "holidays ahead" if e > 0 else "no holidays ahead"
    elif f == "distance_km" and v is not None:
        text = f"{float(v):,.0f} km to go"
    elif f in ("carrier", "service_level"):
        text = f"{row.get('carrier')} {row.get('service_level')} service"
    elif f in ("hours_since_order", "hours_since_pickup", "progress_vs_usual", "hours_left_vs_usual"):
        text = "time already spent in transit"
    elif f in ("last_event", "last_event_age_h", "out_for_delivery_seen", "in_destination_region", "facility_scans",
               "scans_so_far", "picked_up"):
        text = f"latest scan: {row.get('last_event') or 'none yet'}"
    elif f in ("exceptions_so_far", "attempts_so_far"):
        text = "a carrier exception or failed attempt so far" if e > 0 else "no exceptions so far"
    elif f in ("promise_hours", "hours_to_promise", "business_days_to_promise"):
        text = "the promised date"
    elif f == "weight_kg":
        text = "parcel weight"
    else:
        text = f.replace("_", " ")
    return {"feature": f, "text": text, "value": v, "effect_hours": e}


#: plain words for the churn model's features (API reasons and the review pages)
CHURN_WORDS = {
    "days_late": "days late", "exceptions": "carrier exceptions", "failed_attempts": "failed delivery attempts",
    "returned": "parcel returned", "parcels_missing": "parcels never delivered", "rating": "the customer's rating",
    "contacts": "contacts with customer service", "orders_so_far": "orders so far",
    "days_since_delivery": "days since the delivery", "orders_since_delivery": "orders since the delivery",
    "days_since_previous_order": "days since the previous order", "late_share_before": "share of earlier orders late",
    "lead_vs_usual": "delivery time against the lane's usual",
}


def churn_words(feature: str) -> str:
    """A churn feature in plain words: "contacts with customer service", not "contacts"."""
    return CHURN_WORDS.get(feature, feature.replace("_", " "))
