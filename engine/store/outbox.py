"""The outbox: planned actions, their claims by dispatchers, their outcome — and the tasks they create.

An action goes pending → claimed → (sending →) sent | cancelled | failed | unconfirmed; *sending*
is an email in doubt after a crash. `mark_action` commits an action's database effects (segment,
profile, task) with its status, in the caller's transaction. Functions over a `Connection`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store import customers
from engine.store.schema import actions, tasks
from engine.store.sql import columns, execute_rows, insert_ignore, typed

__all__ = [
    "THROTTLED",
    "ActionRow",
    "ChannelQueue",
    "TaskRow",
    "action_counts",
    "add_task",
    "claim_due",
    "defer_action",
    "list_actions",
    "list_tasks",
    "mark_action",
    "pending_by_channel",
    "plan_actions",
    "release_claims",
    "retry_action",
    "settle_sending",
]


# The start of the `result` of an action put back by a send rate or a provider's 429.
THROTTLED = "throttled: "


@dataclass(frozen=True, slots=True)
class ActionRow:
    """A planned action; `params` and `cancel_if` are JSON text."""

    id: int
    idempotency_key: str
    event_id: str
    customer_id: str
    trigger_id: str
    action_index: int
    kind: str
    params: str
    channel: str | None
    due_at: float
    cancel_if: str | None
    variant: str | None
    trigger_at: float
    status: str
    attempts: int
    next_attempt_at: float
    claimed_by: str | None
    claimed_at: float | None
    finished_at: float | None
    result: str | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task a trigger created for a person; `details` is JSON text."""

    id: int
    idempotency_key: str
    customer_id: str
    trigger_id: str
    title: str
    details: str
    status: str
    created_at: float


def plan_actions(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add actions (columns of `actions` up to `trigger_at`); a known idempotency key is skipped."""
    statement = lambda: insert_ignore(conn, actions, ["idempotency_key"])  # noqa: E731
    execute_rows(conn, "plan actions", statement, rows)


def claim_due(conn: Connection, now: float, limit: int, worker_id: str) -> list[ActionRow]:
    """Claim pending actions due by `now`; on PostgreSQL concurrent workers skip each other's rows.

    The rows are returned as they were before the claim (status pending).
    """
    query = (
        sa.select(*columns(ActionRow, actions))
        .where(
            actions.c.status == "pending",
            actions.c.due_at <= now,
            actions.c.next_attempt_at <= now,
        )
        .order_by(actions.c.due_at, actions.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = typed(ActionRow, conn.execute(query))
    if rows:
        claimed = set(
            conn.execute(
                actions.update()
                .where(actions.c.id.in_([r.id for r in rows]), actions.c.status == "pending")
                .values(status="claimed", claimed_by=worker_id, claimed_at=now)
                .returning(actions.c.id)
            ).scalars()
        )
        # On SQLite the SELECT is not in the UPDATE's transaction: a row another worker
        # claimed in between is not this worker's.
        rows = [r for r in rows if r.id in claimed]
    return rows


def release_claims(
    conn: Connection, *, older_than: float | None = None, worker_id: str | None = None
) -> int:
    """Give back claimed actions: claimed before `older_than` (a worker that died before
    finishing them), or by `worker_id` (that worker restarting). Returns how many."""
    if (older_than is None) == (worker_id is None):
        raise ValueError("give older_than or worker_id (one of them)")
    which = (
        actions.c.claimed_at < older_than
        if older_than is not None
        else actions.c.claimed_by == worker_id
    )
    result = conn.execute(
        actions.update()
        .where(actions.c.status == "claimed", which)
        .values(status="pending", claimed_by=None)
    )
    return result.rowcount


def settle_sending(conn: Connection, status: str, kinds: Collection[str] | None = None) -> int:
    """Actions caught mid-send by a crash get `status` (unconfirmed, or pending to send again);
    only those of `kinds` when given."""
    query = actions.update().where(actions.c.status == "sending")
    if kinds is not None:
        query = query.where(actions.c.kind.in_(list(kinds)))
    return conn.execute(query.values(status=status)).rowcount


def mark_action(
    conn: Connection,
    /,
    action_id: int,
    status: str,
    now: float,
    result: str | None = None,
    **effects: Any,
) -> None:
    """Set an action's status and result, with its database effects in the same transaction:
    ``segment=(customer, segment, key)``, ``remove_segment=(customer, segment)``,
    ``profile=(customer, changes)``, ``task={idempotency_key, customer_id, trigger_id, title,
    details}``."""
    unknown = set(effects) - {"segment", "remove_segment", "profile", "task"}
    if unknown:
        raise TypeError(f"unknown effects: {sorted(unknown)}")
    if "segment" in effects:
        customer, segment, key = effects["segment"]
        customers.add_to_segment(conn, customer, segment, now, source_action=key)
    if "remove_segment" in effects:
        customer, segment = effects["remove_segment"]
        customers.remove_from_segment(conn, customer, segment)
    if "profile" in effects:
        customer, changes = effects["profile"]
        customers.update_profile(conn, customer, changes, now)
    if "task" in effects:
        add_task(conn, effects["task"], now)
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id)
        .values(status=status, finished_at=now, result=result)
    )


def mark_actions(conn: Connection, /, marks: Sequence[tuple[int, str, float, str | None]]) -> None:
    """`mark_action` for many actions without effects, in one executemany: (action id, status,
    now, result) each. A dispatcher group's *sending* and *sent* marks: ~0.3 ms a statement
    one by one on PostgreSQL, one pipelined round trip together."""
    if not marks:
        return
    query = (
        actions.update()
        .where(actions.c.id == sa.bindparam("mark_id"))
        .values(status=sa.bindparam("mark_status"), finished_at=sa.bindparam("mark_at"),
                result=sa.bindparam("mark_result"))
    )  # fmt: skip
    conn.execute(query, [{"mark_id": action_id, "mark_status": status, "mark_at": now,
                          "mark_result": result} for action_id, status, now, result in marks])  # fmt: skip


def retry_action(
    conn: Connection, action_id: int, attempts: int, next_attempt_at: float, error: str
) -> None:
    """Put an action back as pending, not before `next_attempt_at`, with the last error."""
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id)
        .values(status="pending", attempts=attempts, next_attempt_at=next_attempt_at,
                result=error, claimed_by=None)
    )  # fmt: skip


def defer_action(conn: Connection, action_id: int, next_attempt_at: float, reason: str) -> None:
    """Put a claimed action back as pending, not before `next_attempt_at`, with `reason`: a
    throttled send. Its attempts and content are left as they are (it did not fail)."""
    conn.execute(
        actions.update()
        .where(actions.c.id == action_id, actions.c.status == "claimed")
        .values(status="pending", next_attempt_at=next_attempt_at, result=reason, claimed_by=None)
    )


def next_throttled_at(conn: Connection) -> float | None:
    """When the earliest throttled action may be tried again (None when none waits)."""
    query = sa.select(sa.func.min(actions.c.next_attempt_at)).where(
        actions.c.status == "pending", actions.c.result.like(f"{THROTTLED}%")
    )
    value = conn.execute(query).scalar()
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class ChannelQueue:
    """The pending actions of one channel (or kind): how many are due, how late, how throttled."""

    channel: str
    pending: int  # all pending, due or not
    due: int  # due by `now` and not waiting for a retry or a throttle
    oldest_due_at: float | None  # the due time of the longest-waiting due action
    throttled: int  # pending because the send rate (or the provider's 429) said wait
    next_attempt_at: float | None  # the earliest time a waiting action is tried again


def pending_by_channel(
    conn: Connection, now: float, *, trigger_id: str | None = None, customer_id: str | None = None
) -> list[ChannelQueue]:
    """The queue of each channel with pending actions (database effects under their kind), in
    one query: depth, what is due now and since when, what is throttled and until when."""
    name = sa.func.coalesce(actions.c.channel, actions.c.kind)
    ready = sa.and_(actions.c.due_at <= now, actions.c.next_attempt_at <= now)
    waiting = sa.and_(actions.c.due_at <= now, actions.c.next_attempt_at > now)
    query = (
        sa.select(
            name,
            sa.func.count(),
            sa.func.count(sa.case((ready, 1))),
            sa.func.min(sa.case((ready, actions.c.due_at))),
            sa.func.count(sa.case((actions.c.result.like(f"{THROTTLED}%"), 1))),
            sa.func.min(sa.case((waiting, actions.c.next_attempt_at))),
        )
        .where(actions.c.status == "pending")
        .group_by(name)
        .order_by(name)
    )
    if trigger_id is not None:
        query = query.where(actions.c.trigger_id == trigger_id)
    if customer_id is not None:
        query = query.where(actions.c.customer_id == customer_id)
    return [ChannelQueue(*row) for row in conn.execute(query)]


def list_actions(
    conn: Connection,
    *,
    trigger_id: str | None = None,
    customer_id: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    finished_since: float | None = None,
    last: int | None = None,
) -> list[ActionRow]:
    """Planned actions in the order they were planned, filtered in SQL; ``last=N``: the latest N
    (still oldest first). `finished_since`: those that reached their status at or after it."""
    query = sa.select(*columns(ActionRow, actions))
    for column, value in ((actions.c.trigger_id, trigger_id), (actions.c.customer_id, customer_id),
                          (actions.c.kind, kind), (actions.c.status, status)):  # fmt: skip
        if value is not None:
            query = query.where(column == value)
    if finished_since is not None:
        query = query.where(actions.c.finished_at >= finished_since)
    if last is not None:
        query = query.order_by(actions.c.id.desc()).limit(max(last, 0))
        return typed(ActionRow, conn.execute(query))[::-1]
    return typed(ActionRow, conn.execute(query.order_by(actions.c.id)))


def action_counts(
    conn: Connection, *, trigger_id: str | None = None, customer_id: str | None = None
) -> dict[tuple[str, str], int]:
    """How many actions each (kind, status) has, optionally of one trigger and/or customer."""
    query = sa.select(actions.c.kind, actions.c.status, sa.func.count()).group_by(
        actions.c.kind, actions.c.status
    )
    if trigger_id is not None:
        query = query.where(actions.c.trigger_id == trigger_id)
    if customer_id is not None:
        query = query.where(actions.c.customer_id == customer_id)
    return {(k, st): n for k, st, n in conn.execute(query)}


def add_task(conn: Connection, task: Mapping[str, Any], now: float) -> None:
    """Create a task (once per idempotency key)."""
    conn.execute(insert_ignore(conn, tasks, ["idempotency_key"]), [{**task, "created_at": now}])


def list_tasks(
    conn: Connection,
    status: str | None = "open",
    limit: int | None = 100,
    *,
    trigger_id: str | None = None,
    customer_id: str | None = None,
    last: int | None = None,
) -> list[TaskRow]:
    """Tasks oldest first, of a status (None: any): the first `limit`, or the latest `last`."""
    if limit is not None and last is not None:
        raise ValueError("give limit (the first rows) or last (the latest rows), not both")
    query = sa.select(*columns(TaskRow, tasks))
    for column, value in ((tasks.c.status, status), (tasks.c.trigger_id, trigger_id),
                          (tasks.c.customer_id, customer_id)):  # fmt: skip
        if value:
            query = query.where(column == value)
    if last is not None:
        query = query.order_by(tasks.c.id.desc()).limit(max(last, 0))
        return typed(TaskRow, conn.execute(query))[::-1]
    query = query.order_by(tasks.c.id)
    if limit is not None:
        query = query.limit(limit)
    return typed(TaskRow, conn.execute(query))
