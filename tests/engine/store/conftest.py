"""A blank database to build on: a temp SQLite file, or a temp schema of the real PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL, postgres_available, require_service


@dataclass(frozen=True)
class Place:
    url: str
    schema: str | None

    def engine(self) -> sa.Engine:
        """A plain engine on the place (tables without a schema land in it)."""
        engine = sa.create_engine(self.url)
        if self.schema:
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        return engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def place(request, tmp_path):
    if request.param == "sqlite":
        yield Place(f"sqlite:///{tmp_path / 'engine.db'}", None)
        return
    ok, why = postgres_available()
    require_service("PostgreSQL at 127.0.0.1:5432", ok, why)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield Place(POSTGRES_URL, schema)
    cleanup = sa.create_engine(POSTGRES_URL)
    with cleanup.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    cleanup.dispose()
