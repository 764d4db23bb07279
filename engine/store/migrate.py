"""The engine database's revision: checked on open, created at head when new, upgraded by Alembic.

The migrations are in ``engine/store/migrations`` (no alembic.ini: `alembic_config` configures
Alembic in code, so it works from an installed wheel). Opening a database costs two catalog
queries, not Alembic's machinery — the revision is compared with `HEAD`, which a test keeps equal
to the head of the scripts:

- versioned at `HEAD`: opened;
- empty (none of the engine's tables): created at head — ``metadata.create_all`` and the version
  stamped, in one transaction under an advisory lock on PostgreSQL (the way Alembic's docs build an
  up-to-date database from scratch); a test checks that this equals upgrading from nothing;
- anything else (an older revision; a database from before migrations, with the engine's tables
  but no alembic_version table; a revision this release does not know): refused with
  `DatabaseOutOfDate`, whose one line says what to do.

`upgrade` (``nudge db upgrade``) adopts a database from before migrations: when all of the
baseline's tables are there and no version table, it is stamped at `BASELINE` (the schema those
releases made) and then upgraded like any other.

A new revision: change ``schema.py``, then with a database at head write the script with
``alembic.command.revision(alembic_config(conn), message=…, autogenerate=True)``, check it, and
set `HEAD` to its id.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from engine.errors import UserError
from engine.store.schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BASELINE",
    "BASELINE_TABLES",
    "HEAD",
    "MIGRATIONS",
    "DatabaseOutOfDate",
    "Revision",
    "alembic_config",
    "ensure_current",
    "read_revision",
    "upgrade",
]

BASELINE = "0001"  # the schema of the releases before migrations (metadata.create_all)
HEAD = "0006"  # the newest revision in migrations/versions
BASELINE_TABLES = ("inbox", "decisions", "actions", "segments", "tasks", "dead_letters",
                   "customer_state", "profiles")  # fmt: skip
VERSION_TABLE = "alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
UPGRADE_HINT = "run `nudge db upgrade`"


class DatabaseOutOfDate(UserError):
    """The engine database is not at the revision this release needs."""


@dataclass(frozen=True)
class Revision:
    """Where a database stands: its stamped revision and which of the baseline's tables it has."""

    current: str | None
    tables: frozenset[str]

    @property
    def state(self) -> str:
        """``head``, ``behind`` (an older or unknown revision), ``empty``, ``unversioned``
        (all the baseline's tables, no version: a database from before migrations) or
        ``partial`` (some of the engine's tables, no version)."""
        if self.current == HEAD:
            return "head"
        if self.current is not None:
            return "behind"
        if not self.tables:
            return "empty"
        return "unversioned" if self.tables >= set(BASELINE_TABLES) else "partial"

    def describe(self) -> str:
        """One line for people: where the database is and what to do about it."""
        state = self.state
        if state == "head":
            return f"at revision {HEAD} (head)"
        if state == "behind" and self.current in _known_revisions():
            return f"at revision {self.current}; this release needs {HEAD}: {UPGRADE_HINT}"
        if state == "behind":
            return (
                f"at revision {self.current}, unknown to this release (head {HEAD}): "
                "it was written by a newer nudge"
            )
        if state == "empty":
            return "empty: the engine creates its tables at head when it opens it"
        if state == "unversioned":
            return f"made before migrations (no alembic_version table): {UPGRADE_HINT} to adopt it"
        missing = ", ".join(t for t in BASELINE_TABLES if t not in self.tables)
        return (
            f"some of the engine's tables but not all (missing {missing}) and no "
            "alembic_version table: not an engine database nudge can adopt"
        )


def read_revision(conn: Connection, schema: str | None = None) -> Revision:
    """The database's revision (two catalog queries when it is versioned)."""
    inspector = sa.inspect(conn)
    if inspector.has_table(VERSION_TABLE, schema=schema):
        versions = list(conn.execute(sa.select(_version_table().c.version_num)).scalars())
        tables = frozenset(BASELINE_TABLES)  # not looked at when versioned
        return Revision(versions[0] if len(versions) == 1 else ",".join(versions) or None, tables)
    present = frozenset(inspector.get_table_names(schema=schema)) & set(BASELINE_TABLES)
    return Revision(None, present)


def ensure_current(engine: Engine, schema: str | None = None) -> Revision:
    """Open check: create an empty database at head; refuse one that is not at head."""
    with engine.connect() as conn:
        revision = read_revision(conn, schema)
    if revision.state == "head":
        return revision
    if revision.state == "empty":
        with engine.begin() as conn:
            _lock(conn, schema)
            revision = read_revision(conn, schema)  # another process may have created it
            if revision.state == "empty":
                metadata.create_all(conn)
                _version_table().create(conn)
                conn.execute(_version_table().insert().values(version_num=HEAD))
                return read_revision(conn, schema)
        if revision.state == "head":
            return revision
    raise DatabaseOutOfDate(f"engine database {_where(engine)}: {revision.describe()}")


def upgrade(
    engine: Engine, schema: str | None = None, target: str = "head"
) -> tuple[Revision, Revision]:
    """Upgrade the database to `target` with Alembic, adopting one made before migrations.

    Returns the revision before and after. Raises DatabaseOutOfDate for a database it cannot
    adopt (some engine tables but not all) or a revision this release does not know.
    """
    from alembic import command

    with engine.begin() as conn:
        _lock(conn, schema)
        before = read_revision(conn, schema)
        if before.state == "partial" or (
            before.state == "behind" and before.current not in _known_revisions()
        ):
            raise DatabaseOutOfDate(f"engine database {_where(engine)}: {before.describe()}")
        config = alembic_config(conn, schema)
        if before.state == "unversioned":
            command.stamp(config, BASELINE)
        command.upgrade(config, target)
        after = read_revision(conn, schema)
    return before, after


def alembic_config(conn: Connection, schema: str | None = None) -> Config:
    """Alembic's configuration for the engine's migrations on an open connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    config.attributes["schema"] = schema
    return config


def _known_revisions() -> set[str]:
    """The revisions of the scripts (Alembic reads them: only on the paths that need it)."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}


def _version_table() -> sa.Table:
    """Alembic's version table (as ``alembic.ddl.impl.DefaultImpl.version_table_impl`` makes it);
    in the engine's schema through the connection's schema_translate_map."""
    table = sa.Table(
        VERSION_TABLE, sa.MetaData(), sa.Column("version_num", sa.String(32), nullable=False)
    )
    table.append_constraint(sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))
    return table


def _lock(conn: Connection, schema: str | None) -> None:
    """One process at a time creates or migrates a PostgreSQL database (until the commit)."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"nudge engine database {schema or ''}".encode())
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
