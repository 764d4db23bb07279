"""Alembic's environment for the engine database, configured by `engine.store.migrate`.

There is no alembic.ini: `engine.store.migrate.alembic_config` builds the configuration and puts
the open connection (in its transaction) and the PostgreSQL schema, if any, into
``config.attributes``. The version table lives in that schema too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from engine.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
schema = config.attributes.get("schema")
if connection is None:
    raise RuntimeError(
        "the engine's migrations run through engine.store.migrate (nudge db upgrade), "
        "which passes the connection"
    )
if schema and connection.dialect.name == "postgresql":
    # Tables built by SQLAlchemy follow the connection's schema_translate_map; SQL that Alembic
    # writes itself (ALTER …) names tables without a schema: the search path finds them.
    connection.execute(sa.text(f'SET LOCAL search_path TO "{schema}"'))
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table_schema=schema,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
