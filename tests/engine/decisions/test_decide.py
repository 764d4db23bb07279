"""Decisions per event: priority arbitration under caps, experiments, skips, holdouts, failures."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.decisions.decide import DecisionOutcome, EventView, decide, explain_event
from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.conditions import ScoreValue
from engine.dsl.triggers import TriggerIndex, load_trigger_dir, load_trigger_text
from engine.optimizer.assignment import HOLDOUT, assign_variant

NOON = datetime(2026, 3, 4, 11, 0, tzinfo=UTC).timestamp()
PROFILE = {"customer_id": "c1", "consent_email": True, "timezone": "Europe/Berlin"}
EXAMPLES = Path(__file__).resolve().parents[3] / "engine" / "examples"


def index(text: str) -> TriggerIndex:
    result = load_trigger_text(text)
    assert not result.issues, [str(i) for i in result.issues]
    return TriggerIndex(result.triggers)


def event(
    event_type="cart_abandoned", *, at=NOON, customer="c1", event_id="e1", **props
) -> EventView:
    return EventView(
        event_id, customer, event_type, at, props.get("cart_value"), {"properties": props}
    )


def run(idx, ev, *, state=None, scores=None, profile=PROFILE):
    return decide(
        ev,
        profile,
        state or CustomerState(ev.customer_id),
        idx,
        scores or {},
        SuppressionPolicy(),
        StateLimits(),
    )


TWO_EMAILS = """
- id: low_one
  priority: low
  when: {event: cart_abandoned}
  actions: [{send_email: {template: a}}]
- id: high_one
  priority: high
  when: {event: cart_abandoned}
  actions: [{send_email: {template: b}}]
- id: tie_b
  priority: normal
  when: {event: cart_abandoned}
  actions: [{send_email: {template: c}}]
- id: tie_a
  priority: normal
  when: {event: cart_abandoned}
  actions: [{send_email: {template: d}}]
"""


def test_when_a_cap_binds_the_higher_priority_wins_and_ties_go_by_id():
    decisions = run(index(TWO_EMAILS), event(cart_value=50))
    assert [(d.trigger_id, d.outcome) for d in decisions] == [
        ("high_one", DecisionOutcome.FIRED),
        ("tie_a", DecisionOutcome.SUPPRESSED),
        ("tie_b", DecisionOutcome.SUPPRESSED),
        ("low_one", DecisionOutcome.SUPPRESSED),
    ]
    assert all(d.reason.startswith("frequency_cap") for d in decisions[1:])


def test_fired_decision_plans_actions_with_delay_and_records_the_fire():
    idx = index("""
id: t
when: {event: cart_abandoned, where: {properties.cart_value: {gte: 20}}}
actions:
  - send_email: {template: reminder}
    delay: 1h
    cancel_if: {event: purchase_completed}
  - add_to_segment: {segment: carts}
""")
    state = CustomerState("c1")
    [d] = run(idx, event(cart_value=50), state=state)
    assert d.outcome is DecisionOutcome.FIRED and d.trigger_version == idx.by_id["t"].version
    email, segment = d.actions
    assert (email.kind, email.due_at, email.cancel_if) == (
        "send_email",
        NOON + 3600,
        {"event": "purchase_completed"},
    )
    assert (segment.kind, segment.due_at) == ("add_to_segment", NOON)
    assert state.fire_counts["t"] == 1 and list(state.sends["email"]) == [NOON + 3600]
    assert run(idx, event(cart_value=5, event_id="e2")) == [], "a failing filter leaves no decision"


def test_missing_score_skips_and_says_which():
    idx = index("""
id: winback
when: {event: session_start}
if: {score: {model: churn, gte: 0.7, on_missing: skip}}
actions: [{send_email: {template: w}}]
""")
    [d] = run(idx, event("session_start"))
    assert (d.outcome, d.reason, d.scores) == (
        DecisionOutcome.SKIPPED,
        "missing: churn",
        {"churn": None},
    )
    [d] = run(
        idx, event("session_start", event_id="e2"), scores={"churn": ScoreValue(0.9, "v4", NOON)}
    )
    assert d.outcome is DecisionOutcome.FIRED and d.scores == {
        "churn": {"value": 0.9, "model_version": "v4"}
    }
    assert d.trace["outcome"] == "passed"


def test_experiment_variant_sets_the_delay_and_holdouts_are_recorded():
    idx = index("""
id: exp
when: {event: cart_abandoned}
actions: [{send_email: {template: r}, delay: 1h}]
experiment: {variants: {d1h: {delay: 1h}, d24h: {delay: 24h}}, holdout: 0.2}
""")
    seen = {}
    for n in range(200):
        customer = f"c{n}"
        [d] = run(
            idx,
            event(customer=customer, event_id=f"e{n}"),
            profile={**PROFILE, "customer_id": customer},
        )
        expected = assign_variant("exp", customer, {"d1h": 1, "d24h": 1}, 0.2)
        assert d.variant == expected
        if expected == HOLDOUT:
            assert d.outcome is DecisionOutcome.HELD_OUT and not d.actions
        else:
            assert d.actions[0].due_at == NOON + (3600 if expected == "d1h" else 86400)
        seen[expected] = seen.get(expected, 0) + 1
    assert set(seen) == {"d1h", "d24h", HOLDOUT} and 20 < seen[HOLDOUT] < 65


def test_the_same_event_twice_is_decided_once():
    idx = index(TWO_EMAILS)
    state = CustomerState("c1")
    assert run(idx, event(), state=state)
    assert run(idx, event(), state=state) == []


def test_a_broken_trigger_fails_alone():
    idx = index(TWO_EMAILS)

    class Exploding:
        def check(self, _ctx):
            raise RuntimeError("boom")

    object.__setattr__(idx.by_id["high_one"], "condition", Exploding())
    decisions = {d.trigger_id: d for d in run(idx, event())}
    assert (decisions["high_one"].outcome, decisions["high_one"].reason) == (
        DecisionOutcome.FAILED,
        "RuntimeError: boom",
    )
    assert decisions["tie_a"].outcome is DecisionOutcome.FIRED, "the next trigger still decides"


def test_quiet_hours_defer_the_whole_plan():
    idx = index("""
id: t
when: {event: cart_abandoned}
actions: [{send_email: {template: r}, delay: 1h}, {webhook: {url: "https://example.com/h"}, delay: 2h}]
""")
    late = datetime(2026, 3, 4, 21, 30, tzinfo=UTC).timestamp()  # 22:30 Berlin; +1h is quiet
    [d] = run(idx, event(at=late))
    morning = datetime(2026, 3, 5, 7, 0, tzinfo=UTC).timestamp()  # 08:00 Berlin
    assert d.outcome is DecisionOutcome.FIRED and d.reason == "deferred past quiet hours"
    assert [a.due_at for a in d.actions] == [morning, morning + 3600]


def test_explain_shows_every_trigger_on_the_event_type():
    idx = TriggerIndex(load_trigger_dir(EXAMPLES).triggers)
    ev = event("purchase_completed", total=20.0)
    report = explain_event(
        ev, PROFILE, CustomerState("c1"), idx, {}, SuppressionPolicy(), StateLimits()
    )
    verdicts = {r["trigger"]: r["verdict"] for r in report}
    assert verdicts == {"post_purchase_cross_sell": "not_matched", "vip_nurture": "skipped"}
    cross_sell = next(r for r in report if r["trigger"] == "post_purchase_cross_sell")
    assert cross_sell["when"]["fields"][0]["actual"] == 20.0


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.yaml")))
def test_every_example_trigger_loads(name):
    result = load_trigger_text((EXAMPLES / f"{name}.yaml").read_text(), name)
    assert not result.issues and result.triggers[0].id == name


def test_at_schedules_the_next_allowed_local_time_across_dst():
    idx = index("""
id: digest
when: {event: cart_abandoned}
quiet_hours: ignore
actions: [{send_email: {template: d}, delay: 1h, at: {local_time: "09:00", days: [mon, tue, wed, thu, fri]}}]
""")
    saturday_night = datetime(
        2026, 3, 28, 20, 0, tzinfo=UTC
    ).timestamp()  # Berlin switches to CEST on Sunday
    [d] = run(idx, event(at=saturday_night))
    monday_nine = datetime(2026, 3, 30, 7, 0, tzinfo=UTC).timestamp()  # 09:00 CEST
    assert d.actions[0].due_at == monday_nine


def test_bad_at_schedules_are_load_errors():
    result = load_trigger_text("""
id: digest
when: {event: cart_abandoned}
actions: [{send_email: {template: d}, at: {local_time: "25:00", days: [funday]}}]
""")
    assert any("at.local_time: expected HH:MM" in i.message for i in result.issues)
