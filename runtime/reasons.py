"""Feature contributions in plain words: "lane NJ → CA is usually slow", "ordered on Saturday".

The words come from the feature spec (``features.spec``); this module only fills in
the row's lane, carrier, day or value. No sentence shows a raw feature name, ``nan``
or ``None``: a value that is not known leaves the sentence without it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from features.spec import CHURN, EDD, feature

#: the row fields a sentence may mention
REASON_CONTEXT = ("carrier", "service_level", "origin_region", "destination_region", "last_event",
                  "hours_since_order", "scans_so_far")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NOT_HANDED_OVER = "not handed to the carrier yet"


def _known(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _fields(row: dict) -> dict:
    """The words a sentence may fill in from the row (worked out once per row)."""
    return {
        "lane": f"{row.get('origin_region')} → {row.get('destination_region')}",
        "carrier": " ".join(str(row[k]).replace("_", " ") for k in ("carrier", "service_level")
                            if _known(row.get(k))) or "the carrier",
        "destination": row.get("destination_region") if _known(row.get("destination_region")) else "the destination",
        "last_event": str(row["last_event"]).replace("_", " ") if _known(row.get("last_event")) else "none yet",
    }


def _sentence(template: str, value, fields: dict) -> str:
    if "{day}" in template:
        fields = {**fields, "day": DAYS[int(value) % 7] if _known(value) else ""}
    if "{value" in template and not _known(value):
        return template.split("{value")[0].strip() or "distance to go"
    text = template.format(value=value if _known(value) and "{value" in template else 0, **fields)
    return text if "{day}" not in template or _known(value) else "the day it was ordered"


@functools.cache
def _reads(template: str) -> int:
    """What a sentence needs: 0 nothing (it is the text), 1 the row's fields, 2 its value too."""
    if "{value" in template or "{day}" in template:
        return 2
    return 1 if "{" in template else 0


def _at_order(row: dict) -> bool:
    """No scan seen and no time in transit: the carrier does not have the parcel yet."""
    return not row.get("scans_so_far") and not row.get("hours_since_order")


def plain_reasons(reasons: list[tuple], row: dict, top: int = 3) -> list[dict]:
    """Reasons from ``ModelBundle._candidates``, (feature, value, effect in hours), with
    sentences a CX agent can read.

    Reasons that read the same (two windows of one lane) become one, their effects
    added. The answer is the ``top`` sentences whose largest single contribution is
    largest (so a situational reason such as the network's nowcast is not crowded out
    by the sum of several small windows), listed by their added effect. At order time
    every in-transit feature is one reason, "not handed to the carrier yet", not "time
    already spent in transit" at 0 hours. A bulk answer makes 15 candidates a row: the
    row's fields are worked out only for a sentence that names them."""
    merged: dict[str, dict] = {}
    fields = None
    at_order = _at_order(row)
    for f, v, e in reasons:
        spec = feature(EDD, f)
        if spec.in_transit and at_order:
            text = NOT_HANDED_OVER
        elif spec.below_zero is not None and _known(v) and v < 0:
            text = spec.below_zero
        else:
            template = spec.words[0] if e > 0 else spec.words[1]
            reads = _reads(template)
            if reads == 0:
                text = template
            else:
                fields = _fields(row) if fields is None else fields
                text = template.format(**fields) if reads == 1 else _sentence(template, v, fields)
        if text in merged:
            merged[text]["effect_hours"] = round(merged[text]["effect_hours"] + e, 2)
        else:
            merged[text] = {"feature": f, "text": text, "value": v if _known(v) else None, "effect_hours": e}
    # Listed by what they add up to: three windows of one lane can add up past the distance.
    return sorted(list(merged.values())[:top], key=lambda r: -abs(r["effect_hours"]))


def lost_reason(silent_h: float, usual_h: float, carrier: tuple | None, share: float, handed_over: bool) -> dict:
    """The one reason a likely lost parcel gets (``runtime.bundle.LOST_FACTOR``): how long
    nothing has been heard of it against how long parcels take; ``carrier`` (carrier,
    service level) when the figure is that carrier's, None for the whole network's;
    ``handed_over``: whether the carrier ever had it (a pickup or a scan)."""
    who = "all" if carrier is None else _fields({"carrier": carrier[0], "service_level": carrier[1]})["carrier"]
    silence = "no news of it" if handed_over else "not handed to the carrier"
    text = (f"likely lost: {silence} for {silent_h / 24:.0f} days, while {share:.1%} of {who} parcels "
            f"arrive within {usual_h / 24:.0f} days of the order")
    return {"feature": "last_event_age_h", "text": text, "value": round(float(silent_h), 1), "effect_hours": None}


def churn_words(name: str) -> str:
    """A churn feature in plain words: "contacts with customer service", not "contacts"."""
    return feature(CHURN, name).words[0]


def churn_actionable(name: str) -> bool:
    """Whether the retailer or carrier can act on a churn feature (the spec says)."""
    return feature(CHURN, name).actionable


def actionable_share(contrib: np.ndarray, names: list[str]) -> np.ndarray:
    """Per row, the share of the risk pushed above average (the positive contributions,
    log-odds) that comes from factors the retailer or carrier can act on; 0 when nothing
    pushes it up."""
    act = np.array([churn_actionable(n) for n in names])
    up = np.clip(contrib, 0.0, None)
    total = up.sum(axis=1)
    return np.divide(up[:, act].sum(axis=1), total, out=np.zeros(len(up)), where=total > 0)


def actionable_first(reasons: list[dict]) -> list[dict]:
    """Churn reasons with those a CX agent can act on first, each group by size of effect."""
    return sorted(reasons, key=lambda r: (not churn_actionable(r["feature"]), -abs(r["effect_log_odds"])))
