"""`EngineDB`: the engine database — its SQLAlchemy Engine, dialect and schema — and its transactions.

The queries are functions over a `Connection` in the modules by concern (`inbox`, `execution_log`,
`outbox`, `customers`, `dead_letters`, `batch`, `exposures`); the caller owns the transaction::

    with db.begin() as conn:              # one transaction
        outbox.mark_action(conn, action_id, "sent", now)
    rows = db.read(execution_log.list_decisions, trigger_id="welcome", last=10)

`read` runs one function in a connection of its own (rolled back: it only reads), `write` in a
transaction of its own (committed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import Connection, Engine

from engine.store import migrate
from engine.store.sql import create_engine

__all__ = ["EngineDB"]

P = ParamSpec("P")
T = TypeVar("T")


class EngineDB:
    """The engine database. Open it with `EngineDB.open`; it is safe to share between threads."""

    def __init__(self, engine: Engine, *, schema: str | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.schema = schema

    @classmethod
    def open(cls, url: str, *, schema: str | None = None, check: bool = True) -> EngineDB:
        """The database at a SQLAlchemy URL; `schema`: a PostgreSQL schema for every table.

        With `check` (the default) an empty database is created at the head revision and one
        at another revision is refused with `migrate.DatabaseOutOfDate` (``nudge db upgrade``).
        """
        db = cls(create_engine(url, schema=schema), schema=schema)
        if check:
            try:
                migrate.ensure_current(db.engine, schema)
            except BaseException:
                db.dispose()
                raise
        return db

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end of the block (rolled back on error)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reading (its implicit transaction is rolled back at the end)."""
        with self.engine.connect() as conn:
            yield conn

    def read(
        self, query: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`query(conn, *args, **kwargs)` in a connection of its own."""
        with self.engine.connect() as conn:
            return query(conn, *args, **kwargs)

    def write(
        self, change: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`change(conn, *args, **kwargs)` in a transaction of its own, committed."""
        with self.engine.begin() as conn:
            return change(conn, *args, **kwargs)

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    def __repr__(self) -> str:
        where = self.engine.url.render_as_string(hide_password=True)
        return f"EngineDB({where}{f', schema={self.schema}' if self.schema else ''})"
