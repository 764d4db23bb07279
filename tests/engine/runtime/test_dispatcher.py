"""The dispatcher against real peers: an aiosmtpd server, an HTTP receiver, SQLite and PostgreSQL."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender, verify_signature
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import load_profiles, segment_members, upsert_profiles
from engine.store.outbox import list_actions, list_tasks
from tests.support import LocalServer, SmtpSink

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
SECRET = "whsec-test"

TRIGGERS = """
- id: cart_recovery
  when: {event: cart_abandoned}
  actions:
    - send_email: {template: cart_reminder}
      delay: 1h
      cancel_if: {event: purchase_completed}
- id: payment_failure
  category: transactional
  quiet_hours: ignore
  when: {event: payment_failed}
  actions:
    - send_email: {template: payment_failed}
    - webhook: {url: "URL", data: {reason: card_declined}}
    - create_task: {title: Call the customer, queue: billing}
    - add_to_segment: {segment: payment_issues}
    - update_profile: {set: {payment_issue: true}}
"""


def receiver(seen: list, status: list[int]) -> FastAPI:
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        seen.append(
            {
                "key": request.headers["x-nudge-idempotency-key"],
                "signed": verify_signature(SECRET, request.headers["x-nudge-signature"], body),
                "body": json.loads(body),
            }
        )
        return Response(status_code=status[0] if status else 200)

    return app


def text(message) -> str:
    """The text/plain part (emails with an HTML part are multipart/alternative)."""
    [part] = [p for p in message.walk() if p.get_content_type() == "text/plain"]
    return part.get_payload(decode=True).decode()


def ev(event_id, customer, event_type, minutes, **props):
    return {"event_id": event_id, "customer_id": customer, "event_type": event_type,
            "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), "properties": props}  # fmt: skip


def setup(store, url="http://127.0.0.1:1/hook", profile_extra=None):
    index = TriggerIndex(load_trigger_text(TRIGGERS.replace("URL", url)).triggers)
    profile = {
        "customer_id": "c1",
        "email": "ada@example.com",
        "first_name": "Ada",
        "consent_email": True,
        "timezone": "Europe/Berlin",
    }
    store.write(upsert_profiles, {"c1": {**profile, **(profile_extra or {})}}, 0.0)
    return index


def dispatcher(store, index, *, smtp_port=None, allow=(), outbox=None, **kwargs):
    email = EmailSettings(templates_dir=TEMPLATES, smtp_host="127.0.0.1" if smtp_port else None, smtp_port=smtp_port or 25,
                          smtp_timeout=2.0, outbox_dir=outbox)  # fmt: skip
    return Dispatcher(
        store,
        index,
        email=email,
        webhooks=WebhookSender(SECRET, allow=allow, timeout=2.0),
        **kwargs,
    )


def at(minutes: float) -> float:
    return (T0 + timedelta(minutes=minutes)).timestamp()


def test_delayed_email_is_personalised_sent_once_over_smtp(engine_store):
    index = setup(engine_store)
    accept_events(
        engine_store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=42.5, items=2)], source="t"
    )
    Processor(engine_store, index).run_until_empty()
    with SmtpSink() as smtp:
        d = dispatcher(engine_store, index, smtp_port=smtp.port)
        assert d.run_due(at(30)).handled == 0, "not due before the delay"
        assert d.run_due(at(61)).outcomes == {"sent": 1}
        assert d.run_due(at(120)).handled == 0
        [message] = smtp.messages
    assert message["Subject"] == "Ada, your cart is waiting" and message["To"] == "ada@example.com"
    assert "2 item(s) worth 42.50" in text(message)
    assert message["List-Unsubscribe"].strip().startswith("<https://") and "Unsubscribe:" in text(
        message
    )
    [action] = engine_store.read(list_actions)
    assert action.status == "sent" and message["Message-ID"] in action.result


def test_a_purchase_cancels_the_reminder(engine_store):
    index = setup(engine_store)
    accept_events(
        engine_store,
        [
            ev("e1", "c1", "cart_abandoned", 0, cart_value=42.5),
            ev("e2", "c1", "purchase_completed", 20, total=42.5),
        ],
        source="t",
    )
    Processor(engine_store, index).run_until_empty()
    with SmtpSink() as smtp:
        assert dispatcher(engine_store, index, smtp_port=smtp.port).run_due(at(61)).outcomes == {
            "cancelled": 1
        }
        assert smtp.messages == []
    assert engine_store.read(list_actions)[0].result.startswith("cancelled by purchase_completed")


def test_first_name_falls_back_and_withdrawn_consent_cancels(engine_store, tmp_path):
    index = setup(engine_store, profile_extra={"first_name": None})
    accept_events(engine_store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=10)], source="t")
    Processor(engine_store, index).run_until_empty()
    outbox = tmp_path / "outbox"
    dispatcher(engine_store, index, outbox=outbox).run_due(at(61))
    [path] = outbox.glob("*.eml")
    assert "Subject: Valued Customer, your cart is waiting" in path.read_text()

    accept_events(
        engine_store, [ev("e3", "c1", "cart_abandoned", 24 * 60 * 5, cart_value=10)], source="t"
    )
    Processor(engine_store, index).run_until_empty()
    engine_store.write(
        upsert_profiles,
        {"c1": {"customer_id": "c1", "email": "ada@example.com", "consent_email": False}},
        0.0,
    )
    assert dispatcher(engine_store, index, outbox=outbox).run_due(at(24 * 60 * 6)).outcomes == {
        "cancelled": 1
    }


def test_smtp_down_is_retried_later_and_nothing_is_lost(engine_store):
    index = setup(engine_store)
    accept_events(engine_store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=42.5)], source="t")
    Processor(engine_store, index).run_until_empty()
    sink = SmtpSink()
    d = dispatcher(engine_store, index, smtp_port=sink.port, retry_base=600)
    assert d.run_due(at(61)).outcomes == {"retried": 1}
    [action] = engine_store.read(list_actions)
    assert action.status == "pending" and action.attempts == 1 and "Connection" in action.result
    assert at(61) + 300 <= action.next_attempt_at <= at(61) + 900, "backoff with jitter"
    with sink:
        assert d.run_due(at(62)).handled == 0, "still backing off"
        assert d.run_due(at(61 + 20)).outcomes == {"sent": 1}
        assert len(sink.messages) == 1


def test_transactional_actions_run_once_with_signed_webhooks_tasks_segments_profile(engine_store):
    seen: list = []
    with LocalServer(receiver(seen, [])) as hook, SmtpSink() as smtp:
        index = setup(engine_store, url=f"{hook.url}/hook", profile_extra={"consent_email": False})
        accept_events(
            engine_store, [ev("p1", "c1", "payment_failed", 0, order_id="o-9")], source="t"
        )
        Processor(engine_store, index).run_until_empty()
        d = dispatcher(engine_store, index, smtp_port=smtp.port, allow=("127.0.0.1",))
        assert d.run_due(at(1)).outcomes == {"sent": 5}
        assert d.run_due(at(2)).handled == 0
        assert (
            "for order o-9" in text(smtp.messages[0])
            and smtp.messages[0]["List-Unsubscribe"] is None
        )
    [delivery] = seen
    assert delivery["signed"] and delivery["key"] == "payment_failure:c1:p1:1"
    assert (
        delivery["body"]["data"] == {"reason": "card_declined"}
        and delivery["body"]["event"]["event_id"] == "p1"
    )
    [task] = engine_store.read(list_tasks)
    assert task.title == "Call the customer" and json.loads(task.details) == {"queue": "billing"}
    assert engine_store.read(segment_members, "payment_issues") == ["c1"]
    assert engine_store.read(load_profiles, ["c1"])["c1"]["payment_issue"] is True


def test_webhook_5xx_is_retried_then_failed_with_the_reason(engine_store):
    seen: list = []
    with LocalServer(receiver(seen, [503])) as hook, SmtpSink() as smtp:
        index = setup(engine_store, url=f"{hook.url}/hook")
        accept_events(engine_store, [ev("p1", "c1", "payment_failed", 0)], source="t")
        Processor(engine_store, index).run_until_empty()
        d = dispatcher(
            engine_store,
            index,
            smtp_port=smtp.port,
            allow=("127.0.0.1",),
            max_attempts=3,
            retry_base=1,
        )
        for minute in range(1, 6):
            d.run_due(at(minute))
    webhook = next(a for a in engine_store.read(list_actions) if a.kind == "webhook")
    assert webhook.status == "failed" and webhook.result == "HTTP 503 (after 3 attempt(s))"
    assert len(seen) == 3 and len({s["key"] for s in seen}) == 1, "every retry carries the same key"


def test_private_targets_are_refused_unless_allow_listed(engine_store):
    index = setup(engine_store, url="http://127.0.0.1:9/hook")
    accept_events(engine_store, [ev("p1", "c1", "payment_failed", 0)], source="t")
    Processor(engine_store, index).run_until_empty()
    with SmtpSink() as smtp:
        dispatcher(engine_store, index, smtp_port=smtp.port).run_due(at(1))
    webhook = next(a for a in engine_store.read(list_actions) if a.kind == "webhook")
    assert webhook.status == "failed" and "private address" in webhook.result


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://169.254.169.254/latest",
        "http://[::1]:80/x",
        "http://10.0.0.8/x",
    ],
)
def test_blocked_targets(url):
    from engine.channels.webhooks import BlockedTarget

    with pytest.raises(BlockedTarget):
        WebhookSender("s").check_target(url)
