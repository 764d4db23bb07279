from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from engine.events import (
    STANDARD_EVENT_TYPES,
    CustomerProfile,
    Event,
    describe_validation_error,
    event_amount,
    validate_event,
)

VALID = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "event_type": "cart_abandoned",
    "timestamp": "2026-03-01T10:00:00+01:00",
    "properties": {"cart_value": 42.5, "items": [{"sku": "A", "qty": 1}]},
}


def problems(data: dict, **kwargs) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        validate_event(data, **kwargs)
    return describe_validation_error(caught.value)


def test_valid_event_keeps_its_zone_and_exposes_the_amount():
    event = validate_event(VALID)
    assert event.timestamp == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert event.amount == 42.5
    assert event.is_standard_type


def test_standard_types_are_those_of_the_architecture():
    assert {
        "signup",
        "purchase_completed",
        "email_clicked",
        "subscription_changed",
    } <= STANDARD_EVENT_TYPES
    assert len(STANDARD_EVENT_TYPES) == 16


def test_any_well_formed_custom_type_is_accepted_and_normalised():
    event = validate_event({**VALID, "event_type": "Loyalty_Tier_Changed"})
    assert event.event_type == "loyalty_tier_changed"
    assert not event.is_standard_type


def test_naive_timestamp_is_an_error_that_names_the_field_and_the_form():
    [line] = problems({**VALID, "timestamp": "2026-03-01T10:00:00"})
    assert line.startswith("timestamp: has no time zone")
    assert "2026-01-31T09:00:00+00:00" in line


def test_naive_timestamp_is_read_in_an_explicitly_given_zone():
    event = validate_event(
        {**VALID, "timestamp": "2026-03-01T10:00:00"}, naive_timezone="Europe/Berlin"
    )
    assert event.timestamp.astimezone(UTC) == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_every_problem_is_reported_once_with_its_path():
    lines = problems(
        {
            "event_id": "",
            "event_type": "bad type!",
            "timestamp": "yesterday",
            "properties": {"x": float("nan")},
            "colour": "red",
            "location": {"country": "Germany"},
        }
    )
    fields = [line.split(":")[0] for line in lines]
    assert fields == [
        "event_id",
        "customer_id",
        "event_type",
        "timestamp",
        "properties",
        "location.country",
        "colour",
    ]
    assert "customer_id: is required" in lines
    assert any(line.startswith("colour: is not a field of this contract") for line in lines)
    assert any("a letter, then letters, digits" in line for line in lines)


def test_events_arrive_as_json_too_and_numeric_ids_become_strings():
    event = validate_event(
        '{"event_id": 7, "customer_id": 42, "event_type": "signup", "timestamp": "2026-01-01T00:00:00Z"}'
    )
    assert (event.event_id, event.customer_id) == ("7", "42")


def test_events_are_immutable():
    event = validate_event(VALID)
    with pytest.raises(ValidationError):
        event.customer_id = "someone-else"  # type: ignore[misc]
    assert isinstance(event, Event)


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"amount": 3}, 3.0),
        ({"total": "12.50"}, 12.5),
        ({"cart_value": 9.9, "total": 1}, 1.0),
        ({"amount": True}, None),
        ({}, None),
    ],
)
def test_amount_is_the_first_numeric_money_key(properties, expected):
    assert event_amount(properties) == expected


def test_customer_profile_checks_zone_email_and_country():
    profile = CustomerProfile(
        customer_id="c1",
        email="ada@example.com",
        timezone="Europe/Berlin",
        country="DE",
        loyalty="gold",
    )
    assert profile.model_extra == {"loyalty": "gold"}
    with pytest.raises(ValidationError) as caught:
        CustomerProfile(
            customer_id="c1",
            email="not-an-email",
            timezone="Mars/Olympus",
            country="Germany",
            signup_at="2026-01-01T00:00:00",
        )
    lines = describe_validation_error(caught.value)
    assert [line.split(":")[0] for line in lines] == ["email", "timezone", "country", "signup_at"]
    assert "'Mars/Olympus' is not an IANA time zone name" in lines[1]
