"""The store's modules on SQLite and PostgreSQL: typed rows, filters and latest-N in SQL, and
the caller's transaction as the unit of work."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from engine.store import ActionRow, DeadLetter, TaskRow, batch, dead_letters, inbox, outbox
from engine.store.schema import decisions
from engine.store.schema import inbox as inbox_table
from engine.store.sql import count_rows

T0 = 1_767_000_000.0


def action(i: int) -> dict:
    return {"idempotency_key": f"t{i % 2}:c{i % 3}:e{i}:0", "event_id": f"e{i}", "customer_id": f"c{i % 3}",
            "trigger_id": f"t{i % 2}", "action_index": 0, "kind": ("send_email", "webhook")[i % 2],
            "params": json.dumps({"i": i}), "channel": None, "due_at": T0 + i, "cancel_if": None,
            "variant": None, "trigger_at": T0}  # fmt: skip


@pytest.fixture
def planned(engine_store):
    with engine_store.begin() as conn:
        outbox.plan_actions(conn, [action(i) for i in range(10)])
        for i in range(6):
            outbox.add_task(conn, {"idempotency_key": f"k{i}", "customer_id": f"c{i % 3}", "trigger_id": f"t{i % 2}",
                                   "title": f"task {i}", "details": "{}"}, T0 + i)  # fmt: skip
        dead_letters.add_dead_letters(conn, [{"event_id": f"d{i}", "payload": "x", "reason": "r",
                                              "source": "t"} for i in range(5)], T0)  # fmt: skip
    return engine_store


def sql_of(db, query, *args, **kwargs) -> tuple[object, list[str]]:
    statements: list[str] = []

    def keep(conn, cursor, statement, *rest):
        statements.append(" ".join(statement.split()))

    engine = db.engine.engine
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        return db.read(query, *args, **kwargs), statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)


def test_rows_are_typed(planned):
    [first, *_] = planned.read(outbox.list_actions)
    assert isinstance(first, ActionRow) and first.status == "pending" and first.attempts == 0
    assert isinstance(planned.read(outbox.list_tasks)[0], TaskRow)
    assert isinstance(planned.read(dead_letters.list_dead_letters)[0], DeadLetter)
    with pytest.raises(AttributeError):
        first.status = "sent"  # frozen


def test_the_latest_actions_tasks_and_dead_letters_are_limited_in_sql(planned):
    rows, statements = sql_of(planned, outbox.list_actions, trigger_id="t1", last=2)
    assert [r.event_id for r in rows] == ["e7", "e9"]
    assert re.search(
        r"WHERE .*actions\.trigger_id = .* ORDER BY (\S+\.)?actions\.id DESC LIMIT", statements[-1]
    )
    assert [
        r.event_id for r in planned.read(outbox.list_actions, customer_id="c0", kind="webhook")
    ] == ["e3", "e9"]
    tasks, statements = sql_of(planned, outbox.list_tasks, None, None, last=2)
    assert [t.title for t in tasks] == ["task 4", "task 5"] and "DESC LIMIT" in statements[-1]
    assert [t.title for t in planned.read(outbox.list_tasks, "open", 2)] == ["task 0", "task 1"]
    assert [t.title for t in planned.read(outbox.list_tasks, customer_id="c1")] == [
        "task 1",
        "task 4",
    ]
    letters, statements = sql_of(planned, dead_letters.list_dead_letters, limit=None, last=2)
    assert [d.event_id for d in letters] == ["d3", "d4"] and "DESC LIMIT" in statements[-1]
    with pytest.raises(ValueError, match="not both"):
        planned.read(outbox.list_tasks, "open", 5, last=2)
    assert planned.read(outbox.action_counts, trigger_id="t0") == {("send_email", "pending"): 5}


def test_claims_effects_and_release(planned):
    claimed = planned.write(outbox.claim_due, T0 + 3, 10, "w1")
    assert [a.event_id for a in claimed] == ["e0", "e1", "e2", "e3"]
    assert planned.write(outbox.claim_due, T0 + 3, 10, "w2") == [], "claimed once"
    planned.write(outbox.mark_action, claimed[0].id, "sent", T0, "ok",
                  segment=("c0", "vip", claimed[0].idempotency_key))  # fmt: skip
    assert planned.write(outbox.release_claims, worker_id="w1") == 3
    assert planned.write(outbox.release_claims, older_than=T0 + 100) == 0
    assert {a.status for a in planned.read(outbox.list_actions, last=10)} == {"pending", "sent"}
    with pytest.raises(TypeError, match="unknown effects"):
        planned.write(outbox.mark_action, claimed[0].id, "sent", T0, segmnet=("c0", "x", "k"))


def test_a_batch_commits_whole_or_not_at_all(engine_store):
    engine_store.write(inbox.add_events, [{"event_id": "e1", "customer_id": "c1", "event_type": "x",
                                          "occurred_at": T0, "payload": "{}"}], T0)  # fmt: skip
    row = {"event_id": "e1", "customer_id": "c1", "trigger_id": "t", "trigger_version": "v",
           "outcome": "fired", "reason": None, "trace": None, "scores": "{}", "variant": None,
           "decided_at": T0}  # fmt: skip
    with pytest.raises(RuntimeError), engine_store.begin() as conn:
        batch.commit_batch(conn, processed=["e1"], dead=[], decision_rows=[row], action_rows=[action(1)],
                           states={"c1": {"n": 1}}, profile_updates={}, now=T0)  # fmt: skip
        raise RuntimeError("crash before the commit")
    assert engine_store.read(count_rows, decisions) == 0
    assert engine_store.read(inbox.pending_count) == 1
    engine_store.write(batch.commit_batch, processed=["e1"], dead=[], decision_rows=[row, row],
                       action_rows=[action(1)], states={"c1": {"n": 1}}, profile_updates={}, now=T0)  # fmt: skip
    assert (
        engine_store.read(count_rows, decisions) == 1
        and engine_store.read(inbox.pending_count) == 0
    )


def test_accepting_reports_only_the_new_ids_in_one_statement(engine_store):
    rows = [{"event_id": f"e{i}", "customer_id": "c1", "event_type": "x", "occurred_at": T0,
             "payload": "{}"} for i in range(3)]  # fmt: skip
    assert engine_store.write(inbox.add_events, rows[:2], T0) == {"e0", "e1"}
    # a repeat of a stored id and a repeat inside the batch are both left out
    statements: list[str] = []
    engine = engine_store.engine.engine
    keep = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        again = engine_store.write(inbox.add_events, rows + rows[2:], T0)
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    assert again == {"e2"} and engine_store.read(inbox.pending_count) == 3
    assert len(statements) == 1 and statements[0].lstrip().startswith("INSERT")


def test_accepting_more_rows_than_one_statement_holds_keeps_every_value(engine_store):
    rows = [{"event_id": f"e{i}", "customer_id": f"c{i % 7}", "event_type": "x",
             "occurred_at": T0 + i / 3, "payload": json.dumps({"i": i, "text": "é'\"?"})}
            for i in range(1, 1201)]  # fmt: skip
    assert engine_store.write(inbox.add_events, rows[::2], T0) == {r["event_id"] for r in rows[::2]}
    fresh = engine_store.write(inbox.add_events, rows, T0 + 1)
    assert fresh == {r["event_id"] for r in rows[1::2]}
    stored = engine_store.read(
        lambda conn: {
            r.event_id: r
            for r in conn.execute(
                sa.select(inbox_table.c.event_id, inbox_table.c.customer_id,
                          inbox_table.c.occurred_at, inbox_table.c.payload, inbox_table.c.received_at)
            )
        }
    )  # fmt: skip
    assert len(stored) == 1200
    for row in rows:
        kept = stored[row["event_id"]]
        assert (kept.customer_id, kept.occurred_at, kept.payload) == (
            row["customer_id"], row["occurred_at"], row["payload"],
        )  # fmt: skip
        assert kept.received_at == (T0 if int(row["event_id"][1:]) % 2 else T0 + 1)


def test_selecting_by_many_keys_returns_each_matching_row_once(engine_store):
    from engine.store.customers import load_profiles, upsert_profiles
    from engine.store.schema import profiles
    from engine.store.sql import select_in

    stored = {f"c'{i}": {"customer_id": f"c'{i}", "n": i, "name": 'é"x'} for i in range(1100)}
    engine_store.write(upsert_profiles, stored, T0)
    asked = [*stored, *stored, "absent", "c'5"]  # repeats and an id not stored
    rows = engine_store.read(
        select_in, profiles, ["customer_id", "updated_at"], "customer_id", asked
    )
    assert sorted(rows) == sorted((c, T0) for c in stored)
    assert engine_store.read(load_profiles, asked) == stored
    assert engine_store.read(select_in, profiles, ["customer_id"], "customer_id", []) == []


def test_marking_processed_by_seq_refuses_an_event_that_changed_hands(engine_store):
    rows = [{"event_id": f"e{i}", "customer_id": f"c{i % 2}", "event_type": "x",
             "occurred_at": T0 + i, "payload": "{}"} for i in range(4)]  # fmt: skip
    engine_store.write(inbox.add_events, rows, T0)
    pending = engine_store.read(inbox.pending_events, 10)
    owners = {e.seq: e.customer_id for e in pending}
    # another worker's merge moved one event to c9 meanwhile: the batch must roll back whole
    moved = pending[1]
    engine_store.write(lambda c: c.execute(sa.update(inbox_table).where(
        inbox_table.c.seq == moved.seq).values(customer_id="c9")))  # fmt: skip
    with pytest.raises(inbox.StaleBatch, match=f"seq {moved.seq}"):
        engine_store.write(inbox.mark_processed_as, owners, T0)
    assert engine_store.read(inbox.pending_count) == 4
    # marked by seq: only the rows named, each as the customer it was processed for
    owners[moved.seq] = "c9"
    del owners[pending[3].seq]
    engine_store.write(inbox.mark_processed_as, owners, T0)
    assert [e.event_id for e in engine_store.read(inbox.pending_events, 10)] == ["e3"]


def test_pending_events_by_worker_time_and_limit_in_arrival_order(engine_store):
    rows = [{"event_id": f"e{i}", "customer_id": f"c{i % 5}", "event_type": "x",
             "occurred_at": T0 + (9 - i), "payload": f'{{"i":{i}}}'} for i in range(10)]  # fmt: skip
    engine_store.write(inbox.add_events, rows, T0)
    every = engine_store.read(inbox.pending_events, 100)
    assert [e.event_id for e in every] == [f"e{i}" for i in range(10)]  # arrival, not time
    assert every[3] == inbox.InboxEvent(every[3].seq, "e3", "c3", "x", T0 + 6, '{"i":3}')
    assert [e.event_id for e in engine_store.read(inbox.pending_events, 3)] == ["e0", "e1", "e2"]
    early = engine_store.read(inbox.pending_events, 100, until=T0 + 4)
    assert [e.event_id for e in early] == ["e5", "e6", "e7", "e8", "e9"]
    halves = [engine_store.read(inbox.pending_events, 100, (i, 2)) for i in range(2)]
    assert sorted(e.event_id for half in halves for e in half) == sorted(
        r["event_id"] for r in rows
    )
    for half in halves:  # each customer in one worker's half only, in arrival order
        assert [e.seq for e in half] == sorted(e.seq for e in half)
    owner = {e.customer_id: i for i, half in enumerate(halves) for e in half}
    assert all(owner[e.customer_id] == i for i, half in enumerate(halves) for e in half)
    both = engine_store.read(inbox.pending_events, 100, (1, 2), until=T0 + 4)
    assert {e.event_id for e in both} == {e.event_id for e in halves[1]} & {
        "e5",
        "e6",
        "e7",
        "e8",
        "e9",
    }


def test_rows_given_to_the_driver_keep_the_statement_and_the_conversions(engine_store):
    from engine.store import customers
    from engine.store.schema import customer_state

    # an int time is stored as the float SQLAlchemy would make of it; a repeat is skipped
    row = {"event_id": "e1", "customer_id": "c1", "trigger_id": "t", "trigger_version": "v",
           "outcome": "fired", "reason": None, "trace": None, "scores": "{}", "variant": None,
           "decided_at": int(T0)}  # fmt: skip
    engine_store.write(batch.commit_batch, processed=[], dead=[], decision_rows=[row, {**row, "outcome": "x"}],
                       action_rows=[], states={}, profile_updates={}, now=T0)  # fmt: skip
    stored = engine_store.read(
        lambda c: c.execute(sa.select(decisions.c.outcome, decisions.c.decided_at)).all()
    )
    assert stored == [("fired", T0)] and isinstance(stored[0][1], float)
    # an upsert replaces the other columns of a known key, whichever path ran it
    for n in (1, 2):
        engine_store.write(customers.save_states, {"c1": {"n": n}, f"c{n + 1}": {}}, T0 + n)
    got = engine_store.read(
        lambda c: c.execute(sa.select(customer_state).order_by("customer_id")).all()
    )
    assert [(c, json.loads(s), at) for c, s, at in got] == [
        ("c1", {"n": 2}, T0 + 2), ("c2", {}, T0 + 1), ("c3", {}, T0 + 2)]  # fmt: skip
