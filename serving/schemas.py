"""Request and answer schemas of the HTTP API, in the contract's field names.

Pydantic does the checking, so every malformed request is answered 400 with the field
path and the rule (BentoML turns validation errors into 400s), never a 500.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool,
                      StrictFloat, model_validator)

from data.contract import EVENTS

MAX_BATCH = 1000
MAX_SCANS = 500
Event = Literal[EVENTS]  # type: ignore[valid-type]
#: scan events after which a parcel is on its way to no one: in the words of an error
ENDS = {"delivered": "delivered", "returned_to_sender": "returned to its sender"}
EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


def _plausible(t: datetime) -> datetime:
    # Calendars, holidays and day arithmetic are defined for these years only.
    if not EARLIEST <= t < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return t


def _written_out(t: object) -> object:
    # Pydantic would read a number as seconds since 1970: a client's mistake, not a time.
    if isinstance(t, (bool, int, float)):
        raise ValueError("must be an ISO 8601 date-time string with its time zone, not a number")
    return t


#: a timezone-aware moment in a plausible range, written as an ISO 8601 string
Moment = Annotated[AwareDatetime, BeforeValidator(_written_out), AfterValidator(_plausible)]


class ScanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scanned_at: Moment
    event: Event
    region: str | None = Field(default=None, max_length=64)
    postal: str | None = Field(default=None, max_length=32)


class ShipmentIn(BaseModel):
    """One shipment as the contract names its fields, plus its scans so far."""

    model_config = ConfigDict(extra="forbid")
    shipment_id: str = Field(default="request", min_length=1, max_length=128)
    customer_id: str | None = Field(default=None, max_length=128)
    carrier: str = Field(min_length=1, max_length=64)
    service_level: str = Field(min_length=1, max_length=64)
    origin_region: str = Field(min_length=1, max_length=64)
    destination_region: str = Field(min_length=1, max_length=64)
    origin_postal: str | None = Field(default=None, max_length=32)
    destination_postal: str | None = Field(default=None, max_length=32)
    ordered_at: Moment
    shipped_at: Moment | None = None
    promised_at: Moment | None = None
    # Strict numbers and flags: pydantic would otherwise read true as 1.0 and "0" as 0.0.
    # NaN and infinity are refused by name, not as "should be <= 5000".
    weight_kg: StrictFloat | None = Field(default=None, ge=0, le=5000, allow_inf_nan=False)
    value: StrictFloat | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    scans: list[ScanIn] = Field(default_factory=list, max_length=MAX_SCANS)
    as_of: Moment | None = Field(default=None, description="the moment to answer for; default: the order time, or "
                                 "just after the latest scan. A tracking page asking 'now' sends it: only then "
                                 "can a parcel silent for weeks be called likely lost")
    explain: StrictBool = True
    confidence: StrictFloat = Field(default=0.95, ge=0.5, le=0.995, allow_inf_nan=False)

    @model_validator(mode="after")
    def _in_order(self) -> "ShipmentIn":
        if self.shipped_at is not None and self.shipped_at < self.ordered_at:
            raise ValueError("shipped_at is before ordered_at")
        if self.promised_at is not None and self.promised_at < self.ordered_at:
            raise ValueError("promised_at is before ordered_at")
        if self.as_of is not None and self.as_of < self.ordered_at:
            raise ValueError("as_of is before ordered_at")
        for i, scan in enumerate(self.scans):
            if scan.scanned_at < self.ordered_at:
                raise ValueError(f"scans[{i}].scanned_at is before ordered_at")
        return self

    @model_validator(mode="after")
    def _still_on_its_way(self) -> "ShipmentIn":
        # An ETA for a parcel already delivered, or on its way back to its sender (it never
        # reaches the customer), would be a made-up number.
        for i, scan in enumerate(self.scans):
            if scan.event in ENDS and (self.as_of is None or scan.scanned_at < self.as_of):
                raise ValueError(f"scans[{i}] says the parcel was {ENDS[scan.event]} at {scan.scanned_at.isoformat()}: "
                                 "there is no ETA to predict (send an as_of before it for a past moment)")
        return self


class Reason(BaseModel):
    feature: str
    text: str
    value: str | float | None
    effect_hours: float | None = Field(description="how many hours it moves the median ETA; none for a parcel "
                                                   "likely lost, which has no ETA")


#: why a date field may be empty
NO_DATE = "none when the parcel is likely lost (likely_lost): a date would be made up"


class EtaOut(BaseModel):
    shipment_id: str
    as_of: datetime
    eta_p10: datetime | None = Field(description=NO_DATE)
    eta_p50: datetime | None = Field(description=NO_DATE)
    eta_p90: datetime | None = Field(description=NO_DATE)
    eta_p10_date: str | None = Field(description=NO_DATE)
    eta_p50_date: str | None = Field(description=NO_DATE)
    eta_p90_date: str | None = Field(description=NO_DATE)
    promise_at: datetime | None = Field(description=NO_DATE)
    promise_confidence: float
    late_probability: float | None = Field(description="the chance of missing promised_at (1 once it has passed "
                                                       "undelivered, or the parcel is likely lost); none without one")
    likely_lost: bool = Field(description="nothing heard of the parcel for 1.5 times the lead time within which "
                                          "99.9% of its carrier's parcels of the past year arrived: no ETA is given")
    confidence: Literal["high", "normal", "low"]
    unseen: list[str] = Field(description="the request's fields whose value the model never saw in training "
                                          "(a new carrier, or a misspelt one): answered from the wider levels")
    reasons: list[Reason]
    model_version: str


class DeliveryIn(ShipmentIn):
    """The delivery just completed: a shipment with its delivery moment (none if it never came)."""

    delivered_at: Moment | None = None

    @model_validator(mode="after")
    def _judged(self) -> "DeliveryIn":
        if self.delivered_at is None and self.promised_at is None:
            raise ValueError("give delivered_at, or promised_at for a delivery that never came")
        if self.delivered_at is not None and self.delivered_at < self.ordered_at:
            raise ValueError("delivered_at is before ordered_at")
        if self.delivered_at is not None and self.shipped_at is not None and self.delivered_at < self.shipped_at:
            raise ValueError("delivered_at is before shipped_at")
        return self

    def _still_on_its_way(self) -> "DeliveryIn":  # a delivery has its delivered scan: no check
        return self


class ChurnIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128)
    delivery: DeliveryIn
    as_of: Moment | None = None
    explain: StrictBool = True

    @model_validator(mode="after")
    def _after_the_delivery(self) -> "ChurnIn":
        d = self.delivery
        if self.as_of is not None and self.as_of < d.ordered_at:
            raise ValueError("as_of is before delivery.ordered_at")
        if self.as_of is not None and d.delivered_at is not None and self.as_of <= d.delivered_at:
            raise ValueError("as_of is not after delivery.delivered_at: /churn scores a customer after the delivery")
        return self


class ChurnReason(BaseModel):
    feature: str
    text: str
    value: str | float | None
    effect_log_odds: float
    actionable: bool = Field(description="the retailer or carrier can act on it (a delivery failure, a contact), "
                                         "as against the customer's own pattern")


class ChurnOut(BaseModel):
    customer_id: str
    as_of: datetime = Field(description="the moment scored: the request's, or just after the delivery "
                                        "(or its promise, for one that never came)")
    churn_risk: float
    risk_percentile: float = Field(description="0-100: the share of customers on the model's calibration window "
                                               "with a lower risk (ranks customers where risks are close)")
    actionable_share: float | None = Field(description="of what pushes the risk above average, the share from "
                                                       "factors the retailer or carrier can act on (with explain)")
    known_customer: bool
    orders_so_far: int
    days_late: float | None
    reasons: list[ChurnReason]
    model_version: str
