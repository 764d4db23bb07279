"""Customer state stays bounded — and no single event, however wrong its clock, wipes the rest."""

from datetime import UTC, datetime, timedelta

import pytest

from engine.decisions.state import CustomerState, History, StateLimits
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.inbox import event_row
from engine.runtime.processor import Processor
from engine.store.customers import load_states
from engine.store.inbox import add_events

D = 86400.0
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=UTC).timestamp()
TEN_YEARS = 3650 * D
LIMITS = StateLimits(retention=90 * D)


def test_an_event_ten_years_ahead_does_not_trim_the_recent_ten():
    state = CustomerState("c1")
    for i in range(10):
        state.record_event("page_view", NOW + i * 60, None, LIMITS)
    state.record_event("page_view", NOW + TEN_YEARS, None, LIMITS)
    assert len(state.events["page_view"]) == 11
    # and later events measure retention from themselves again, not from the outlier
    state.record_event("page_view", NOW + 3600, None, LIMITS)
    assert len(state.events["page_view"]) == 12
    assert state.count("page_view", NOW - 1, NOW + 3600) == 11


def test_the_outlier_first_then_the_recent_events_keeps_them_too():
    state = CustomerState("c1")
    state.record_event("purchase_completed", NOW + TEN_YEARS, 5.0, LIMITS)
    for i in range(10):
        state.record_event("purchase_completed", NOW + i, 1.0, LIMITS)
    assert state.total("purchase_completed", NOW - 1, NOW + D) == 10.0


def test_rebuilding_from_events_and_bulk_trims_survive_the_outlier():
    events = [("page_view", NOW + i, None) for i in range(10)] + [
        ("page_view", NOW + TEN_YEARS, None)
    ]
    state = CustomerState.from_events("c1", events, LIMITS)
    assert len(state.events["page_view"]) == 11
    history = History([NOW + i for i in range(10)] + [NOW + TEN_YEARS], [None] * 11)
    history.trim(LIMITS)
    assert len(history) == 11


def test_retention_and_the_count_bound_still_apply():
    state = CustomerState("c1")
    for i in range(10):  # one event every 30 days: only the last 90 days stay
        state.record_event("page_view", NOW + i * 30 * D, None, LIMITS)
    assert state.times("page_view") == [NOW + i * 30 * D for i in (6, 7, 8, 9)]
    small = StateLimits(retention=90 * D, max_events=5)
    state = CustomerState("c2")
    for i in range(10):
        state.record_event("page_view", NOW + i, None, small)
    state.record_event("page_view", NOW + TEN_YEARS, None, small)
    assert len(state.events["page_view"]) == 5  # the count bound is the hard one


def test_a_send_far_ahead_does_not_forget_the_sends_that_frequency_caps_count():
    state = CustomerState("c1")
    for i in range(5):
        state.record_send("email", NOW + i * 3600, LIMITS)
    state.record_send("email", NOW + TEN_YEARS, LIMITS)
    assert state.sends_between("email", NOW, NOW + D) == 5
    for i in range(3):  # a normal send later still ages out what is older than retention
        state.record_send("email", NOW + 100 * D + i, LIMITS)
    assert state.sends_between("email", NOW, NOW + D) == 0


TRIGGERS = """
- id: browse
  when: {event: page_view}
  if: {behavior: {event: page_view, within: 7d, count: {gte: 1}}}
  actions: [{add_to_segment: {segment: browsers}}]
"""


@pytest.fixture
def index() -> TriggerIndex:
    result = load_trigger_text(TRIGGERS)
    assert not result.issues
    return TriggerIndex(result.triggers)


def test_the_processor_keeps_the_history_when_a_bad_event_bypassed_validation(engine_store, index):
    from engine.events import validate_event

    start = datetime.fromtimestamp(NOW, UTC)
    rows = [
        event_row(
            validate_event(
                {"event_id": f"e{i}", "customer_id": "c1", "event_type": "page_view",
                 "timestamp": (start + timedelta(minutes=i)).isoformat()},
                now=start + timedelta(hours=1),
            )
        )
        for i in range(10)
    ]  # fmt: skip
    far = {**rows[0], "event_id": "far", "occurred_at": NOW + TEN_YEARS}  # straight into the inbox
    engine_store.write(add_events, [*rows, far], NOW)
    Processor(engine_store, index).run_until_empty()
    state = CustomerState.from_json("c1", engine_store.read(load_states, ["c1"])["c1"])
    assert len(state.events["page_view"]) == 11
