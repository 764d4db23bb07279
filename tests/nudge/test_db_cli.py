"""`nudge db current|upgrade` through the CLI: an old database is refused by the engine in one line,
adopted by `nudge db upgrade` with its data, then opened — on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from engine.store import migrate
from nudge.cli import app
from tests.conftest import POSTGRES_URL, postgres_available, require_service
from tests.engine.store import legacy_schema

runner = CliRunner()
DECISION = {"id": 1, "event_id": "e1", "customer_id": "c1", "trigger_id": "welcome",
            "trigger_version": "v1", "outcome": "fired", "reason": None, "trace": None,
            "scores": json.dumps({}), "variant": None, "decided_at": 1.7e9}  # fmt: skip


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_db(request, nudge_home, monkeypatch):
    """NUDGE_ENGINE_DB for one test: a file under NUDGE_HOME, or a fresh PostgreSQL schema
    (chosen through the URL's search_path, as an operator without a schema option would)."""
    if request.param == "sqlite":
        nudge_home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{nudge_home / 'engine.db'}"
        monkeypatch.setenv("NUDGE_ENGINE_DB", url)
        yield url
        return
    ok, why = postgres_available()
    require_service("PostgreSQL at 127.0.0.1:5432", ok, why)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    monkeypatch.setenv("NUDGE_ENGINE_DB", url)
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def make_legacy(url: str) -> None:
    engine = sa.create_engine(url)
    legacy_schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(legacy_schema.metadata.tables["decisions"].insert(), [DECISION])
    engine.dispose()


def test_db_help_names_the_commands():
    result = invoke("db", "--help")
    assert result.exit_code == 0
    assert "current" in result.output and "upgrade" in result.output
    assert "NUDGE_ENGINE_DB" in result.output


def test_an_old_database_is_refused_then_upgraded_with_its_data(engine_db):
    make_legacy(engine_db)
    refused = invoke("engine", "decisions")
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nudge db upgrade" in lines[0], refused.output
    assert "Traceback" not in refused.output

    current = invoke("db", "current")
    assert current.exit_code == 0 and "made before migrations" in current.output
    assert invoke("db", "current", "--check").exit_code == 1

    upgraded = invoke("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    adopted = f"upgraded a database made before migrations to revision {migrate.HEAD}"
    assert adopted in upgraded.output

    current = invoke("db", "current", "--check")
    assert current.exit_code == 0 and f"at revision {migrate.HEAD} (head)" in current.output
    again = invoke("db", "upgrade")
    assert again.exit_code == 0 and "already at revision" in again.output

    listed = invoke("engine", "decisions", "--json")
    assert listed.exit_code == 0, listed.output
    [decision] = json.loads(listed.stdout)["decisions"]
    assert (decision["event_id"], decision["outcome"]) == ("e1", "fired")


def test_an_empty_database_is_created_by_upgrade_or_by_the_engine(engine_db):
    assert "empty" in invoke("db", "current").output
    result = invoke("db", "upgrade")
    assert result.exit_code == 0 and "upgraded an empty database" in result.output


def test_a_bad_url_is_one_line():
    result = invoke("db", "current", env={"NUDGE_ENGINE_DB": "not a url"})
    assert result.exit_code == 2 and "NUDGE_ENGINE_DB" in result.output
    assert "Traceback" not in result.output
