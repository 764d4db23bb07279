"""Suppression: may this trigger reach this customer now? One fixed order, one reason per block.

consent / unsubscribe → global frequency cap (per channel, customer-local calendar days and rolling
windows) → trigger cooldown → max per customer → quiet hours (defer or drop) → engagement-based
suppression. Transactional triggers bypass the marketing rules (consent to marketing, caps, quiet
hours, engagement) but not their own cooldown and maximum. Pure: reads state, changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from engine.decisions.state import CustomerState

if TYPE_CHECKING:
    from engine.dsl.triggers import Trigger

__all__ = ["ChannelCap", "SuppressionPolicy", "SuppressionReason", "Verdict", "check_suppression"]


class SuppressionReason(StrEnum):
    NO_CONSENT = "no_consent"
    FREQUENCY_CAP = "frequency_cap"
    COOLDOWN = "cooldown"
    MAX_PER_CUSTOMER = "max_per_customer"
    QUIET_HOURS = "quiet_hours"
    LOW_ENGAGEMENT = "low_engagement"


@dataclass(frozen=True)
class ChannelCap:
    """At most `per_local_day` sends per customer-local calendar day, and `(window_s, max)` rolling."""

    per_local_day: int | None = 1
    rolling: tuple[tuple[float, int], ...] = ((7 * 86400.0, 3),)


@dataclass(frozen=True)
class SuppressionPolicy:
    """The marketing rules every trigger shares (`engine.dsl.policy` reads them from the policy
    file; a trigger's `policy:` overrides them for itself)."""

    # Each customer channel has its cap and its consent flag; SMS and push (issue 13) default to
    # email's cap (1 per local day, 3 per rolling week) — texts and notifications interrupt more
    # than an email does, so not more often. Webhooks reach systems: no cap, no consent.
    caps: Mapping[str, ChannelCap] = field(
        default_factory=lambda: {"email": ChannelCap(), "sms": ChannelCap(), "push": ChannelCap()}
    )
    consent_fields: Mapping[str, str] = field(
        default_factory=lambda: {
            "email": "consent_email",
            "sms": "consent_sms",
            "push": "consent_push",
        }
    )
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    engagement_model: str = "engagement"
    engagement_floor: float = 0.02  # suppress marketing email below this engagement score
    unengaged_sends: int = 8  # … or after this many sends in 90 days without an open or click
    # Share of customers held out of every marketing trigger (engine.optimizer.assignment's
    # in_global_holdout); 0: nobody. Set in the policy file (engine.dsl.policy).
    global_holdout: float = 0.0


@dataclass(slots=True)  # not frozen: see EventView (engine.decisions.decide)
class Verdict:
    """Allowed (maybe deferred to `send_at`), or blocked with a reason."""

    allowed: bool
    reason: SuppressionReason | None = None
    detail: str = ""
    send_at: float | None = None


def check_suppression(
    trigger: Trigger,
    profile: Mapping[str, object],
    state: CustomerState,
    now: float,
    send_at: float,
    zone: ZoneInfo,
    policy: SuppressionPolicy,
    engagement: float | None = None,
) -> Verdict:
    """Apply the rules in order to a trigger about to act at `send_at` (epoch seconds)."""
    marketing = not trigger.transactional
    channels = trigger.channel_order
    if marketing:
        for channel in channels:
            consent = policy.consent_fields.get(channel)
            if consent and profile.get(consent) is not True:
                return Verdict(False, SuppressionReason.NO_CONSENT, f"{consent} is not true")
        for channel in channels:
            blocked = _cap_binds(policy.caps.get(channel), channel, state, send_at, zone)
            if blocked:
                return Verdict(False, SuppressionReason.FREQUENCY_CAP, blocked)
    limits = trigger.spec.limits
    last = state.last_fire(trigger.id)
    cooldown = trigger.cooldown_seconds
    if cooldown is not None and last is not None and now - last < cooldown:
        return Verdict(
            False,
            SuppressionReason.COOLDOWN,
            f"fired {_ago(now - last)} ago; cooldown {limits.cooldown}",
        )
    fired = state.fire_counts.get(trigger.id, 0)
    if limits.max_per_customer is not None and fired >= limits.max_per_customer:
        return Verdict(False, SuppressionReason.MAX_PER_CUSTOMER, f"fired {fired} times already")
    if marketing and channels and trigger.spec.quiet_hours != "ignore":
        quiet_until = quiet_hours_end(send_at, zone, policy.quiet_start, policy.quiet_end)
        if quiet_until is not None:
            if trigger.spec.quiet_hours == "drop":
                return Verdict(
                    False, SuppressionReason.QUIET_HOURS, "inside quiet hours; this trigger drops"
                )
            send_at = quiet_until
    if marketing and "email" in channels and _unengaged(state, now, engagement, policy):
        return Verdict(False, SuppressionReason.LOW_ENGAGEMENT, "no recent engagement")
    return Verdict(True, send_at=send_at)


def quiet_hours_end(at: float, zone: ZoneInfo, start: time, end: time) -> float | None:
    """If `at` falls inside the local quiet window, the epoch time the window ends; else None."""
    local = datetime.fromtimestamp(at, zone)
    clock = local.time()
    inside = (start <= clock or clock < end) if start > end else (start <= clock < end)
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    # Built from the wall clock so that a DST change during the night is respected.
    return datetime.combine(day, end, tzinfo=zone).timestamp()


def local_day_bounds(at: float, zone: ZoneInfo) -> tuple[float, float]:
    """Epoch bounds [start, end) of the customer-local calendar day containing `at`."""
    day = datetime.fromtimestamp(at, zone).date()
    start = datetime.combine(day, time(0), tzinfo=zone).timestamp()
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).timestamp()
    return start, end


def _cap_binds(
    cap: ChannelCap | None, channel: str, state: CustomerState, at: float, zone: ZoneInfo
) -> str:
    if cap is None or not state.sends.get(channel):
        return ""
    if cap.per_local_day is not None:
        start, end = local_day_bounds(at, zone)
        sent = state.sends_between(channel, start, end)
        if sent >= cap.per_local_day:
            return f"{sent} {channel} already on this local day (cap {cap.per_local_day})"
    for window, limit in cap.rolling:
        sent = state.sends_between(channel, at - window, at + 1e-6)
        if sent >= limit:
            return f"{sent} {channel} in the last {_ago(window)} (cap {limit})"
    return ""


def _unengaged(
    state: CustomerState, now: float, engagement: float | None, policy: SuppressionPolicy
) -> bool:
    if engagement is not None:
        return engagement < policy.engagement_floor
    since = now - 90 * 86400.0
    sends = state.count("email_sent", since, now) + state.sends_between("email", since, now)
    touches = state.count("email_opened", since, now) + state.count("email_clicked", since, now)
    return sends >= policy.unengaged_sends and touches == 0


def _ago(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
