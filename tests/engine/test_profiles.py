"""Profiles at every edge: strict booleans, no control characters, signup properties validated like
``PUT /v1/customers`` and applied before the signup's triggers decide, newer consent wins."""

import json
import os
import time
from datetime import UTC, datetime

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.events import CustomerProfile, InvalidProfileChange, parse_bool, profile_changes
from engine.lake import EventLake
from engine.runtime.api import create_app
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.runtime.warmup import load_lake_profiles
from engine.store.customers import load_profiles, upsert_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.inbox import add_events
from engine.store.outbox import list_actions

WELCOME = """
- id: welcome
  category: marketing
  quiet_hours: ignore
  when: {event: signup}
  actions: [{send_email: {template: welcome}}]
"""
INJECTIONS = ["Eve\r\nBcc: victim@example.com", "Eve\nX", "Eve\rX", "Eve\x00", "Eve\x1b[31m",
              "Eve\u2028X", "Eve\x85X"]  # fmt: skip


def signup(event_id="s1", customer="c1", **props):
    return {"event_id": event_id, "customer_id": customer, "event_type": "signup",
            "timestamp": "2026-01-05T10:00:00Z", "properties": props}  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("false", False), ("FALSE", False),
     (" True ", True), (1, True), (0, False), ("1", True), ("0", False)],
)  # fmt: skip
def test_booleans_are_read_one_way(value, expected):
    assert parse_bool(value) is expected
    assert CustomerProfile(customer_id="c", consent_email=value).consent_email is expected


@pytest.mark.parametrize(
    "value", ["maybe", "yes", "no", "off", "on", "t", "", 2, -1, 0.0, None, [], {}]
)
def test_anything_else_is_a_field_error(value):
    with pytest.raises(ValidationError) as info:
        CustomerProfile(customer_id="c", consent_email=value)
    assert info.value.errors()[0]["loc"] == ("consent_email",)


@pytest.mark.parametrize("name", INJECTIONS)
@pytest.mark.parametrize("field", ["first_name", "last_name", "email", "language"])
def test_control_characters_in_profile_fields_are_refused(field, name):
    value = name if field != "email" else name.replace("Eve", "eve@example.com")
    with pytest.raises(ValidationError) as info:
        CustomerProfile.model_validate({"customer_id": "c", field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_extra_attributes_follow_the_same_rules():
    CustomerProfile.model_validate({"customer_id": "c", "plan": "gold", "tags": ["a", "b"]})
    for bad in ({"plan": "gold\r\nBcc: x"}, {"deep": json.loads("[" * 300 + "]" * 300)},
                {"note": "\ud800"}, {"blob": {"x": "a\x00b"}}):  # fmt: skip
        with pytest.raises(ValidationError):
            CustomerProfile.model_validate({"customer_id": "c", **bad})


def test_put_customers_refuses_header_injection(engine_store):
    client = TestClient(create_app(engine_store, "k"))
    answer = client.put(
        "/v1/customers/c1",
        json={"email": "eve@example.com", "first_name": "Eve\r\nBcc: victim@example.com"},
        headers={"X-API-Key": "k"},
    )
    assert answer.status_code == 422 and answer.json()["detail"][0].startswith("first_name:")
    answer = client.put(
        "/v1/customers/c1", json={"consent_email": "false"}, headers={"X-API-Key": "k"}
    )
    assert answer.status_code == 200 and answer.json()["profile"]["consent_email"] is False
    assert engine_store.read(load_profiles, ["c1"])["c1"]["consent_email"] is False


def test_signup_properties_are_validated_like_put():
    assert profile_changes("c1", "signup", {"email": "Ada@Example.com", "consent_email": "true",
                                            "first_name": "Ada", "plan": "ignored"}) == {
        "email": "Ada@example.com", "consent_email": True, "first_name": "Ada"}  # fmt: skip
    with pytest.raises(InvalidProfileChange) as info:
        profile_changes("c1", "signup", {"first_name": "Eve\r\nBcc: x", "consent_email": "maybe"})
    assert [line.split(":")[0] for line in info.value.lines] == [
        "properties.first_name",
        "properties.consent_email",
    ]


def test_a_signup_with_its_own_email_and_consent_gets_its_welcome(engine_store):
    index = TriggerIndex(load_trigger_text(WELCOME).triggers)
    accept_events(
        engine_store,
        [signup(email="new@example.com", first_name="Nia", consent_email=True)],
        source="t",
    )
    stats = Processor(engine_store, index).run_until_empty()
    assert dict(stats.outcomes) == {"fired": 1}
    profile = engine_store.read(load_profiles, ["c1"])["c1"]
    assert profile["email"] == "new@example.com" and profile["consent_email"] is True
    [action] = engine_store.read(list_actions)
    assert action.kind == "send_email"


def test_the_string_false_withdraws_consent_and_a_bad_flag_is_dead_lettered(engine_store):
    index = TriggerIndex(load_trigger_text(WELCOME).triggers)
    engine_store.write(upsert_profiles, {"c1": {"customer_id": "c1", "consent_email": True}}, 0.0)
    results = accept_events(
        engine_store,
        [
            {"event_id": "u1", "customer_id": "c1", "event_type": "subscription_changed",
             "timestamp": "2026-01-05T10:00:00Z", "properties": {"consent_email": "false"}},
            {"event_id": "u2", "customer_id": "c2", "event_type": "subscription_changed",
             "timestamp": "2026-01-05T10:00:00Z", "properties": {"consent_email": "maybe"}},
            signup("s3", "c3", first_name="Eve\r\nBcc: victim@example.com", consent_email=True),
        ],
        source="t",
    )  # fmt: skip
    assert [r.status for r in results] == ["accepted", "invalid", "invalid"]
    assert results[1].errors[0].startswith("properties.consent_email")
    assert results[2].errors[0].startswith("properties.first_name")
    # An event stored before this check existed is dead-lettered by the processor instead.
    legacy = signup("s4", "c4", consent_email="maybe")
    engine_store.write(
        add_events,
        [{"event_id": "s4", "customer_id": "c4", "event_type": "signup",
          "occurred_at": datetime(2026, 1, 5, tzinfo=UTC).timestamp(), "payload": json.dumps(legacy)}],
        0.0,
    )  # fmt: skip
    stats = Processor(engine_store, index).run_until_empty()
    assert stats.events == 1 and stats.dead == 1
    assert engine_store.read(load_profiles, ["c1"])["c1"]["consent_email"] is False
    letters = {d.event_id: d.reason for d in engine_store.read(list_dead_letters)}
    assert set(letters) == {"u2", "s3", "s4"}
    assert "properties.consent_email" in letters["s4"] and letters["s4"].startswith(
        "invalid profile"
    )
    assert engine_store.read(load_profiles, ["c2", "c3", "c4"]) == {}
    assert engine_store.read(list_actions) == []


def write_lake_profiles(lake: EventLake, rows: list[dict], written_at: float) -> None:
    lake.upsert_customers(pd.DataFrame(rows))
    os.utime(lake.customers_path, (written_at, written_at))


def test_the_lake_never_overwrites_a_newer_consent(engine_store, tmp_path):
    lake = EventLake(tmp_path / "lake")
    day = 86400.0
    write_lake_profiles(
        lake,
        [{"customer_id": "c1", "email": "c1@example.com", "consent_email": True},
         {"customer_id": "c2", "email": "c2@example.com", "consent_email": True}],
        time.time() - 3 * day,
    )  # fmt: skip
    # The engine learnt since that c1 unsubscribed; c2's stored profile predates the lake's.
    engine_store.write(
        upsert_profiles, {"c1": {"customer_id": "c1", "consent_email": False}}, time.time()
    )
    engine_store.write(
        upsert_profiles,
        {"c2": {"customer_id": "c2", "consent_email": False, "plan": "gold"}},
        time.time() - 9 * day,
    )
    load = load_lake_profiles(engine_store, lake)
    assert (load.loaded, load.kept_newer, load.invalid) == (2, 1, 0)
    stored = engine_store.read(load_profiles, ["c1", "c2"])
    assert stored["c1"] == {"customer_id": "c1", "consent_email": False, "email": "c1@example.com"}
    assert stored["c2"]["consent_email"] is True and stored["c2"]["plan"] == "gold"


def test_invalid_lake_profiles_are_dead_lettered_not_loaded(engine_store, tmp_path):
    lake = EventLake(tmp_path / "lake")
    write_lake_profiles(
        lake,
        [{"customer_id": "ok", "first_name": "Ada", "consent_email": "true"},
         {"customer_id": "bad", "first_name": "Eve\r\nBcc: x", "consent_email": "true"}],
        datetime(2026, 1, 1, tzinfo=UTC).timestamp(),
    )  # fmt: skip
    load = load_lake_profiles(engine_store, lake)
    assert (load.loaded, load.invalid) == (1, 1)
    assert set(engine_store.read(load_profiles, ["ok", "bad"])) == {"ok"}
    [letter] = engine_store.read(list_dead_letters)
    assert letter.source == "lake:customers" and "first_name" in letter.reason


def test_the_api_refuses_a_signup_whose_profile_fields_are_invalid(engine_store):
    client = TestClient(create_app(engine_store, "k"))
    answer = client.post(
        "/v1/events",
        json={"events": [signup("s1", consent_email="maybe"), signup("s2", consent_email="false")]},
        headers={"X-API-Key": "k"},
    )
    assert answer.status_code == 202
    first, second = answer.json()["results"]
    assert first["status"] == "invalid" and first["errors"][0].startswith(
        "properties.consent_email"
    )
    assert second["status"] == "accepted"
    [letter] = engine_store.read(list_dead_letters)
    assert letter.event_id == "s1" and "properties.consent_email" in letter.reason
