"""cancel_if sees what `if` sees: the customer's profile, state and scores — with or without a
later event — and a missing score follows the condition's on_missing."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.conditions import ScoreValue
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import update_profile, upsert_profiles
from engine.store.outbox import list_actions

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "Ada",
           "consent_email": True, "timezone": "Europe/Berlin"}  # fmt: skip


class Scores:
    """A score source that knows one churn score per customer, and counts its calls."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values, self.calls = values, []

    def fetch(self, customer_ids, models):
        customers, models = sorted(customer_ids), sorted(models)
        self.calls.append((customers, models))
        now = T0.timestamp()
        return {
            c: {
                m: ScoreValue(self.values[c], "v3", now) if c in self.values else None
                for m in models
            }
            for c in customers
        }


def at(hours: float) -> float:
    return (T0 + timedelta(hours=hours)).timestamp()


def run(store, tmp_path, cancel_if: str, *, events=(), scores=None, profile_change=None):
    """A cart email 2h after the event, with `cancel_if`; `events` (type, hours) happen before it
    falls due. Returns the action's status and result."""
    triggers = f"""
id: cart
when: {{event: cart_abandoned}}
actions:
  - send_email: {{template: cart_reminder}}
    delay: 2h
    cancel_if: {cancel_if}
"""
    result = load_trigger_text(triggers)
    assert not result.issues, [str(i) for i in result.issues]
    index = TriggerIndex(result.triggers)
    store.write(upsert_profiles, {"c1": PROFILE}, 0.0)
    rows = [("cart_abandoned", 0.0), *events]
    accept_events(store, [
        {"event_id": f"e{i}", "customer_id": "c1", "event_type": kind,
         "timestamp": (T0 + timedelta(hours=hours)).isoformat(), "properties": {}}
        for i, (kind, hours) in enumerate(rows)
    ], source="t")  # fmt: skip
    Processor(store, index).run_until_empty()
    if profile_change:
        store.write(update_profile, "c1", profile_change, at(1))
    email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=tmp_path / "outbox")
    dispatcher = Dispatcher(
        store, index, email=email, webhooks=WebhookSender("s" * 32), scores=scores
    )
    dispatcher.run_due(at(2.01))
    [action] = store.read(list_actions)
    return action.status, action.result


DUE = (T0 + timedelta(hours=2)).isoformat()


def test_an_attribute_cancel_fires_on_the_profile_without_any_event(engine_store, tmp_path):
    cancel = '{attribute: {"traits.vip": true}}'
    status, reason = run(engine_store, tmp_path, cancel, profile_change={"traits": {"vip": True}})
    assert (status, reason) == ("cancelled", f"cancelled by cancel_if (attribute) at {DUE}")


def test_an_attribute_cancel_that_does_not_hold_lets_the_send_go(engine_store, tmp_path):
    cancel = '{attribute: {"traits.vip": true}}'
    assert (
        run(engine_store, tmp_path, cancel, profile_change={"traits": {"vip": False}})[0] == "sent"
    )


def test_a_behavior_cancel_counts_the_customer_state(engine_store, tmp_path):
    cancel = "{behavior: {event: page_view, within: 1d, count: {gte: 2}}}"
    assert run(engine_store, tmp_path, cancel, events=[("page_view", 0.5)])[0] == "sent"


def test_a_behavior_cancel_fires_once_the_state_holds(engine_store, tmp_path):
    cancel = "{behavior: {event: page_view, within: 1d, count: {gte: 2}}}"
    status, reason = run(
        engine_store, tmp_path, cancel, events=[("page_view", 0.5), ("page_view", 1.0)]
    )
    at_second = (T0 + timedelta(hours=1)).isoformat()
    assert (status, reason) == ("cancelled", f"cancelled by page_view at {at_second}")


def test_an_event_cancel_still_needs_its_event(engine_store, tmp_path):
    cancel = "{event: purchase_completed}"
    assert run(engine_store, tmp_path, cancel, events=[("page_view", 0.5)])[0] == "sent"


@pytest.mark.parametrize(("value", "expected"), [(0.1, "cancelled"), (0.5, "sent")])
def test_a_score_cancel_reads_the_score_source(engine_store, tmp_path, value, expected):
    scores = Scores({"c1": value})
    status, reason = run(engine_store, tmp_path, "{score: {model: churn, lt: 0.2}}", scores=scores)
    assert status == expected
    if expected == "cancelled":
        assert reason == f"cancelled by cancel_if (score) at {DUE}"
    assert scores.calls == [(["c1"], ["churn"])], "one call for the batch"


@pytest.mark.parametrize("source", ["service", "none"])
@pytest.mark.parametrize(
    ("on_missing", "expected"), [("skip", "sent"), ("fail", "sent"), ("pass", "cancelled")]
)
def test_a_missing_score_follows_on_missing(engine_store, tmp_path, on_missing, expected, source):
    # The service has no score for the customer, or no score source is configured at all.
    scores = Scores({}) if source == "service" else None
    cancel = f"{{score: {{model: churn, lt: 0.2, on_missing: {on_missing}}}}}"
    assert run(engine_store, tmp_path, cancel, scores=scores)[0] == expected
