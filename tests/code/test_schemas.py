"""The request schemas read JSON as BentoML does (``model_validate_json``): a value of the
wrong type is refused with its field named, never coerced into a plausible number."""

import json

import pytest
from pydantic import ValidationError

from serving.schemas import ChurnIn, ShipmentIn

SHIPMENT = {"carrier": "ups", "service_level": "ground", "origin_region": "CA", "destination_region": "NY",
            "ordered_at": "2026-02-01T10:00:00Z"}


def _error_of(model, body: dict) -> str:
    with pytest.raises(ValidationError) as exc:
        model.model_validate_json(json.dumps(body))
    return str(exc.value)


def test_a_well_formed_shipment_reads_with_ints_for_numbers():
    s = ShipmentIn.model_validate_json(json.dumps({**SHIPMENT, "weight_kg": 2, "value": 19.5, "confidence": 0.9}))
    assert (s.weight_kg, s.value, s.confidence, s.explain) == (2.0, 19.5, 0.9, True)
    assert s.ordered_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("field, value", [("value", False), ("weight_kg", True), ("weight_kg", "2"),
                                          ("confidence", "0.9"), ("explain", 0), ("explain", "false"),
                                          ("ordered_at", 1767225600), ("shipped_at", 1767225600.5)])
def test_wrong_types_are_refused_by_name_not_coerced(field, value):
    message = _error_of(ShipmentIn, {**SHIPMENT, field: value})
    assert field in message


@pytest.mark.parametrize("field", ["weight_kg", "value", "confidence"])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_nan_and_infinity_are_refused_as_not_finite(field, number):
    # json.dumps cannot write these as numbers; Python's JSON reader (and pydantic's) reads them.
    body = json.dumps(SHIPMENT)[:-1] + f', "{field}": {number}}}'
    with pytest.raises(ValidationError) as exc:
        ShipmentIn.model_validate_json(body)
    assert field in str(exc.value) and "finite number" in str(exc.value)


def test_a_number_for_a_moment_is_told_to_be_a_string():
    assert "ISO 8601 date-time string" in _error_of(ShipmentIn, {**SHIPMENT, "ordered_at": 1767225600})


def test_churn_requests_are_as_strict():
    delivery = {**SHIPMENT, "delivered_at": "2026-02-04T10:00:00Z"}
    assert "explain" in _error_of(ChurnIn, {"customer_id": "c1", "delivery": delivery, "explain": 1})
    assert "delivered_at" in _error_of(ChurnIn, {"customer_id": "c1", "delivery": {**delivery, "delivered_at": 5}})
    ok = ChurnIn.model_validate_json(json.dumps({"customer_id": "c1", "delivery": delivery}))
    assert ok.delivery.delivered_at.day == 4


def test_a_parcel_back_with_its_sender_gets_no_eta():
    """After a returned_to_sender scan the parcel never reaches the customer: like a
    delivered one, it has no ETA, unless the request asks about a moment before it."""
    scans = [{"scanned_at": "2026-02-02T10:00:00Z", "event": "picked_up"},
             {"scanned_at": "2026-02-04T10:00:00Z", "event": "returned_to_sender"}]
    message = _error_of(ShipmentIn, {**SHIPMENT, "scans": scans})
    assert "scans[1] says the parcel was returned to its sender at 2026-02-04T10:00:00+00:00" in message
    earlier = ShipmentIn.model_validate_json(json.dumps({**SHIPMENT, "scans": scans, "as_of": "2026-02-03T10:00:00Z"}))
    assert earlier.as_of.day == 3
