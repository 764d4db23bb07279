"""The engine → lake sync's side of the engine database: watermarks and what lies beyond them.

Events carry their own marker, ``inbox.lake_synced`` (`unsynced_events`, `mark_synced`); the
``events`` watermark only counts them and records the highest seq copied, for reports. Profiles
and identity links have a watermark each (``profiles``: the ``updated_at`` up to which profile
changes are in the lake). Functions over a `Connection`: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.identity import resolve
from engine.store.schema import identities, inbox, lake_watermarks, profiles
from engine.store.sql import chunks, upsert

__all__ = [
    "Watermark",
    "advance",
    "final_customers",
    "links_after",
    "mark_synced",
    "profiles_after",
    "read_watermark",
    "unsynced_events",
]

_HOPS = 8  # links re-pointed by merges are one hop; a chain waiting for its merge a few more


@dataclass(frozen=True, slots=True)
class Watermark:
    stream: str
    position: float
    synced: int
    updated_at: float | None


def read_watermark(conn: Connection, stream: str) -> Watermark:
    """Where the stream's sync stands (position 0 before the first sync)."""
    row = conn.execute(
        sa.select(
            lake_watermarks.c.position, lake_watermarks.c.synced, lake_watermarks.c.updated_at
        ).where(lake_watermarks.c.stream == stream)
    ).first()
    return Watermark(stream, 0.0, 0, None) if row is None else Watermark(stream, *row)


def advance(conn: Connection, stream: str, position: float, synced: int, now: float) -> None:
    """Move the stream's watermark to `position`, `synced` more items done."""
    current = read_watermark(conn, stream)
    upsert(conn, lake_watermarks, "stream", [{"stream": stream, "position": position,
                                             "synced": current.synced + synced,
                                             "updated_at": now}])  # fmt: skip


def unsynced_events(conn: Connection, limit: int) -> list[tuple[int, str]]:
    """Up to `limit` inbox events (seq, payload) not yet in the lake, in seq order."""
    query = (
        sa.select(inbox.c.seq, inbox.c.payload)
        .where(inbox.c.lake_synced == sa.false())
        .order_by(inbox.c.seq)
        .limit(limit)
    )
    return [(row_seq, payload) for row_seq, payload in conn.execute(query)]


def mark_synced(conn: Connection, seqs: Sequence[int]) -> None:
    """These inbox events are in the lake."""
    for chunk in chunks(list(seqs)):
        conn.execute(inbox.update().where(inbox.c.seq.in_(chunk)).values(lake_synced=True))


def profiles_after(
    conn: Connection, updated_at: float, until: float
) -> list[tuple[str, str, float]]:
    """Profiles (customer_id, data, updated_at) changed after `updated_at`, up to `until`."""
    query = (
        sa.select(profiles.c.customer_id, profiles.c.data, profiles.c.updated_at)
        .where(profiles.c.updated_at > updated_at, profiles.c.updated_at <= until)
        .order_by(profiles.c.updated_at, profiles.c.customer_id)
    )
    return [(c, d, at) for c, d, at in conn.execute(query)]


def links_after(conn: Connection, linked_at: float, until: float) -> list[tuple[str, float]]:
    """Anonymous ids linked after `linked_at` (up to `until`), oldest first, with when."""
    query = (
        sa.select(identities.c.anonymous_id, identities.c.linked_at)
        .where(identities.c.linked_at > linked_at, identities.c.linked_at <= until)
        .order_by(identities.c.linked_at, identities.c.anonymous_id)
    )
    return [(a, at) for a, at in conn.execute(query)]


def final_customers(conn: Connection, ids: list[str]) -> dict[str, str]:
    """The customer each linked id ends at, following links (a chain not yet merged by the
    processor: anon → old id → new id); ids that are not linked are absent."""
    out: dict[str, str] = {}
    current = {i: i for i in ids}
    for _ in range(_HOPS):
        linked = resolve(conn, set(current.values()))
        moved = {start: linked[at] for start, at in current.items() if at in linked}
        if not moved:
            break
        out.update(moved)
        current = moved
    return out
