"""Identity: which customer an anonymousId belongs to, and merging one customer into another.

A Segment-style client sends events under an ``anonymousId`` until the person is known; an
``identify`` carrying both ids, or an ``alias`` (``previousId`` → ``userId``), links them. The
link is written when the message is accepted (`link`), so every later event sent under the
anonymousId is stored as the customer's (`resolve`); the events, state and decisions the
anonymous id gathered before are moved when the processor reaches the linking message
(`merge_customer`, in that batch's transaction), so they move in the order they happened.

Conflict rules:

1. **First link wins.** An anonymousId already linked to customer A and then identified as B is
   not re-linked: its events stay A's, and B's identify only updates B's profile
   (`link` returns ``"conflict"``; the API reports it in the item's result). Re-linking would
   move one person's history to another on a shared device's stale cookie.
2. **A known customer wins over an anonymous one**: when the histories merge, the target's
   profile attributes win and the anonymous profile only fills attributes the target lacks (an
   anonymous visitor cannot overwrite a known customer's email or grant their consent).
3. **Links follow merges**: ids linked to the merged-away customer are re-pointed to the target,
   so a chain anon → alias → user ends at one customer; a link never points at itself.
4. **Everything else follows the events**: inbox events (and their processor bucket), decisions,
   planned actions, tasks and segment memberships (a union) are the target's after the merge;
   the source's state and profile rows are removed (its state is merged by the processor,
   which owns the in-memory state — `engine.runtime.identity.merge_states`).

Functions over a `Connection`: the caller owns the transaction.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.inbox import BUCKETS
from engine.store.schema import (
    actions,
    customer_state,
    decisions,
    identities,
    inbox,
    profiles,
    segments,
    tasks,
    timers,
)
from engine.store.sql import chunks, insert_ignore

__all__ = ["Link", "MergeCounts", "find_links", "link", "links_of", "merge_customer", "resolve"]

_LINK_COLUMNS = (identities.c.anonymous_id, identities.c.customer_id, identities.c.linked_at,
                 identities.c.via, identities.c.message_id)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Link:
    """An anonymous id's link: the customer, when and through which message."""

    anonymous_id: str
    customer_id: str
    linked_at: float
    via: str
    message_id: str | None


@dataclass(frozen=True, slots=True)
class MergeCounts:
    """What one merge moved."""

    events: int
    decisions: int
    actions: int
    tasks: int
    segments: int
    links: int


def resolve(conn: Connection, anonymous_ids: Iterable[str]) -> dict[str, str]:
    """The customer each linked anonymous id belongs to (unlinked ids are absent)."""
    out: dict[str, str] = {}
    for chunk in chunks(sorted(set(anonymous_ids))):
        query = sa.select(identities.c.anonymous_id, identities.c.customer_id).where(
            identities.c.anonymous_id.in_(chunk)
        )
        out.update((a, c) for a, c in conn.execute(query))
    return out


def find_links(conn: Connection, anonymous_ids: Iterable[str]) -> dict[str, Link]:
    """The links of these anonymous ids (unlinked ids are absent)."""
    out: dict[str, Link] = {}
    for chunk in chunks(sorted(set(anonymous_ids))):
        query = sa.select(*_LINK_COLUMNS).where(identities.c.anonymous_id.in_(chunk))
        out.update((row[0], Link(*row)) for row in conn.execute(query))
    return out


def links_of(conn: Connection, customer_id: str) -> list[Link]:
    """The anonymous ids linked to a customer, oldest first."""
    query = (
        sa.select(*_LINK_COLUMNS)
        .where(identities.c.customer_id == customer_id)
        .order_by(identities.c.linked_at, identities.c.anonymous_id)
    )
    return [Link(*row) for row in conn.execute(query)]


def link(
    conn: Connection,
    anonymous_id: str,
    customer_id: str,
    *,
    via: str,
    message_id: str | None,
    now: float,
) -> str:
    """Link `anonymous_id` to `customer_id` (rule 1: the first link wins).

    Returns ``"linked"`` (a new link), ``"same"`` (already linked there, or the ids are equal)
    or ``"conflict"`` (linked to another customer: left as it is).
    """
    if anonymous_id == customer_id:
        return "same"
    conn.execute(
        insert_ignore(conn, identities, ["anonymous_id"]),
        [{"anonymous_id": anonymous_id, "customer_id": customer_id, "linked_at": now,
          "via": via, "message_id": message_id}],
    )  # fmt: skip
    row = conn.execute(
        sa.select(identities.c.customer_id, identities.c.message_id).where(
            identities.c.anonymous_id == anonymous_id
        )
    ).one()
    if row.customer_id != customer_id:
        return "conflict"
    return "linked" if row.message_id == message_id else "same"


def merge_customer(
    conn: Connection,
    source: str,
    target: str,
    *,
    merged_state: Mapping[str, Any] | None,
    now: float,
) -> MergeCounts:
    """Move everything of customer `source` to `target` (rules 2–4), in the caller's transaction.

    `merged_state` is the target's state after the merge (JSON-able), stored in place of both;
    None leaves the target's state row as it is and only removes the source's.
    """
    if source == target:
        return MergeCounts(0, 0, 0, 0, 0, 0)
    bucket = zlib.crc32(target.encode()) % BUCKETS
    moved_events = conn.execute(
        inbox.update()
        .where(inbox.c.customer_id == source)
        .values(customer_id=target, bucket=bucket)
    ).rowcount
    moved_decisions = conn.execute(
        decisions.update().where(decisions.c.customer_id == source).values(customer_id=target)
    ).rowcount
    moved_actions = conn.execute(
        actions.update().where(actions.c.customer_id == source).values(customer_id=target)
    ).rowcount
    moved_tasks = conn.execute(
        tasks.update().where(tasks.c.customer_id == source).values(customer_id=target)
    ).rowcount
    conn.execute(  # open absence windows follow the person (and the worker that owns them)
        timers.update()
        .where(timers.c.customer_id == source)
        .values(customer_id=target, bucket=bucket)
    )
    memberships = [
        {"customer_id": target, "segment": s, "added_at": at, "source_action": a}
        for s, at, a in conn.execute(
            sa.select(segments.c.segment, segments.c.added_at, segments.c.source_action).where(
                segments.c.customer_id == source
            )
        )
    ]
    if memberships:
        conn.execute(insert_ignore(conn, segments, ["customer_id", "segment"]), memberships)
    conn.execute(segments.delete().where(segments.c.customer_id == source))
    moved_links = conn.execute(
        identities.update().where(identities.c.customer_id == source).values(customer_id=target)
    ).rowcount
    conn.execute(  # a link never points at itself (the target was once linked to the source)
        identities.delete().where(
            identities.c.anonymous_id == target, identities.c.customer_id == target
        )
    )
    _merge_profiles(conn, source, target, now)
    conn.execute(customer_state.delete().where(customer_state.c.customer_id == source))
    if merged_state is not None:
        conn.execute(customer_state.delete().where(customer_state.c.customer_id == target))
        conn.execute(
            customer_state.insert().values(
                customer_id=target, state=json.dumps(merged_state), updated_at=now
            )
        )
    return MergeCounts(
        moved_events, moved_decisions, moved_actions, moved_tasks, len(memberships), moved_links
    )


def _merge_profiles(conn: Connection, source: str, target: str, now: float) -> None:
    """Rule 2: the target's attributes win; the source's fill the gaps."""
    stored = {
        c: json.loads(d)
        for c, d in conn.execute(
            sa.select(profiles.c.customer_id, profiles.c.data).where(
                profiles.c.customer_id.in_([source, target])
            )
        )
    }
    if source not in stored:
        return
    merged = {**stored[source], **stored.get(target, {}), "customer_id": target}
    conn.execute(profiles.delete().where(profiles.c.customer_id.in_([source, target])))
    conn.execute(
        profiles.insert().values(customer_id=target, data=json.dumps(merged), updated_at=now)
    )
