"""Identity over real HTTP: anonymous events follow identify / alias — history, state, decisions and
segments move to the known customer, later anonymous events are the customer's, and the first link
wins. SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from engine.decisions.state import CustomerState, History, StateLimits
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.api import create_app
from engine.runtime.identity import merge_states
from engine.runtime.processor import Processor
from engine.store.customer_view import customer_segments, recent_events
from engine.store.customers import add_to_segment, load_profiles, load_states
from engine.store.execution_log import list_decisions
from engine.store.identity import links_of, resolve
from engine.store.inbox import pending_count
from tests.support import LocalServer

KEY = "k-identity"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
TRIGGERS = """
- id: browse
  when: {event: product_view}
  actions: [{add_to_segment: {segment: browsers}}]
"""


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


@pytest.fixture
def engine(engine_store):
    clock = {"now": (T0 + timedelta(hours=1)).timestamp()}
    with LocalServer(create_app(engine_store, KEY, clock=lambda: clock["now"])) as server:
        index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
        yield server.url, Processor(engine_store, index)


def send(url: str, *messages: dict) -> dict:
    response = httpx.post(f"{url}/v1/batch", json={"batch": list(messages)}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def track(mid: str, minutes: float, event: str = "Product Viewed", **ids: str) -> dict:
    return {"type": "track", "event": event, "messageId": mid, "timestamp": at(minutes), **ids}


def test_anonymous_history_state_and_decisions_follow_identify(engine, engine_store):
    url, processor = engine
    send(url, track("a1", 1, anonymousId="anon"), track("a2", 2, anonymousId="anon"))
    processor.run_until_empty()
    decisions = engine_store.read(list_decisions, customer_id="anon")
    assert len(decisions) == 2
    engine_store.write(add_to_segment, "anon", "visitors", 0.0)
    engine_store.write(add_to_segment, "anon", "browsers", 0.0)  # a union with the user's own
    engine_store.write(add_to_segment, "u1", "browsers", 0.0)
    send(url, {"type": "identify", "userId": "u1", "anonymousId": "anon", "messageId": "i1",
               "timestamp": at(3), "traits": {"email": "u1@example.com"}})  # fmt: skip
    # the link holds at once: an anonymous event sent now is the customer's
    send(url, track("a3", 4, anonymousId="anon"))
    processor.run_until_empty()
    assert engine_store.read(pending_count) == 0
    ids = [e["event_id"] for e in engine_store.read(recent_events, "u1", 10)]
    assert ids == ["a3", "i1", "a2", "a1"]
    assert engine_store.read(recent_events, "anon", 10) == []
    assert {d.customer_id for d in engine_store.read(list_decisions)} == {"u1"}
    state = engine_store.read(load_states, ["u1", "anon"])
    assert list(state) == ["u1"]
    restored = CustomerState.from_json("u1", state["u1"])
    assert restored.fire_counts == {"browse": 3}  # two fires as anon, one as u1: one history
    assert list(restored.seen_event_ids) == ["a1", "a2", "i1", "a3"]
    assert engine_store.read(customer_segments, "u1") == ["browsers", "visitors"]
    assert engine_store.read(customer_segments, "anon") == []
    assert engine_store.read(load_profiles, ["u1"])["u1"]["email"] == "u1@example.com"
    assert [link.anonymous_id for link in engine_store.read(links_of, "u1")] == ["anon"]


def test_alias_merges_and_links_follow_the_merge(engine, engine_store):
    url, processor = engine
    send(url, track("b1", 1, anonymousId="device-1"))
    send(url, {"type": "identify", "userId": "old-id", "anonymousId": "device-1",
               "messageId": "b2", "timestamp": at(2)})  # fmt: skip
    send(url, {"type": "alias", "previousId": "old-id", "userId": "new-id", "messageId": "b3",
               "timestamp": at(3)})  # fmt: skip
    processor.run_until_empty()
    assert engine_store.read(resolve, ["device-1", "old-id"]) == {
        "device-1": "new-id",
        "old-id": "new-id",
    }
    ids = {e["event_id"] for e in engine_store.read(recent_events, "new-id", 10)}
    assert ids == {"b1", "b2", "b3"}
    send(url, track("b4", 5, anonymousId="device-1"))
    processor.run_until_empty()
    assert "b4" in {e["event_id"] for e in engine_store.read(recent_events, "new-id", 10)}


def test_the_first_link_wins_and_the_known_profile_wins(engine, engine_store):
    url, processor = engine
    send(url, {"type": "identify", "anonymousId": "shared", "messageId": "c0",
               "traits": {"email": "anon@example.com", "plan": "free"}})  # fmt: skip
    send(url, {"type": "identify", "userId": "alice", "messageId": "c1",
               "traits": {"email": "alice@example.com"}})  # fmt: skip
    send(url, {"type": "identify", "userId": "alice", "anonymousId": "shared",
               "messageId": "c2"})  # fmt: skip
    answer = send(url, {"type": "identify", "userId": "bob", "anonymousId": "shared",
                        "messageId": "c3"})  # fmt: skip
    assert answer["results"][0]["status"] == "accepted"
    assert "first link wins" in answer["results"][0]["errors"][0]
    processor.run_until_empty()
    assert engine_store.read(resolve, ["shared"]) == {"shared": "alice"}
    profile = engine_store.read(load_profiles, ["alice"])["alice"]
    assert profile["email"] == "alice@example.com" and profile["plan"] == "free"
    assert engine_store.read(recent_events, "bob", 10)[0]["event_id"] == "c3"


def test_an_event_claiming_a_merge_without_the_link_merges_nothing(engine, engine_store):
    url, processor = engine
    send(url, track("d1", 1, userId="victim"))
    forged = {"event_id": "d2", "customer_id": "mallory", "event_type": "alias",
              "timestamp": at(2), "properties": {"merge_from": "victim"}}  # fmt: skip
    response = httpx.post(f"{url}/v1/events", json=forged, headers={"X-API-Key": KEY})
    assert response.status_code == 202
    processor.run_until_empty()
    assert [e["event_id"] for e in engine_store.read(recent_events, "victim", 10)] == ["d1"]


def test_merged_state_keeps_both_histories_in_time_order():
    limits = StateLimits()
    a = CustomerState("u", events={"view": History([1.0, 5.0], [None, 2.0])},
                      fire_counts={"t": 1})  # fmt: skip
    a.record_send("email", 5.0, limits)
    b = CustomerState("anon", events={"view": History([3.0], [1.0]),
                                      "cart": History([4.0], [9.0])}, fire_counts={"t": 2})  # fmt: skip
    b.record_send("email", 2.0, limits)
    merged = merge_states(a, b, limits)
    assert merged.customer_id == "u"
    assert merged.events["view"].times == [1.0, 3.0, 5.0]
    assert merged.events["view"].amounts == [None, 1.0, 2.0]
    assert merged.total("cart", 0, 10) == 9.0
    assert merged.fire_counts == {"t": 3}
    assert list(merged.sends["email"]) == [2.0, 5.0]


def _id_in(prefix: str, worker: int) -> str:
    """An id whose inbox bucket (crc32 % 1024) belongs to `worker` of two."""
    import zlib

    from engine.store.inbox import BUCKETS

    return next(f"{prefix}{i}" for i in range(100)
                if zlib.crc32(f"{prefix}{i}".encode()) % BUCKETS % 2 == worker)  # fmt: skip


class _ThenRun:
    """The store, for one processor: right after it has read its pending events, `then` runs
    once (the other worker's whole batch lands between this one's read and its commit)."""

    def __init__(self, store, then) -> None:
        self._store, self._then = store, then

    def read(self, query, *args, **kwargs):
        from engine.store.inbox import pending_events

        out = self._store.read(query, *args, **kwargs)
        if query is pending_events and self._then is not None:
            then, self._then = self._then, None
            then()
        return out

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_two_workers_an_anonymous_event_is_not_orphaned_by_a_merge_in_the_other_worker(
    engine, engine_store
):
    """Worker 0 owns the anonymous id's bucket, worker 1 the customer's. Worker 0 reads the
    anonymous event; before it commits, worker 1 processes the identify and merges (moving the
    pending event to the customer's bucket and the anonymous state into the customer's); then
    worker 0 would commit the event it read under the anonymous id (the anonymous state row
    back, the customer's state without the event). Its commit sees that the event changed hands
    and rolls back; read again, the event is worker 1's and is processed as the customer's.
    """
    url, _ = engine
    anon, user = _id_in("anon-w", 0), _id_in("user-w", 1)
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    send(url, track("w1", 1, anonymousId=anon))
    send(url, {"type": "identify", "userId": user, "anonymousId": anon, "messageId": "w-id",
               "timestamp": at(2)})  # fmt: skip
    other = Processor(engine_store, index, worker=(1, 2))
    first = Processor(_ThenRun(engine_store, other.run_once), index, worker=(0, 2))  # type: ignore[arg-type]
    first.run_once()
    other.run_until_empty()
    first.run_until_empty()
    assert engine_store.read(pending_count) == 0
    states = engine_store.read(load_states, [user, anon])
    assert list(states) == [user], "no state is left under the merged-away id"
    assert set(CustomerState.from_json(user, states[user]).seen_event_ids) == {"w1", "w-id"}
