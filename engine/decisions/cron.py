"""Cron times of schedule triggers, in a given time zone: pure, DST-aware (cronsim).

A schedule says `0 10 * * *`; in a customer's zone that is 10:00 on their wall clock, which moves
against UTC twice a year. cronsim walks the wall clock of an aware datetime, so a spring-forward
gap skips the missing time and a fall-back fold fires once (cronsim's documented behaviour, the
same as Prefect's cron schedules, which use it too).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

__all__ = ["cron_problem", "next_cron_time", "previous_cron_time"]


def cron_problem(expr: str) -> str | None:
    """Why `expr` is not a cron expression (five fields), or None when it is one."""
    fields = expr.split()
    if len(fields) != 5:
        return (
            "expected five cron fields: minute hour day-of-month month day-of-week, "
            f'e.g. "0 10 * * *" (got {expr!r})'
        )
    try:
        _check(expr)
    except CronSimError as exc:
        return f"not a cron expression: {exc} in {expr!r}"
    return None


def next_cron_time(expr: str, zone: ZoneInfo, after: float) -> float:
    """The first cron time strictly after `after` (epoch seconds) on `zone`'s wall clock."""
    start = datetime.fromtimestamp(after, zone)
    for moment in CronSim(expr, start):
        stamp = moment.timestamp()
        if stamp > after:
            return stamp
    raise ValueError(f"{expr!r} never fires")  # pragma: no cover - cronsim iterates for ever


def previous_cron_time(expr: str, zone: ZoneInfo, at: float) -> float | None:
    """The last cron time at or before `at` on `zone`'s wall clock (None if there is none)."""
    start = datetime.fromtimestamp(at + 1, zone)  # reverse iteration is strictly before its start
    for moment in CronSim(expr, start, reverse=True):
        stamp = moment.timestamp()
        if stamp <= at:
            return stamp
    return None  # pragma: no cover


@lru_cache(maxsize=256)
def _check(expr: str) -> None:
    next(iter(CronSim(expr, datetime(2026, 1, 1, tzinfo=ZoneInfo("UTC")))))
