"""Suppression of SMS and push: each channel's consent flag, cap and quiet hours apply to it."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy, SuppressionReason, check_suppression
from engine.dsl.triggers import load_trigger_text

BERLIN = ZoneInfo("Europe/Berlin")
NOON = datetime(2026, 3, 4, 11, 0, tzinfo=UTC).timestamp()  # 12:00 in Berlin
NIGHT = datetime(2026, 3, 4, 22, 30, tzinfo=UTC).timestamp()  # 23:30 in Berlin
ALL = {"consent_email": True, "consent_sms": True, "consent_push": True}


def trigger(kind: str, category: str = "marketing"):
    text = f"id: t1\ncategory: {category}\nwhen: {{event: cart_abandoned}}\nactions: [{{{kind}: {{template: x}}}}]\n"
    [t] = load_trigger_text(text).triggers
    return t


def verdict(t, profile=ALL, state=None, at=NOON):
    return check_suppression(
        t, profile, state or CustomerState("c"), at, at, BERLIN, SuppressionPolicy()
    )


@pytest.mark.parametrize(
    ("kind", "flag"), [("send_sms", "consent_sms"), ("send_push", "consent_push")]
)
def test_each_channel_needs_its_own_consent(kind, flag):
    assert verdict(trigger(kind)).allowed
    v = verdict(trigger(kind), profile={**ALL, flag: False})
    assert (v.allowed, v.reason, v.detail) == (
        False,
        SuppressionReason.NO_CONSENT,
        f"{flag} is not true",
    )
    only_email = {"consent_email": True}
    assert verdict(trigger(kind), profile=only_email).reason is SuppressionReason.NO_CONSENT
    assert (
        verdict(trigger(kind), profile={**ALL, flag: False, "consent_email": True}).allowed is False
    )


@pytest.mark.parametrize(("kind", "channel"), [("send_sms", "sms"), ("send_push", "push")])
def test_each_channel_has_its_own_cap(kind, channel):
    state = CustomerState("c")
    state.record_send(channel, NOON - 3600, StateLimits())
    v = verdict(trigger(kind), state=state)
    assert v.reason is SuppressionReason.FREQUENCY_CAP and channel in v.detail
    emailed = CustomerState("c")
    emailed.record_send("email", NOON - 3600, StateLimits())
    assert verdict(trigger(kind), state=emailed).allowed, "an email does not use up the SMS cap"


@pytest.mark.parametrize("kind", ["send_sms", "send_push"])
def test_quiet_hours_defer_sms_and_push(kind):
    v = verdict(trigger(kind), at=NIGHT)
    assert v.allowed and v.send_at == datetime(2026, 3, 5, 7, 0, tzinfo=UTC).timestamp()  # 08:00


@pytest.mark.parametrize("kind", ["send_sms", "send_push"])
def test_transactional_sms_and_push_bypass_consent_caps_and_quiet_hours(kind):
    state = CustomerState("c")
    state.record_send(kind.removeprefix("send_"), NIGHT - 60, StateLimits())
    v = verdict(trigger(kind, "transactional"), profile={}, state=state, at=NIGHT)
    assert v.allowed and v.send_at == NIGHT
