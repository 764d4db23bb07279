"""The deliverability guard: the day's complaint rate warns, then pauses marketing sends.

Gmail's bulk-sender rules keep spam complaints under 0.3 % of delivered mail (0.1 % is their
target): above that the sender loses the inbox. So after each complaint a provider reports
(engine.runtime.email_webhooks) the guard counts the UTC day's complaints and deliveries
(engine.store.reporting.deliverability_rates): at NUDGE_COMPLAINT_WARN_RATE (0.1 %) it logs a
warning and keeps it as the ``deliverability_warning`` flag (`nudge status` shows it); at
NUDGE_COMPLAINT_PAUSE_RATE (0.3 %) it sets the persisted ``marketing_paused`` flag, which the
dispatcher checks before every marketing send: paused sends are put back (deferred, never
dropped), transactional mail still goes. A day with fewer than NUDGE_GUARD_MIN_DELIVERED
deliveries decides nothing (one complaint among ten deliveries is not a rate). The pause stays
until someone resumes it — ``nudge suppressions resume-marketing`` — after looking at why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from engine.store import EngineDB
from engine.store.reporting import deliverability_rates
from engine.store.suppressions import clear_flag, get_flag, set_flag

__all__ = [
    "PAUSE_FLAG",
    "WARNING_FLAG",
    "GuardSettings",
    "GuardVerdict",
    "check_guard",
    "judge",
    "marketing_pause",
    "resume_marketing",
]

log = logging.getLogger(__name__)

PAUSE_FLAG = "marketing_paused"
WARNING_FLAG = "deliverability_warning"


@dataclass(frozen=True)
class GuardSettings:
    """The guard's thresholds: complaint rates of delivered, and the day's minimum volume."""

    warn_rate: float = 0.001
    pause_rate: float = 0.003
    min_delivered: int = 500


@dataclass(frozen=True)
class GuardVerdict:
    """One day's figures and what they call for: ``ok``, ``warn`` or ``pause``."""

    day: str
    delivered: int
    complained: int
    rate: float
    action: str


def judge(day: str, delivered: int, complained: int, settings: GuardSettings) -> GuardVerdict:
    """What a day's deliveries and complaints call for (pure)."""
    rate = complained / delivered if delivered else math.nan
    action = "ok"
    if delivered >= settings.min_delivered:
        if rate >= settings.pause_rate:
            action = "pause"
        elif rate >= settings.warn_rate:
            action = "warn"
    return GuardVerdict(day, delivered, complained, rate, action)


def check_guard(store: EngineDB, now: float, settings: GuardSettings) -> GuardVerdict:
    """Judge the UTC day of `now` and set the flags it calls for."""
    start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = start.strftime("%Y-%m-%d")
    frame = store.read(
        deliverability_rates, since=start.timestamp(), until=start.timestamp() + 86_400
    )
    verdict = judge(day, int(frame["delivered"].sum()), int(frame["complained"].sum()), settings)
    if verdict.action == "ok":
        return verdict
    value = {"day": day, "delivered": verdict.delivered, "complained": verdict.complained,
             "rate": round(verdict.rate, 6)}  # fmt: skip
    if verdict.action == "pause":
        if store.read(get_flag, PAUSE_FLAG) is None:
            log.error("complaints at %.2f%% of delivered on %s (%d of %d): marketing sends paused; "
                      "`nudge suppressions resume-marketing` resumes them", verdict.rate * 100, day,
                      verdict.complained, verdict.delivered)  # fmt: skip
            store.write(set_flag, PAUSE_FLAG, {**value, "threshold": settings.pause_rate}, now)
    else:
        log.warning("complaints at %.2f%% of delivered on %s (%d of %d): above %.1f%%",
                    verdict.rate * 100, day, verdict.complained, verdict.delivered,
                    settings.warn_rate * 100)  # fmt: skip
        store.write(set_flag, WARNING_FLAG, {**value, "threshold": settings.warn_rate}, now)
    return verdict


def marketing_pause(conn: Connection) -> dict[str, Any] | None:
    """The pause in force (its day, figures and when it was set), or None."""
    return get_flag(conn, PAUSE_FLAG)


def resume_marketing(conn: Connection) -> bool:
    """End the pause (and the warning); False when marketing was not paused."""
    clear_flag(conn, WARNING_FLAG)
    return clear_flag(conn, PAUSE_FLAG)
