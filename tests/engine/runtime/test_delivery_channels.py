"""SMS and push end to end: events → processor → dispatcher → a loopback Twilio / push service,
with the channels `engine.runtime.delivery_channels` builds from the settings — and at most once
through a crash after Twilio took the POST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import engine.channels.provider_http as provider_http
import engine.channels.sms as sms
from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.delivery_channels import UnconfiguredChannel, provider_channels
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import load_profiles, upsert_profiles
from engine.store.outbox import list_actions
from nudge.settings import Settings
from tests.engine.channels.fake_twilio import FROM, SID, TOKEN, FakeTwilio
from tests.engine.channels.test_push import SUBJECT, Browser, PushService

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
PHONE = "+14155550100"
GUARD = WebhookSender("s" * 32, allow=("127.0.0.1",))


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "cart.sms.j2").write_text("Hi {{ customer.name }}, your cart is waiting.")
    (folder / "cart.push.j2").write_text("title: Your cart\n---\nHi {{ customer.name }}\n")
    return folder


def settings(templates: Path, **values: Any) -> Settings:
    return Settings(templates_dir=templates, **values)


def twilio_settings(templates: Path, twilio: FakeTwilio) -> Settings:
    return settings(templates, twilio_account_sid=SID, twilio_auth_token=TOKEN, twilio_from=FROM,
                    twilio_base_url=twilio.base_url, twilio_timeout=2.0)  # fmt: skip


def run(store, s: Settings, kind: str, profile: dict[str, Any], *, at: timedelta = timedelta(minutes=1),
        dispatcher: Dispatcher | None = None) -> Dispatcher:  # fmt: skip
    store.write(upsert_profiles, {"c1": {"customer_id": "c1", "first_name": "Eve", **profile}}, 0.0)
    text = f"id: t1\nquiet_hours: ignore\nwhen: {{event: cart_add}}\nactions: [{{{kind}: {{template: cart}}}}]\n"
    index = TriggerIndex(load_trigger_text(text).triggers)
    accept_events(store, [{"event_id": "e1", "customer_id": "c1", "event_type": "cart_add",
                           "timestamp": T0.isoformat()}], source="t")  # fmt: skip
    Processor(store, index).run_until_empty()
    if dispatcher is None:
        dispatcher = Dispatcher(store, index, email=EmailSettings(templates_dir=s.template_folder),
                                webhooks=GUARD, channels=provider_channels(s, store, GUARD))  # fmt: skip
    dispatcher.run_due((T0 + at).timestamp())
    return dispatcher


def test_an_sms_goes_out_through_twilio_once(engine_store, templates):
    with FakeTwilio() as twilio:
        run(
            engine_store,
            twilio_settings(templates, twilio),
            "send_sms",
            {"phone": PHONE, "consent_sms": True},
        )
        [action] = engine_store.read(list_actions)
        [message] = twilio.messages
    assert action.status == "sent" and action.result.startswith(
        f"twilio {message['sid']} queued GSM-7 1 segment(s)"
    )
    assert message["body"] == "Hi Eve, your cart is waiting." and message["to"] == PHONE


def test_without_sms_consent_nothing_is_sent(engine_store, templates):
    with FakeTwilio() as twilio:
        run(
            engine_store,
            twilio_settings(templates, twilio),
            "send_sms",
            {"phone": PHONE, "consent_sms": False},
        )
        assert twilio.posts == []
    assert engine_store.read(list_actions) == [], "suppressed at decision time: no action planned"


def test_a_crash_after_twilio_took_the_post_is_found_not_resent(
    engine_store, templates, monkeypatch
):
    class Crash(BaseException):
        """The process dies between Twilio's answer and recording it."""

    real = provider_http.request

    def dies_after_post(*args: Any, **kwargs: Any) -> Any:
        answer = real(*args, **kwargs)
        if args[1] == "POST":
            raise Crash
        return answer

    with FakeTwilio() as twilio:
        s = twilio_settings(templates, twilio)
        monkeypatch.setattr(sms, "request", dies_after_post)
        with pytest.raises(Crash):
            run(engine_store, s, "send_sms", {"phone": PHONE, "consent_sms": True})
        [action] = engine_store.read(list_actions)
        assert action.status == "sending" and action.result.startswith("twilio-posted at=")
        monkeypatch.setattr(sms, "request", real)
        index = TriggerIndex(
            load_trigger_text(
                "id: t1\nwhen: {event: cart_add}\nactions: [{send_sms: {template: cart}}]\n"
            ).triggers
        )
        restarted = Dispatcher(engine_store, index, email=EmailSettings(templates_dir=templates),
                               webhooks=GUARD, channels=provider_channels(s, engine_store, GUARD))  # fmt: skip
        restarted.recover()
        assert engine_store.read(list_actions)[0].status == "pending"
        restarted.run_due((T0 + timedelta(minutes=5)).timestamp())
        [action] = engine_store.read(list_actions)
        assert len(twilio.posts) == 1 and len(twilio.messages) == 1, "never sent twice"
    assert action.status == "sent" and "found after an unknown outcome, not resent" in action.result


def test_a_lost_request_twilio_never_stored_is_sent_again_after_checking(engine_store, templates):
    with FakeTwilio() as twilio:
        twilio.drop_before_store = 1
        d = run(
            engine_store,
            twilio_settings(templates, twilio),
            "send_sms",
            {"phone": PHONE, "consent_sms": True},
        )
        [action] = engine_store.read(list_actions)
        assert (
            action.status == "pending" and action.attempts == 1 and "twilio-posted" in action.result
        )
        d.run_due(action.next_attempt_at + 1)
        [action] = engine_store.read(list_actions)
        assert len(twilio.posts) == 2 and len(twilio.messages) == 1 and len(twilio.gets) == 2
    assert action.status == "sent"


def test_without_twilio_settings_an_sms_action_fails_saying_what_is_missing(
    engine_store, templates
):
    s = settings(templates, twilio_account_sid=SID)
    assert isinstance(provider_channels(s, engine_store, GUARD)["send_sms"], UnconfiguredChannel)
    run(engine_store, s, "send_sms", {"phone": PHONE, "consent_sms": True})
    [action] = engine_store.read(list_actions)
    assert action.status == "failed"
    assert action.result.startswith(
        "SMS is not configured: set NUDGE_TWILIO_AUTH_TOKEN, NUDGE_TWILIO_FROM"
    )


def test_without_vapid_settings_a_push_action_fails_saying_what_is_missing(engine_store, templates):
    run(
        engine_store,
        settings(templates),
        "send_push",
        {"consent_push": True, "push_subscriptions": []},
    )
    [action] = engine_store.read(list_actions)
    assert (
        action.status == "failed"
        and "web push is not configured: set NUDGE_VAPID_PRIVATE_KEY" in action.result
    )


def test_a_push_reaches_live_subscriptions_and_a_gone_one_leaves_the_profile(
    engine_store, templates, tmp_path
):
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_file = tmp_path / "vapid.pem"
    key_file.write_bytes(key)
    laptop, old = Browser("laptop"), Browser("old")
    with PushService([laptop, old]) as service:
        service.gone.add("old")
        s = settings(templates, vapid_private_key_file=key_file, vapid_subject=SUBJECT)
        subs = [laptop.subscription(service.base), old.subscription(service.base)]
        run(engine_store, s, "send_push", {"consent_push": True, "push_subscriptions": subs})
        assert [r["payload"] for r in service.received] == [
            {"title": "Your cart", "body": "Hi Eve"}
        ]
    [action] = engine_store.read(list_actions)
    assert (action.status, action.result) == ("sent", "push delivered to 1/2, 1 gone (removed)")
    profile = engine_store.read(load_profiles, ["c1"])["c1"]
    assert profile["push_subscriptions"] == [subs[0]] and profile["first_name"] == "Eve"


def test_an_unreadable_vapid_key_stops_the_start_with_one_line(engine_store, templates, tmp_path):
    from engine.errors import UserError

    s = settings(templates, vapid_private_key_file=tmp_path / "missing.pem", vapid_subject=SUBJECT)
    with pytest.raises(UserError, match=r"missing\.pem"):
        provider_channels(s, engine_store, GUARD)
    s = settings(templates, vapid_private_key="garbage", vapid_subject=SUBJECT)
    with pytest.raises(UserError, match="NUDGE_VAPID_PRIVATE_KEY: not a VAPID private key"):
        provider_channels(s, engine_store, GUARD)
