"""The channel interface: what the dispatcher needs from email, SMS, push and webhooks.

A channel turns one due action into one delivery. The dispatcher owns everything around it — the
claim, `cancel_if`, consent at the due time, the send rate, retries, the status in the outbox —
so a channel module only knows its provider (one module per provider, as in Dittofeed's
destinations):

- `send` gets a `Delivery` (the action, its parameters and the customer's context) and returns the
  result to store ("smtp 250 <id>", "twilio SM…", "HTTP 200"). It calls `delivery.before_commit(ref)`
  right before the point of no return (the end-of-data dot, the provider's POST): the action is then
  *sending*, and a crash after it is reported as in doubt, never repeated blindly.
- Failures are `DeliveryError`s: `retryable` says whether the same attempt may pass later (a 5xx,
  a dropped connection) or never will (a 4xx, a bad address, a missing template); `retry_after` is
  the provider's own wait (429 / Retry-After), which the dispatcher honours instead of its backoff.
  The dispatcher also knows the older exception types (TemplateError, BlockedTarget, OSError, …).
- `prepare` (optional) does everything of `send` but the sending — an email rendered and its bytes
  built — and returns a `PreparedDelivery` whose `send()` finishes it, calling `before_commit`
  as `send` does. A channel with `prepare` whose `settle_in_doubt` is ``unconfirmed`` gets its
  deliveries grouped: several prepared, marked *sending* in one commit, then sent
  (engine.runtime.dispatcher).
- `close` ends what a batch opened (an SMTP connection is reused for a whole dispatcher batch).
- `settle_in_doubt` is what `recover()` marks actions caught in *sending* with after a crash:
  `unconfirmed` where the provider cannot be asked (SMTP), `pending` where sending again is
  harmless (a file outbox written once, an idempotent webhook).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Channel", "Delivery", "DeliveryError", "PreparedDelivery", "channel_of_kind"]

# Action kind → channel name (caps, consent and send rates are per channel).
_KIND_CHANNELS = {
    "send_email": "email",
    "send_sms": "sms",
    "send_push": "push",
    "webhook": "webhook",
}


def channel_of_kind(kind: str) -> str | None:
    """The channel an action kind delivers through, or None for database effects."""
    return _KIND_CHANNELS.get(kind)


class DeliveryError(Exception):
    """A delivery attempt failed; `retryable` says whether trying again may help."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the provider asked us to wait, if it said


@dataclass(frozen=True)
class Delivery:
    """One action to deliver, with the customer's context at the time it falls due."""

    action_id: int
    idempotency_key: str  # unique per action: providers that take one get it
    customer_id: str
    trigger_id: str
    event_id: str
    variant: str | None
    params: Mapping[str, Any]
    profile: Mapping[str, Any]
    event: Mapping[str, Any]
    scores: Mapping[str, Any]
    marketing: bool
    # Marks the action `sending`, storing the reference given (a Message-ID, …): call it at the
    # point of no return.
    before_commit: Callable[[str | None], None]
    tracking: bool = True  # the trigger's `tracking:` (issue 14): open pixel and tracked links


class PreparedDelivery(Protocol):
    """A delivery built and ready to go (`Channel.prepare`, optional)."""

    @property
    def reference(self) -> str | None:
        """What the *sending* mark stores (a Message-ID, …)."""
        ...

    def send(self) -> str:
        """Deliver it, calling the delivery's `before_commit` at the point of no return."""
        ...


class Channel(Protocol):
    """A way to reach a customer (see the module docstring)."""

    name: str  # "email", "sms", "push", "webhook"
    consent_field: str | None  # profile flag marketing sends need (`consent_email`, …); None: none
    settle_in_doubt: str  # status for actions found `sending` after a crash

    def send(self, delivery: Delivery) -> str:
        """Deliver once; return the result to store. Raises DeliveryError (or TemplateError…)."""
        ...

    def close(self) -> None:
        """Release what the last batch held open (connections)."""
        ...
