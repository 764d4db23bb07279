"""Suppression: the fixed order, reason codes, transactional bypass, quiet hours across DST."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import (
    SuppressionPolicy,
    SuppressionReason,
    check_suppression,
    quiet_hours_end,
)
from engine.dsl.triggers import load_trigger_text

LIMITS = StateLimits()
BERLIN = ZoneInfo("Europe/Berlin")
NOON = datetime(2026, 3, 4, 11, 0, tzinfo=UTC).timestamp()  # 12:00 in Berlin
CONSENTED = {"consent_email": True}


def trigger(extra: str = "", category: str = "marketing", quiet: str = "defer"):
    text = f"""
id: t1
category: {category}
quiet_hours: {quiet}
when: {{event: cart_abandoned}}
actions: [{{send_email: {{template: x}}}}]
{extra}
"""
    result = load_trigger_text(text)
    assert not result.issues, result.issues
    return result.triggers[0]


def verdict(
    t,
    *,
    profile=CONSENTED,
    state=None,
    now=NOON,
    send_at=None,
    zone=BERLIN,
    engagement=None,
    policy=None,
):
    return check_suppression(
        t,
        profile,
        state or CustomerState("c"),
        now,
        send_at or now,
        zone,
        policy or SuppressionPolicy(),
        engagement,
    )


def test_no_consent_blocks_marketing_first():
    state = CustomerState("c")
    state.record_send("email", NOON - 60, LIMITS)  # the cap would bind too; consent comes first
    v = verdict(trigger(), profile={"consent_email": False}, state=state)
    assert (v.allowed, v.reason) == (False, SuppressionReason.NO_CONSENT)


def test_frequency_cap_counts_customer_local_calendar_days():
    state = CustomerState("c")
    # 23:30 UTC on 3 March is 00:30 on 4 March in Berlin: the same local day as noon.
    state.record_send("email", datetime(2026, 3, 3, 23, 30, tzinfo=UTC).timestamp(), LIMITS)
    assert verdict(trigger(), state=state).reason is SuppressionReason.FREQUENCY_CAP
    # In New York that send was on 3 March: today is free.
    assert verdict(trigger(), state=state, zone=ZoneInfo("America/New_York")).allowed


def test_rolling_window_cap():
    state = CustomerState("c")
    for days_ago in (1, 2, 4):
        state.record_send("email", NOON - days_ago * 86400, LIMITS)
    v = verdict(trigger(), state=state)
    assert v.reason is SuppressionReason.FREQUENCY_CAP and "last 7 days" in v.detail


def test_cooldown_then_max_per_customer():
    t = trigger("limits: {cooldown: 3d, max_per_customer: 2}")
    state = CustomerState("c")
    state.record_fire("t1", NOON - 86400, LIMITS)
    assert verdict(t, state=state).reason is SuppressionReason.COOLDOWN
    state.record_fire("t1", NOON - 5 * 86400, LIMITS)
    state.fires["t1"].clear()
    assert verdict(t, state=state).reason is SuppressionReason.MAX_PER_CUSTOMER


def test_quiet_hours_defer_to_the_local_morning_or_drop():
    late = datetime(2026, 3, 4, 22, 0, tzinfo=UTC).timestamp()  # 23:00 Berlin
    v = verdict(trigger(), now=late)
    assert (
        v.allowed
        and datetime.fromtimestamp(v.send_at, BERLIN).strftime("%Y-%m-%d %H:%M")
        == "2026-03-05 08:00"
    )
    assert verdict(trigger(quiet="drop"), now=late).reason is SuppressionReason.QUIET_HOURS
    assert verdict(trigger(quiet="ignore"), now=late).send_at == late


def test_quiet_hours_end_is_right_across_a_dst_change():
    # Night of 28→29 March 2026: Berlin moves from UTC+1 to UTC+2 at 02:00.
    at = datetime(2026, 3, 28, 22, 30, tzinfo=UTC).timestamp()  # 23:30 local
    end = quiet_hours_end(
        at, BERLIN, SuppressionPolicy().quiet_start, SuppressionPolicy().quiet_end
    )
    assert datetime.fromtimestamp(end, UTC) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert (
        quiet_hours_end(
            NOON, BERLIN, SuppressionPolicy().quiet_start, SuppressionPolicy().quiet_end
        )
        is None
    )


def test_low_engagement_suppresses_marketing_email():
    assert verdict(trigger(), engagement=0.01).reason is SuppressionReason.LOW_ENGAGEMENT
    assert verdict(trigger(), engagement=0.3).allowed
    state = CustomerState("c")
    for i in range(10):
        state.record_event("email_sent", NOON - (i + 2) * 5 * 86400, None, LIMITS)
    assert verdict(trigger(), state=state).reason is SuppressionReason.LOW_ENGAGEMENT


@pytest.mark.parametrize("profile", [{"consent_email": False}, {}])
def test_transactional_bypasses_marketing_rules_but_not_its_own_limits(profile):
    t = trigger("limits: {cooldown: 1h}", category="transactional")
    state = CustomerState("c")
    for i in range(5):
        state.record_send("email", NOON - i * 3600 - 7200, LIMITS)
    late = datetime(2026, 3, 4, 22, 0, tzinfo=UTC).timestamp()
    v = verdict(t, profile=profile, state=state, now=late, engagement=0.0)
    assert v.allowed and v.send_at == late
    state.record_fire("t1", late - 60, LIMITS)
    assert verdict(t, profile=profile, state=state, now=late).reason is SuppressionReason.COOLDOWN
