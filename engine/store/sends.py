"""What really went to a customer on a channel: the counts the dispatcher's frequency caps read.

A send counts from the moment it reached its point of no return: actions *sent*, *sending* (in
doubt after a crash) and *unconfirmed* (the connection broke after the end of data) — each may
have reached the customer, so each counts. Each counts at the time it was due to go: its due
time, or the later time it was put back to (quiet hours, a send rate, a retry) — so a backlog
sent late in one run still counts yesterday's sends on yesterday, and a send put back to the
next morning counts on that morning. Functions over a `Connection`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.schema import actions
from engine.store.sql import chunks

__all__ = ["SENT_STATUSES", "send_times", "sends_in_windows"]

SENT_STATUSES = ("sent", "sending", "unconfirmed")


def _due() -> sa.ColumnElement[float]:
    """When a send was due to go: its due time, or the later time it was put back to."""
    return sa.case(
        (actions.c.next_attempt_at > actions.c.due_at, actions.c.next_attempt_at),
        else_=actions.c.due_at,
    )


def sends_in_windows(
    conn: Connection, customer_id: str, channel: str, windows: Sequence[tuple[float, float]]
) -> list[int]:
    """How many sends of `channel` reached `customer_id`, due in each window ``[start, end)``
    (epoch seconds), in one query."""
    if not windows:
        return []
    sent_at = _due()
    counts = [
        sa.func.count(sa.case((sa.and_(sent_at >= start, sent_at < end), 1)))
        for start, end in windows
    ]
    query = sa.select(*counts).where(
        actions.c.customer_id == customer_id,
        actions.c.channel == channel,
        actions.c.status.in_(SENT_STATUSES),
        sent_at >= min(start for start, _ in windows),
        sent_at < max(end for _, end in windows),
    )
    row = conn.execute(query).one()
    return [int(n) for n in row]


def send_times(
    conn: Connection, customer_ids: Iterable[str], start: float, end: float
) -> dict[tuple[str, str], list[float]]:
    """When each send of each customer, due in ``[start, end)``, was due: (customer, channel) →
    times — what a batch of the dispatcher counts its caps from, in one query per 500 customers."""
    out: dict[tuple[str, str], list[float]] = {}
    due = _due()
    for chunk in chunks(sorted(set(customer_ids))):
        query = sa.select(actions.c.customer_id, actions.c.channel, due).where(
            actions.c.customer_id.in_(chunk),
            actions.c.channel.is_not(None),
            actions.c.status.in_(SENT_STATUSES),
            due >= start,
            due < end,
        )
        for customer, channel, at in conn.execute(query):
            out.setdefault((customer, channel), []).append(float(at))
    return out
