"""Engine → lake, exactly once: events posted over HTTP reach the lake once (a repeat sync, a crash
between the append and the marking, a transaction that commits late on PostgreSQL), profile
changes reach the customer table, profile changes still settling wait. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from engine.events import validate_event
from engine.lake import EventLake
from engine.runtime.api import create_app
from engine.runtime.inbox import event_row
from engine.runtime.lake_sync import start_lake_sync, sync_once
from engine.store.inbox import add_events
from engine.store.lake_sync import read_watermark
from engine.store.schema import inbox
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
    # a crash after the lake took the batch but before the events were marked: copied again,
    # skipped by the lake
    sync_once(engine_store, lake, settle=0)
    late = [f"e{i}" for i in range(120, 130)]
    engine_store.write(lambda conn: conn.execute(
        inbox.update().where(inbox.c.event_id.in_(late)).values(lake_synced=False)))  # fmt: skip
    replay = sync_once(engine_store, lake, settle=0)
    assert (replay.events, replay.added, replay.duplicates) == (10, 0, 10)
    assert lake.read().num_rows == 130
    mark = engine_store.read(read_watermark, "events")
    assert mark.synced == 130 + 10
    assert mark.position == engine_store.read(
        lambda c: c.execute(sa.select(sa.func.max(inbox.c.seq))).scalar()
    )


def test_an_event_committed_late_still_reaches_the_lake_once(server, engine_store, tmp_path):
    """PostgreSQL: a transaction holds its insert (and its seq) open past the old 5 s window while
    a later event commits and a sync runs; once it commits, the next sync copies it — once."""
    if engine_store.dialect != "postgresql":
        pytest.skip("SQLite has one writer at a time: no transaction can commit out of seq order")
    lake = EventLake(tmp_path / "lake")
    later = time.time() + 60  # the syncs run "a minute later": past any settle window
    [early] = events(0, 1)
    slow = engine_store.engine.connect()
    try:
        slow.begin()
        add_events(slow, [event_row(validate_event(early))], time.time())  # its seq, uncommitted
        post(server, events(1, 1))  # a later seq, committed
        first = sync_once(engine_store, lake, clock=lambda: later)
        assert (first.events, lake.read()["event_id"].to_pylist()) == (1, ["e1"])
        slow.commit()
    finally:
        slow.close()
    second = sync_once(engine_store, lake, clock=lambda: later)
    assert (second.events, second.added) == (1, 1)
    assert sorted(lake.read()["event_id"].to_pylist()) == ["e0", "e1"]
    assert sync_once(engine_store, lake, clock=lambda: later).events == 0


def test_profile_changes_still_settling_wait_for_the_next_sync(server, engine_store, tmp_path):
    lake = EventLake(tmp_path / "lake")
    post(server, events(0, 5))
    httpx.put(f"{server}/v1/customers/c1", json={"email": "c1@example.com"},
              headers=KEY).raise_for_status()  # fmt: skip
    waiting = sync_once(engine_store, lake, settle=3600)
    assert (waiting.events, waiting.profiles) == (5, 0)  # events have no window: a marker each
    assert sync_once(engine_store, lake, settle=0).profiles == 1


def test_the_background_sync_runs_until_stopped(server, engine_store, tmp_path):
    stop = threading.Event()
    post(server, events(0, 30))
    thread = start_lake_sync(engine_store, tmp_path / "lake", stop, every=0.1)
    lake = EventLake(tmp_path / "lake")
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
