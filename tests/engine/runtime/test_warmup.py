"""Warm-up: state built from the lake equals state built by processing the same history."""

from datetime import UTC, datetime, timedelta

from engine.decisions.state import CustomerState
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.events import validate_event
from engine.lake import EventLake, events_to_table
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.runtime.warmup import warm_states
from engine.store.customers import load_states
from engine.store.execution_log import list_decisions

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRIGGER = """
id: third_order
when: {event: purchase_completed}
if: {behavior: {event: purchase_completed, within: 30d, count: {gte: 3}}}
actions: [{add_to_segment: {segment: regulars}}]
"""


def purchase(i: int, day: int) -> dict:
    return {"event_id": f"p{i}", "customer_id": "c1", "event_type": "purchase_completed",
            "timestamp": (T0 + timedelta(days=day)).isoformat(), "properties": {"total": 10 * i}}  # fmt: skip


def test_warm_state_from_the_lake_lets_the_engine_start_mid_history(engine_store, tmp_path):
    index = TriggerIndex(load_trigger_text(TRIGGER).triggers)
    lake = EventLake(tmp_path / "lake")
    history = [purchase(1, 1), purchase(2, 5), {**purchase(3, 6), "event_type": "page_view"}]
    lake.append(events_to_table(validate_event(e) for e in history))
    processor = Processor(engine_store, index)
    assert warm_states(engine_store, lake, index, T0 + timedelta(days=10), processor.limits) == 1
    state = CustomerState.from_json("c1", engine_store.read(load_states, ["c1"])["c1"])
    assert state.events["purchase_completed"].times == [
        (T0 + timedelta(days=d)).timestamp() for d in (1, 5)
    ]
    assert "page_view" not in state.events, "only the event types conditions read are kept"
    accept_events(engine_store, [purchase(4, 12)], source="t")
    processor.run_until_empty()
    [decision] = engine_store.read(list_decisions)
    assert (decision.event_id, decision.outcome) == ("p4", "fired"), "the warm history counted"
