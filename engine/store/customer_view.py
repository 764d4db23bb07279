"""What the customer API reads: one customer's segments, latest scores and recent events, and a
segment's members a page at a time.

Functions over a `Connection`: the caller owns the transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.schema import customer_state, decisions, inbox, profiles, segments
from engine.store.sql import select_in

__all__ = [
    "SegmentMember",
    "customer_exists",
    "customer_segments",
    "latest_scores",
    "recent_events",
    "segment_page",
    "segments_of",
]

_SCORE_SCAN = 500  # decisions read back, newest first, to find each model's latest score


@dataclass(frozen=True, slots=True)
class SegmentMember:
    customer_id: str
    added_at: float


def customer_exists(conn: Connection, customer_id: str) -> bool:
    """Whether the engine holds anything of the customer: a profile, a state or an event."""
    for table in (profiles, customer_state, inbox):
        query = sa.select(sa.literal(1)).where(table.c.customer_id == customer_id).limit(1)
        if conn.execute(query).first() is not None:
            return True
    return False


def customer_segments(conn: Connection, customer_id: str) -> list[str]:
    """The segments a customer is in, by name."""
    query = (
        sa.select(segments.c.segment)
        .where(segments.c.customer_id == customer_id)
        .order_by(segments.c.segment)
    )
    return list(conn.execute(query).scalars())


def segments_of(conn: Connection, customer_ids: list[str]) -> dict[str, list[str]]:
    """The segments of each customer that is in any (for conditions on ``segment``)."""
    out: dict[str, list[str]] = {}
    for customer, segment in sorted(
        select_in(conn, segments, ["customer_id", "segment"], "customer_id", customer_ids)
    ):
        out.setdefault(customer, []).append(segment)
    return out


def latest_scores(conn: Connection, customer_id: str) -> dict[str, dict[str, Any]]:
    """Each model's latest score the engine decided with: value, model version, when."""
    query = (
        sa.select(decisions.c.scores, decisions.c.decided_at)
        .where(decisions.c.customer_id == customer_id, decisions.c.scores.is_not(None))
        .order_by(decisions.c.decided_at.desc(), decisions.c.id.desc())
        .limit(_SCORE_SCAN)
    )
    out: dict[str, dict[str, Any]] = {}
    for text, decided_at in conn.execute(query):
        try:
            scores = json.loads(text)
        except ValueError:
            continue
        for model, score in scores.items() if isinstance(scores, dict) else ():
            if model not in out and isinstance(score, dict) and "value" in score:
                out[model] = {"value": score["value"], "model_version": score.get("model_version"),
                              "decided_at": decided_at}  # fmt: skip
    return out


def recent_events(conn: Connection, customer_id: str, limit: int) -> list[dict[str, Any]]:
    """The customer's latest events, newest first: event_id, event_type, occurred_at, payload."""
    query = (
        sa.select(inbox.c.event_id, inbox.c.event_type, inbox.c.occurred_at, inbox.c.payload)
        .where(inbox.c.customer_id == customer_id)
        .order_by(inbox.c.occurred_at.desc(), inbox.c.seq.desc())
        .limit(limit)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def segment_page(
    conn: Connection, segment: str, *, after: str | None, limit: int
) -> tuple[list[SegmentMember], int]:
    """Up to `limit` members after the customer id `after` (in id order), and the total."""
    query = sa.select(segments.c.customer_id, segments.c.added_at).where(
        segments.c.segment == segment
    )
    if after is not None:
        query = query.where(segments.c.customer_id > after)
    rows = conn.execute(query.order_by(segments.c.customer_id).limit(limit)).all()
    total: int = conn.execute(
        sa.select(sa.func.count()).where(segments.c.segment == segment)
    ).scalar_one()
    return [SegmentMember(c, at) for c, at in rows], total
