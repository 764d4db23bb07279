"""`nudge db …`: the engine database's schema revision — show it, upgrade it.

Composition only: ``engine.store.migrate`` does the work (Alembic, configured in code). Registered
in ``nudge.cli`` as ``app.add_typer(db_app, name="db")``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from nudge.console import console, fail
from nudge.errors import Commands

if TYPE_CHECKING:
    from engine.store import EngineDB

__all__ = ["db_app"]

db_app = typer.Typer(
    cls=Commands,
    help="The engine database (NUDGE_ENGINE_DB; default engine.db under NUDGE_HOME): its schema "
    "revision and upgrades. The engine refuses a database that is not at this release's revision; "
    "`nudge db upgrade` brings it there, data kept.",
    no_args_is_help=True,
)


@db_app.command("current")
def current(
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 unless the database is at the head revision.")
    ] = False,
) -> None:
    """Print the database's revision, and what to do when it is not the head of this release.

    An empty database is not an error: the engine creates it at head when it first opens it.
    """
    from engine.store import migrate

    with _database() as db, db.connect() as conn:
        revision = migrate.read_revision(conn, db.schema)
    console.print(f"{_where(db)}: {revision.describe()}", soft_wrap=True)
    if check and revision.state != "head":
        raise typer.Exit(1)


@db_app.command("upgrade")
def upgrade() -> None:
    """Upgrade the database to this release's head revision; nothing is lost.

    A database made before migrations (the engine's tables, no alembic_version table) is adopted:
    stamped at the first revision, which is the schema it has, then upgraded. An empty one is
    created. Running it again changes nothing; on PostgreSQL one process upgrades at a time.
    """
    from engine.store import migrate

    with _database() as db:
        before, after = migrate.upgrade(db.engine, db.schema)
    if before.state == "head":
        console.print(f"{_where(db)}: already at revision {after.current} (head)", soft_wrap=True)
        return
    start = {"empty": "an empty database", "unversioned": "a database made before migrations"}
    origin = start.get(before.state, f"revision {before.current}")
    console.print(
        f"{_where(db)}: upgraded {origin} to revision {after.current} (head)", soft_wrap=True
    )


@contextmanager
def _database() -> Iterator[EngineDB]:
    """The database of the settings, without the revision check (what these commands are for);
    a bad URL or an unreachable server is one line."""
    import sqlalchemy as sa

    from engine.store import EngineDB
    from nudge.engine_cli import settings

    url = settings().engine_url
    try:
        db = EngineDB.open(url, check=False)
    except sa.exc.ArgumentError as exc:
        fail(f"NUDGE_ENGINE_DB: not a database URL ({exc})")
    try:
        yield db
    except sa.exc.OperationalError as exc:
        fail(f"cannot use the engine database ({_where(db)}): {_first_line(exc.orig)}", code=1)
    finally:
        db.dispose()


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or ["unknown error"])[0]


def _where(db: EngineDB) -> str:
    return db.engine.url.render_as_string(hide_password=True)
