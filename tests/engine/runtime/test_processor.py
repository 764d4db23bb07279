"""Ingestion and processing on SQLite and on the real PostgreSQL: durable, idempotent, exactly once."""

import json
from datetime import UTC, datetime, timedelta

import pytest

import engine.runtime.processor as processor_module
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store import schema
from engine.store.customers import load_profiles, upsert_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.execution_log import list_decisions
from engine.store.inbox import pending_count
from engine.store.outbox import list_actions
from engine.store.sql import count_rows

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)

TRIGGERS = """
- id: cart_recovery
  priority: high
  when: {event: cart_abandoned, where: {properties.cart_value: {gte: 20}}}
  if: {not: {behavior: {event: purchase_completed, within: 1h}}}
  actions: [{send_email: {template: cart_reminder}, delay: 1h, cancel_if: {event: purchase_completed}}]
- id: big_spender
  when: {event: purchase_completed}
  if: {behavior: {event: purchase_completed, within: 30d, sum: {gte: 100}}}
  actions: [{add_to_segment: {segment: big_spenders}}]
  limits: {max_per_customer: 1}
"""


def ev(i: int, customer: str, event_type: str, minutes: float, **props):
    return {
        "event_id": f"e{i}",
        "customer_id": customer,
        "event_type": event_type,
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        "properties": props,
    }


@pytest.fixture
def index() -> TriggerIndex:
    result = load_trigger_text(TRIGGERS)
    assert not result.issues
    return TriggerIndex(result.triggers)


def profile_everyone(store, *customers):
    store.write(
        upsert_profiles,
        {
            c: {"customer_id": c, "consent_email": True, "timezone": "Europe/Berlin"}
            for c in customers
        },
        0.0,
    )


def test_accepting_is_idempotent_and_invalid_items_are_dead_lettered(engine_store):
    items = [
        ev(1, "a", "cart_abandoned", 0, cart_value=30),
        {"event_id": "bad", "customer_id": "a"},
        ev(1, "a", "cart_abandoned", 0),
    ]
    results = accept_events(engine_store, items, source="test")
    assert [r.status for r in results] == ["accepted", "invalid", "duplicate"]
    assert "event_type: is required" in results[1].errors
    again = accept_events(
        engine_store, [ev(1, "a", "cart_abandoned", 0, cart_value=30)], source="test"
    )
    assert again[0].status == "duplicate"
    assert engine_store.read(count_rows, schema.inbox) == 1
    [dead] = engine_store.read(list_dead_letters)
    assert dead.event_id == "bad" and "timestamp: is required" in dead.reason
    assert json.loads(dead.payload) == {"event_id": "bad", "customer_id": "a"}


def test_processing_records_decisions_and_actions_exactly_once(engine_store, index):
    profile_everyone(engine_store, "a", "b")
    accept_events(engine_store, [
        ev(1, "a", "cart_abandoned", 0, cart_value=30),
        ev(2, "b", "purchase_completed", 5, total=60),
        ev(3, "b", "cart_abandoned", 10, cart_value=25),  # b bought 5 minutes before: no reminder
        ev(4, "b", "purchase_completed", 20, total=50),  # b passes 100 within 30 days
        ev(5, "a", "cart_abandoned", 30, cart_value=10),  # below the filter
    ], source="test")  # fmt: skip
    stats = Processor(engine_store, index).run_until_empty()
    assert stats.events == 5 and engine_store.read(pending_count) == 0
    log = {(d.event_id, d.trigger_id): d for d in engine_store.read(list_decisions)}
    assert set(log) == {("e1", "cart_recovery"), ("e4", "big_spender")}
    assert log[("e1", "cart_recovery")].outcome == "fired"
    assert log[("e1", "cart_recovery")].trigger_version == index.by_id["cart_recovery"].version
    [email, segment] = engine_store.read(list_actions)
    assert (email.kind, email.due_at) == ("send_email", (T0 + timedelta(hours=1)).timestamp())
    assert email.idempotency_key == "cart_recovery:a:e1:0" and segment.kind == "add_to_segment"

    # Nothing is processed twice, even by a fresh processor with an empty cache.
    assert Processor(engine_store, index).run_until_empty().events == 0
    accept_events(engine_store, [ev(1, "a", "cart_abandoned", 0, cart_value=30)], source="test")
    Processor(engine_store, index).run_until_empty()
    assert (
        engine_store.read(count_rows, schema.decisions) == 2
        and engine_store.read(count_rows, schema.actions) == 2
    )


def test_amounts_are_read_as_the_lake_reads_them(engine_store, index):
    from engine.events import event_amount

    # Numeric text counts (as in the lake, whose amounts warm the state up); a flag does not.
    events = [ev(1, "b", "purchase_completed", 0, total="60.00"),
              ev(2, "b", "purchase_completed", 5, total=True, amount="45"),
              ev(3, "c", "purchase_completed", 5, total=True)]  # fmt: skip
    assert [event_amount(e["properties"]) for e in events] == [60.0, 45.0, None]
    accept_events(engine_store, events, source="test")
    Processor(engine_store, index).run_until_empty()
    fired = [
        (d.event_id, d.outcome) for d in engine_store.read(list_decisions, trigger_id="big_spender")
    ]
    assert ("e2", "fired") in fired, fired  # 60 + 45 ≥ 100 within 30 days
    assert ("e3", "fired") not in fired


def test_a_crash_before_commit_leaves_events_pending_and_reprocessing_is_exact(
    engine_store, index, monkeypatch
):
    profile_everyone(engine_store, "a")
    accept_events(
        engine_store,
        [ev(i, "a", "purchase_completed", i, total=40) for i in range(1, 6)],
        source="test",
    )
    crashing = Processor(engine_store, index, batch_size=2)
    original = processor_module.commit_batch
    calls = {"n": 0}

    def commit_then_crash(conn, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("killed mid-batch")
        original(conn, **kwargs)

    monkeypatch.setattr(processor_module, "commit_batch", commit_then_crash)
    with pytest.raises(ConnectionError):
        crashing.run_until_empty()
    monkeypatch.setattr(processor_module, "commit_batch", original)
    assert engine_store.read(pending_count) == 3
    Processor(engine_store, index).run_until_empty()  # a restarted process: state from the database
    outcomes = [
        (d.event_id, d.outcome, (d.reason or "").split(":")[0])
        for d in engine_store.read(list_decisions)
    ]
    assert outcomes == [
        ("e3", "fired", ""),  # the third purchase crosses 100, once
        ("e4", "suppressed", "max_per_customer"),
        ("e5", "suppressed", "max_per_customer"),
    ]


def test_unsubscribing_updates_consent_and_later_marketing_is_suppressed(engine_store, index):
    profile_everyone(engine_store, "a")
    accept_events(engine_store, [
        ev(1, "a", "unsubscribed", 0, list="marketing"),
        ev(2, "a", "cart_abandoned", 60, cart_value=80),
    ], source="test")  # fmt: skip
    Processor(engine_store, index).run_until_empty()
    [d] = engine_store.read(list_decisions)
    assert d.outcome == "suppressed" and d.reason.startswith("no_consent")
    assert engine_store.read(load_profiles, ["a"])["a"]["consent_email"] is False


def test_per_customer_order_is_arrival_order(engine_store, index):
    profile_everyone(engine_store, "a")
    purchases = [ev(i, "a", "purchase_completed", i, total=30) for i in range(1, 5)]
    for item in purchases:
        accept_events(engine_store, [item], source="test")
    Processor(engine_store, index, batch_size=1).run_until_empty()
    assert [(d.event_id, d.outcome) for d in engine_store.read(list_decisions)] == [("e4", "fired")]


def test_a_profile_changed_outside_the_processor_is_read_again_and_forget_drops_it(
    engine_store, index
):
    # The processor keeps the profiles it parsed; a profile written by someone else (the API,
    # an import) between two batches must be what the next batch decides with.
    profile_everyone(engine_store, "a")
    processor = Processor(engine_store, index)
    accept_events(engine_store, [ev(1, "a", "cart_abandoned", 0, cart_value=80)], source="test")
    processor.run_until_empty()
    engine_store.write(upsert_profiles, {"a": {"customer_id": "a", "consent_email": False}}, 1.0)
    accept_events(engine_store, [ev(2, "a", "cart_abandoned", 3000, cart_value=80)], source="test")
    processor.run_until_empty()
    first, second = engine_store.read(list_decisions)
    assert first.outcome == "fired"
    assert second.outcome == "suppressed" and second.reason.startswith("no_consent")
    assert "a" in processor._profiles
    processor.forget("a")
    assert "a" not in processor._profiles and "a" not in processor._states
