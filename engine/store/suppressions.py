"""The suppression list by address, the Message-IDs of sent emails, provider event ids, flags.

One list for every reason an address is not mailed (``suppressed_addresses``, keyed by the salted
address hash of engine.runtime.erasure so that an erasure and a bounce of one address are one
row): ``erased`` (hash only, never the address), ``bounced`` (a hard bounce), ``complained`` (a
spam complaint: no marketing email; transactional mail still goes), ``manual`` (`nudge
suppressions add`/``import``) and ``soft`` (soft bounces in a row: suspended until ``until`` once
they reach the threshold; a delivery in between resets the count). The list is by address, not
on the profile, so it survives ``PUT /v1/customers`` and imports replacing the profile.

A stronger reason is never replaced by a weaker one (erased > bounced > manual > complained >
soft). Functions over a `Connection`: the caller owns the transaction; callers hash the address
(`engine.runtime.erasure.address_hash`) and pass both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store.schema import (
    actions,
    engine_flags,
    message_ids,
    profiles,
    provider_events,
    suppressed_addresses,
)
from engine.store.sql import chunks, insert_ignore

__all__ = [
    "REASONS",
    "MessageAction",
    "SuppressionEntry",
    "action_by_id",
    "action_for_message",
    "actions_by_ids",
    "actions_for_messages",
    "active_suppressions",
    "add_suppression",
    "clear_flag",
    "customers_with_email",
    "get_flag",
    "list_suppressions",
    "mark_provider_event",
    "mark_provider_events",
    "normalise_email",
    "record_deliveries",
    "record_delivery",
    "record_message",
    "record_soft_bounce",
    "remove_suppression",
    "set_flag",
    "suppressions_for",
]

# Strength of each reason: a weaker one never replaces a stronger one.
REASONS = {"soft": 1, "complained": 2, "manual": 3, "bounced": 4, "erased": 5}
MAX_DETAIL = 300


def normalise_email(address: str) -> str:
    """An address as the list keeps it: trimmed, lower case."""
    return address.strip().lower()


@dataclass(frozen=True, slots=True)
class SuppressionEntry:
    """One row of the list; `address` is None for erased customers (hash only)."""

    address_hash: str
    address: str | None
    reason: str
    detail: str | None
    added_at: float
    until: float | None
    soft_bounces: int

    def active(self, now: float) -> bool:
        """Whether the address is held back at `now` (a soft entry only while suspended)."""
        if self.reason != "soft":
            return True
        return self.until is not None and self.until > now


def _entry(row: Any) -> SuppressionEntry:
    return SuppressionEntry(row.address_hash, row.address, row.reason, row.detail,
                            float(row.added_at), None if row.until is None else float(row.until),
                            int(row.soft_bounces or 0))  # fmt: skip


def _get(conn: Connection, key: str) -> SuppressionEntry | None:
    row = conn.execute(
        sa.select(suppressed_addresses).where(suppressed_addresses.c.address_hash == key)
    ).first()
    return None if row is None else _entry(row)


def add_suppression(
    conn: Connection,
    key: str,
    address: str | None,
    reason: str,
    now: float,
    *,
    detail: str | None = None,
    until: float | None = None,
) -> bool:
    """Put an address on the list for `reason` (`key` its hash); False when a stronger or equal
    reason already holds it (the entry is left as it is)."""
    if reason not in REASONS:
        raise ValueError(f"reason: expected one of {', '.join(REASONS)} (got {reason!r})")
    text = None if reason == "erased" or address is None else normalise_email(address)
    clipped = None if detail is None else detail[:MAX_DETAIL]
    existing = _get(conn, key)
    if existing is None:
        conn.execute(
            suppressed_addresses.insert().values(
                address_hash=key, kind="email" if text is None or "@" in text else "phone",
                address=text, reason=reason, added_at=now, until=until, soft_bounces=0,
                detail=clipped, updated_at=now,
            )
        )  # fmt: skip
        return True
    if REASONS[existing.reason] > REASONS[reason] or (
        existing.reason == reason and reason != "soft"
    ):
        return False
    conn.execute(
        suppressed_addresses.update()
        .where(suppressed_addresses.c.address_hash == key)
        .values(reason=reason, address=text if reason != "erased" else None, until=until,
                detail=clipped, updated_at=now, added_at=now)
    )  # fmt: skip
    return True


def remove_suppression(conn: Connection, key: str) -> str | None:
    """Take an address off the list; returns the reason it had (None: it was not on it).
    Erased entries stay (ValueError): the person asked to be forgotten, not mailed."""
    existing = _get(conn, key)
    if existing is None:
        return None
    if existing.reason == "erased":
        raise ValueError("the address belongs to an erased customer and stays suppressed")
    conn.execute(suppressed_addresses.delete().where(suppressed_addresses.c.address_hash == key))
    return existing.reason


def record_soft_bounce(
    conn: Connection,
    key: str,
    address: str,
    now: float,
    *,
    threshold: int,
    suspend_seconds: float,
    detail: str | None = None,
) -> bool:
    """Count a soft bounce in a row; at `threshold` the address is suspended for
    `suspend_seconds` (and the count starts again). True when this bounce suspended it."""
    existing = _get(conn, key)
    if existing is not None and existing.reason != "soft":
        return False  # held for a stronger reason already
    count = (existing.soft_bounces if existing is not None else 0) + 1
    suspend = count >= threshold
    values = {"soft_bounces": 0 if suspend else count, "updated_at": now,
              "detail": None if detail is None else detail[:MAX_DETAIL]}  # fmt: skip
    if suspend:
        values["until"] = now + suspend_seconds
    if existing is None:
        conn.execute(
            suppressed_addresses.insert().values(
                address_hash=key, kind="email", address=normalise_email(address), reason="soft",
                added_at=now, until=values.get("until"), soft_bounces=values["soft_bounces"],
                detail=values["detail"], updated_at=now,
            )
        )  # fmt: skip
    else:
        conn.execute(
            suppressed_addresses.update()
            .where(suppressed_addresses.c.address_hash == key)
            .values(**values)
        )
    return suspend


def record_delivery(conn: Connection, key: str, now: float) -> None:
    """A delivery ends a run of soft bounces: a soft entry not suspended any more goes."""
    conn.execute(
        suppressed_addresses.delete().where(
            suppressed_addresses.c.address_hash == key,
            suppressed_addresses.c.reason == "soft",
            sa.or_(suppressed_addresses.c.until.is_(None), suppressed_addresses.c.until <= now),
        )
    )


def list_suppressions(conn: Connection, reason: str | None = None) -> list[SuppressionEntry]:
    """Every entry (of one reason), oldest first."""
    query = sa.select(suppressed_addresses).order_by(
        suppressed_addresses.c.added_at, suppressed_addresses.c.address_hash
    )
    if reason is not None:
        query = query.where(suppressed_addresses.c.reason == reason)
    return [_entry(row) for row in conn.execute(query)]


def suppressions_for(conn: Connection, addresses: Iterable[str]) -> dict[str, SuppressionEntry]:
    """Address (normalised) → its entry, for those of `addresses` on the list (whether a soft
    one holds at a given time is `SuppressionEntry.active`). By the address column: erased
    customers' addresses are not in profiles any more (imports drop them)."""
    wanted = sorted({normalise_email(a) for a in addresses if a})
    found: dict[str, SuppressionEntry] = {}
    for chunk in chunks(wanted):
        query = sa.select(suppressed_addresses).where(suppressed_addresses.c.address.in_(chunk))
        for row in conn.execute(query):
            entry = _entry(row)
            if entry.address is not None:
                found[entry.address] = entry
    return found


def active_suppressions(conn: Connection, addresses: Iterable[str], now: float) -> dict[str, str]:
    """Address (normalised) → the reason it is held back at `now` (a soft entry only while
    suspended), for those of `addresses` on the list."""
    return {a: e.reason for a, e in suppressions_for(conn, addresses).items() if e.active(now)}


# -- Message-IDs of sent emails ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageAction:
    """The action an email came from: what a feedback event needs to name it."""

    action_id: int
    idempotency_key: str
    customer_id: str
    trigger_id: str


def record_message(conn: Connection, message_id: str, action_id: int, now: float) -> None:
    """Remember that `message_id` (``<…@…>``) was action `action_id`'s email."""
    record_messages(conn, [(message_id, action_id)], now)


def record_messages(conn: Connection, messages: Sequence[tuple[str, int]], now: float) -> None:
    """`record_message` for many (Message-ID, action id) in one statement."""
    if messages:
        conn.execute(
            insert_ignore(conn, message_ids, ["message_id"]),
            [{"message_id": m[:255], "action_id": a, "recorded_at": now} for m, a in messages],
        )


_ACTION_COLUMNS = (actions.c.id, actions.c.idempotency_key, actions.c.customer_id,
                   actions.c.trigger_id)  # fmt: skip


def action_by_id(conn: Connection, action_id: int) -> MessageAction | None:
    """The action `action_id` (of an ``X-Nudge-Message`` header a provider echoed)."""
    row = conn.execute(sa.select(*_ACTION_COLUMNS).where(actions.c.id == action_id)).first()
    return None if row is None else MessageAction(int(row[0]), row[1], row[2], row[3])


def action_for_message(conn: Connection, message_id: str) -> MessageAction | None:
    """The action whose email had this Message-ID (with or without its angle brackets)."""
    bare = message_id.strip().strip("<>")
    query = (
        sa.select(*_ACTION_COLUMNS)
        .select_from(message_ids.join(actions, actions.c.id == message_ids.c.action_id))
        .where(message_ids.c.message_id == f"<{bare}>")
    )
    row = conn.execute(query).first()
    return None if row is None else MessageAction(int(row[0]), row[1], row[2], row[3])


def actions_by_ids(conn: Connection, action_ids: Iterable[int]) -> dict[int, MessageAction]:
    """`action_by_id` for many ids at once (those that exist)."""
    found: dict[int, MessageAction] = {}
    for chunk in chunks(sorted(set(action_ids))):
        for row in conn.execute(sa.select(*_ACTION_COLUMNS).where(actions.c.id.in_(chunk))):
            found[int(row[0])] = MessageAction(int(row[0]), row[1], row[2], row[3])
    return found


def actions_for_messages(conn: Connection, ids: Iterable[str]) -> dict[str, MessageAction]:
    """`action_for_message` for many Message-IDs at once: ``<…>`` → its action (known ones)."""
    wanted = sorted({f"<{m.strip().strip('<>')}>" for m in ids})
    found: dict[str, MessageAction] = {}
    joined = message_ids.join(actions, actions.c.id == message_ids.c.action_id)
    for chunk in chunks(wanted):
        query = (
            sa.select(message_ids.c.message_id, *_ACTION_COLUMNS)
            .select_from(joined)
            .where(message_ids.c.message_id.in_(chunk))
        )
        for row in conn.execute(query):
            found[row[0]] = MessageAction(int(row[1]), row[2], row[3], row[4])
    return found


def customers_with_email(conn: Connection, email: str) -> list[str]:
    """The customers whose profile's ``email`` is `email` (case-insensitive), in id order.

    Profiles are JSON text: a LIKE narrows the rows, the JSON decides (as
    `engine.store.customers.customers_with_phone`); only for feedback no Message-ID matched.
    """
    wanted = normalise_email(email)
    if not wanted:
        return []
    escaped = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = (
        sa.select(profiles.c.customer_id, profiles.c.data)
        .where(sa.func.lower(profiles.c.data).like(f'%"{escaped}"%', escape="\\"))
        .order_by(profiles.c.customer_id)
    )
    found = []
    for customer_id, data in conn.execute(query):
        try:
            value = json.loads(data).get("email")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str) and normalise_email(value) == wanted:
            found.append(customer_id)
    return found


def mark_provider_event(conn: Connection, key: str, now: float) -> bool:
    """Record that the provider event `key` was applied; False when it already was."""
    statement = insert_ignore(conn, provider_events, ["event_key"]).returning(
        provider_events.c.event_key
    )
    return conn.execute(statement, {"event_key": key[:200], "received_at": now}).first() is not None


def mark_provider_events(conn: Connection, keys: Iterable[str], now: float) -> set[str]:
    """`mark_provider_event` for many keys in a few statements; returns the new ones."""
    fresh: set[str] = set()
    wanted = sorted({k[:200] for k in keys})
    for chunk in chunks(wanted):
        statement = (
            insert_ignore(conn, provider_events, ["event_key"])
            .values([{"event_key": k, "received_at": now} for k in chunk])
            .returning(provider_events.c.event_key)
        )
        fresh.update(conn.execute(statement).scalars())
    return fresh


def record_deliveries(conn: Connection, keys: Iterable[str], now: float) -> None:
    """`record_delivery` for many address hashes in a few statements."""
    for chunk in chunks(sorted(set(keys))):
        conn.execute(
            suppressed_addresses.delete().where(
                suppressed_addresses.c.address_hash.in_(chunk),
                suppressed_addresses.c.reason == "soft",
                sa.or_(suppressed_addresses.c.until.is_(None), suppressed_addresses.c.until <= now),
            )
        )


# -- Flags ----------------------------------------------------------------------------------------


def set_flag(conn: Connection, name: str, value: dict[str, Any], now: float) -> None:
    """Set (or replace) the flag `name` to a JSON object."""
    conn.execute(engine_flags.delete().where(engine_flags.c.name == name))
    conn.execute(
        engine_flags.insert().values(name=name, value=json.dumps(value, sort_keys=True), set_at=now)
    )


def get_flag(conn: Connection, name: str) -> dict[str, Any] | None:
    """The flag's value with ``set_at``, or None when it is not set."""
    row = conn.execute(
        sa.select(engine_flags.c.value, engine_flags.c.set_at).where(engine_flags.c.name == name)
    ).first()
    if row is None:
        return None
    value = json.loads(row[0])
    return {**(value if isinstance(value, dict) else {"value": value}), "set_at": float(row[1])}


def clear_flag(conn: Connection, name: str) -> bool:
    """Clear the flag; False when it was not set."""
    return bool(conn.execute(engine_flags.delete().where(engine_flags.c.name == name)).rowcount)
