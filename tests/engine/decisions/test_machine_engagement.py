"""Engagement suppression counts people: an open or click flagged ``properties.machine`` (Apple
MPP, an image proxy, a link scanner) is not recorded in the customer state, so it neither keeps
an unengaged customer mailed nor satisfies a behaviour condition on opens."""

from __future__ import annotations

from engine.decisions.decide import DecisionOutcome, EventView, decide
from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.triggers import TriggerIndex, load_trigger_text

DAY = 86400.0
T0 = 1_767_000_000.0
PROFILE = {"customer_id": "c1", "consent_email": True}
TRIGGER = """
- id: cart
  quiet_hours: ignore
  when: {event: cart_abandoned}
  actions: [{send_email: {template: cart_reminder}}]
"""


def feed(state: CustomerState, index: TriggerIndex, event_type: str, at: float, n: int,
         **props: object) -> list:  # fmt: skip
    view = EventView(f"{event_type}-{n}", "c1", event_type, at, None, {"properties": props})
    return decide(view, PROFILE, state, index, {}, SuppressionPolicy(), StateLimits())


def test_machine_opens_do_not_count_as_engagement() -> None:
    result = load_trigger_text(TRIGGER)
    assert not result.issues
    index = TriggerIndex(result.triggers)
    state = CustomerState("c1")
    for n in range(8):
        feed(state, index, "email_sent", T0 + n * DAY, n)
    feed(state, index, "email_opened", T0 + 8 * DAY, 0, machine=True, machine_reason="apple_mpp")
    feed(state, index, "email_clicked", T0 + 8 * DAY, 0, machine=True, machine_reason="too_soon")
    assert state.count("email_opened", T0, T0 + 9 * DAY) == 0
    [held] = feed(state, index, "cart_abandoned", T0 + 9 * DAY, 0)
    assert held.outcome is DecisionOutcome.SUPPRESSED and str(held.reason).startswith(
        "low_engagement"
    )
    feed(state, index, "email_opened", T0 + 10 * DAY, 1, machine=False)
    [fired] = feed(state, index, "cart_abandoned", T0 + 11 * DAY, 1)
    assert fired.outcome is DecisionOutcome.FIRED
