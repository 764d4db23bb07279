"""The engine's durable state: SQLite (WAL) by default, PostgreSQL in production.

- `schema`: the tables (one SQLAlchemy `metadata`); `migrate` and ``migrations/``: their revisions
  (Alembic), checked when the database is opened;
- `db`: `EngineDB` — the Engine, its dialect and schema, `begin()`/`connect()`, `read`/`write`;
  `sql`: creating the Engine, SQLite's pragmas, insert-ignore/upsert, chunks, typed rows;
- by concern, functions over a `Connection` (the caller owns the transaction): `inbox`,
  `execution_log` (decisions), `outbox` (actions, tasks), `customers` (profiles, state, segments),
  `dead_letters`; `batch` commits a processed batch across them in one transaction; `exposures`
  reads experiments for the optimizer.
"""

from engine.store.db import EngineDB
from engine.store.dead_letters import DeadLetter
from engine.store.execution_log import DecisionRow
from engine.store.inbox import CustomerEvent, InboxEvent
from engine.store.migrate import DatabaseOutOfDate
from engine.store.outbox import ActionRow, TaskRow
from engine.store.schema import metadata

__all__ = [
    "ActionRow",
    "CustomerEvent",
    "DatabaseOutOfDate",
    "DeadLetter",
    "DecisionRow",
    "EngineDB",
    "InboxEvent",
    "TaskRow",
    "metadata",
]
