"""Dead letters: what could not be accepted or processed, kept with the reason until re-driven.

Functions over a `Connection`: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.schema import dead_letters
from engine.store.sql import chunks, columns, typed

__all__ = ["DeadLetter", "add_dead_letters", "list_dead_letters", "mark_redriven"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: the input as received (`payload`), why it was refused and by whom."""

    id: int
    event_id: str | None
    payload: str
    reason: str
    source: str
    created_at: float
    redriven_at: float | None


def add_dead_letters(conn: Connection, rows: Sequence[Mapping[str, Any]], now: float) -> None:
    """Keep inputs with their reason: rows of event_id (or None), payload, reason, source."""
    if rows:
        conn.execute(dead_letters.insert(), [{**r, "created_at": now} for r in rows])


def list_dead_letters(
    conn: Connection,
    *,
    include_redriven: bool = False,
    limit: int | None = 100,
    last: int | None = None,
) -> list[DeadLetter]:
    """Dead letters oldest first: the first `limit`, or with `last` the latest N (in SQL)."""
    if limit is not None and last is not None:
        raise ValueError("give limit (the first rows) or last (the latest rows), not both")
    query = sa.select(*columns(DeadLetter, dead_letters))
    if not include_redriven:
        query = query.where(dead_letters.c.redriven_at.is_(None))
    if last is not None:
        query = query.order_by(dead_letters.c.id.desc()).limit(max(last, 0))
        return typed(DeadLetter, conn.execute(query))[::-1]
    query = query.order_by(dead_letters.c.id)
    if limit is not None:
        query = query.limit(limit)
    return typed(DeadLetter, conn.execute(query))


def mark_redriven(conn: Connection, ids: Sequence[int], now: float) -> None:
    for chunk in chunks(list(ids)):
        conn.execute(
            dead_letters.update().where(dead_letters.c.id.in_(chunk)).values(redriven_at=now)
        )
