"""SendGrid's Event Webhook: a JSON list of events, signed with ECDSA P-256.

SendGrid signs ``timestamp + raw body`` (the ``X-Twilio-Email-Event-Webhook-Timestamp`` header,
then the body bytes as posted) with the account's Signed Event Webhook key, SHA-256, and sends
the base64 DER signature in ``X-Twilio-Email-Event-Webhook-Signature``; the verification key
is shown in the SendGrid console as base64 of its DER (SubjectPublicKeyInfo) — the scheme of
SendGrid's own ``sendgrid.helpers.eventwebhook.EventWebhook`` (the tests verify with it).

Events: ``delivered``; ``bounce`` (``type`` ``bounce`` = hard, ``blocked`` = soft: SendGrid's
split of permanent and temporary refusals); ``spamreport``; ``open``; ``click``;
``unsubscribe`` and ``group_unsubscribe``. ``processed``, ``deferred`` (SendGrid retries),
``dropped`` (never sent) and ``group_resubscribe`` are skipped. Each event's ``sg_event_id`` is
its id; ``smtp-id`` the Message-ID; a custom argument ``nudge_action`` (if set) the action.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

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

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "load_public_key", "parse", "verify"]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_KINDS = {"delivered": "delivered", "bounce": "bounced", "spamreport": "complained",
          "open": "opened", "click": "clicked", "unsubscribe": "unsubscribed",
          "group_unsubscribe": "unsubscribed"}  # fmt: skip


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER; a PEM is taken too); ValueError
    naming NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY when it is not an EC public key."""
    body = "".join(
        line for line in text.strip().splitlines() if not line.startswith("-----")
    ).strip()
    try:
        key = load_der_public_key(base64.b64decode(body, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(
            f"NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY: expected the base64 key SendGrid shows ({exc})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY: expected an ECDSA public key")
    return key


def verify(
    key: ec.EllipticCurvePublicKey, body: bytes, signature: str | None, timestamp: str | None
) -> bool:
    """Whether `signature` (base64 DER ECDSA) signs `timestamp` + `body` with `key`."""
    if not signature or not timestamp or len(signature) > 512 or len(timestamp) > 64:
        return False
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def parse(body: bytes) -> list[FeedbackEvent]:
    """The events of a (verified) Event Webhook body."""
    data = json_body(body, "a JSON list of events")
    if not isinstance(data, list):
        raise FeedbackError(f"body: expected a JSON list of events (got {type(data).__name__})")
    events = []
    for i, item in enumerate(data):
        try:
            event = _event(item)
        except FeedbackError as exc:
            raise FeedbackError(f"[{i}].{exc}") from None
        if event is not None:
            events.append(event)
    return events


def _event(item: Any) -> FeedbackEvent | None:
    if not isinstance(item, dict):
        raise FeedbackError("expected an event object")
    kind = _KINDS.get(field(item, "event", str))
    if kind is None:
        return None
    bounce = None
    if kind == "bounced":
        bounce = "soft" if item.get("type") == "blocked" else "hard"
    return FeedbackEvent(
        provider="sendgrid", event_id=field(item, "sg_event_id", str)[:120], kind=kind,
        occurred_at=as_time(field(item, "timestamp", (int, float)), "timestamp"),
        recipient=field(item, "email", str), message_id=message_id_of(item.get("smtp-id")),
        action_id=header_action(item.get("nudge_action")), bounce=bounce,
        code=text_of(item.get("status")), reason=text_of(item.get("reason")),
        url=text_of(item.get("url")), user_agent=text_of(item.get("useragent")),
    )  # fmt: skip
