"""The ingestion API: keys, durability before 202, field-level 422s, batches with per-item results."""

import pytest
from fastapi.testclient import TestClient

from engine.api import create_app

KEY = {"X-API-Key": "s3cret"}
EVENT = {
    "event_id": "e1",
    "customer_id": "c1",
    "event_type": "signup",
    "timestamp": "2026-01-01T09:00:00Z",
}


@pytest.fixture
def client(engine_store):
    return TestClient(create_app(engine_store, "s3cret"))


def test_write_routes_need_the_key(client, engine_store):
    assert client.post("/v1/events", json=EVENT).status_code == 401
    assert client.post("/v1/events", json=EVENT, headers={"X-API-Key": "guess"}).status_code == 401
    assert client.put("/v1/customers/c1", json={}).status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert engine_store.count("inbox") == 0


def test_without_a_configured_key_writes_are_refused(engine_store):
    response = TestClient(create_app(engine_store, None)).post(
        "/v1/events", json=EVENT, headers=KEY
    )
    assert response.status_code == 503 and "NUDGE_API_KEY" in response.json()["detail"]


def test_one_event_is_stored_before_202_and_a_repeat_is_a_duplicate(client, engine_store):
    first = client.post("/v1/events", json=EVENT, headers=KEY)
    assert (first.status_code, first.json()) == (202, {"event_id": "e1", "status": "accepted"})
    assert engine_store.pending_count() == 1
    assert client.post("/v1/events", json=EVENT, headers=KEY).json()["status"] == "duplicate"


def test_an_invalid_event_gets_field_errors_and_a_dead_letter(client, engine_store):
    response = client.post(
        "/v1/events",
        json={**EVENT, "timestamp": "2026-01-01T09:00:00", "colour": "red"},
        headers=KEY,
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(d.startswith("timestamp: has no time zone") for d in detail)
    assert any(d.startswith("colour: is not a field") for d in detail)
    assert len(engine_store.list_dead_letters()) == 1


def test_a_batch_accepts_the_valid_items_and_reports_each(client):
    batch = {
        "events": [
            EVENT,
            {**EVENT, "event_id": "e2", "event_type": ""},
            {**EVENT, "event_id": "e3"},
            EVENT,
        ]
    }
    response = client.post("/v1/events", json=batch, headers=KEY)
    body = response.json()
    assert response.status_code == 202
    assert (body["accepted"], body["duplicates"], body["invalid"]) == (2, 1, 1)
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "invalid",
        "accepted",
        "duplicate",
    ]
    assert body["results"][1]["errors"][0].startswith("event_type:")


def test_batch_limits_and_bad_json(client):
    assert client.post("/v1/events", json={"events": []}, headers=KEY).status_code == 422
    too_many = {"events": [{**EVENT, "event_id": f"e{i}"} for i in range(1001)]}
    assert client.post("/v1/events", json=too_many, headers=KEY).status_code == 422
    response = client.post(
        "/v1/events", content=b"{not json", headers={**KEY, "content-type": "application/json"}
    )
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"][0]
    huge = b"x" * (5 * 1024 * 1024 + 1)
    assert client.post("/v1/events", content=huge, headers=KEY).status_code == 413


def test_profiles_are_validated_and_stored(client, engine_store):
    ok = client.put(
        "/v1/customers/c9",
        json={"email": "ada@example.com", "timezone": "Europe/Berlin", "consent_email": True},
        headers=KEY,
    )
    assert (
        ok.status_code == 200
        and engine_store.load_profiles(["c9"])["c9"]["timezone"] == "Europe/Berlin"
    )
    bad = client.put("/v1/customers/c9", json={"timezone": "Moon/Base"}, headers=KEY)
    assert bad.status_code == 422 and bad.json()["detail"][0].startswith("timezone:")
