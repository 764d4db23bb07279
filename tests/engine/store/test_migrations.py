"""Migrations on SQLite and the real PostgreSQL: adopting a database from before them, creating
new ones at head, refusing what is out of date — and the version table in the engine's schema."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from engine.store import DatabaseOutOfDate, EngineDB, execution_log, migrate, outbox
from engine.store.schema import metadata
from tests.engine.store import legacy_schema

ROWS = {
    "inbox": [{"seq": 1, "event_id": "e1", "customer_id": "c1", "event_type": "cart_abandoned",
               "occurred_at": 1.5e9, "payload": json.dumps({"event_id": "e1"}), "received_at": 1.5e9 + 1,
               "status": "processed", "processed_at": 1.5e9 + 2, "bucket": 7}],
    "decisions": [{"id": 1, "event_id": "e1", "customer_id": "c1", "trigger_id": "cart_recovery",
                   "trigger_version": "abc", "outcome": "fired", "reason": None, "trace": "{}",
                   "scores": json.dumps({"churn": 0.4}), "variant": "d1h", "decided_at": 1.5e9 + 2}],
    "actions": [{"id": 1, "idempotency_key": "cart_recovery:c1:e1:0", "event_id": "e1", "customer_id": "c1",
                 "trigger_id": "cart_recovery", "action_index": 0, "kind": "send_email",
                 "params": json.dumps({"template": "cart_reminder"}), "channel": "email", "due_at": 1.5e9 + 3600,
                 "cancel_if": None, "variant": "d1h", "trigger_at": 1.5e9, "status": "pending", "attempts": 0,
                 "next_attempt_at": 0.0, "claimed_by": None, "claimed_at": None, "finished_at": None,
                 "result": None}],
    "segments": [{"customer_id": "c1", "segment": "vip", "added_at": 1.5e9, "source_action": "k"}],
    "tasks": [{"id": 1, "idempotency_key": "t:c1:e1:1", "customer_id": "c1", "trigger_id": "t",
               "title": "Call", "details": "{}", "status": "open", "created_at": 1.5e9}],
    "dead_letters": [{"id": 1, "event_id": None, "payload": "not json", "reason": "unreadable",
                      "source": "api", "created_at": 1.5e9, "redriven_at": None}],
    "customer_state": [{"customer_id": "c1", "state": json.dumps({"events": []}), "updated_at": 1.5e9}],
    "profiles": [{"customer_id": "c1", "data": json.dumps({"consent_email": True}), "updated_at": 1.5e9}],
}  # fmt: skip


def build_legacy(place) -> sa.Engine:
    """A database as the release before migrations left it: its tables, some data, no version."""
    engine = place.engine()
    legacy_schema.metadata.create_all(engine)
    with engine.begin() as conn:
        for name, rows in ROWS.items():
            conn.execute(legacy_schema.metadata.tables[name].insert(), rows)
    return engine


def contents(engine: sa.Engine) -> dict[str, list[dict]]:
    with engine.connect() as conn:
        return {
            name: [dict(r._mapping) for r in conn.execute(
                sa.select(table).order_by(*table.primary_key.columns))]
            for name, table in legacy_schema.metadata.tables.items()
        }  # fmt: skip


def differences(engine: sa.Engine, schema: str | None, target: sa.MetaData) -> list:
    """What Alembic's autogenerate would change to make the database match `target`."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_schemas": False}
        )
        if schema:
            conn.execute(sa.text(f'SET search_path TO "{schema}"'))
        found = compare_metadata(context, target)
        conn.rollback()
    return [d for d in found if not _is_version_table(d)]


def _is_version_table(diff) -> bool:
    return isinstance(diff, tuple) and getattr(diff[1], "name", None) == "alembic_version"


# Columns and indexes that revisions after the baseline added to baseline tables.
_ADDED_TO_BASELINE_TABLES = {("inbox", "lake_synced"), ("inbox", "inbox_lake_pending")}  # 0006


def _added_after_baseline(diff) -> bool:
    """A table or an index that a revision after the baseline added: not in the legacy copy."""
    if isinstance(diff, tuple) and diff[0] == "remove_column":
        return (diff[2], diff[3].name) in _ADDED_TO_BASELINE_TABLES
    added = (diff[1].table.name, diff[1].name) if diff[0] == "remove_index" else None
    if added in _ADDED_TO_BASELINE_TABLES:
        return True
    if not (isinstance(diff, tuple) and diff[0] in ("remove_table", "remove_index")):
        return False
    table = diff[1] if diff[0] == "remove_table" else diff[1].table
    legacy = legacy_schema.metadata.tables.get(table.name)
    if legacy is None:
        return True
    # an index a later revision put on a baseline table (0005: actions_by_customer)
    return diff[0] == "remove_index" and diff[1].name not in {i.name for i in legacy.indexes}


def version_tables(place) -> dict[tuple[str, str], list[str]]:
    """Where alembic_version tables are and what they hold: (schema, table) on PostgreSQL,
    ('main', …) on SQLite. `public` is looked at too: a version table written there would be
    the bug; one another program left there (MLflow's, Prefect's) is the shared server's."""
    engine = sa.create_engine(place.url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            names = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type='table'"))
            found = [("main", n) for (n,) in names if n == "alembic_version"]
        else:
            found = [tuple(r) for r in conn.execute(sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_name = 'alembic_version' AND table_schema IN (:schema, 'public')"
            ), {"schema": place.schema})]  # fmt: skip
        held = {}
        for schema, table in found:
            name = f'"{table}"' if schema == "main" else f'"{schema}"."{table}"'
            rows = conn.execute(sa.text(f"SELECT version_num FROM {name}"))
            held[(schema, table)] = sorted(v for (v,) in rows)
    engine.dispose()
    return held


def written_version_tables(place, before: dict) -> list[tuple[str, str]]:
    """The version tables that appeared or changed since `before`."""
    return sorted(key for key, versions in version_tables(place).items()
                  if before.get(key) != versions)  # fmt: skip


def test_head_is_the_newest_script_and_the_baseline_its_root():
    scripts = ScriptDirectory(str(migrate.MIGRATIONS))
    assert scripts.get_current_head() == migrate.HEAD
    assert scripts.get_bases() == [migrate.BASELINE]
    assert set(legacy_schema.metadata.tables) == set(migrate.BASELINE_TABLES)


def test_a_database_from_before_migrations_is_refused_then_adopted_with_its_data(place):
    others = version_tables(place)
    engine = build_legacy(place)
    before = contents(engine)
    with pytest.raises(DatabaseOutOfDate) as refused:
        EngineDB.open(place.url, schema=place.schema)
    message = str(refused.value)
    assert "nudge db upgrade" in message and "\n" not in message

    db = EngineDB.open(place.url, schema=place.schema, check=False)
    was, now = migrate.upgrade(db.engine, place.schema)
    db.dispose()
    assert (was.state, was.current) == ("unversioned", None)
    assert (now.state, now.current) == ("head", migrate.HEAD)
    assert contents(engine) == before, "nothing lost"
    expected = (
        [("main", "alembic_version")]
        if place.schema is None
        else [(place.schema, "alembic_version")]
    )
    assert written_version_tables(place, others) == expected, (
        "the version table lives in the engine's schema"
    )
    assert differences(engine, place.schema, metadata) == []

    db = EngineDB.open(place.url, schema=place.schema)  # now it opens, and the data reads back
    [decision] = db.read(execution_log.list_decisions)
    assert (decision.event_id, decision.variant, json.loads(decision.scores)) == (
        "e1",
        "d1h",
        {"churn": 0.4},
    )
    [action] = db.read(outbox.list_actions)
    assert action.idempotency_key == "cart_recovery:c1:e1:0" and action.status == "pending"
    assert migrate.upgrade(db.engine, place.schema)[0].state == "head", (
        "upgrading again: nothing to do"
    )
    db.dispose()
    engine.dispose()


def test_an_empty_database_is_created_at_head_as_the_migrations_would_make_it(place, tmp_path):
    others = version_tables(place)
    db = EngineDB.open(place.url, schema=place.schema)
    with db.connect() as conn:
        assert migrate.read_revision(conn, place.schema).current == migrate.HEAD
    assert differences(db.engine, place.schema, metadata) == []
    baseline = [d for d in differences(db.engine, place.schema, legacy_schema.metadata)
                if not _added_after_baseline(d)]  # fmt: skip
    assert baseline == [], "baseline = legacy"
    assert len(written_version_tables(place, others)) == 1
    db.dispose()

    # The same through Alembic, from nothing, in another place: the same schema.
    other = place.schema and f"{place.schema}_b"
    url = place.url if other else f"sqlite:///{tmp_path / 'other.db'}"
    bare = EngineDB.open(url, schema=other, check=False)
    try:
        was, now = migrate.upgrade(bare.engine, other)
        assert (was.state, now.state) == ("empty", "head")
        assert differences(bare.engine, other, metadata) == []
    finally:
        if other:
            with bare.engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{other}" CASCADE'))
        bare.dispose()


def test_reopening_a_database_at_head_changes_nothing(place):
    EngineDB.open(place.url, schema=place.schema).dispose()
    db = EngineDB.open(place.url, schema=place.schema)
    with db.connect() as conn:
        assert migrate.read_revision(conn, place.schema).state == "head"
    db.dispose()


def test_an_unknown_revision_is_refused_in_one_line(place):
    db = EngineDB.open(place.url, schema=place.schema)
    with db.begin() as conn:
        version = sa.Table("alembic_version", sa.MetaData(), sa.Column("version_num", sa.String))
        conn.execute(version.update().values(version_num="9999"))
    db.dispose()
    with pytest.raises(DatabaseOutOfDate, match="unknown to this release") as refused:
        EngineDB.open(place.url, schema=place.schema)
    assert "\n" not in str(refused.value)
    db = EngineDB.open(place.url, schema=place.schema, check=False)
    with pytest.raises(DatabaseOutOfDate, match="newer nudge"):
        migrate.upgrade(db.engine, place.schema)
    db.dispose()


def test_some_engine_tables_without_a_version_are_not_adopted(place):
    engine = place.engine()
    legacy_schema.metadata.tables["inbox"].create(engine)
    with pytest.raises(DatabaseOutOfDate, match="missing decisions"):
        EngineDB.open(place.url, schema=place.schema)
    db = EngineDB.open(place.url, schema=place.schema, check=False)
    with pytest.raises(DatabaseOutOfDate, match="not an engine database"):
        migrate.upgrade(db.engine, place.schema)
    db.dispose()
    engine.dispose()


def test_0006_marks_the_events_up_to_the_old_watermark_as_in_the_lake(place):
    engine = build_legacy(place)  # inbox event e1, seq 1
    migrate.upgrade(engine, place.schema, target="0005")
    where = f'"{place.schema}".' if place.schema else ""
    with engine.begin() as conn:
        row = {**ROWS["inbox"][0], "seq": 2, "event_id": "e2"}  # not in the lake yet
        conn.execute(legacy_schema.metadata.tables["inbox"].insert(), [row])
        conn.execute(sa.text(f"INSERT INTO {where}lake_watermarks (stream, position, synced, "
                             "updated_at) VALUES ('events', 1, 1, 0)"))  # fmt: skip
    migrate.upgrade(engine, place.schema)
    with engine.connect() as conn:
        query = sa.text(f"SELECT event_id, lake_synced FROM {where}inbox")
        marks = {event_id: bool(synced) for event_id, synced in conn.execute(query)}
    assert marks == {"e1": True, "e2": False}
    engine.dispose()
