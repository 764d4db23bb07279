"""Erasure in the engine database (GDPR Art. 17): one customer's rows removed or pseudonymised,
the suppression list of hashed addresses, and the audit of erasures.

What goes and what stays (engine.runtime.erasure composes it with the lake and the files):
removed — the profile, the state, the inbox events, segment memberships, identity links, dead
letters of the customer's events; kept for accounting with the customer id replaced by its salted
hash — decisions, actions (pending ones cancelled: nothing is sent to an erased person) and tasks.
Functions over a `Connection`: the caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.schema import (
    actions,
    customer_state,
    dead_letters,
    decisions,
    erasures,
    identities,
    inbox,
    profiles,
    segments,
    suppressed_addresses,
    tasks,
    timers,
)
from engine.store.sql import chunks, insert_ignore

__all__ = [
    "ErasedRows",
    "erase_rows",
    "erasure_log",
    "record_erasure",
    "suppress",
    "suppressed_hashes",
]


@dataclass(frozen=True)
class ErasedRows:
    """What the database part of an erasure did: counts per table, and what the files part needs
    (the addresses to hash, the outbox files the customer's actions wrote)."""

    counts: dict[str, int]
    addresses: dict[str, str]  # kind (email, phone) → address
    outbox_files: list[str]


def erase_rows(conn: Connection, customer_id: str, customer_hash: str, now: float) -> ErasedRows:
    """Remove and pseudonymise one customer's rows (see the module docstring)."""
    data = conn.execute(
        sa.select(profiles.c.data).where(profiles.c.customer_id == customer_id)
    ).scalar_one_or_none()
    profile: dict[str, Any] = json.loads(data) if data else {}
    addresses = {k: str(profile[k]) for k in ("email", "phone") if profile.get(k)}
    event_ids = list(
        conn.execute(
            sa.select(inbox.c.event_id).where(inbox.c.customer_id == customer_id)
        ).scalars()
    )
    files = [
        str(r).removeprefix("file ")
        for r in conn.execute(
            sa.select(actions.c.result).where(
                actions.c.customer_id == customer_id, actions.c.result.like("file %")
            )
        ).scalars()
    ]
    counts: dict[str, int] = {}
    for chunk in chunks(event_ids):
        counts["dead_letters"] = (
            counts.get("dead_letters", 0)
            + conn.execute(dead_letters.delete().where(dead_letters.c.event_id.in_(chunk))).rowcount
        )
    quoted = json.dumps(customer_id)  # its own dead letters mention it as a JSON string
    counts["dead_letters"] = (
        counts.get("dead_letters", 0)
        + conn.execute(
            dead_letters.delete().where(dead_letters.c.payload.contains(quoted, autoescape=True))
        ).rowcount
    )
    for name, table in (("profile", profiles), ("state", customer_state), ("events", inbox),
                        ("segments", segments), ("timers", timers)):  # fmt: skip
        counts[name] = conn.execute(
            table.delete().where(table.c.customer_id == customer_id)
        ).rowcount
    counts["identities"] = conn.execute(
        identities.delete().where(
            sa.or_(
                identities.c.customer_id == customer_id, identities.c.anonymous_id == customer_id
            )
        )
    ).rowcount
    counts["actions_cancelled"] = conn.execute(
        actions.update()
        .where(actions.c.customer_id == customer_id, actions.c.status.in_(["pending", "claimed"]))
        .values(status="cancelled", result="customer erased", finished_at=now)
    ).rowcount
    for name, table in (("decisions", decisions), ("actions", actions), ("tasks", tasks)):
        counts[name] = conn.execute(
            table.update()
            .where(table.c.customer_id == customer_id)
            .values(customer_id=customer_hash)
        ).rowcount
    return ErasedRows(counts, addresses, files)


def suppress(conn: Connection, hashes: Mapping[str, str], reason: str, now: float) -> None:
    """Put hashed addresses (hash → kind) on the suppression list (once)."""
    rows = [{"address_hash": h, "kind": k, "reason": reason, "added_at": now}
            for h, k in hashes.items()]  # fmt: skip
    if rows:
        conn.execute(insert_ignore(conn, suppressed_addresses, ["address_hash"]), rows)
        # An address already listed (a bounce, a complaint) becomes erased: hash only.
        conn.execute(
            suppressed_addresses.update()
            .where(suppressed_addresses.c.address_hash.in_(list(hashes)))
            .values(reason=reason, address=None, detail=None, until=None)
        )


def suppressed_hashes(conn: Connection, hashes: Iterable[str] | None = None) -> set[str]:
    """The erased addresses' hashes on the suppression list (all of them, or those among
    `hashes`). Bounced or complained addresses stay on their profiles: the dispatcher holds
    them back (engine.store.suppressions)."""
    query = sa.select(suppressed_addresses.c.address_hash).where(
        suppressed_addresses.c.reason == "erased"
    )
    if hashes is None:
        return set(conn.execute(query).scalars())
    found: set[str] = set()
    for chunk in chunks(sorted(set(hashes))):
        found.update(
            conn.execute(query.where(suppressed_addresses.c.address_hash.in_(chunk))).scalars()
        )
    return found


def record_erasure(
    conn: Connection, customer_hash: str, requested_by: str, removed: Mapping[str, Any], now: float
) -> int:
    """The audit entry of one erasure; returns its id."""
    result = conn.execute(
        erasures.insert().values(
            customer_hash=customer_hash,
            requested_by=requested_by,
            erased_at=now,
            removed=json.dumps(removed, sort_keys=True),
        )
    )
    key = result.inserted_primary_key
    return int(key[0]) if key else 0


def erasure_log(conn: Connection, customer_hash: str | None = None) -> list[dict[str, Any]]:
    """The audit entries (of one customer's hash), oldest first."""
    query = sa.select(erasures).order_by(erasures.c.id)
    if customer_hash is not None:
        query = query.where(erasures.c.customer_hash == customer_hash)
    return [{**row._mapping, "removed": json.loads(row.removed)} for row in conn.execute(query)]
