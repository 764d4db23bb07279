"""The SMS and push channels as the settings configure them, with what they need of the store.

`provider_channels` gives the dispatcher its ``send_sms`` and ``send_push`` channels: Twilio's
and web push's when their settings are complete, else a channel that fails each such action at
once with the settings it lacks (``SMS is not configured: set NUDGE_TWILIO_ACCOUNT_SID, …``) — a
trigger file may name a channel the deployment has not set up yet, and its actions say why they
did not go out instead of crashing the dispatcher or waiting forever.

The channels reach the store only through two callables built here (channels import no store):

- `OutboxHistory`: the stored result of an SMS action before this attempt — where an earlier
  attempt's ``twilio-posted`` reference is kept (engine.channels.sms: check before resending);
- `SubscriptionRemover`: drops a push subscription the push service called gone (404/410) from
  the profile, in one transaction (read, filter, write), keeping the other attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.channels.base import Channel, Delivery, DeliveryError
from engine.channels.push import PushChannel, PushSettings
from engine.channels.sms import SmsChannel, TwilioSettings
from engine.channels.webhooks import WebhookSender
from engine.errors import UserError
from engine.store import EngineDB
from engine.store.customers import load_profiles, update_profile
from engine.store.outbox import list_actions

if TYPE_CHECKING:
    from nudge.settings import Settings

__all__ = ["OutboxHistory", "SubscriptionRemover", "UnconfiguredChannel", "provider_channels"]


class UnconfiguredChannel:
    """A channel whose provider has no settings: every send fails with `reason`, not retried."""

    settle_in_doubt = "pending"  # nothing is ever sent

    def __init__(self, name: str, consent_field: str, reason: str) -> None:
        self.name = name
        self.consent_field: str | None = consent_field
        self.reason = reason

    def send(self, delivery: Delivery) -> str:
        """Always a DeliveryError that will not pass: the settings are missing."""
        raise DeliveryError(self.reason, retryable=False)

    def close(self) -> None:
        """Nothing to close."""


class OutboxHistory:
    """The stored result of a delivery's action (its previous attempt's outcome or reference)."""

    def __init__(self, store: EngineDB, kind: str = "send_sms") -> None:
        self.store = store
        self.kind = kind

    def __call__(self, delivery: Delivery) -> str | None:
        rows = self.store.read(list_actions, customer_id=delivery.customer_id, kind=self.kind)
        return next((row.result for row in rows if row.id == delivery.action_id), None)


class SubscriptionRemover:
    """Removes one push subscription (by endpoint) from a customer's profile."""

    def __init__(self, store: EngineDB, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def __call__(self, customer_id: str, endpoint: str) -> None:
        with self.store.begin() as conn:
            profile = load_profiles(conn, [customer_id]).get(customer_id)
            current: Any = (profile or {}).get("push_subscriptions")
            if not isinstance(current, list):
                return
            kept = [
                s for s in current if not (isinstance(s, dict) and s.get("endpoint") == endpoint)
            ]
            if len(kept) != len(current):
                update_profile(conn, customer_id, {"push_subscriptions": kept}, self.clock())


def provider_channels(
    settings: Settings, store: EngineDB, guard: WebhookSender
) -> dict[str, Channel]:
    """``send_sms`` and ``send_push`` channels for the dispatcher (see the module docstring).

    Raises UserError for settings that are present but unusable (an unreadable or invalid VAPID
    key): a mistake found at start, not at the first push.
    """
    channels: dict[str, Channel] = {}
    missing = settings.twilio_missing()
    if missing:
        channels["send_sms"] = UnconfiguredChannel(
            "sms", "consent_sms", f"SMS is not configured: set {', '.join(missing)}"
        )
    else:
        assert settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        twilio = TwilioSettings(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token.get_secret_value(),
            sender=settings.twilio_from,
            templates_dir=settings.template_folder,
            base_url=settings.twilio_base_url,
            timeout=settings.twilio_timeout,
        )
        history = OutboxHistory(store)
        channels["send_sms"] = SmsChannel(twilio, guard, prior=history)
    missing = settings.push_missing()
    if missing:
        channels["send_push"] = UnconfiguredChannel(
            "push", "consent_push", f"web push is not configured: set {', '.join(missing)}"
        )
    else:
        assert settings.vapid_subject
        try:
            key = settings.vapid_key_text()
            push = PushSettings(key, settings.vapid_subject, settings.template_folder,
                                ttl=settings.push_ttl)  # fmt: skip
            channels["send_push"] = PushChannel(
                push, guard, remove_subscription=SubscriptionRemover(store)
            )
        except (OSError, ValueError) as exc:
            where = settings.vapid_private_key_file or "NUDGE_VAPID_PRIVATE_KEY"
            raise UserError(f"{where}: {exc}") from None
    return channels
