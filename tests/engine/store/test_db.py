"""`EngineDB.hold`: one connection for a block's reads and writes, no checkout per call."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.store.outbox import action_counts


def checkouts(db) -> list[int]:
    seen: list[int] = []
    sa.event.listen(db.engine, "checkout", lambda *args: seen.append(1))
    return seen


def test_a_hold_checks_out_one_connection_for_many_calls(engine_store):
    seen = checkouts(engine_store)
    with engine_store.hold():
        for _ in range(5):
            engine_store.read(action_counts)
            engine_store.write(lambda conn: conn.execute(sa.text("SELECT 1")))
    assert len(seen) == 1
    engine_store.read(action_counts)
    assert len(seen) == 2  # after the block: the pool again


def test_writes_in_a_hold_commit_and_a_failed_one_rolls_back(engine_store):
    with engine_store.hold():
        engine_store.write(lambda conn: conn.execute(sa.text("CREATE TABLE held_t (x INTEGER)")))
        engine_store.write(lambda conn: conn.execute(sa.text("INSERT INTO held_t VALUES (1)")))

        def fails(conn):
            conn.execute(sa.text("INSERT INTO held_t VALUES (2)"))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            engine_store.write(fails)
        # the held connection is usable after the failure
        inside = engine_store.read(lambda conn: conn.execute(sa.text("SELECT x FROM held_t")).all())
    # committed for everyone else: another connection sees it
    with engine_store.engine.connect() as other:
        outside = other.execute(sa.text("SELECT x FROM held_t")).all()
    assert [tuple(r) for r in inside] == [tuple(r) for r in outside] == [(1,)]
    engine_store.write(lambda conn: conn.execute(sa.text("DROP TABLE held_t")))


def test_a_write_nested_in_a_transaction_of_the_hold_uses_its_own_connection(engine_store):
    seen = checkouts(engine_store)
    with engine_store.hold(), engine_store.begin() as outer:
        outer.execute(sa.text("SELECT 1"))
        engine_store.read(action_counts)  # would fail on the held connection mid-transaction
    assert len(seen) == 2


def test_holds_nest(engine_store):
    seen = checkouts(engine_store)
    with engine_store.hold():
        with engine_store.hold():
            engine_store.read(action_counts)
        engine_store.read(action_counts)
    assert len(seen) == 1
