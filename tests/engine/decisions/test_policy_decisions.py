"""The policy in decisions: the global holdout, a trigger's own policy, quiet hours per action."""

from datetime import UTC, datetime

from engine.decisions.decide import DecisionOutcome, EventView, decide
from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.optimizer.assignment import HOLDOUT, in_global_holdout

NOON = datetime(2026, 3, 4, 11, 0, tzinfo=UTC).timestamp()  # 12:00 in Berlin


def index(text: str) -> TriggerIndex:
    result = load_trigger_text(text)
    assert not result.issues, [str(i) for i in result.issues]
    return TriggerIndex(result.triggers)


def run(idx, customer="c1", *, at=NOON, policy=None, state=None, event_id="e1"):
    profile = {"customer_id": customer, "consent_email": True, "timezone": "Europe/Berlin"}
    view = EventView(event_id, customer, "cart_abandoned", at, None, {"properties": {}})
    return decide(view, profile, state or CustomerState(customer), idx, {},
                  policy or SuppressionPolicy(), StateLimits())  # fmt: skip


TRIGGERS = """
- id: marketing
  when: {event: cart_abandoned}
  actions: [{send_email: {template: r}}]
- id: receipt
  category: transactional
  when: {event: cart_abandoned}
  actions: [{send_email: {template: r}}]
- id: experiment
  when: {event: cart_abandoned}
  actions: [{send_email: {template: r}}]
  experiment: {variants: {a: {delay: 1h}, b: {delay: 2h}}, holdout: 0.2}
"""


def test_the_global_holdout_holds_out_its_share_of_customers_from_every_marketing_trigger():
    idx = index(TRIGGERS)
    policy = SuppressionPolicy(caps={}, global_holdout=0.1)  # no caps: every trigger may send
    customers = [f"cust-{i}" for i in range(5000)]
    held = set()
    for customer in customers:
        decisions = {d.trigger_id: d for d in run(idx, customer, policy=policy)}
        assert decisions["receipt"].outcome is DecisionOutcome.FIRED, "transactional: never held"
        marketing, experiment = decisions["marketing"], decisions["experiment"]
        if marketing.outcome is DecisionOutcome.HELD_OUT:
            held.add(customer)
            assert (marketing.reason, marketing.variant, marketing.actions) == (
                "global holdout",
                None,
                (),
            )
            # The same customers for every trigger, and not the experiment's own holdout arm.
            assert (experiment.outcome, experiment.reason, experiment.variant) == (
                DecisionOutcome.HELD_OUT, "global holdout", None,
            )  # fmt: skip
        else:
            assert experiment.variant in {"a", "b", HOLDOUT}
    share = len(held) / len(customers)
    assert 0.085 < share < 0.115, share  # 5,000 draws of p=0.1: sd 0.0042
    assert held == {c for c in customers if in_global_holdout(c, 0.1)}, "deterministic"
    again = {
        c
        for c in customers[:500]
        if run(idx, c, policy=policy)[1].reason == "global holdout"  # [1]: marketing
    }
    assert again == held & set(customers[:500])


def test_no_global_holdout_by_default():
    idx = index(TRIGGERS)
    outcomes = {
        d.outcome
        for c in range(300)
        for d in run(idx, f"c{c}", policy=SuppressionPolicy(caps={}))
        if d.trigger_id == "marketing"
    }
    assert outcomes == {DecisionOutcome.FIRED}


def test_a_trigger_policy_applies_to_that_trigger_only():
    idx = index("""
- id: generous
  when: {event: cart_abandoned}
  actions: [{send_email: {template: r}}]
  policy: {caps: {email: {per_local_day: 3}}}
- id: strict
  priority: low
  when: {event: cart_abandoned}
  actions: [{send_email: {template: r}}]
""")
    state = CustomerState("c1")
    first = {d.trigger_id: d.outcome for d in run(idx, state=state)}
    # generous fired first (the same priority order: normal before low); strict is capped by it.
    assert first == {"generous": DecisionOutcome.FIRED, "strict": DecisionOutcome.SUPPRESSED}
    second = {d.trigger_id: d for d in run(idx, state=state, at=NOON + 60, event_id="e2")}
    assert second["generous"].outcome is DecisionOutcome.FIRED, "its own cap: 3 a day"
    assert second["strict"].reason.startswith("frequency_cap: 2 email already on this local day")


def test_every_action_passes_quiet_hours_at_its_own_due_time():
    # Email #1 at 12:00 Berlin, #2 ten hours later: 22:00, inside quiet hours → 08:00 next day.
    idx = index("""
id: series
when: {event: cart_abandoned}
actions:
  - send_email: {template: r}
  - send_email: {template: r}
    delay: 10h
  - add_to_segment: {segment: late}
    delay: 10h
""")
    [d] = run(idx)
    morning = datetime(2026, 3, 5, 7, 0, tzinfo=UTC).timestamp()  # 08:00 Berlin
    assert d.outcome is DecisionOutcome.FIRED and d.reason == "deferred past quiet hours"
    assert [a.due_at for a in d.actions] == [NOON, morning, NOON + 10 * 3600], (
        "a segment reaches no customer: not deferred"
    )


def test_quiet_hours_of_a_trigger_policy_and_ignore():
    idx = index("""
- id: late_night
  when: {event: cart_abandoned}
  policy: {quiet_hours: {start: "23:30"}}
  actions: [{send_email: {template: r}}, {send_email: {template: r}, delay: 10h}]
- id: ignoring
  quiet_hours: ignore
  when: {event: cart_abandoned}
  actions: [{send_email: {template: r}}, {send_email: {template: r}, delay: 10h}]
""")
    decisions = {d.trigger_id: d for d in run(idx, policy=SuppressionPolicy(caps={}))}
    assert [a.due_at for a in decisions["late_night"].actions] == [NOON, NOON + 10 * 3600]
    assert decisions["late_night"].reason is None
    assert [a.due_at for a in decisions["ignoring"].actions] == [NOON, NOON + 10 * 3600]
