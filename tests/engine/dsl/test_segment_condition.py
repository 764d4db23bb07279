"""`segment: {in: vip}` in trigger conditions: compiled with clear errors, decided on the segments
the customer is in (the segments table, as actions and the customer API see them)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import add_to_segment, load_profiles, upsert_profiles
from engine.store.execution_log import list_decisions

TRIGGERS = """
- id: vip_thanks
  when: {event: purchase_completed}
  if: {segment: {in: vip}}
  actions: [{create_task: {title: thank them}}]
- id: not_yet_vip
  when: {event: purchase_completed}
  if: {all: [{segment: {not_in: [vip, staff]}}]}
  actions: [{create_task: {title: invite}}]
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{segment: vip}", "expected {in: SEGMENT}"),
        ("{segment: {in: []}}", "a segment name or a list"),
        ("{segment: {is: vip}}", "expected {in: SEGMENT}"),
    ],
)
def test_a_malformed_segment_condition_is_a_clear_error(body, message):
    text = f"- id: t\n  when: {{event: signup}}\n  if: {body}\n  actions: [{{create_task: {{title: x}}}}]\n"
    result = load_trigger_text(text)
    assert not result.triggers and any(message in issue.message for issue in result.issues)


def test_segment_membership_decides(engine_store):
    loaded = load_trigger_text(TRIGGERS)
    assert not loaded.issues
    engine_store.write(upsert_profiles, {c: {"customer_id": c, "consent_email": True}
                                         for c in ("a", "b")}, 0.0)  # fmt: skip
    engine_store.write(add_to_segment, "a", "vip", 0.0)
    at = datetime(2026, 3, 1, tzinfo=UTC).isoformat()
    accept_events(engine_store, [
        {"event_id": f"e-{c}", "customer_id": c, "event_type": "purchase_completed",
         "timestamp": at} for c in ("a", "b")], source="test")  # fmt: skip
    Processor(engine_store, TriggerIndex(loaded.triggers)).run_until_empty()
    fired = {(d.customer_id, d.trigger_id) for d in engine_store.read(list_decisions)
             if d.outcome == "fired"}  # fmt: skip
    assert fired == {("a", "vip_thanks"), ("b", "not_yet_vip")}
    assert "segments" not in engine_store.read(load_profiles, ["a"])["a"]  # not stored
