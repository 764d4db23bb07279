"""What the store's modules share about SQL: the engine, the dialects, chunks and typed rows.

`create_engine` makes the SQLAlchemy Engine for a URL (SQLite in WAL mode with its pragmas; a
PostgreSQL schema through ``schema_translate_map``); `insert_ignore` and `upsert` are the one
place where the two dialects differ in what the store writes; `chunks` bounds ``IN (…)`` lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "CHUNK",
    "chunks",
    "columns",
    "count_rows",
    "create_engine",
    "insert_ignore",
    "typed",
    "upsert",
]

CHUNK = 500  # ids per IN (…): well under SQLite's and PostgreSQL's parameter limits

T = TypeVar("T")


def create_engine(url: str, *, schema: str | None = None) -> Engine:
    """The Engine for a SQLAlchemy URL; with `schema` (PostgreSQL), every table lives in it."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    if schema:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine


def insert_ignore(conn: Connection, table: sa.Table, keys: Sequence[str]) -> Any:
    """An INSERT that skips rows whose `keys` already exist (ON CONFLICT DO NOTHING)."""
    return _dialect(conn).insert(table).on_conflict_do_nothing(index_elements=list(keys))


def upsert(conn: Connection, table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows`, replacing the other columns of those whose `key` exists."""
    if not rows:
        return
    stmt = _dialect(conn).insert(table)
    update = {c: stmt.excluded[c] for c in rows[0] if c != key}
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update), list(rows))


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def columns(row_type: type[Any], table: sa.Table) -> list[sa.Column[Any]]:
    """The columns of `table` named by the fields of a row dataclass, in the fields' order."""
    return [table.c[f.name] for f in fields(row_type)]


def typed(row_type: type[T], rows: Iterable[Sequence[Any]]) -> list[T]:
    """Rows selected with `columns(row_type, …)` as `row_type` instances."""
    return [row_type(*row) for row in rows]


def count_rows(conn: Connection, table: sa.Table) -> int:
    count: int = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    return count


def _dialect(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
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
