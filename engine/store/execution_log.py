"""The execution log: one decision per (event, trigger), with its outcome, reason and scores.

Functions over a `Connection`: the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.schema import decisions
from engine.store.sql import chunks, columns, execute_rows, insert_ignore, typed

__all__ = ["DecisionRow", "list_decisions", "outcome_counts", "record_decisions", "scores_of"]


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A decision as logged; `trace` and `scores` are JSON text (or None)."""

    id: int
    event_id: str
    customer_id: str
    trigger_id: str
    trigger_version: str
    outcome: str
    reason: str | None
    trace: str | None
    scores: str | None
    variant: str | None
    decided_at: float


def record_decisions(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Log decisions (columns of `decisions` but `id`); one already logged is left as it is."""
    statement = lambda: insert_ignore(conn, decisions, ["event_id", "trigger_id"])  # noqa: E731
    execute_rows(conn, "record decisions", statement, rows)


def list_decisions(
    conn: Connection,
    *,
    trigger_id: str | None = None,
    customer_id: str | None = None,
    limit: int | None = None,
    last: int | None = None,
) -> list[DecisionRow]:
    """Decisions in the order they were made, optionally of one trigger and/or customer.

    ``last=N``: the latest N — ordered and limited in SQL, so only those rows are read —
    returned oldest first. ``limit=N``: the first N. Neither: the whole log.
    """
    if limit is not None and last is not None:
        raise ValueError("give limit (the first rows) or last (the latest rows), not both")
    query = sa.select(*columns(DecisionRow, decisions))
    if trigger_id:
        query = query.where(decisions.c.trigger_id == trigger_id)
    if customer_id:
        query = query.where(decisions.c.customer_id == customer_id)
    if last is not None:
        query = query.order_by(decisions.c.id.desc()).limit(max(last, 0))
    else:
        query = query.order_by(decisions.c.id)
        if limit:
            query = query.limit(limit)
    rows = typed(DecisionRow, conn.execute(query))
    return rows[::-1] if last is not None else rows


def outcome_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """How many decisions each (trigger, outcome) has."""
    query = sa.select(decisions.c.trigger_id, decisions.c.outcome, sa.func.count()).group_by(
        decisions.c.trigger_id, decisions.c.outcome
    )
    return {(t, o): n for t, o, n in conn.execute(query)}


def scores_of(
    conn: Connection, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The scores recorded with the decisions of (event id, trigger id) pairs."""
    wanted = set(keys)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for chunk in chunks(sorted({e for e, _ in wanted})):
        query = sa.select(decisions.c.event_id, decisions.c.trigger_id, decisions.c.scores).where(
            decisions.c.event_id.in_(chunk)
        )
        out.update(
            ((e, t), json.loads(sc or "{}")) for e, t, sc in conn.execute(query) if (e, t) in wanted
        )
    return out
