"""The engine's durable state, in SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL in production.

Tables: the inbox of accepted events, the execution log of decisions, the planned actions, the
dead letters, and per-customer state and profiles. Times are epoch seconds (double precision) so
that both databases compare them the same way.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["EngineStore", "metadata"]

metadata = sa.MetaData()

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("occurred_at", sa.Double, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("processed_at", sa.Double),
    # A stable hash bucket of the customer: N processor workers each own the buckets i mod N,
    # so one customer's events are always handled by one worker, in order.
    sa.Column("bucket", sa.Integer, nullable=False, server_default="0"),
    sa.Index("inbox_pending", "status", "seq"),
    sa.Index("inbox_by_customer", "customer_id", "occurred_at"),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("trigger_version", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("trace", sa.Text),
    sa.Column("scores", sa.Text),
    sa.Column("variant", sa.String(64)),
    sa.Column("decided_at", sa.Double, nullable=False),
    sa.UniqueConstraint("event_id", "trigger_id", name="decisions_once_per_event"),
    sa.Index("decisions_by_trigger", "trigger_id", "outcome"),
    sa.Index("decisions_by_customer", "customer_id"),
)

actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
    sa.Column("event_id", sa.String(128), nullable=False),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("action_index", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("channel", sa.String(32)),
    sa.Column("due_at", sa.Double, nullable=False),
    sa.Column("cancel_if", sa.Text),
    sa.Column("variant", sa.String(64)),
    sa.Column("trigger_at", sa.Double, nullable=False, server_default="0"),
    # pending → claimed → (sending →) sent | cancelled | failed; sending = in doubt after a crash
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double, nullable=False, server_default="0"),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("result", sa.Text),
    sa.Index("actions_due", "status", "due_at"),
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True),
    sa.Column("segment", sa.String(128), primary_key=True),
    sa.Column("added_at", sa.Double, nullable=False),
    sa.Column("source_action", sa.String(300)),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("trigger_id", sa.String(64), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    sa.Column("created_at", sa.Double, nullable=False),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("redriven_at", sa.Double),
)

customer_state = sa.Table(
    "customer_state",
    metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("customer_id", sa.String(128), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)


@dataclass(frozen=True)
class InboxEvent:
    seq: int
    event_id: str
    customer_id: str
    event_type: str
    occurred_at: float
    payload: str


class EngineStore:
    """Thin access layer over the engine tables; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @classmethod
    def connect(cls, url: str, *, schema: str | None = None) -> EngineStore:
        """Open (and create the tables of) the store at a SQLAlchemy URL."""
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        if schema:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            engine = engine.execution_options(schema_translate_map={None: schema})
        store = cls(engine)
        metadata.create_all(engine)
        return store

    # -- inbox ------------------------------------------------------------------------------------

    def add_events(self, rows: Sequence[Mapping[str, Any]], now: float) -> set[str]:
        """Insert events not seen before; returns the ids that were new."""
        if not rows:
            return set()
        ids = [r["event_id"] for r in rows]
        with self.engine.begin() as conn:
            known = self._existing_ids(conn, ids)
            fresh, seen = [], set(known)
            for row in rows:
                if row["event_id"] not in seen:
                    seen.add(row["event_id"])
                    bucket = zlib.crc32(row["customer_id"].encode()) % 1024
                    fresh.append({**row, "received_at": now, "status": "pending", "bucket": bucket})
            if fresh:
                conn.execute(self._insert_ignore(inbox, ["event_id"]), fresh)
        return {r["event_id"] for r in fresh}

    def claim_pending(self, limit: int, worker: tuple[int, int] = (0, 1)) -> list[InboxEvent]:
        """The oldest pending events (arrival order) of the buckets `worker` = (index, count) owns."""
        index, count = worker
        query = (
            sa.select(inbox.c.seq, inbox.c.event_id, inbox.c.customer_id, inbox.c.event_type, inbox.c.occurred_at, inbox.c.payload)
            .where(inbox.c.status == "pending")
            .order_by(inbox.c.seq)
            .limit(limit)
        )  # fmt: skip
        if count > 1:
            query = query.where(inbox.c.bucket % count == index)
        with self.engine.connect() as conn:
            return [InboxEvent(*row) for row in conn.execute(query)]

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).where(inbox.c.status == "pending")
            ).scalar_one()

    # -- one processed batch, atomically -----------------------------------------------------

    def commit_batch(
        self,
        *,
        processed: Sequence[str],
        dead: Sequence[Mapping[str, Any]],
        decision_rows: Sequence[Mapping[str, Any]],
        action_rows: Sequence[Mapping[str, Any]],
        states: Mapping[str, Mapping[str, Any]],
        profile_updates: Mapping[str, Mapping[str, Any]],
        now: float,
    ) -> None:
        """Decisions, planned actions, state and the events' status — in one transaction."""
        with self.engine.begin() as conn:
            if decision_rows:
                conn.execute(
                    self._insert_ignore(decisions, ["event_id", "trigger_id"]), list(decision_rows)
                )
            if action_rows:
                conn.execute(self._insert_ignore(actions, ["idempotency_key"]), list(action_rows))
            if states:
                self._upsert(conn, customer_state, "customer_id",
                             [{"customer_id": c, "state": json.dumps(s), "updated_at": now} for c, s in states.items()])  # fmt: skip
            if profile_updates:
                self._upsert(conn, profiles, "customer_id",
                             [{"customer_id": c, "data": json.dumps(p, default=str), "updated_at": now} for c, p in profile_updates.items()])  # fmt: skip
            if dead:
                conn.execute(dead_letters.insert(), [{**d, "created_at": now} for d in dead])
                conn.execute(
                    inbox.update().where(inbox.c.event_id.in_([d["event_id"] for d in dead])).values(status="dead", processed_at=now)
                )  # fmt: skip
            if processed:
                for chunk in _chunks(processed, 500):
                    conn.execute(
                        inbox.update()
                        .where(inbox.c.event_id.in_(chunk))
                        .values(status="processed", processed_at=now)
                    )

    # -- state and profiles --------------------------------------------------------------------

    def load_states(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._load_json(customer_state, "state", customer_ids)

    def save_states(self, states: Mapping[str, Mapping[str, Any]], now: float) -> None:
        """Store customers' state (JSON-able dicts), replacing what was there."""
        rows = [
            {"customer_id": c, "state": json.dumps(s), "updated_at": now} for c, s in states.items()
        ]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 2000):
                self._upsert(conn, customer_state, "customer_id", rows[start : start + 2000])

    def load_profiles(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self._load_json(profiles, "data", customer_ids)

    def upsert_profiles(self, rows: Mapping[str, Mapping[str, Any]], now: float) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, profiles, "customer_id",
                         [{"customer_id": c, "data": json.dumps(p, default=str), "updated_at": now} for c, p in rows.items()])  # fmt: skip

    def merge_profiles(self, rows: Mapping[str, tuple[Mapping[str, Any], float]]) -> int:
        """Merge profiles known as of a time: `{customer: (attributes, as_of)}`; newer wins.

        Where the stored profile changed after `as_of` (a consent withdrawn since the source was
        written), its values are kept and the incoming ones only fill attributes it lacks.
        Returns how many stored profiles were newer than the incoming ones.
        """
        newer = 0
        items = list(rows.items())
        with self.engine.begin() as conn:
            for chunk in _chunks(items, 500):
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
                if out:
                    self._upsert(conn, profiles, "customer_id", out)
        return newer

    # -- dead letters ------------------------------------------------------------------------

    def add_dead_letters(self, rows: Sequence[Mapping[str, Any]], now: float) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(dead_letters.insert(), [{**r, "created_at": now} for r in rows])

    def list_dead_letters(
        self, *, include_redriven: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = sa.select(dead_letters).order_by(dead_letters.c.id).limit(limit)
        if not include_redriven:
            query = query.where(dead_letters.c.redriven_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def mark_redriven(self, ids: Sequence[int], now: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                dead_letters.update()
                .where(dead_letters.c.id.in_(list(ids)))
                .values(redriven_at=now)
            )

    # -- the outbox: due actions -------------------------------------------------------------

    def claim_due_actions(self, now: float, limit: int, worker_id: str) -> list[dict[str, Any]]:
        """Claim pending actions due by `now`; on PostgreSQL concurrent workers skip each other's rows."""
        query = (
            sa.select(actions)
            .where(
                actions.c.status == "pending",
                actions.c.due_at <= now,
                actions.c.next_attempt_at <= now,
            )
            .order_by(actions.c.due_at, actions.c.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
            if rows:
                conn.execute(
                    actions.update()
                    .where(actions.c.id.in_([r["id"] for r in rows]), actions.c.status == "pending")
                    .values(status="claimed", claimed_by=worker_id, claimed_at=now)
                )
        return rows

    def release_stale_claims(self, older_than: float) -> int:
        """Give back actions claimed by a worker that died before finishing them."""
        with self.engine.begin() as conn:
            result = conn.execute(
                actions.update()
                .where(actions.c.status == "claimed", actions.c.claimed_at < older_than)
                .values(status="pending", claimed_by=None)
            )
        return result.rowcount

    def mark_action(
        self, action_id: int, status: str, now: float, result: str | None = None, **effects: Any
    ) -> None:
        """Set an action's status; `effects` (segment, remove_segment, profile, task) commit with it."""
        with self.engine.begin() as conn:
            self._apply_effects(conn, effects, now)
            conn.execute(
                actions.update()
                .where(actions.c.id == action_id)
                .values(status=status, finished_at=now, result=result)
            )

    def retry_action(
        self, action_id: int, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                actions.update()
                .where(actions.c.id == action_id)
                .values(
                    status="pending",
                    attempts=attempts,
                    next_attempt_at=next_attempt_at,
                    result=error,
                    claimed_by=None,
                )
            )

    def actions_finished_since(
        self, since: float, *, kind: str, status: str
    ) -> list[dict[str, Any]]:
        """Actions of a kind that reached `status` at or after wall time `since`."""
        query = sa.select(actions).where(
            actions.c.kind == kind, actions.c.status == status, actions.c.finished_at >= since
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(actions.c.id))]

    def events_of_customers(
        self, customer_ids: Iterable[str], event_types: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Inbox events of some types for some customers: type, time, and the parsed payload."""
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(customer_ids)), 500):
                rows = conn.execute(
                    sa.select(
                        inbox.c.customer_id,
                        inbox.c.event_type,
                        inbox.c.occurred_at,
                        inbox.c.payload,
                    ).where(
                        inbox.c.customer_id.in_(chunk), inbox.c.event_type.in_(list(event_types))
                    )
                )
                out.extend(
                    {"customer_id": c, "event_type": t, "occurred_at": at, "payload": json.loads(p)}
                    for c, t, at, p in rows
                )
        return out

    def event_times(self, event_ids: Iterable[str]) -> dict[str, float]:
        """When each event occurred (epoch seconds), for ids in the inbox."""
        out: dict[str, float] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(set(event_ids)), 500):
                out.update(
                    conn.execute(
                        sa.select(inbox.c.event_id, inbox.c.occurred_at).where(
                            inbox.c.event_id.in_(chunk)
                        )
                    ).all()
                )
        return out

    def action_counts(self) -> dict[tuple[str, str], int]:
        query = sa.select(actions.c.kind, actions.c.status, sa.func.count()).group_by(
            actions.c.kind, actions.c.status
        )
        with self.engine.connect() as conn:
            return {(k, st): n for k, st, n in conn.execute(query)}

    def customer_events(self, customer_id: str, after: float, until: float) -> list[dict[str, Any]]:
        """The customer's inbox events with ``after < occurred_at <= until``, oldest first."""
        query = (
            sa.select(inbox.c.event_type, inbox.c.occurred_at, inbox.c.payload)
            .where(
                inbox.c.customer_id == customer_id,
                inbox.c.occurred_at > after,
                inbox.c.occurred_at <= until,
            )
            .order_by(inbox.c.occurred_at)
        )
        with self.engine.connect() as conn:
            return [
                {"event_type": t, "occurred_at": at, "payload": p}
                for t, at, p in conn.execute(query)
            ]

    def event_payloads(self, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(set(event_ids)), 500):
                rows = conn.execute(
                    sa.select(inbox.c.event_id, inbox.c.payload).where(inbox.c.event_id.in_(chunk))
                )
                out.update({e: json.loads(p) for e, p in rows})
        return out

    def decision_scores_of(
        self, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Scores recorded with the decisions of (event id, trigger id) pairs."""
        wanted = set(keys)
        out: dict[tuple[str, str], dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted({e for e, _ in wanted}), 500):
                rows = conn.execute(
                    sa.select(
                        decisions.c.event_id, decisions.c.trigger_id, decisions.c.scores
                    ).where(decisions.c.event_id.in_(chunk))
                )
                out.update(
                    {(e, t): json.loads(sc or "{}") for e, t, sc in rows if (e, t) in wanted}
                )
        return out

    def event_payload(self, event_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(inbox.c.payload).where(inbox.c.event_id == event_id)
            ).scalar_one_or_none()
        return json.loads(text) if text else None

    def decision_scores(self, event_id: str, trigger_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            text = conn.execute(
                sa.select(decisions.c.scores).where(
                    decisions.c.event_id == event_id, decisions.c.trigger_id == trigger_id
                )
            ).scalar_one_or_none()
        return json.loads(text) if text else {}

    def list_tasks(self, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(tasks).order_by(tasks.c.id).limit(limit)
        if status:
            query = query.where(tasks.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def segment_members(self, segment: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(segments.c.customer_id).where(segments.c.segment == segment)
                ).scalars()
            )

    def _apply_effects(self, conn: Connection, effects: Mapping[str, Any], now: float) -> None:
        if "segment" in effects:
            customer, segment, key = effects["segment"]
            conn.execute(
                self._insert_ignore(segments, ["customer_id", "segment"]),
                [
                    {
                        "customer_id": customer,
                        "segment": segment,
                        "added_at": now,
                        "source_action": key,
                    }
                ],
            )
        if "remove_segment" in effects:
            customer, segment = effects["remove_segment"]
            conn.execute(
                segments.delete().where(
                    segments.c.customer_id == customer, segments.c.segment == segment
                )
            )
        if "profile" in effects:
            customer, changes = effects["profile"]
            current = conn.execute(
                sa.select(profiles.c.data).where(profiles.c.customer_id == customer)
            ).scalar_one_or_none()
            merged = {**(json.loads(current) if current else {"customer_id": customer}), **changes}
            self._upsert(
                conn,
                profiles,
                "customer_id",
                [
                    {
                        "customer_id": customer,
                        "data": json.dumps(merged, default=str),
                        "updated_at": now,
                    }
                ],
            )
        if "task" in effects:
            conn.execute(
                self._insert_ignore(tasks, ["idempotency_key"]),
                [{**effects["task"], "created_at": now}],
            )

    # -- reading the log ---------------------------------------------------------------------

    def decisions(
        self,
        *,
        trigger_id: str | None = None,
        customer_id: str | None = None,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[dict[str, Any]]:
        """Decisions in the order they were made, optionally of one trigger and/or customer.

        ``last=N``: the latest N — ordered and limited in SQL, so only those rows are read —
        returned oldest first. ``limit=N``: the first N. Neither: the whole log.
        """
        if limit is not None and last is not None:
            raise ValueError("give limit (the first rows) or last (the latest rows), not both")
        query = sa.select(decisions)
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
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        return rows[::-1] if last is not None else rows

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        query = sa.select(decisions.c.trigger_id, decisions.c.outcome, sa.func.count()).group_by(
            decisions.c.trigger_id, decisions.c.outcome
        )
        with self.engine.connect() as conn:
            return {(t, o): n for t, o, n in conn.execute(query)}

    def planned_actions(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping) for r in conn.execute(sa.select(actions).order_by(actions.c.id))
            ]

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(metadata.tables[table])
            ).scalar_one()

    # -- internals -----------------------------------------------------------------------------

    def _existing_ids(self, conn: Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(ids, 500):
            found.update(
                conn.execute(
                    sa.select(inbox.c.event_id).where(inbox.c.event_id.in_(chunk))
                ).scalars()
            )
        return found

    def _load_json(
        self, table: sa.Table, column: str, keys: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(set(keys)), 500):
                rows = conn.execute(
                    sa.select(table.c.customer_id, table.c[column]).where(
                        table.c.customer_id.in_(chunk)
                    )
                )
                out.update({c: json.loads(v) for c, v in rows})
        return out

    def _insert_ignore(self, table: sa.Table, keys: list[str]) -> Any:
        dialect = self._dialect_module()
        return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)

    def _upsert(
        self, conn: Connection, table: sa.Table, key: str, rows: list[dict[str, Any]]
    ) -> None:
        dialect = self._dialect_module()
        stmt = dialect.insert(table)
        update = {c: stmt.excluded[c] for c in rows[0] if c != key}
        conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update), rows)

    def _dialect_module(self) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql
        from sqlalchemy.dialects import sqlite

        return sqlite


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
