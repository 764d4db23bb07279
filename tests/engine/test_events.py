from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.events import (
    STANDARD_EVENT_TYPES,
    CustomerProfile,
    Event,
    _built_event,
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


# -- hostile input: every problem is a field error, never a crash ---------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def deep(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


def test_deeply_nested_properties_are_a_field_error_with_the_path():
    [line] = problems({**VALID, "properties": {"a": {"b": deep(300)}}})
    assert line == f"properties.a.b{'.k' * 30}: nested deeper than 32 levels"
    [line] = problems({**VALID, "properties": {"a": [deep(100_000)]}})  # no RecursionError
    assert line.startswith("properties.a.0.k.k") and line.endswith("nested deeper than 32 levels")
    validate_event({**VALID, "properties": deep(32)})  # 32 levels, `properties` itself the first
    [line] = problems({**VALID, "properties": deep(33)})
    assert line == f"properties{'.k' * 32}: nested deeper than 32 levels"


def test_deep_json_text_is_an_error_not_a_recursion_error():
    text = '{"event_id": "e", "properties": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(ValidationError):
        validate_event(text)
    shallow_enough_for_the_parser = (
        '{"event_id": "e", "customer_id": "c", "event_type": "signup", '
        '"timestamp": "2026-01-01T00:00:00Z", "properties": {"a": ' + "[" * 40 + "]" * 40 + "}}"
    )
    [line] = problems(shallow_enough_for_the_parser)
    assert line.startswith("properties.a.0.0") and line.endswith("deeper than 32 levels")


@pytest.mark.parametrize("bad", ["\ud800", "x\udfff", "nul\x00"])
def test_surrogates_and_nul_anywhere_are_field_errors(bad):
    cases = {
        "event_id": {**VALID, "event_id": bad},
        "customer_id": {**VALID, "customer_id": bad},
        "session_id": {**VALID, "session_id": bad},
        "source": {**VALID, "source": bad},
        "device": {**VALID, "device": bad},
        "location.city": {**VALID, "location": {"city": bad}},
        "location.region": {**VALID, "location": {"region": bad}},
        "properties.note": {**VALID, "properties": {"note": bad}},
        "properties.items.0.sku": {**VALID, "properties": {"items": [{"sku": bad}]}},
    }
    for field, data in cases.items():
        lines = problems(data)
        assert len(lines) == 1 and lines[0].startswith(f"{field}: "), (field, lines)
        lines[0].encode("utf-8")  # the reason itself is storable
    [line] = problems({**VALID, "properties": {bad: 1}})
    assert line.startswith("properties.") and "key contains" in line
    line.encode("utf-8")


def test_ids_and_short_text_refuse_control_characters_but_properties_keep_newlines():
    for field in ("event_id", "customer_id", "session_id", "source", "device"):
        for char in ("\r", "\n", "\t", "\x1b", "\x85", "\u2028"):
            [line] = problems({**VALID, field: f"a{char}b"})
            assert line.startswith(f"{field}: "), line
    [line] = problems({**VALID, "location": {"city": "Berlin\r\nX-Evil: 1"}})
    assert line.startswith("location.city: ") and "U+000D" in line
    event = validate_event({**VALID, "properties": {"message": "line 1\r\nline 2\ttab"}})
    assert event.properties["message"] == "line 1\r\nline 2\ttab"


def test_oversized_properties_are_refused():
    [line] = problems({**VALID, "properties": {"blob": "x" * (64 * 1024 + 1)}})
    assert line.startswith("properties.blob: string longer than 65536 characters (got 'xxx")
    [line] = problems({**VALID, "properties": {f"k{i}": "x" * 60_000 for i in range(5)}})
    assert line.startswith("properties: larger than 262144 bytes as JSON")
    [line] = problems({**VALID, "properties": {"k" * 300: 1}})
    assert line.startswith("properties.kkk") and "key longer than 256 characters" in line


def test_non_finite_numbers_are_refused_as_ids_and_properties():
    [line] = problems({**VALID, "event_id": float("nan")})
    assert line.startswith("event_id: ")
    [line] = problems({**VALID, "properties": {"amount": float("inf")}})
    assert line == (
        "properties: must be a JSON object (no NaN, no binary values): "
        "amount: must be a finite number (no NaN or Infinity)"
    )


def test_a_timestamp_far_in_the_future_or_before_1970_is_refused():
    [line] = problems({**VALID, "timestamp": "9999-01-01T00:00:00Z"})
    assert line.startswith("timestamp: more than 1d ahead of the engine's clock")
    [line] = problems({**VALID, "timestamp": "1969-12-31T23:59:59Z"})
    assert line.startswith("timestamp: before 1970-01-01")
    [line] = problems({**VALID, "timestamp": "0001-01-01T00:00:00+14:00"})
    assert line.startswith("timestamp: before 1970-01-01")


def test_the_future_limit_is_measured_from_the_given_clock():
    soon = {**VALID, "timestamp": "2026-03-02T11:00:00Z"}  # 23 h after NOW
    assert validate_event(soon, now=NOW).timestamp.day == 2
    assert validate_event(soon, now=NOW.timestamp()).timestamp.day == 2
    [line] = problems(soon, now=NOW, max_future="6h")
    assert line.startswith("timestamp: more than 6h ahead of the engine's clock (2026-03-01T12:00")
    [line] = problems(soon, now=NOW, max_future=3600)
    assert line.startswith("timestamp: more than 1h ahead")
    # replaying old history is fine; an ISO replay clock in the future accepts its own era
    old = {**VALID, "timestamp": "1999-01-01T00:00:00Z"}
    assert validate_event(old, now=NOW).timestamp.year == 1999
    later = {**VALID, "timestamp": "2031-06-01T00:00:00Z"}
    assert validate_event(later, now=datetime(2031, 6, 1, tzinfo=UTC)).timestamp.year == 2031
    with pytest.raises(ValueError, match="duration"):
        validate_event(VALID, max_future="soon")


def test_deep_values_outside_properties_are_field_errors_too():
    for data, field in [
        ({**VALID, "colour": deep(100_000)}, "colour"),
        ({**VALID, "location": {"city": deep(5_000)}}, "location.city"),
        ({**VALID, "event_id": [[[[1]]]] * 3 + [deep(40)]}, "event_id.3"),
    ]:
        [line] = problems(data)
        assert line.startswith(f"{field}.k") or line.startswith(field), line
        assert "nested deeper than 32 levels" in line
    [line] = problems({**VALID, "properties": [[deep(100_000)]]})  # properties, but not an object
    assert line.startswith("properties.0.0.k") and line.endswith("nested deeper than 32 levels")
    with pytest.raises(ValidationError) as caught:
        validate_event(deep(100_000))  # not even an object: printing it must not recurse
    assert "nested deeper than 32 levels" in describe_validation_error(caught.value)[0]


# -- events built in-process (an aware datetime timestamp): made without the model when valid --

BUILT = {
    "event_id": "m-1",
    "customer_id": "c-1",
    "event_type": "product_view",
    "timestamp": datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    "properties": {"sku": "A", "price": 19.5, "nested": {"list": [1, "x", None]}},
    "source": "segment",
}
CLOCK = {"now": datetime(2026, 3, 2, tzinfo=UTC)}


CONTEXT = {"naive_timezone": None, "now": CLOCK["now"].timestamp(), "max_future": 86400.0}


def model_validated(data: dict) -> Event:
    """What the model itself makes of `data` (the reference the direct build must match)."""
    return Event.model_validate(data, context=CONTEXT)


@pytest.mark.parametrize(
    "change",
    [{}, {"session_id": "s-9", "device": "ios"}, {"session_id": ""}, {"properties": {}},
     {"event_id": "x" * 128}, {"event_type": "a.b:c-d_9"}],
)  # fmt: skip
def test_a_built_event_is_the_one_the_model_makes(change):
    data = {**BUILT, **change}
    assert _built_event(data, CONTEXT) is not None  # the direct way, not the model
    event = validate_event(data, **CLOCK)
    reference = model_validated(data)
    assert event == reference
    assert event.model_dump_json() == reference.model_dump_json()
    assert event.model_fields_set == reference.model_fields_set
    assert repr(event) == repr(reference)
    assert event.model_copy(update={"event_id": "other"}).event_id == "other"
    with pytest.raises(ValidationError):  # frozen, as the model's
        event.event_id = "changed"
    assert event.properties is not data["properties"]  # a copy, as the model's


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event_id": " leading-space"}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"customer_id": "c\n1"}, "customer_id"),
        ({"customer_id": "c\ud8001"}, "customer_id"),
        ({"event_type": "Product Viewed"}, "event_type"),
        ({"session_id": "s" * 129}, "session_id"),
        ({"device": "a\x00b"}, "device"),
        ({"timestamp": datetime(1969, 12, 31, tzinfo=UTC)}, "timestamp"),
        ({"timestamp": datetime(2026, 3, 9, tzinfo=UTC)}, "timestamp"),
        ({"timestamp": datetime(2026, 3, 1, 9, 0)}, "timestamp"),  # naive, no zone given
        ({"properties": {"bad": float("nan")}}, "properties"),
        ({"properties": {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}},
         "properties"),
        ({"properties": {"big": "x" * 300_000}}, "properties"),
        ({"properties": {"k\x01": 1}}, "properties"),
        ({"properties": ["not", "a", "dict"]}, "properties"),
        ({"unknown": 1}, "unknown"),
    ],
)  # fmt: skip
def test_a_built_event_failing_a_check_gets_the_models_error(change, field):
    data = {**BUILT, **change}
    assert _built_event(data, CONTEXT) is None  # left to the model
    lines = problems(data, **CLOCK)
    with pytest.raises(ValidationError) as caught:
        model_validated(data)
    assert lines == describe_validation_error(caught.value)
    assert lines and lines[0].startswith(field)


# -- text timestamps (what JSON senders and the lake write): read directly in one ISO form --

_iso_parts = st.tuples(
    st.integers(1960, 2030), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25),
    st.integers(0, 61), st.integers(0, 61),
    st.sampled_from(["", ".5", ".123", ".123456", ".1234567"]),
    st.sampled_from(["Z", "+00:00", "-00:00", "+01:00", "-05:30", "+14:00", "+23:59", "+24:00",
                     "-99:99", "", "z", "+0100"]),
    st.sampled_from(["T", " ", "t"]),
)  # fmt: skip


@given(_iso_parts)
def test_a_text_timestamp_read_directly_is_the_one_the_model_reads(parts):
    year, month, day, hour, minute, second, fraction, offset, sep = parts
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"
    data = {**BUILT, "timestamp": text}
    built = _built_event(data, CONTEXT)
    try:
        reference = model_validated(data)
    except ValidationError:
        assert built is None  # whatever the model refuses, the direct way leaves to it
        return
    if built is not None:
        assert built == reference
        assert built.model_dump_json() == reference.model_dump_json()
        assert repr(built) == repr(reference)


def test_the_common_text_timestamps_are_read_directly():
    for text in [
        "2026-03-01T09:00:00Z",
        "2026-03-01T09:00:00.250+01:00",
        "2026-03-01T04:00:00-05:00",
    ]:
        data = {**BUILT, "timestamp": text}
        built = _built_event(data, CONTEXT)
        assert built is not None, text
        assert built == model_validated(data)
        assert repr(built) == repr(model_validated(data))
