"""The reporting queries on SQLite and PostgreSQL: queues at an instant, dead letters, sends in a
window, suppression reasons folded to their kind, the period filter, the lake watermarks."""

from __future__ import annotations

import json

import sqlalchemy as sa

from engine.store import reporting, schema
from engine.store.dead_letters import add_dead_letters, mark_redriven
from engine.store.execution_log import record_decisions


def _event(
    conn, event_id, customer, event_type, occurred, status="pending", received=100.0, **props
):
    conn.execute(schema.inbox.insert(), [{
        "event_id": event_id, "customer_id": customer, "event_type": event_type,
        "occurred_at": occurred, "payload": json.dumps({"properties": props}),
        "received_at": received, "status": status,
    }])  # fmt: skip


def _action(
    conn,
    key,
    trigger,
    status,
    due,
    *,
    channel="email",
    kind="send_email",
    finished=None,
    trigger_at=0.0,
):
    conn.execute(schema.actions.insert(), [{
        "idempotency_key": key, "event_id": "e", "customer_id": "c", "trigger_id": trigger,
        "action_index": 0, "kind": kind, "params": "{}", "channel": channel, "due_at": due,
        "status": status, "next_attempt_at": 0.0, "finished_at": finished, "trigger_at": trigger_at,
    }])  # fmt: skip


def test_queues_at_an_instant(engine_store):
    with engine_store.begin() as conn:
        _event(conn, "e1", "c1", "signup", 0.0, received=50.0)
        _event(conn, "e2", "c1", "signup", 0.0, received=70.0)
        _event(conn, "e3", "c1", "signup", 0.0, status="processed", received=10.0)
        _action(conn, "k1", "t", "pending", 90.0)
        _action(conn, "k2", "t", "pending", 95.0)
        _action(conn, "k3", "t", "pending", 500.0)
        _action(conn, "k4", "t", "sent", 10.0, finished=60.0)
        _action(conn, "k5", "t", "sent", 10.0, finished=95.0)
        _action(conn, "k6", "t", "sent", 10.0, channel=None, kind="add_to_segment", finished=99.0)
    queues = engine_store.read(reporting.queue_status, 100.0)
    assert queues.inbox == {"pending": 2, "processed": 1}
    assert queues.oldest_pending == 50.0
    assert (queues.due, queues.oldest_due, queues.timers) == (2, 90.0, 1)
    assert queues.actions == {
        ("email", "pending"): 3,
        ("email", "sent"): 2,
        ("add_to_segment", "sent"): 1,
    }
    assert engine_store.read(reporting.sends_since, 90.0) == {"email": 1, "add_to_segment": 1}
    empty = engine_store.read(reporting.queue_status, 0.0)
    assert (empty.due, empty.oldest_due, empty.timers) == (0, None, 3)


def test_dead_letters_by_source_and_redriven(engine_store):
    letters = [
        {"event_id": None, "payload": "x", "reason": "r", "source": s}
        for s in ("api", "api", "import")
    ]
    engine_store.write(add_dead_letters, letters, 1.0)
    engine_store.write(mark_redriven, [1], 2.0)
    assert engine_store.read(reporting.dead_letter_counts) == {
        ("api", True): 1, ("api", False): 1, ("import", False): 1,
    }  # fmt: skip


def test_decisions_and_suppressions_in_the_period(engine_store):
    with engine_store.begin() as conn:
        for n, occurred in enumerate([10.0, 20.0, 30.0]):
            _event(conn, f"e{n}", "c1", "signup", occurred, status="processed")
        record_decisions(conn, [
            {"event_id": "e0", "customer_id": "c1", "trigger_id": "t", "trigger_version": "1",
             "outcome": "suppressed", "reason": "frequency_cap: 1 email already today", "decided_at": 99.0},
            {"event_id": "e1", "customer_id": "c1", "trigger_id": "t", "trigger_version": "1",
             "outcome": "suppressed", "reason": "frequency_cap: 3 in 7 days", "decided_at": 99.0},
            {"event_id": "e2", "customer_id": "c1", "trigger_id": "t", "trigger_version": "1",
             "outcome": "fired", "reason": None, "decided_at": 99.0},
            {"event_id": "e2", "customer_id": "c1", "trigger_id": "u", "trigger_version": "1",
             "outcome": "suppressed", "reason": None, "decided_at": 99.0},
        ])  # fmt: skip
    assert engine_store.read(reporting.suppression_reasons) == {
        ("t", "frequency_cap"): 2,
        ("u", "unknown"): 1,
    }
    assert engine_store.read(reporting.suppression_reasons, since=15.0) == {
        ("t", "frequency_cap"): 1,
        ("u", "unknown"): 1,
    }
    assert engine_store.read(reporting.decision_outcomes, since=25.0, trigger_id="t") == {
        ("t", "fired"): 1
    }
    fires = engine_store.read(reporting.fired_decisions)
    assert fires.to_dict("records") == [
        {"trigger_id": "t", "customer_id": "c1", "occurred_at": 30.0}
    ]


def test_feedback_events_and_purchases(engine_store):
    with engine_store.begin() as conn:
        _event(conn, "o1", "c1", "email_opened", 5.0, message_id="k1", machine=True)
        _event(conn, "o2", "c1", "email_opened", 6.0, message_id="k1", machine="yes")
        _event(conn, "o3", "c1", "email_clicked", 7.0)
        _event(conn, "b1", "c1", "purchase_completed", 8.0, total=12.5)
        _event(conn, "b2", "c2", "purchase_completed", 8.0, total=99.0)  # c2 was never fired for
        record_decisions(conn, [{"event_id": "o1", "customer_id": "c1", "trigger_id": "t",
                                 "trigger_version": "1", "outcome": "fired", "decided_at": 1.0}])  # fmt: skip
    feedback = engine_store.read(reporting.deliverability_events)
    assert feedback.to_dict("records") == [
        {"event_type": "email_opened", "message_id": "k1", "machine": True},
        {"event_type": "email_opened", "message_id": "k1", "machine": False},  # only JSON true
        {"event_type": "email_clicked", "message_id": None, "machine": False},
    ]
    bought = engine_store.read(reporting.purchases)
    assert bought.to_dict("records") == [{"customer_id": "c1", "occurred_at": 8.0, "amount": 12.5}]


def test_lake_sync_lag_and_backlog(engine_store):
    assert engine_store.read(reporting.lake_watermarks) == {}, "no sync has run"
    with engine_store.begin() as conn:
        for n, received in enumerate([10.0, 20.0, 30.0]):
            _event(conn, f"e{n}", "c1", "signup", 0.0, received=received)
        seqs = list(
            conn.execute(sa.select(schema.inbox.c.seq).order_by(schema.inbox.c.seq)).scalars()
        )
        conn.execute(sa.insert(schema.lake_watermarks), [
            {"stream": "events", "position": float(seqs[0]), "synced": 1, "updated_at": 15.0},
            {"stream": "profiles", "position": 99.0, "synced": 0, "updated_at": 16.0},
        ])  # fmt: skip
    lake = engine_store.read(reporting.lake_watermarks)
    events, profiles = lake["events"], lake["profiles"]
    assert (events.behind, events.oldest_unsynced, events.updated_at) == (2, 20.0, 15.0)
    assert (profiles.behind, profiles.oldest_unsynced) == (0, None)


def test_a_period_has_an_end_and_purchases_after_it_still_count(engine_store):
    with engine_store.begin() as conn:
        for n, occurred in enumerate([10.0, 20.0, 30.0]):
            _event(conn, f"e{n}", "c1", "signup", occurred, status="processed")
        _event(conn, "b1", "c1", "purchase_completed", 25.0, status="processed", total=5.0)
        record_decisions(conn, [
            {"event_id": f"e{n}", "customer_id": "c1", "trigger_id": "t", "trigger_version": "1",
             "outcome": "fired", "decided_at": 99.0}
            for n in range(3)
        ])  # fmt: skip
    [day] = engine_store.read(reporting.trigger_report, window=100.0, since=15.0, until=25.0,
                              holdouts=False)  # fmt: skip
    assert (day.fired, day.converted, day.revenue) == (1, 1, 5.0), "e1 at 20, bought at 25"
    [whole] = engine_store.read(reporting.trigger_report, window=100.0)
    assert (whole.fired, whole.converted, whole.revenue) == (3, 2, 5.0)
