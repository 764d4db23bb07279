"""What the engine knows of each customer: profile, decision state and segments.

Profiles and states are JSON objects keyed by customer id. Functions over a `Connection`: the
caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.store import jsontext
from engine.store.schema import customer_state, profiles, segments
from engine.store.sql import chunks, insert_ignore, select_in, upsert

__all__ = [
    "add_to_segment",
    "customers_with_phone",
    "load_profile_texts",
    "load_profiles",
    "load_states",
    "merge_profiles",
    "remove_from_segment",
    "save_states",
    "segment_members",
    "update_profile",
    "upsert_profiles",
]

_STATE_ROWS = 2000  # customer states per upsert statement


def load_states(conn: Connection, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    # A state holds times and amounts as floats, small counts and text: no integer past 64 bits.
    return _load_json(
        conn, customer_state, customer_state.c.state, customer_ids, exact_integers=False
    )


def save_states(conn: Connection, states: Mapping[str, Mapping[str, Any]], now: float) -> None:
    """Store customers' state (JSON-able dicts), replacing what was there."""
    rows = [
        {"customer_id": c, "state": jsontext.dumps(s), "updated_at": now} for c, s in states.items()
    ]
    for chunk in chunks(rows, _STATE_ROWS):
        upsert(conn, customer_state, "customer_id", chunk)


def load_profiles(conn: Connection, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {c: jsontext.loads(v) for c, v in load_profile_texts(conn, customer_ids).items()}


def load_profile_texts(conn: Connection, customer_ids: Iterable[str]) -> dict[str, str]:
    """The profiles' stored JSON text, unparsed (for a reader that keeps what it parsed)."""
    return dict(select_in(conn, profiles, ["customer_id", "data"], "customer_id", customer_ids))


def upsert_profiles(conn: Connection, rows: Mapping[str, Mapping[str, Any]], now: float) -> None:
    """Store whole profiles, replacing what was there."""
    upsert(conn, profiles, "customer_id",
           [{"customer_id": c, "data": json.dumps(p, default=str), "updated_at": now} for c, p in rows.items()])  # fmt: skip


def update_profile(
    conn: Connection, customer_id: str, changes: Mapping[str, Any], now: float
) -> None:
    """Set some attributes of one profile (created if there is none), keeping the others."""
    current = conn.execute(
        sa.select(profiles.c.data).where(profiles.c.customer_id == customer_id)
    ).scalar_one_or_none()
    merged = {**(json.loads(current) if current else {"customer_id": customer_id}), **changes}
    upsert(conn, profiles, "customer_id",
           [{"customer_id": customer_id, "data": json.dumps(merged, default=str), "updated_at": now}])  # fmt: skip


def merge_profiles(conn: Connection, rows: Mapping[str, tuple[Mapping[str, Any], float]]) -> int:
    """Merge profiles known as of a time: `{customer: (attributes, as_of)}`; newer wins.

    Where the stored profile changed after `as_of` (a consent withdrawn since the source was
    written), its values are kept and the incoming ones only fill attributes it lacks.
    Returns how many stored profiles were newer than the incoming ones.
    """
    newer = 0
    for chunk in chunks(list(rows.items())):
        stored = {
            c: (json.loads(d), at)
            for c, d, at in conn.execute(
                sa.select(profiles.c.customer_id, profiles.c.data, profiles.c.updated_at)
                .where(profiles.c.customer_id.in_([c for c, _ in chunk]))
            )
        }  # fmt: skip
        out = []
        for customer, (incoming, as_of) in chunk:
            current, current_at = stored.get(customer, ({}, float("-inf")))
            if current_at > as_of:
                newer += 1
                merged, at = {**incoming, **current}, current_at
            else:
                merged, at = {**current, **incoming}, as_of
            out.append({"customer_id": customer, "data": json.dumps(merged, default=str),
                        "updated_at": at})  # fmt: skip
        upsert(conn, profiles, "customer_id", out)
    return newer


def add_to_segment(
    conn: Connection, customer_id: str, segment: str, now: float, source_action: str | None = None
) -> None:
    """Put a customer in a segment (once: a repeat keeps the first time and source)."""
    conn.execute(
        insert_ignore(conn, segments, ["customer_id", "segment"]),
        [{"customer_id": customer_id, "segment": segment, "added_at": now,
          "source_action": source_action}],
    )  # fmt: skip


def remove_from_segment(conn: Connection, customer_id: str, segment: str) -> None:
    conn.execute(
        segments.delete().where(
            segments.c.customer_id == customer_id, segments.c.segment == segment
        )
    )


def segment_members(conn: Connection, segment: str) -> list[str]:
    """The customers in a segment, in customer id order."""
    query = (
        sa.select(segments.c.customer_id)
        .where(segments.c.segment == segment)
        .order_by(segments.c.customer_id)
    )
    return list(conn.execute(query).scalars())


def _load_json(
    conn: Connection,
    table: sa.Table,
    column: sa.Column[Any],
    keys: Iterable[str],
    *,
    exact_integers: bool = True,
) -> dict[str, dict[str, Any]]:
    rows = select_in(conn, table, ["customer_id", column.name], "customer_id", keys)
    return {c: jsontext.loads(v, exact_integers=exact_integers) for c, v in rows}


def customers_with_phone(conn: Connection, phone: str) -> list[str]:
    """The customers whose profile's ``phone`` is `phone` (E.164), in customer id order.

    Profiles are JSON text without a phone column, so this scans them: a LIKE on the quoted
    number narrows the rows in SQL, the JSON decides. Meant for inbound SMS (a STOP), which is
    rare; it is not a lookup to run per event: measured ~90 ms over 100,000 profiles on SQLite
    and on PostgreSQL (88 / 97 ms, 2-core machine).
    """
    pattern = '%"' + phone.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + '"%'
    query = (
        sa.select(profiles.c.customer_id, profiles.c.data)
        .where(profiles.c.data.like(pattern, escape="\\"))
        .order_by(profiles.c.customer_id)
    )
    found = []
    for customer_id, data in conn.execute(query):
        try:
            if json.loads(data).get("phone") == phone:
                found.append(customer_id)
        except (ValueError, AttributeError):
            continue
    return found
