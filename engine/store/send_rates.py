"""The send rates shared in the engine database: one ``send_rates`` row per channel (GCRA's `tat`).

Every dispatcher worker on the database — threads or processes — moves the same row, so they
share one rate. One acquire is one conditional UPDATE, committed at once (on PostgreSQL without
waiting for the WAL flush, on SQLite in autocommit: `DatabaseRates.acquire` says why)::

    UPDATE send_rates SET tat = base + T WHERE channel = :channel AND base - :now <= tau + ε
    -- base = CASE WHEN tat < now OR tat > now + tau + T + slack THEN now ELSE tat END

The condition and the new value are evaluated on the row as it is when the UPDATE holds it:
on PostgreSQL the row lock makes a concurrent UPDATE wait and re-check the condition on the
committed row (READ COMMITTED's re-evaluation), on SQLite the statement holds the database's
write lock (WAL: one writer at a time, `busy_timeout` waits). So two workers can never both take
the last send of a burst. A row that matched nothing means refused; the `tat` is then read to say
how long to wait (`engine.channels.ratelimit.gcra`, the same rule in Python).

Measured (`bench/send_rates.py`): see `engine.channels.ratelimit`'s docstring.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.channels.ratelimit import CLOCK_SLACK, EPSILON, Rate, gcra
from engine.store.db import EngineDB
from engine.store.schema import send_rates
from engine.store.sql import insert_ignore

__all__ = ["DatabaseRates", "acquire", "ensure_channel", "read_tat"]


def ensure_channel(conn: Connection, channel: str, now: float) -> None:
    """The channel's row, created (with no sends yet: `tat` 0) if it is missing."""
    conn.execute(
        insert_ignore(conn, send_rates, ["channel"]),
        [{"channel": channel, "tat": 0.0, "updated_at": now}],
    )


def acquire(conn: Connection, channel: str, rate: Rate, now: float) -> float:
    """Take one send of `channel` at `now` if its rate allows: 0.0, else the seconds to wait.

    One conditional UPDATE decides (a missing row is created first: the channel never sent).
    """
    interval, tolerance = rate.interval, rate.tolerance
    tat = send_rates.c.tat
    base = sa.case(
        (
            sa.or_(tat < now, tat > now + tolerance + interval + CLOCK_SLACK),
            sa.literal(now, sa.Double),
        ),
        else_=tat,
    )
    granted = conn.execute(
        send_rates.update()
        .where(send_rates.c.channel == channel, base - now <= tolerance + EPSILON)
        .values(tat=base + interval, updated_at=now)
    ).rowcount
    if granted:
        return 0.0
    current = read_tat(conn, channel)
    if current is None:  # no row yet: create it, then decide as for any other
        ensure_channel(conn, channel, now)
        return acquire(conn, channel, rate, now)
    later = gcra(current, now, rate)
    # Refused by the UPDATE but allowed by the row read after it: another worker's clock moved
    # the row meanwhile. Still refused; try again one interval later.
    return later.wait if not later.allowed else rate.interval


def read_tat(conn: Connection, channel: str) -> float | None:
    """The channel's stored `tat`, or None when it has no row."""
    value: float | None = conn.execute(
        sa.select(send_rates.c.tat).where(send_rates.c.channel == channel)
    ).scalar_one_or_none()
    return value


class DatabaseRates:
    """`engine.channels.ratelimit.RateState` in the engine database (the default backend)."""

    def __init__(self, db: EngineDB) -> None:
        self.db = db
        self._known: set[str] = set()

    def acquire(self, channel: str, rate: Rate, now: float) -> float:
        """One acquire, committed at once (the UPDATE is atomic by itself on both databases).

        PostgreSQL: in a transaction that does not wait for its WAL flush (``SET LOCAL
        synchronous_commit TO OFF``) — a crash can lose only the last milliseconds of `tat`,
        which at worst allows one more burst, and the flush was half the cost (see the module
        docstring). SQLite (WAL, synchronous=NORMAL: no flush per commit): the statement on its
        own, in autocommit.
        """
        if self.db.dialect == "postgresql":
            with self.db.begin() as conn:
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
                return self._acquire(conn, channel, rate, now)
        with self.db.engine.connect() as raw:
            return self._acquire(
                raw.execution_options(isolation_level="AUTOCOMMIT"), channel, rate, now
            )

    def _acquire(self, conn: Connection, channel: str, rate: Rate, now: float) -> float:
        if channel not in self._known:
            ensure_channel(conn, channel, now)
            self._known.add(channel)
        return acquire(conn, channel, rate, now)
