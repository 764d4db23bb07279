"""Reading what the engine is doing out of its database: queues and lags for the metrics and
`nudge status`, per-trigger activity for `nudge triggers report`.

Every count is a GROUP BY in SQL, so a scrape reads a few rows whatever the size of the log
(the inbox's ``inbox_pending`` and the outbox's ``actions_due`` indexes serve the queue
queries). Functions over a `Connection`; the pure computation of the report is
`engine.optimizer.report`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.events import event_amount
from engine.optimizer.report import TriggerPerformance, incrementality, trigger_performance
from engine.store import schema
from engine.store.exposures import experiment_triggers, load_exposures
from engine.store.schema import actions, dead_letters, decisions, inbox

__all__ = [
    "DELIVERABILITY_EVENTS",
    "PURCHASE",
    "LakeSync",
    "QueueStatus",
    "action_statuses",
    "dead_letter_counts",
    "decision_outcomes",
    "deliverability_events",
    "deliverability_rates",
    "event_days",
    "fired_decisions",
    "lake_watermarks",
    "last_activity",
    "purchases",
    "queue_status",
    "sends_since",
    "sent_messages",
    "suppression_reasons",
    "trigger_report",
]

PURCHASE = "purchase_completed"
DELIVERABILITY_EVENTS = (
    "email_delivered",
    "email_bounced",
    "email_complained",
    "email_opened",
    "email_clicked",
    "unsubscribed",
)
"""The inbox events that say what became of a message, by its ``properties.message_id`` (the
action's idempotency key)."""


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """The engine's queues at one instant (times epoch seconds, None when the queue is empty).

    ``inbox``: events per status (pending, processed, dead); ``oldest_pending``: when the
    oldest pending event was received; ``actions``: (channel or kind, status) → count;
    ``due``: pending actions due by now (the dispatcher's queue), ``oldest_due``: the earliest
    due time among them; ``timers``: pending actions due later (delays, quiet hours).
    """

    inbox: dict[str, int]
    oldest_pending: float | None
    actions: dict[tuple[str, str], int]
    due: int
    oldest_due: float | None
    timers: int


def queue_status(conn: Connection, now: float) -> QueueStatus:
    """The inbox and outbox queues at `now`."""
    by_status = {
        status: n
        for status, n in conn.execute(
            sa.select(inbox.c.status, sa.func.count()).group_by(inbox.c.status)
        )
    }
    oldest = conn.execute(
        sa.select(sa.func.min(inbox.c.received_at)).where(inbox.c.status == "pending")
    ).scalar_one()
    channel = sa.func.coalesce(actions.c.channel, actions.c.kind)
    action_counts = {
        (c, s): n
        for c, s, n in conn.execute(
            sa.select(channel, actions.c.status, sa.func.count()).group_by(
                channel, actions.c.status
            )
        )
    }
    pending = actions.c.status == "pending"
    due_now = sa.and_(pending, actions.c.due_at <= now, actions.c.next_attempt_at <= now)
    due, oldest_due = conn.execute(
        sa.select(sa.func.count(), sa.func.min(actions.c.due_at)).where(due_now)
    ).one()
    timers = conn.execute(sa.select(sa.func.count()).where(pending, sa.not_(due_now))).scalar_one()
    return QueueStatus(
        inbox=by_status,
        oldest_pending=None if oldest is None else float(oldest),
        actions=action_counts,
        due=int(due),
        oldest_due=None if oldest_due is None else float(oldest_due),
        timers=int(timers),
    )


def dead_letter_counts(conn: Connection) -> dict[tuple[str, bool], int]:
    """Dead letters per (source, re-driven yet)."""
    redriven = dead_letters.c.redriven_at.is_not(None)
    query = sa.select(dead_letters.c.source, redriven, sa.func.count()).group_by(
        dead_letters.c.source, redriven
    )
    return {(source, bool(done)): n for source, done, n in conn.execute(query)}


def sends_since(conn: Connection, since: float) -> dict[str, int]:
    """Actions sent per channel (or kind) that finished at or after `since`."""
    channel = sa.func.coalesce(actions.c.channel, actions.c.kind)
    query = (
        sa.select(channel, sa.func.count())
        .where(actions.c.status == "sent", actions.c.finished_at >= since)
        .group_by(channel)
    )
    return {c: n for c, n in conn.execute(query)}


@dataclass(frozen=True, slots=True)
class LakeSync:
    """One stream of the engine → lake sync: its watermark (`position`, moved at `updated_at`),
    how many rows are past it (`behind`) and when the oldest of them arrived (None: none)."""

    stream: str
    position: float
    updated_at: float
    behind: int
    oldest_unsynced: float | None


def lake_watermarks(conn: Connection) -> dict[str, LakeSync]:
    """The engine → lake sync per stream that has run (``engine.runtime.lake_sync``): events by
    inbox seq (arrival time), profiles by update time, identity links by link time."""
    watermarks = schema.lake_watermarks
    rows = conn.execute(
        sa.select(watermarks.c.stream, watermarks.c.position, watermarks.c.updated_at)
    ).all()
    out = {}
    for stream, position, updated_at in rows:
        behind, oldest = 0, None
        source = _LAKE_STREAMS.get(stream)
        if source is not None:
            key, arrived = source
            behind, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(arrived)).where(key > position)
            ).one()
        out[stream] = LakeSync(stream, float(position), float(updated_at), int(behind),
                               None if oldest is None else float(oldest))  # fmt: skip
    return out


_LAKE_STREAMS: dict[str, tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]]] = {
    "events": (inbox.c.seq, inbox.c.received_at),
    "profiles": (schema.profiles.c.updated_at, schema.profiles.c.updated_at),
    "identities": (schema.identities.c.linked_at, schema.identities.c.linked_at),
}


# -- per-trigger activity (nudge triggers report) ------------------------------------------------


def _event_time() -> sa.ColumnElement[Any]:
    """When the decision's event occurred (its decision time if the event is gone)."""
    return sa.func.coalesce(inbox.c.occurred_at, decisions.c.decided_at)


def _between(
    column: sa.ColumnElement[Any], since: float | None, until: float | None
) -> list[sa.ColumnElement[bool]]:
    """`since` <= column < `until` (either end open when None)."""
    where: list[sa.ColumnElement[bool]] = []
    if since is not None:
        where.append(column >= since)
    if until is not None:
        where.append(column < until)
    return where


def _decisions_where(
    since: float | None, trigger_id: str | None, until: float | None = None
) -> list[sa.ColumnElement[bool]]:
    where = _between(_event_time(), since, until)
    if trigger_id is not None:
        where.append(decisions.c.trigger_id == trigger_id)
    return where


_DECISIONS_WITH_EVENTS = decisions.outerjoin(inbox, inbox.c.event_id == decisions.c.event_id)


def _decisions_from(since: float | None, until: float | None) -> sa.FromClause:
    """The decisions, joined to their events only when the period needs the events' times (a
    scrape reads the whole log: 0.7 s → 0.1 s on 200,000 decisions without the join)."""
    return decisions if since is None and until is None else _DECISIONS_WITH_EVENTS


def decision_outcomes(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    trigger_id: str | None = None,
) -> dict[tuple[str, str], int]:
    """Decisions per (trigger, outcome) whose event occurred at or after `since`."""
    query = (
        sa.select(decisions.c.trigger_id, decisions.c.outcome, sa.func.count())
        .select_from(_decisions_from(since, until))
        .where(*_decisions_where(since, trigger_id, until))
        .group_by(decisions.c.trigger_id, decisions.c.outcome)
    )
    return {(t, o): n for t, o, n in conn.execute(query)}


def suppression_reasons(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    trigger_id: str | None = None,
) -> dict[tuple[str, str], int]:
    """Suppressed decisions per (trigger, reason), the reason's kind being the text before its
    first ``:`` (``frequency_cap: 2 in 7 days`` → ``frequency_cap``)."""
    query = (
        sa.select(decisions.c.trigger_id, decisions.c.reason, sa.func.count())
        .select_from(_decisions_from(since, until))
        .where(decisions.c.outcome == "suppressed", *_decisions_where(since, trigger_id, until))
        .group_by(decisions.c.trigger_id, decisions.c.reason)
    )
    out: dict[tuple[str, str], int] = {}
    for trigger, reason, n in conn.execute(query):
        kind = (reason or "unknown").split(":", 1)[0].strip() or "unknown"
        out[(trigger, kind)] = out.get((trigger, kind), 0) + n
    return out


def action_statuses(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    trigger_id: str | None = None,
) -> dict[tuple[str, str, str | None, str], int]:
    """Planned actions per (trigger, kind, channel, status) whose triggering event occurred at
    or after `since`; the channel is None for effects that reach no customer (segments, tasks)."""
    cols = (actions.c.trigger_id, actions.c.kind, actions.c.channel, actions.c.status)
    query = sa.select(*cols, sa.func.count()).group_by(*cols)
    query = query.where(*_between(actions.c.trigger_at, since, until))
    if trigger_id is not None:
        query = query.where(actions.c.trigger_id == trigger_id)
    return {(t, k, c, s): n for t, k, c, s, n in conn.execute(query)}


def sent_messages(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    trigger_id: str | None = None,
) -> dict[str, str]:
    """The idempotency key (the message id) of every sent action → its trigger."""
    query = sa.select(actions.c.idempotency_key, actions.c.trigger_id).where(
        actions.c.status == "sent"
    )
    query = query.where(*_between(actions.c.trigger_at, since, until))
    if trigger_id is not None:
        query = query.where(actions.c.trigger_id == trigger_id)
    return {key: trigger for key, trigger in conn.execute(query)}


def deliverability_events(
    conn: Connection, *, since: float | None = None, types: Iterable[str] = DELIVERABILITY_EVENTS
) -> pd.DataFrame:
    """Feedback events: event_type, message_id (None when it names none), machine (the event
    says a machine did it: ``properties.machine`` true, e.g. a mail scanner's open or click)."""
    query = sa.select(inbox.c.event_type, inbox.c.payload).where(
        inbox.c.event_type.in_(list(types))
    )
    if since is not None:
        query = query.where(inbox.c.occurred_at >= since)
    rows = []
    for event_type, payload in conn.execute(query.order_by(inbox.c.seq)):
        properties = json.loads(payload).get("properties") or {}
        message = properties.get("message_id")
        rows.append((event_type, None if message is None else str(message),
                     properties.get("machine") is True))  # fmt: skip
    return pd.DataFrame(rows, columns=["event_type", "message_id", "machine"])


def fired_decisions(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    trigger_id: str | None = None,
) -> pd.DataFrame:
    """Fired decisions: trigger_id, customer_id, occurred_at (of the triggering event)."""
    query = (
        sa.select(decisions.c.trigger_id, decisions.c.customer_id, _event_time())
        .select_from(_DECISIONS_WITH_EVENTS)
        .where(decisions.c.outcome == "fired", *_decisions_where(since, trigger_id, until))
        .order_by(decisions.c.id)
    )
    frame = pd.DataFrame(
        conn.execute(query).all(), columns=["trigger_id", "customer_id", "occurred_at"]
    )
    return frame.astype({"occurred_at": "float64"})


def purchases(
    conn: Connection, *, since: float | None = None, until: float | None = None
) -> pd.DataFrame:
    """Purchases of customers that some trigger fired for (`since` <= occurred_at < `until`):
    customer_id, occurred_at, amount."""
    fired = sa.select(decisions.c.customer_id).where(decisions.c.outcome == "fired")
    query = sa.select(inbox.c.customer_id, inbox.c.occurred_at, inbox.c.payload).where(
        inbox.c.event_type == PURCHASE, inbox.c.customer_id.in_(fired)
    )
    query = query.where(*_between(inbox.c.occurred_at, since, until))
    rows = [
        (customer, float(at), event_amount(json.loads(payload).get("properties") or {}) or 0.0)
        for customer, at, payload in conn.execute(query.order_by(inbox.c.seq))
    ]
    return pd.DataFrame(rows, columns=["customer_id", "occurred_at", "amount"]).astype(
        {"occurred_at": "float64", "amount": "float64"}
    )


def trigger_report(
    conn: Connection,
    *,
    window: float,
    since: float | None = None,
    until: float | None = None,
    trigger_id: str | None = None,
    triggers: tuple[str, ...] = (),
    alpha: float = 0.05,
    holdouts: bool = True,
) -> list[TriggerPerformance]:
    """Every trigger's performance (`engine.optimizer.report.trigger_performance`) from the log:
    events that occurred in [`since`, `until`), conversions within `window` seconds (a purchase
    after `until` still counts for a fire before it); with
    `trigger_id` only that trigger. `triggers`: ids to list even without decisions (the loaded
    definitions). A holdout's incrementality covers the experiment's whole log (not computed
    without `holdouts`)."""
    found_holdouts = {}
    for experiment in experiment_triggers(conn) if holdouts else ():
        if trigger_id is None or experiment == trigger_id:
            exposures = load_exposures(conn, experiment, attribution_window=window)
            found = incrementality(exposures, alpha=alpha)
            if found:
                found_holdouts[experiment] = found
    wanted = tuple(t for t in triggers if trigger_id is None or t == trigger_id)
    return trigger_performance(
        decisions=decision_outcomes(conn, since=since, until=until, trigger_id=trigger_id),
        suppressions=suppression_reasons(conn, since=since, until=until, trigger_id=trigger_id),
        actions=action_statuses(conn, since=since, until=until, trigger_id=trigger_id),
        messages=sent_messages(conn, since=since, until=until, trigger_id=trigger_id),
        feedback=deliverability_events(conn, since=since),
        fires=fired_decisions(conn, since=since, until=until, trigger_id=trigger_id),
        purchases=purchases(conn, since=since, until=None if until is None else until + window),
        window=window,
        holdouts=found_holdouts,
        triggers=wanted,
    )


def event_days(conn: Connection) -> tuple[float, float] | None:
    """When the first and the latest decided event occurred (None for an empty log)."""
    first, last = conn.execute(
        sa.select(sa.func.min(_event_time()), sa.func.max(_event_time())).select_from(
            _DECISIONS_WITH_EVENTS
        )
    ).one()
    return None if first is None else (float(first), float(last))


def last_activity(conn: Connection) -> tuple[float | None, float | None]:
    """When a processor last finished an event and a dispatcher last ended an action."""
    processed = conn.execute(sa.select(sa.func.max(inbox.c.processed_at))).scalar_one()
    finished = conn.execute(sa.select(sa.func.max(actions.c.finished_at))).scalar_one()
    return (
        None if processed is None else float(processed),
        None if finished is None else float(finished),
    )


_RATE_EVENTS = {"email_delivered": "delivered", "email_bounced": "bounced",
                "email_complained": "complained", "unsubscribed": "unsubscribed"}  # fmt: skip


def deliverability_rates(
    conn: Connection, *, since: float | None = None, until: float | None = None
) -> pd.DataFrame:
    """Delivered, bounced, complained and unsubscribed per UTC day and trigger (``trigger``
    None: feedback that named no message), with bounce, complaint and unsubscribe rates of
    delivered (NaN for a day without deliveries): the deliverability guard's figures
    (engine.runtime.deliverability). Columns: day (YYYY-MM-DD), trigger, delivered, bounced,
    complained, unsubscribed, bounce_rate, complaint_rate, unsubscribe_rate."""
    query = sa.select(inbox.c.event_type, inbox.c.occurred_at, inbox.c.payload).where(
        inbox.c.event_type.in_(list(_RATE_EVENTS))
    )
    if since is not None:
        query = query.where(inbox.c.occurred_at >= since)
    if until is not None:
        query = query.where(inbox.c.occurred_at < until)
    counts: dict[tuple[str, str | None], dict[str, int]] = {}
    for event_type, occurred_at, payload in conn.execute(query):
        properties = json.loads(payload).get("properties") or {}
        trigger = properties.get("trigger")
        day = pd.Timestamp(float(occurred_at), unit="s", tz="UTC").strftime("%Y-%m-%d")
        row = counts.setdefault((day, None if trigger is None else str(trigger)),
                                dict.fromkeys(_RATE_EVENTS.values(), 0))  # fmt: skip
        row[_RATE_EVENTS[event_type]] += 1
    columns = ["day", "trigger", *_RATE_EVENTS.values()]
    frame = pd.DataFrame(
        [(day, trigger, *row.values()) for (day, trigger), row in sorted(
            counts.items(), key=lambda item: (item[0][0], item[0][1] or ""))],
        columns=columns,
    )  # fmt: skip
    delivered = frame["delivered"].where(frame["delivered"] > 0)
    for name in ("bounce", "complaint", "unsubscribe"):
        source = {"bounce": "bounced", "complaint": "complained",
                  "unsubscribe": "unsubscribed"}[name]  # fmt: skip
        frame[f"{name}_rate"] = (frame[source] / delivered).astype("float64")
    return frame
