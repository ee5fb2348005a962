"""Every model feature in one list: name, kind, the models that use it, plain words, actionability.

The model matrix (which columns each model trains on), the reasons' text in the API,
the churn words on the review pages and the drivers page all read this list. Adding
a feature is one entry here, its function in a feature module, and its tests.

``words`` is a pair: the sentence when the feature pushes the answer up (a later
ETA, a higher risk) and when it pushes it down. Sentences may name the row's
``{lane}``, ``{carrier}``, ``{destination}``, ``{day}`` or ``{value}``.
``actionable``: something the retailer or carrier can change for this customer
(a late or damaged delivery, a contact), as opposed to the customer's own pattern.
``direction``: the way the model's answer may move as the feature grows (monotone
constraints), or free. ``BASES`` names the column a model's booster starts from (churn:
the customer's own buying rhythm), whose words sit with the ``ADJUSTMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.history import LEVELS, SHRINK_ORDER, WINDOWS

EDD, DELAY, CHURN = "edd", "delay", "churn"
SHIPMENT_MODELS = (EDD, DELAY)


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "categorical" or "numeric"
    models: tuple[str, ...]
    words: tuple[str, str]  # (pushes up, pushes down)
    actionable: bool = False
    in_transit: bool = False  # known only once the carrier has the parcel
    #: moves with the calendar by construction (season, holidays, window statistics frozen
    #: at the snapshot's end): live requests always differ from the training window, so
    #: drift is shown for it but never advised on
    clock: bool = False
    #: +1: the model's answer may only rise as the feature grows (LightGBM's monotone
    #: constraint), -1: only fall, 0: free. A CX agent never sees more exceptions lower a risk.
    direction: int = 0
    #: the sentence when the value is below zero, whichever way it pushes (a promise that
    #: has already passed is not "close")
    below_zero: str | None = None


def _same(text: str) -> tuple[str, str]:
    return text, text


def _history_features() -> list[Feature]:
    """The window statistics of ``features.history``, one entry per level, window and statistic."""
    about = {
        "global": ("deliveries everywhere are slow lately", "deliveries everywhere are quick lately"),
        "carrier": ("{carrier} is slower lately", "{carrier} is faster lately"),
        "lane": ("lane {lane} is usually slow", "lane {lane} is usually fast"),
        "carrier_lane": ("{carrier} on lane {lane} is usually slow", "{carrier} on lane {lane} is usually fast"),
        "postal_lane": ("this postal route is usually slow", "this postal route is usually fast"),
        "destination": ("deliveries into {destination} are delayed lately", "deliveries into {destination} are quick lately"),
    }
    stats = ("n", "median_h", "p90_h", "spread_h", "late_rate", "exception_rate")
    out = [Feature(f"{level}_{w}d_{stat}", "numeric", SHIPMENT_MODELS, about[level], clock=True)
           for level in LEVELS for w in WINDOWS[level] for stat in stats]
    # in the order History shrinks them: parents first
    out += [Feature(f"{level}_{stat}", "numeric", SHIPMENT_MODELS, about[level], clock=True)
            for level in SHRINK_ORDER for stat in ("median_h", "p90_h", "late_rate", "exception_rate")]
    out += [Feature("carrier_trend_7_91", "numeric", SHIPMENT_MODELS, about["carrier"], clock=True),
            Feature("carrier_volume_7d", "numeric", SHIPMENT_MODELS, ("{carrier} is busy", "{carrier} is quiet"), clock=True),
            Feature("carrier_volume_ratio_7_91", "numeric", SHIPMENT_MODELS, ("{carrier} is busy", "{carrier} is quiet"),
                    clock=True)]
    return out


PEAK = ("peak season", "off-peak season")
HOLIDAYS = ("holidays ahead", "no holidays ahead")
PROMISE = ("the promised date is far off", "the promised date is close")
PROMISE_PASSED = "the promised date has passed"
TRANSIT = ("time already spent in transit", "time already spent in transit")
SCANS = ("latest scan: {last_event}", "latest scan: {last_event}")

#: in the order the model rows have them (LightGBM's column sampling depends on the order)
SHIPMENT_FEATURES = [
    Feature("hours_since_order", "numeric", SHIPMENT_MODELS, TRANSIT, in_transit=True),
    Feature("picked_up", "numeric", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("hours_since_pickup", "numeric", SHIPMENT_MODELS, TRANSIT, in_transit=True),
    Feature("last_event", "categorical", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("last_event_age_h", "numeric", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("scans_so_far", "numeric", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("facility_scans", "numeric", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("exceptions_so_far", "numeric", SHIPMENT_MODELS,
            ("a carrier exception or failed attempt so far", "no exceptions so far"), in_transit=True),
    Feature("attempts_so_far", "numeric", SHIPMENT_MODELS,
            ("a carrier exception or failed attempt so far", "no exceptions so far"), in_transit=True),
    Feature("out_for_delivery_seen", "numeric", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("in_destination_region", "numeric", SHIPMENT_MODELS, SCANS, in_transit=True),
    Feature("progress_vs_usual", "numeric", SHIPMENT_MODELS, TRANSIT, in_transit=True),
    Feature("hours_left_vs_usual", "numeric", SHIPMENT_MODELS, TRANSIT, in_transit=True),
    Feature("carrier", "categorical", SHIPMENT_MODELS, _same("{carrier} service")),
    Feature("service_level", "categorical", SHIPMENT_MODELS, _same("{carrier} service")),
    Feature("origin_region", "categorical", SHIPMENT_MODELS, ("lane {lane} is usually slow", "lane {lane} is usually fast")),
    Feature("destination_region", "categorical", SHIPMENT_MODELS,
            ("deliveries into {destination} take longer", "deliveries into {destination} are quick")),
    Feature("weight_kg", "numeric", SHIPMENT_MODELS, ("a heavy parcel", "a light parcel")),
    Feature("value", "numeric", SHIPMENT_MODELS, _same("the parcel's value")),
    Feature("distance_km", "numeric", SHIPMENT_MODELS, _same("{value:,.0f} km to go")),
    Feature("promise_hours", "numeric", SHIPMENT_MODELS, PROMISE),
    Feature("order_dow", "numeric", SHIPMENT_MODELS, _same("ordered on {day}")),
    Feature("order_hour", "numeric", SHIPMENT_MODELS, ("ordered late in the day", "ordered early in the day")),
    Feature("order_week", "numeric", SHIPMENT_MODELS, PEAK, clock=True),
    Feature("order_month", "numeric", SHIPMENT_MODELS, PEAK, clock=True),
    Feature("days_to_black_friday", "numeric", SHIPMENT_MODELS, PEAK, clock=True),
    Feature("days_to_christmas", "numeric", SHIPMENT_MODELS, PEAK, clock=True),
    Feature("in_peak", "numeric", SHIPMENT_MODELS, PEAK, clock=True),
    Feature("holiday_today", "numeric", SHIPMENT_MODELS, HOLIDAYS, clock=True),
    Feature("holidays_next_7d", "numeric", SHIPMENT_MODELS, HOLIDAYS, clock=True),
    Feature("business_days_to_promise", "numeric", SHIPMENT_MODELS, PROMISE, below_zero=PROMISE_PASSED),
    Feature("holidays_to_promise", "numeric", SHIPMENT_MODELS, HOLIDAYS, clock=True),
    *_history_features(),
    Feature("hours_to_promise", "numeric", SHIPMENT_MODELS, PROMISE, below_zero=PROMISE_PASSED),
]

#: The churn booster's features: the delivery and what the customer did since it. It
#: starts from the customer's own buying rhythm (``BASES``), so their orders, tenure and
#: spend are not among them: given those, a booster that read them again ranked worse
#: than BG/NBD alone at every backtest cutoff (README, "Backtests").
CHURN_FEATURES = [
    *(Feature(c, "categorical", (CHURN,), _same(w)) for c, w in (
        ("carrier", "the carrier"), ("service_level", "the service level"), ("origin_region", "where it shipped from"),
        ("destination_region", "the customer's region"))),
    Feature("days_since_delivery", "numeric", (CHURN,), _same("days since the delivery")),
    Feature("parcels", "numeric", (CHURN,), _same("parcels in the order")),
    Feature("parcels_missing", "numeric", (CHURN,), _same("parcels never delivered"), actionable=True, direction=1),
    Feature("days_late", "numeric", (CHURN,), _same("days late"), actionable=True, direction=1),
    Feature("transit_days", "numeric", (CHURN,), _same("days in transit"), actionable=True),
    Feature("transit_vs_usual", "numeric", (CHURN,), _same("delivery time against the lane's usual"), actionable=True, direction=1),
    Feature("exceptions", "numeric", (CHURN,), _same("carrier exceptions"), actionable=True, direction=1),
    Feature("failed_attempts", "numeric", (CHURN,), _same("failed delivery attempts"), actionable=True, direction=1),
    Feature("returned", "numeric", (CHURN,), _same("parcel returned"), actionable=True, direction=1),
    Feature("not_delivered_by_promise", "numeric", (CHURN,), _same("not delivered by the promised date"), actionable=True, direction=1),
    Feature("rating", "numeric", (CHURN,), _same("the customer's rating"), actionable=True, direction=-1),
    Feature("contacts", "numeric", (CHURN,), _same("contacts with customer service"), actionable=True, direction=1),
    Feature("orders_since_delivery", "numeric", (CHURN,), _same("orders since the delivery"), direction=-1),
    Feature("earlier_late", "numeric", (CHURN,), _same("earlier late deliveries"), actionable=True, direction=1),
    Feature("earlier_late_share", "numeric", (CHURN,), _same("share of earlier deliveries late"), actionable=True, direction=1),
    Feature("earlier_low_ratings", "numeric", (CHURN,), _same("earlier low ratings"), actionable=True, direction=1),
    Feature("earlier_contacts", "numeric", (CHURN,), _same("earlier contacts with customer service"), actionable=True, direction=1),
]

#: what moves an answer besides the boosters' features, with words for its reason; never
#: a model column. ``region_nowcast``: how far behind the model the latest parcels into
#: the destination region ran at the data's end beyond the network's; ``network_nowcast``:
#: how far behind the parcels everywhere ran (``runtime.models.EddModel.nowcast_parts``);
#: ``rhythm_p_no_order``: the churn model's base (``BASES``), the customer's own pattern.
ADJUSTMENTS = {EDD: [Feature("region_nowcast", "numeric", (), (
    "parcels into {destination} are running behind right now", "parcels into {destination} are running ahead right now")),
    Feature("network_nowcast", "numeric", (), (
        "parcels everywhere are running behind lately", "parcels everywhere are running ahead lately"))],
    CHURN: [Feature("rhythm_p_no_order", "numeric", (), _same("their own buying rhythm (orders, tenure, time since the last)"))]}

#: features the churn boosters of versions trained before the base (2026-12-03) read: no
#: booster trains on them now, but a stored version that did still explains its answers
#: in these words (the registry keeps old versions, and one may still be the champion)
FORMER = {CHURN: [Feature(name, "numeric", (), _same(words)) for name, words in (
    ("orders_so_far", "orders so far"), ("tenure_days", "time as a customer"),
    ("days_since_previous_order", "days since the previous order"), ("days_since_last_order", "days since the latest order"),
    ("spend_so_far", "spend so far"), ("orders_per_year", "orders a year"),
    ("rhythm_p_alive", "how likely the customer still buys, by their rhythm"),
    ("earlier_deliveries", "earlier deliveries"), ("earlier_mean_rating", "earlier ratings"))]}

#: the column whose log-odds a model's booster starts from (LightGBM's ``init_score``):
#: churn starts from BG/NBD's chance of no order within the horizon (``features.rhythm``),
#: and its booster adds what the delivery and the days since it tell beyond that
BASES = {CHURN: "rhythm_p_no_order"}

FEATURES = [*SHIPMENT_FEATURES, *CHURN_FEATURES]
_BY_MODEL = {m: {f.name: f for f in FEATURES if m in f.models} for m in (EDD, DELAY, CHURN)}
_WORDS = {m: {**{f.name: f for f in FORMER.get(m, [])}, **features, **{f.name: f for f in ADJUSTMENTS.get(m, [])}}
          for m, features in _BY_MODEL.items()}


def model_features(model: str) -> list[str]:
    """The columns a model trains on, in the spec's order."""
    return list(_BY_MODEL[model])


def monotone(model: str, names: list[str]) -> list[int]:
    """Each of ``names``' ``direction`` for ``model``, in their order (LightGBM's
    ``monotone_constraints``)."""
    return [_BY_MODEL[model][n].direction if n in _BY_MODEL[model] else 0 for n in names]


def base(model: str) -> str | None:
    """The column ``model`` starts from (``BASES``), or None."""
    return BASES.get(model)


def categorical(model: str) -> tuple[str, ...]:
    return tuple(n for n, f in _BY_MODEL[model].items() if f.kind == "categorical")


def feature(model: str, name: str) -> Feature:
    """A model's feature, one of its ``ADJUSTMENTS`` or a ``FORMER`` one, by name (for its words)."""
    return _WORDS[model][name]
