"""Mailgun's webhooks: JSON ``{"signature": {...}, "event-data": {...}}``, HMAC-SHA256 signed.

Mailgun signs each request: ``signature.signature`` is the hex HMAC-SHA256, keyed with the
account's HTTP webhook signing key (NUDGE_MAILGUN_WEBHOOK_SIGNING_KEY), of
``signature.timestamp`` followed by ``signature.token`` (Mailgun's "Securing webhooks").

``event-data.event``: ``delivered``; ``failed`` (``severity`` permanent = hard bounce, temporary
= soft, with ``delivery-status.code`` and ``.message``/``.description``); ``complained``;
``opened``; ``clicked``; ``unsubscribed``; others (``accepted``, ``stored`` …) are skipped. The
event's id is ``event-data.id``; the Message-ID ``event-data.message.headers.message-id``
(without brackets); ``user-variables.nudge_action`` (``X-Mailgun-Variables``) the action.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from engine.channels.feedback import (
    FeedbackError,
    FeedbackEvent,
    as_time,
    field,
    header_action,
    json_body,
    message_id_of,
    text_of,
)

__all__ = ["parse", "signature_of", "verify"]

_KINDS = {"delivered": "delivered", "failed": "bounced", "complained": "complained",
          "opened": "opened", "clicked": "clicked", "unsubscribed": "unsubscribed"}  # fmt: skip


def signature_of(key: str, timestamp: str, token: str) -> str:
    """Mailgun's signature: hex HMAC-SHA256(key, timestamp + token)."""
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def verify(key: str, data: Any) -> bool:
    """Whether the body's ``signature`` object is Mailgun's with `key`."""
    signature = data.get("signature") if isinstance(data, dict) else None
    if not isinstance(signature, dict):
        return False
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in (timestamp, token, given)):
        return False
    expected = signature_of(key, str(timestamp), str(token))
    return hmac.compare_digest(expected.encode(), str(given).encode("ascii", "replace"))


def load(body: bytes) -> Any:
    """The JSON of a Mailgun body (FeedbackError when it is not JSON)."""
    return json_body(body, "Mailgun's JSON")


def parse(data: Any) -> list[FeedbackEvent]:
    """The event of a (verified) Mailgun body."""
    if not isinstance(data, dict):
        raise FeedbackError("body: expected a JSON object")
    event = field(data, "event-data", dict)
    try:
        return _event(event)
    except FeedbackError as exc:
        raise FeedbackError(f"event-data.{exc}") from None


def _event(event: dict[str, Any]) -> list[FeedbackEvent]:
    kind = _KINDS.get(field(event, "event", str))
    if kind is None:
        return []
    headers = field(event, "message.headers", dict, required=False) or {}
    variables = event.get("user-variables")
    action = header_action(variables.get("nudge_action")) if isinstance(variables, dict) else None
    given = event.get("delivery-status")
    status: dict[str, Any] = given if isinstance(given, dict) else {}
    client = event.get("client-info")
    agent = text_of(client.get("user-agent")) if isinstance(client, dict) else None
    bounce = None
    if kind == "bounced":
        bounce = "hard" if event.get("severity") == "permanent" else "soft"
    return [
        FeedbackEvent(
            provider="mailgun", event_id=field(event, "id", str)[:120], kind=kind,
            occurred_at=as_time(field(event, "timestamp", (int, float)), "timestamp"),
            recipient=field(event, "recipient", str),
            message_id=message_id_of(headers.get("message-id")), action_id=action, bounce=bounce,
            code=text_of(status.get("code")),
            reason=text_of(status.get("description")) or text_of(status.get("message"))
            or text_of(event.get("reason")),
            url=text_of(event.get("url"), 2000),
            user_agent=agent,
        )
    ]  # fmt: skip
