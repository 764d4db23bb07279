"""`EngineDB`: the engine database — its SQLAlchemy Engine, dialect and schema — and its transactions.

The queries are functions over a `Connection` in the modules by concern (`inbox`, `execution_log`,
`outbox`, `customers`, `dead_letters`, `batch`, `exposures`); the caller owns the transaction::

    with db.begin() as conn:              # one transaction
        outbox.mark_action(conn, action_id, "sent", now)
    rows = db.read(execution_log.list_decisions, trigger_id="welcome", last=10)

`read` runs one function in a connection of its own (rolled back: it only reads), `write` in a
transaction of its own (committed).

`hold()` keeps one connection for a block (a dispatcher batch): `read`, `write` and `begin` in
that thread then use it instead of checking one out of the pool each time. The pool pings every
connection it hands out (``pool_pre_ping``: a round trip, ~0.2–0.5 ms on PostgreSQL here) and the
checkout itself costs as much again; a batch of 200 emails asked the pool ~1,000 times. A
connection that breaks inside a hold fails that one call (an ``OperationalError``, which the
dispatcher retries); SQLAlchemy reconnects it on its next use. A `begin` while the held connection
is already in a transaction (nested) takes a connection of its own, as without the hold.
"""

from __future__ import annotations

import threading
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
        self._held = threading.local()  # .conn: the connection `hold` keeps in this thread

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
    def hold(self) -> Iterator[None]:
        """Keep one connection for this thread's `read`, `write` and `begin` until the block ends
        (nested holds share the outer one)."""
        if getattr(self._held, "conn", None) is not None:
            yield
            return
        with self.engine.connect() as conn:
            self._held.conn = conn
            try:
                yield
            finally:
                self._held.conn = None

    def _free_held(self) -> Connection | None:
        """The held connection of this thread when it is not inside a transaction, else None."""
        conn: Connection | None = getattr(self._held, "conn", None)
        if conn is None or conn.in_transaction():
            return None
        return conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection in a transaction, committed at the end of the block (rolled back on error)."""
        held = self._free_held()
        if held is not None:
            with held.begin():
                yield held
            return
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reading (its implicit transaction is rolled back at the end)."""
        held = self._free_held()
        if held is not None:
            try:
                yield held
            finally:
                held.rollback()
            return
        with self.engine.connect() as conn:
            yield conn

    def read(
        self, query: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`query(conn, *args, **kwargs)` in a connection of its own (or the held one)."""
        with self.connect() as conn:
            return query(conn, *args, **kwargs)

    def write(
        self, change: Callable[Concatenate[Connection, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`change(conn, *args, **kwargs)` in a transaction of its own, committed."""
        with self.begin() as conn:
            return change(conn, *args, **kwargs)

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()

    def __repr__(self) -> str:
        where = self.engine.url.render_as_string(hide_password=True)
        return f"EngineDB({where}{f', schema={self.schema}' if self.schema else ''})"
