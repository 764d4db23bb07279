"""One bad action or event never stops delivery: it ends itself (retried or failed with the
reason), every other due action still runs, nothing stays claimed — on SQLite and PostgreSQL."""

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import engine.runtime.dispatcher as dispatcher_module
from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.loop import EngineLoop
from engine.runtime.processor import Processor
from engine.store.customers import upsert_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.inbox import pending_count
from engine.store.outbox import list_actions

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"

TRIGGERS = """
- id: cross_sell
  category: transactional
  quiet_hours: ignore
  when: {event: purchase_completed, where: {properties.total: {gte: 30}}}
  actions: [{send_email: {template: TEMPLATE}}]
- id: payment_failure
  category: transactional
  quiet_hours: ignore
  when: {event: payment_failed}
  actions: [{send_email: {template: payment_failed}}, {add_to_segment: {segment: billing}}]
"""


def ev(event_id, customer, event_type, minutes=0, **props):
    return {"event_id": event_id, "customer_id": customer, "event_type": event_type,
            "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), "properties": props}  # fmt: skip


def templates_with(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "templates"
    # The shipped templates with their layouts and partials (the HTML parts extend them).
    shutil.copytree(SHIPPED_TEMPLATES, folder, dirs_exist_ok=True)
    (folder / f"{name}.html.j2").unlink(missing_ok=True)  # the test's text part alone
    (folder / f"{name}.j2").write_text(text)
    return folder


def engine_for(store, templates: Path, template: str = "cross_sell", outbox: Path | None = None):
    index = TriggerIndex(load_trigger_text(TRIGGERS.replace("TEMPLATE", template)).triggers)
    store.write(
        upsert_profiles,
        {c: {"customer_id": c, "email": f"{c}@example.com", "first_name": "Ada",
             "consent_email": True} for c in ("c1", "c2")},
        0.0,
    )  # fmt: skip
    email = EmailSettings(templates_dir=templates, outbox_dir=outbox or templates.parent / "outbox")
    dispatcher = Dispatcher(store, index, email=email, webhooks=WebhookSender("s" * 32))
    return index, dispatcher


def statuses(store) -> dict[str, str]:
    return {f"{a.trigger_id}:{a.customer_id}:{a.kind}": a.status
            for a in store.read(list_actions)}  # fmt: skip


def run_all(store, index, dispatcher) -> None:
    accept_events(
        store,
        [
            ev("p1", "c1", "purchase_completed", total="35.00", order_id="A1"),
            ev("f1", "c2", "payment_failed", order_id="B2"),
        ],
        source="t",
    )
    Processor(store, index).run_until_empty()
    loop = EngineLoop(None, dispatcher, clock=lambda: (T0 + timedelta(hours=1)).timestamp())
    loop.run(until_idle=True)  # returns: the bad action does not stop the loop


def test_a_template_that_crashes_on_a_numeric_string_fails_alone(engine_store, tmp_path):
    # `{"total": "35.00"}` passes `gte: 30`, then "%.2f"|format crashes on the string.
    templates = templates_with(
        tmp_path, "strict", 'subject: Thanks\n---\n{{ "%.2f"|format(properties.total) }}\n'
    )
    index, dispatcher = engine_for(engine_store, templates, "strict")
    run_all(engine_store, index, dispatcher)
    assert statuses(engine_store) == {
        "cross_sell:c1:send_email": "failed",
        "payment_failure:c2:send_email": "sent",
        "payment_failure:c2:add_to_segment": "sent",
    }
    [failed] = [a for a in engine_store.read(list_actions) if a.status == "failed"]
    assert "strict" in failed.result and failed.attempts == 0
    assert dispatcher.recover() == 0, "nothing is left claimed for the next start"


def test_the_shipped_cross_sell_template_takes_a_numeric_string(engine_store, tmp_path):
    index, dispatcher = engine_for(engine_store, SHIPPED_TEMPLATES, outbox=tmp_path / "outbox")
    run_all(engine_store, index, dispatcher)
    assert set(statuses(engine_store).values()) == {"sent"}
    texts = [p.read_text() for p in (tmp_path / "outbox").glob("*.eml")]
    assert len(texts) == 2 and any("35.00" in t and "A1" in t for t in texts)


def test_a_template_syntax_error_fails_that_action_only(engine_store, tmp_path):
    templates = templates_with(tmp_path, "broken", "subject: Hi\n---\n{% if %}\n")
    index, dispatcher = engine_for(engine_store, templates, "broken")
    run_all(engine_store, index, dispatcher)
    st = statuses(engine_store)
    assert st["cross_sell:c1:send_email"] == "failed"
    assert st["payment_failure:c2:send_email"] == "sent"


def test_a_header_with_a_line_break_fails_that_action_only(engine_store, tmp_path):
    templates = templates_with(tmp_path, "hello", "subject: Hi {{ customer.name }}\n---\nbody\n")
    index, dispatcher = engine_for(engine_store, templates, "hello")
    # A profile written before validation existed (or by a buggy writer) with header injection.
    engine_store.write(
        upsert_profiles,
        {"c1": {"customer_id": "c1", "email": "c1@example.com", "consent_email": True,
                "first_name": "Eve\r\nBcc: victim@example.com"}},
        0.0,
    )  # fmt: skip
    run_all(engine_store, index, dispatcher)
    st = statuses(engine_store)
    assert st["cross_sell:c1:send_email"] == "failed"
    assert st["payment_failure:c2:send_email"] == "sent"


def test_an_unexpected_error_is_retried_with_backoff_then_failed(engine_store, tmp_path):
    index, dispatcher = engine_for(
        engine_store, templates_with(tmp_path, "x", "subject: x\n---\nhi\n"), "x"
    )
    dispatcher.max_attempts, dispatcher.retry_base = 3, 60.0
    real_send = dispatcher.channels["send_email"].mailer.send

    def flaky(email, before_commit):
        if email.to == "c1@example.com":
            raise RuntimeError("provider library bug")
        return real_send(email, before_commit)

    dispatcher.channels["send_email"].mailer.send = flaky
    run_all(engine_store, index, dispatcher)
    [action] = [a for a in engine_store.read(list_actions) if a.customer_id == "c1"]
    assert action.status == "pending" and action.attempts == 1
    assert "RuntimeError: provider library bug" in action.result
    assert action.next_attempt_at > (T0 + timedelta(hours=1)).timestamp() + 29
    later = (T0 + timedelta(days=1)).timestamp()
    dispatcher.run_due(later)
    dispatcher.run_due(later + 1)  # not due again yet? then the next day
    dispatcher.run_due(later + 86400)
    [action] = [a for a in engine_store.read(list_actions) if a.customer_id == "c1"]
    assert action.status == "failed" and "after 3 attempt(s)" in action.result
    assert statuses(engine_store)["payment_failure:c2:send_email"] == "sent"


def test_an_error_after_the_final_dot_is_unconfirmed_never_resent(engine_store, tmp_path):
    index, dispatcher = engine_for(engine_store, SHIPPED_TEMPLATES, outbox=tmp_path / "outbox")
    real_send = dispatcher.channels["send_email"].mailer.send
    sent = []

    def breaks_after_commit(email, before_commit):
        before_commit()
        sent.append(email.to)
        raise RuntimeError("reply lost")

    dispatcher.channels["send_email"].mailer.send = breaks_after_commit
    run_all(engine_store, index, dispatcher)
    dispatcher.channels["send_email"].mailer.send = real_send
    dispatcher.recover()
    dispatcher.run_due((T0 + timedelta(days=2)).timestamp())
    email_statuses = {k: v for k, v in statuses(engine_store).items() if "send_email" in k}
    assert set(email_statuses.values()) == {"unconfirmed"} and len(sent) == 2


def test_when_recording_the_outcome_fails_the_action_is_given_back(engine_store, tmp_path):
    index, dispatcher = engine_for(engine_store, SHIPPED_TEMPLATES, outbox=tmp_path / "outbox")
    real_mark = dispatcher_module.mark_action
    calls = {"n": 0}

    def mark_once_broken(conn, /, action_id, status, now, result=None, **effects):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database hiccup")
        return real_mark(conn, action_id, status, now, result, **effects)

    dispatcher_module.mark_action = mark_once_broken
    try:
        run_all(engine_store, index, dispatcher)
    finally:
        dispatcher_module.mark_action = real_mark
    assert "claimed" not in statuses(engine_store).values()


def test_unreadable_action_parameters_fail_that_action(engine_store, tmp_path):
    index, dispatcher = engine_for(engine_store, SHIPPED_TEMPLATES, outbox=tmp_path / "outbox")
    accept_events(engine_store, [ev("f1", "c2", "payment_failed")], source="t")
    Processor(engine_store, index).run_until_empty()
    from engine.store.schema import actions

    with engine_store.begin() as conn:
        conn.execute(
            actions.update().where(actions.c.kind == "add_to_segment").values(params="[1, 2")
        )
    outcomes = dispatcher.run_due((T0 + timedelta(hours=1)).timestamp()).outcomes
    assert outcomes == {"sent": 1, "failed": 1}


def test_an_event_whose_decision_raises_is_dead_lettered_and_the_batch_goes_on(
    engine_store, tmp_path, monkeypatch
):
    index, _ = engine_for(engine_store, SHIPPED_TEMPLATES, outbox=tmp_path / "outbox")
    import engine.runtime.processor as processor_module

    real_decide = processor_module.decide

    def decide(view, *args, **kwargs):
        if view.event_id == "p1":
            raise RuntimeError("a bug in a condition")
        return real_decide(view, *args, **kwargs)

    monkeypatch.setattr(processor_module, "decide", decide)
    accept_events(
        engine_store,
        [ev("p1", "c1", "purchase_completed", total=40), ev("f1", "c2", "payment_failed")],
        source="t",
    )
    stats = Processor(engine_store, index).run_until_empty()
    assert stats.events == 1 and stats.dead == 1
    [letter] = engine_store.read(list_dead_letters)
    assert letter.event_id == "p1" and "a bug in a condition" in letter.reason
    assert json.loads(letter.payload)["event_id"] == "p1"
    assert engine_store.read(pending_count) == 0
