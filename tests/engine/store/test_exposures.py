"""Experiments read from the execution log in SQL: the same exposures as the former Python
filtering, amounts by engine.events.event_amount, and only the trigger's rows read."""

from __future__ import annotations

import json
import random
import re

import pandas as pd
import pytest
import sqlalchemy as sa

from engine.optimizer.exposures import EMAIL_STAGES, exposures_from_log
from engine.optimizer.labels import ALL
from engine.store import batch, customers, inbox
from engine.store.exposures import experiment_triggers, load_exposures
from engine.store.schema import actions, decisions, profiles
from engine.store.schema import inbox as inbox_table

T0 = 1_767_000_000.0
HOUR = 3600.0


def event(event_id, customer, event_type, at, **props):
    payload = {"event_id": event_id, "customer_id": customer, "event_type": event_type,
               "properties": props}  # fmt: skip
    return {"event_id": event_id, "customer_id": customer, "event_type": event_type,
            "occurred_at": at, "payload": json.dumps(payload)}  # fmt: skip


def decision(event_id, customer, trigger, variant):
    return {"event_id": event_id, "customer_id": customer, "trigger_id": trigger,
            "trigger_version": "v1", "outcome": "fired" if variant != "holdout" else "held_out",
            "reason": None, "trace": None, "scores": "{}", "variant": variant, "decided_at": T0}  # fmt: skip


def email(event_id, customer, trigger, status):
    return {"idempotency_key": f"{trigger}:{customer}:{event_id}:0", "event_id": event_id,
            "customer_id": customer, "trigger_id": trigger, "action_index": 0, "kind": "send_email",
            "params": "{}", "channel": "email", "due_at": T0, "cancel_if": None, "variant": None,
            "trigger_at": T0, "status": status}  # fmt: skip


def record(db, events, decided, planned, tiers=None):
    with db.begin() as conn:
        inbox.add_events(conn, events, T0)
        batch.commit_batch(conn, processed=[], dead=[], decision_rows=decided, action_rows=planned,
                           states={}, profile_updates={}, now=T0)  # fmt: skip
        if tiers:
            customers.upsert_profiles(
                conn, {c: {"customer_id": c, "tier": t} for c, t in tiers.items()}, T0
            )


def test_exposures_of_one_trigger_by_assignment(engine_store):
    key = "cart:c1:a1:0"
    record(
        engine_store,
        [event("a1", "c1", "cart_abandoned", T0), event("a2", "c2", "cart_abandoned", T0),
         event("a3", "c3", "cart_abandoned", T0), event("a4", "c1", "cart_abandoned", T0 + HOUR),
         event("o1", "c1", "email_opened", T0 + HOUR, message_id=key),
         event("p1", "c1", "purchase_completed", T0 + 2 * HOUR, total=30),
         event("p2", "c1", "purchase_completed", T0 + 100 * HOUR, total=99),  # after the window
         event("p3", "c2", "purchase_completed", T0 + 3 * HOUR, total="12.50")],  # numeric text
        [decision("a1", "c1", "cart", "d1h"), decision("a2", "c2", "cart", "holdout"),
         decision("a3", "c3", "cart", None), decision("a4", "c1", "cart", "d4h"),
         decision("a1", "c1", "other", "x")],
        [email("a1", "c1", "cart", "sent"), email("a1", "c1", "other", "sent")],
        tiers={"c1": "gold"},
    )  # fmt: skip
    frame = engine_store.read(
        load_exposures, "cart", attribution_window=72 * HOUR, segment_by="tier"
    )
    rows = frame.set_index("customer_id").to_dict("index")
    assert set(rows) == {"c1", "c2"}, "c3 has no variant; the first assignment counts"
    # The open proves the delivery (no email_delivered event came).
    assert rows["c1"] == {"trigger_id": "cart", "variant": "d1h", "segment": "gold", "sent": True,
                          "delivered": True, "opened": True, "clicked": False, "converted": True,
                          "revenue": 30.0}  # fmt: skip
    assert rows["c2"]["variant"] == "holdout" and rows["c2"]["segment"] == ALL
    assert not rows["c2"]["sent"] and rows["c2"]["converted"]
    assert rows["c2"]["revenue"] == 12.5, "the amount as engine.events.event_amount reads it"
    assert engine_store.read(experiment_triggers) == ["cart", "other"]
    assert engine_store.read(load_exposures, "unknown", attribution_window=HOUR).empty


def test_only_the_trigger_s_rows_are_selected(engine_store):
    record(engine_store, [event("a1", "c1", "cart_abandoned", T0)],
           [decision("a1", "c1", "cart", "d1h")], [email("a1", "c1", "cart", "sent")])  # fmt: skip
    statements: list[str] = []

    def keep(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    engine = engine_store.engine.engine
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        engine_store.read(load_exposures, "cart", attribution_window=HOUR, segment_by="tier")
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    for sql in statements:
        if re.search(r"FROM (\S+\.)?(decisions|actions)\b", sql):
            assert re.search(r"(decisions|actions)\.trigger_id = ", sql), sql
    [from_actions] = [s for s in statements if re.search(r"FROM (\S+\.)?actions\b", s)]
    assert "actions.kind = " in from_actions
    assert any("IN (SELECT" in s and "profiles" in s for s in statements), "profiles by subquery"


def _former_load_exposures(db, trigger_id, *, attribution_window, segment_by=None):
    """The Python filtering that load_exposures replaced (engine/optimizer/exposures.py before),
    frozen here as the reference: whole-log reads, then filters; its own amount rule."""

    def amount(properties):
        for key in ("total", "amount"):
            value = properties.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return 0.0

    with db.connect() as conn:
        every = [
            dict(r._mapping) for r in conn.execute(sa.select(decisions).order_by(decisions.c.id))
        ]
        planned = [
            dict(r._mapping) for r in conn.execute(sa.select(actions).order_by(actions.c.id))
        ]
        decided = pd.DataFrame([d for d in every if d["trigger_id"] == trigger_id])
        if decided.empty or decided["variant"].isna().all():
            return pd.DataFrame()
        decided["occurred_at"] = decided["event_id"].map(
            inbox.event_times(conn, decided["event_id"])
        )
        acted = pd.DataFrame([a for a in planned if a["trigger_id"] == trigger_id])
        if acted.empty:
            acted = pd.DataFrame(
                columns=["event_id", "trigger_id", "idempotency_key", "kind", "status"]
            )
        wanted = set(decided["customer_id"])
        rows = [
            (c, t, at, json.loads(p)) for c, t, at, p in conn.execute(
                sa.select(inbox_table.c.customer_id, inbox_table.c.event_type, inbox_table.c.occurred_at,
                          inbox_table.c.payload)
                .where(inbox_table.c.customer_id.in_(sorted(wanted)),
                       inbox_table.c.event_type.in_([*EMAIL_STAGES, "purchase_completed"])))
        ]  # fmt: skip
        events = pd.DataFrame(
            [{"customer_id": c, "event_type": t, "occurred_at": at,
              "message_id": (p.get("properties") or {}).get("message_id"),
              "amount": amount(p.get("properties") or {})} for c, t, at, p in rows],
            columns=["customer_id", "event_type", "occurred_at", "message_id", "amount"],
        )  # fmt: skip
        segments = None
        if segment_by:
            found = customers.load_profiles(conn, wanted)
            segments = {
                c: str(p[segment_by]) for c, p in found.items() if p.get(segment_by) is not None
            }
    return exposures_from_log(decided, acted, events, attribution_window=attribution_window,
                              segments=segments)  # fmt: skip


@pytest.mark.parametrize("segment_by", [None, "tier"])
def test_the_same_exposures_as_the_former_python_filtering(engine_store, segment_by):
    rng = random.Random(5)
    events, decided, planned, tiers = [], [], [], {}
    for i in range(300):
        customer, at = f"c{rng.randrange(120)}", T0 + rng.randrange(0, 500) * 60.0
        trigger = rng.choice(["cart", "cart", "browse"])
        variant = rng.choice(["d1h", "d4h", "holdout", None])
        events.append(event(f"e{i}", customer, "cart_abandoned", at))
        decided.append(decision(f"e{i}", customer, trigger, variant))
        if variant not in {None, "holdout"}:
            status = rng.choice(["sent", "sent", "cancelled", "pending"])
            planned.append(email(f"e{i}", customer, trigger, status))
            for stage in ("email_delivered", "email_opened", "email_clicked"):
                if status == "sent" and rng.random() < 0.5:
                    key = f"{trigger}:{customer}:e{i}:0"
                    events.append(event(f"{stage}{i}", customer, stage, at + 600, message_id=key))
        if rng.random() < 0.4:
            events.append(event(f"p{i}", customer, "purchase_completed", at + rng.randrange(1, 100) * HOUR,
                                total=round(rng.uniform(5, 200), 2), items=1))  # fmt: skip
        tiers[customer] = rng.choice(["gold", "silver"])
    record(engine_store, events, decided, planned, tiers)
    for trigger in ("cart", "browse"):
        new = engine_store.read(
            load_exposures, trigger, attribution_window=72 * HOUR, segment_by=segment_by
        )
        old = _former_load_exposures(
            engine_store, trigger, attribution_window=72 * HOUR, segment_by=segment_by
        )
        assert len(new) > 20 and new["converted"].any() and new["opened"].any()
        pd.testing.assert_frame_equal(new, old, check_exact=False, rtol=1e-12)


def test_no_experiment_is_an_empty_frame(engine_store):
    record(
        engine_store,
        [event("a1", "c1", "cart_abandoned", T0)],
        [decision("a1", "c1", "cart", None)],
        [],
    )
    assert engine_store.read(load_exposures, "cart", attribution_window=HOUR).empty
    assert engine_store.read(experiment_triggers) == []
    with engine_store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles)).scalar_one() == 0
