"""The dispatcher's side of the channel interface (engine.channels.base), with a channel that
records what it is given: registration by action kind, consent at the due time, the provider's
retry_after, closing after each batch, in-doubt settlement per channel."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.channels.base import Delivery, DeliveryError
from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import upsert_profiles
from engine.store.outbox import list_actions

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
TRIGGERS = """
- id: ping
  quiet_hours: ignore
  when: {event: cart_add}
  actions: [{webhook: {url: "https://hooks.example.com/x", data: {k: 1}}}]
"""


class RecordingChannel:
    name = "webhook"
    settle_in_doubt = "unconfirmed"

    def __init__(self, consent_field: str | None = None, fail: Exception | None = None,
                 commit_then: Exception | None = None) -> None:  # fmt: skip
        self.consent_field = consent_field
        self.fail, self.commit_then = fail, commit_then
        self.deliveries: list[Delivery] = []
        self.closed = 0

    def send(self, delivery: Delivery) -> str:
        self.deliveries.append(delivery)
        if self.fail is not None:
            raise self.fail
        delivery.before_commit("ref-1")
        if self.commit_then is not None:
            raise self.commit_then
        return "recorded"

    def close(self) -> None:
        self.closed += 1


def run(store, channel: RecordingChannel, consent: bool = True) -> Dispatcher:
    store.write(upsert_profiles, {"c1": {"customer_id": "c1", "email": "c1@example.com",
                                         "consent_push": consent}}, 0.0)  # fmt: skip
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    accept_events(store, [{"event_id": "e1", "customer_id": "c1", "event_type": "cart_add",
                           "timestamp": T0.isoformat(), "properties": {"sku": "A"}}], source="t")  # fmt: skip
    Processor(store, index).run_until_empty()
    dispatcher = Dispatcher(
        store, index, email=EmailSettings(templates_dir=TEMPLATES),
        webhooks=WebhookSender("s" * 32), channels={"webhook": channel},
    )  # fmt: skip
    dispatcher.run_due((T0 + timedelta(minutes=1)).timestamp())
    return dispatcher


def test_a_registered_channel_delivers_its_kind_with_the_customers_context(engine_store):
    channel = RecordingChannel()
    run(engine_store, channel)
    [delivery] = channel.deliveries
    assert (delivery.customer_id, delivery.trigger_id, delivery.marketing) == ("c1", "ping", True)
    assert delivery.params == {"url": "https://hooks.example.com/x", "data": {"k": 1}}
    assert delivery.event["properties"] == {"sku": "A"}
    assert delivery.profile["email"] == "c1@example.com"
    [action] = engine_store.read(list_actions)
    assert (action.status, action.result) == ("sent", "recorded")
    assert channel.closed >= 1, "channels are closed after each batch"


def test_the_channels_consent_flag_is_checked_at_the_due_time(engine_store):
    channel = RecordingChannel(consent_field="consent_push")
    run(engine_store, channel, consent=False)
    assert channel.deliveries == []
    [action] = engine_store.read(list_actions)
    assert action.status == "cancelled" and "consent" in action.result


@pytest.mark.parametrize("retry_after", [7.0, None])
def test_the_providers_retry_after_replaces_the_backoff(engine_store, retry_after):
    channel = RecordingChannel(
        fail=DeliveryError("HTTP 429", retryable=True, retry_after=retry_after)
    )
    run(engine_store, channel)
    [action] = engine_store.read(list_actions)
    now = (T0 + timedelta(minutes=1)).timestamp()
    assert action.status == "pending" and "HTTP 429" in action.result
    if retry_after is None:
        assert action.attempts == 1
        assert action.next_attempt_at >= now + 15  # the dispatcher's own backoff (30 s ± 50 %)
    else:
        # The provider said when: a throttle, not a failed attempt (test_dispatcher_rates).
        assert action.attempts == 0 and action.result.startswith("throttled: HTTP 429")
        assert action.next_attempt_at == pytest.approx(now + retry_after)


def test_a_refusal_that_will_not_pass_fails_at_once(engine_store):
    run(engine_store, RecordingChannel(fail=DeliveryError("HTTP 400: bad number", retryable=False)))
    [action] = engine_store.read(list_actions)
    assert action.status == "failed" and action.result.startswith("HTTP 400: bad number")


def test_an_error_after_the_point_of_no_return_is_unconfirmed_and_never_resent(engine_store):
    channel = RecordingChannel(commit_then=ConnectionResetError("reply lost"))
    dispatcher = run(engine_store, channel)
    [action] = engine_store.read(list_actions)
    assert action.status == "unconfirmed" and "reply lost" in action.result
    dispatcher.recover()
    dispatcher.run_due((T0 + timedelta(days=1)).timestamp())
    assert len(channel.deliveries) == 1


def test_recover_settles_actions_caught_sending_as_their_channel_says(engine_store):
    from engine.store.outbox import mark_action

    channel = RecordingChannel(fail=DeliveryError("down", retryable=True))
    dispatcher = run(engine_store, channel)
    [action] = engine_store.read(list_actions)
    engine_store.write(mark_action, action.id, "sending", 0.0, result="ref")  # a crash mid-send
    channel.settle_in_doubt = "pending"  # a channel whose resend is harmless
    dispatcher.recover()
    assert engine_store.read(list_actions)[0].status == "pending"
    engine_store.write(mark_action, action.id, "sending", 0.0, result="ref")
    channel.settle_in_doubt = "unconfirmed"  # one that cannot be asked
    dispatcher.recover()
    assert engine_store.read(list_actions)[0].status == "unconfirmed"
