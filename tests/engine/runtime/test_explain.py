"""engine.runtime.explain: one event dry-run for a customer — traces and verdicts, nothing stored."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.errors import UserError
from engine.runtime.explain import InvalidEvent, explain, read_event_json
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store import metadata
from engine.store.sql import count_rows

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
TRIGGERS = """
- id: big_spender
  when: {event: purchase_completed}
  if: {behavior: {event: purchase_completed, within: 30d, sum: {gte: 100}}}
  actions: [{add_to_segment: {segment: big_spenders}}]
- id: welcome
  when: {event: signup}
  actions: [{send_email: {template: welcome}}]
"""


@pytest.fixture
def index() -> TriggerIndex:
    result = load_trigger_text(TRIGGERS)
    assert not result.issues
    return TriggerIndex(result.triggers)


def purchase(event_id: str, minutes: float, total: float) -> dict:
    at = (T0 + timedelta(minutes=minutes)).isoformat()
    return {"event_id": event_id, "event_type": "purchase_completed", "timestamp": at,
            "properties": {"total": total}}  # fmt: skip


def test_explain_uses_the_customers_state_and_stores_nothing(engine_store, index):
    accept_events(engine_store, [{**purchase("p1", 0, 80), "customer_id": "c1"}], source="t")
    Processor(engine_store, index).run_until_empty()
    before = {
        table: engine_store.read(count_rows, metadata.tables[table])
        for table in ("decisions", "inbox")
    }

    result = explain(engine_store, index, "c1", purchase("p2", 10, 30))
    [trace] = result.traces
    assert result.event.customer_id == "c1" and result.event.event_type == "purchase_completed"
    assert (trace["trigger"], trace["verdict"]) == ("big_spender", "fired")  # 80 + 30 ≥ 100
    assert explain(engine_store, index, "c2", purchase("p3", 10, 30)).traces[0]["verdict"] != (
        "fired"
    )
    assert {
        table: engine_store.read(count_rows, metadata.tables[table]) for table in before
    } == before


def test_the_events_own_profile_changes_apply_first(engine_store, index):
    signup = {"event_id": "s1", "event_type": "signup", "timestamp": T0.isoformat(),
              "properties": {"email": "c9@example.com", "consent_email": True}}  # fmt: skip
    [trace] = explain(engine_store, index, "c9", signup).traces
    assert trace["verdict"] == "fired", trace


def test_invalid_events_are_user_errors_naming_the_source(engine_store, index, tmp_path):
    with pytest.raises(InvalidEvent, match=r"e\.json: not a valid event:\n  timestamp"):
        explain(engine_store, index, "c1", {"event_id": "x", "event_type": "signup"},
                source="e.json")  # fmt: skip
    bad_consent = {"event_id": "s2", "event_type": "signup", "timestamp": T0.isoformat(),
                   "properties": {"consent_email": "perhaps"}}  # fmt: skip
    with pytest.raises(InvalidEvent, match="consent_email"):
        explain(engine_store, index, "c1", bad_consent)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match=r"deep\.json: not a valid event:\n  JSON nested too deep"):
        read_event_json(deep)
    broken = tmp_path / "broken.json"
    broken.write_text('{"event_id": ')
    with pytest.raises(InvalidEvent, match=r"broken\.json"):
        read_event_json(broken)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(purchase("p9", 0, 1)))
    assert read_event_json(good)["event_id"] == "p9"
