"""Engine → lake, exactly once: events posted over HTTP reach the lake once (a repeat sync, a crash
between the append and the watermark, a second process), profile changes reach the customer table,
events still settling wait. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from engine.lake import EventLake
from engine.runtime.api import create_app
from engine.runtime.lake_sync import start_lake_sync, sync_once
from engine.store.lake_sync import read_watermark
from tests.support import LocalServer

KEY = {"X-API-Key": "k-sync"}
T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def events(start: int, n: int) -> list[dict]:
    return [
        {"event_id": f"e{i}", "customer_id": f"c{i % 7}", "event_type": "purchase_completed",
         "timestamp": (T0 + timedelta(hours=i)).isoformat(), "properties": {"amount": i}}
        for i in range(start, start + n)
    ]  # fmt: skip


@pytest.fixture
def server(engine_store):
    with LocalServer(create_app(engine_store, "k-sync")) as running:
        yield running.url


def post(url: str, batch: list[dict]) -> None:
    response = httpx.post(f"{url}/v1/events", json={"events": batch}, headers=KEY)
    assert response.status_code == 202, response.text


def test_posted_events_and_profiles_reach_the_lake_exactly_once(server, engine_store, tmp_path):
    lake = EventLake(tmp_path / "lake")
    post(server, events(0, 120))
    httpx.put(f"{server}/v1/customers/c1", json={"email": "c1@example.com", "consent_email": True,
                                                 "signup_at": "2026-01-01T00:00:00Z"},
              headers=KEY).raise_for_status()  # fmt: skip
    first = sync_once(engine_store, lake, batch=50, settle=0)
    assert (first.events, first.added, first.duplicates, first.profiles) == (120, 120, 0, 1)
    assert lake.read().num_rows == 120
    assert sorted(lake.read()["event_id"].to_pylist()) == sorted(f"e{i}" for i in range(120))
    customers = lake.read_customers()
    assert customers.set_index("customer_id").loc["c1", "email"] == "c1@example.com"
    assert bool(customers.set_index("customer_id").loc["c1", "consent_email"]) is True
    again = sync_once(engine_store, lake, settle=0)
    assert (again.events, again.profiles) == (0, 0)

    post(server, events(120, 10))
    # a crash after the lake took the batch but before the watermark moved: copied again, skipped
    mark = engine_store.read(read_watermark, "events")
    sync_once(engine_store, lake, settle=0)
    from engine.store.lake_sync import advance

    engine_store.write(advance, "events", mark.position, 0, 0.0)  # the watermark as before
    replay = sync_once(engine_store, lake, settle=0)
    assert (replay.events, replay.added, replay.duplicates) == (10, 0, 10)
    assert lake.read().num_rows == 130
    assert engine_store.read(read_watermark, "events").synced == 130 + 10


def test_events_still_settling_wait_for_the_next_sync(server, engine_store, tmp_path):
    lake = EventLake(tmp_path / "lake")
    post(server, events(0, 5))
    assert sync_once(engine_store, lake, settle=3600).events == 0
    assert sync_once(engine_store, lake, settle=0).events == 5


def test_the_background_sync_runs_until_stopped(server, engine_store, tmp_path):
    stop = threading.Event()
    post(server, events(0, 30))
    thread = start_lake_sync(engine_store, tmp_path / "lake", stop, every=0.1)
    lake = EventLake(tmp_path / "lake")
    import time

    deadline = time.monotonic() + 20
    while lake.read().num_rows < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=10)
    assert lake.read().num_rows == 30 and not thread.is_alive()


def test_identity_follows_into_the_lake(server, engine_store, tmp_path):
    import base64

    auth = {"Authorization": "Basic " + base64.b64encode(b"k-sync:").decode()}

    def send(*messages: dict) -> None:
        response = httpx.post(f"{server}/v1/batch", json={"batch": list(messages)}, headers=auth)
        assert response.status_code == 200, response.text

    lake = EventLake(tmp_path / "lake")
    stamp = T0.isoformat()
    send({"type": "track", "anonymousId": "anon-7", "event": "Product Viewed", "messageId": "v1",
          "timestamp": stamp})  # fmt: skip
    sync_once(engine_store, lake, settle=0)
    assert lake.read()["customer_id"].to_pylist() == ["anon-7"]
    # linked: the synced event moves to the customer, an event before the processor ran too
    send({"type": "track", "anonymousId": "anon-7", "event": "Product Viewed", "messageId": "v2",
          "timestamp": stamp},
         {"type": "identify", "userId": "user-7", "anonymousId": "anon-7", "messageId": "i7",
          "timestamp": stamp})  # fmt: skip
    report = sync_once(engine_store, lake, settle=0)
    assert report.renamed == 1  # v1, in the lake already; v2 (sent anonymously) goes in as user-7
    owners = dict(zip(lake.read()["event_id"].to_pylist(), lake.read()["customer_id"].to_pylist(),
                      strict=True))  # fmt: skip
    assert owners == {"v1": "user-7", "v2": "user-7", "i7": "user-7"}
