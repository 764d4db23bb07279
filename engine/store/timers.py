"""Durable timers of absence triggers (`when: {event, then_absent}`), and scheduled-audience runs.

A timer is written in the transaction that processes its first event and ended (`done`, with
its outcome) in the transaction that records what it decided, so a crash at any moment leaves
it either pending (run again, to the same decision: the decision and its actions are idempotent
by event id) or done — it fires once. A schedule run's cursor moves with each committed page of
its audience in the same way.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.inbox import BUCKETS
from engine.store.schema import customer_state, profiles, schedule_runs, timers
from engine.store.sql import chunks, columns, insert_ignore, typed

__all__ = [
    "DueTimer",
    "ScheduleRun",
    "add_timers",
    "audience_page",
    "due_timers",
    "finish_timers",
    "known_customers",
    "next_timer_due",
    "pending_timer_count",
    "profile_zones_since",
    "save_schedule_run",
    "schedule_runs_of",
    "states_since",
]


@dataclass(frozen=True, slots=True)
class DueTimer:
    id: int
    trigger_id: str
    customer_id: str
    event_id: str
    event_type: str
    started_at: float
    due_at: float
    absent_event: str
    payload: str


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    trigger_id: str
    zone: str
    occurrence: float
    worker: str
    status: str
    cursor: str
    customers: int
    fired: int


def add_timers(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Open timers (columns of `timers` but id/bucket); one already open is left alone."""
    if rows:
        # pending, unless the row says otherwise (a window opened and closed in one batch)
        fresh = [
            {"status": "pending", "outcome": None, "finished_at": None, **row,
             "bucket": zlib.crc32(str(row["customer_id"]).encode()) % BUCKETS}
            for row in rows
        ]  # fmt: skip
        conn.execute(insert_ignore(conn, timers, ["trigger_id", "event_id"]), fresh)


def due_timers(
    conn: Connection, now: float, limit: int, worker: tuple[int, int] = (0, 1)
) -> list[DueTimer]:
    """Pending timers due by `now` of the buckets `worker` owns, earliest first."""
    index, count = worker
    query = (
        sa.select(*columns(DueTimer, timers))
        .where(timers.c.status == "pending", timers.c.due_at <= now)
        .order_by(timers.c.due_at, timers.c.id)
        .limit(limit)
    )
    if count > 1:
        query = query.where(timers.c.bucket % count == index)
    return typed(DueTimer, conn.execute(query))


def next_timer_due(conn: Connection, worker: tuple[int, int] = (0, 1)) -> float | None:
    """When the next pending timer of `worker`'s buckets is due (None: none pending)."""
    index, count = worker
    query = sa.select(sa.func.min(timers.c.due_at)).where(timers.c.status == "pending")
    if count > 1:
        query = query.where(timers.c.bucket % count == index)
    due: float | None = conn.execute(query).scalar_one_or_none()
    return due


def pending_timer_count(conn: Connection) -> int:
    count: int = conn.execute(
        sa.select(sa.func.count()).where(timers.c.status == "pending")
    ).scalar_one()
    return count


def finish_timers(conn: Connection, outcomes: Mapping[int, str], now: float) -> None:
    """Mark timers done with what they gave (fired, suppressed, `cancelled: …`)."""
    for timer_id, outcome in outcomes.items():
        conn.execute(
            timers.update()
            .where(timers.c.id == timer_id)
            .values(status="done", outcome=outcome[:500], finished_at=now)
        )


def audience_page(conn: Connection, after: str, limit: int) -> list[str]:
    """Known customers (a profile or a state) with ids after `after`, in id order."""
    ids = sa.union(
        sa.select(profiles.c.customer_id.label("id")).where(profiles.c.customer_id > after),
        sa.select(customer_state.c.customer_id.label("id")).where(
            customer_state.c.customer_id > after
        ),
    ).subquery()
    query = sa.select(ids.c.id).order_by(ids.c.id).limit(limit)
    return [str(row[0]) for row in conn.execute(query)]


def known_customers(conn: Connection, customer_ids: Sequence[str]) -> set[str]:
    """Those of `customer_ids` the engine still knows (a profile or a state)."""
    found: set[str] = set()
    for chunk in chunks(list(customer_ids)):
        for table in (profiles, customer_state):
            query = sa.select(table.c.customer_id).where(table.c.customer_id.in_(chunk))
            found.update(str(c) for c in conn.execute(query).scalars())
    return found


def profile_zones_since(conn: Connection, since: float) -> dict[str, dict[str, Any]]:
    """Profiles changed after `since` (epoch seconds), as {customer: {timezone, country}}."""
    out: dict[str, dict[str, Any]] = {}
    query = sa.select(profiles.c.customer_id, profiles.c.data).where(profiles.c.updated_at > since)
    for customer, data in conn.execute(query):
        try:
            profile = json.loads(data)
        except ValueError:
            continue
        if isinstance(profile, dict):
            out[str(customer)] = {k: profile.get(k) for k in ("timezone", "country")}
    return out


def states_since(conn: Connection, since: float) -> list[str]:
    """Customers whose state was saved after `since` (known through their events)."""
    query = sa.select(customer_state.c.customer_id).where(customer_state.c.updated_at > since)
    return [str(c) for c in conn.execute(query).scalars()]


def schedule_runs_of(conn: Connection, worker: str) -> list[ScheduleRun]:
    """The latest run of each (trigger, zone) of this worker share, and every unfinished one."""
    latest = (
        sa.select(
            schedule_runs.c.trigger_id,
            schedule_runs.c.zone,
            sa.func.max(schedule_runs.c.occurrence).label("occurrence"),
        )
        .where(schedule_runs.c.worker == worker)
        .group_by(schedule_runs.c.trigger_id, schedule_runs.c.zone)
        .subquery()
    )
    query = sa.select(*columns(ScheduleRun, schedule_runs)).where(
        schedule_runs.c.worker == worker,
        sa.or_(
            schedule_runs.c.status == "running",
            sa.tuple_(
                schedule_runs.c.trigger_id, schedule_runs.c.zone, schedule_runs.c.occurrence
            ).in_(sa.select(latest.c.trigger_id, latest.c.zone, latest.c.occurrence)),
        ),
    )
    return typed(ScheduleRun, conn.execute(query))


def save_schedule_run(conn: Connection, run: ScheduleRun, now: float) -> None:
    """Insert or move on a run (its cursor, counts, status) in the caller's transaction."""
    key = (
        (schedule_runs.c.trigger_id == run.trigger_id)
        & (schedule_runs.c.zone == run.zone)
        & (schedule_runs.c.occurrence == run.occurrence)
        & (schedule_runs.c.worker == run.worker)
    )
    values = {"status": run.status, "cursor": run.cursor, "customers": run.customers,
              "fired": run.fired, "finished_at": now if run.status != "running" else None}  # fmt: skip
    if conn.execute(schedule_runs.update().where(key).values(**values)).rowcount == 0:
        conn.execute(
            schedule_runs.insert().values(
                trigger_id=run.trigger_id,
                zone=run.zone,
                occurrence=run.occurrence,
                worker=run.worker,
                started_at=now,
                **values,
            )
        )
