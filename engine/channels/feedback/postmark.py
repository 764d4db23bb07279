"""Postmark's webhooks: one JSON object per event, authenticated with HTTP basic auth.

Postmark has no request signature: its documented way to secure a webhook is basic auth in the
webhook URL (``https://user:password@…/webhooks/postmark``), checked here against
NUDGE_POSTMARK_WEBHOOK_USER / NUDGE_POSTMARK_WEBHOOK_PASSWORD in constant time.

``RecordType``: ``Delivery``, ``Bounce`` (``Type`` HardBounce, BadEmailAddress,
ManuallyDeactivated = hard; SoftBounce, Transient, DnsError, Blocked, … = soft; AutoResponder,
Subscribe, Unsubscribe, OpenRelayTest, ChallengeVerification and the like are not bounces and are
skipped), ``SpamComplaint``, ``Open``, ``Click``, ``SubscriptionChange`` (``SuppressSending``
true with ``SuppressionReason`` ManualSuppression = unsubscribed; Postmark's own suppressions
after a HardBounce or SpamComplaint arrive as those webhooks, and reactivations are skipped).
Postmark's ``MessageID`` is its own id, not the Message-ID header, so the action is found by
``Metadata.nudge_action`` (sent as the ``X-PM-Metadata-nudge_action`` header) or a ``Headers``
entry of Message-ID / X-Nudge-Message; else by the recipient's address.
"""

from __future__ import annotations

import base64
import binascii
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

__all__ = ["HARD", "SOFT", "parse", "verify"]

HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
SOFT = frozenset({"SoftBounce", "Transient", "DnsError", "Blocked", "SMTPApiError",
                  "InboundError", "MailFrontier", "ContentRelated", "Unknown"})  # fmt: skip


def verify(user: str, password: str, authorization: str | None) -> bool:
    """Whether an ``Authorization: Basic …`` header carries `user` and `password`."""
    if not authorization or len(authorization) > 1024:
        return False
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{user}:{password}".encode()
    # Digests of equal length: compare_digest leaks nothing about the lengths either.
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def parse(body: bytes) -> list[FeedbackEvent]:
    """The event of a Postmark webhook body (none when it is one nudge does not use)."""
    item = json_body(body, "a JSON object")
    if not isinstance(item, dict):
        raise FeedbackError(f"body: expected a JSON object (got {type(item).__name__})")
    record = field(item, "RecordType", str)
    message_id, action_id = _message_of(item)
    base: dict[str, Any] = {"provider": "postmark", "message_id": message_id,
                            "action_id": action_id}  # fmt: skip
    postmark_id = text_of(item.get("MessageID"), 120) or ""
    if record == "Delivery":
        return [FeedbackEvent(**base, event_id=f"delivery:{postmark_id}:{_recipient(item)}",
                              kind="delivered", recipient=_recipient(item),
                              occurred_at=as_time(field(item, "DeliveredAt", str), "DeliveredAt"),
                              reason=text_of(item.get("Details")))]  # fmt: skip
    if record in ("Bounce", "SpamComplaint"):
        kind_name = field(item, "Type", str)
        bounce_id = field(item, "ID", (int, str))
        at = as_time(field(item, "BouncedAt", str), "BouncedAt")
        email = field(item, "Email", str)
        if record == "SpamComplaint" or kind_name == "SpamComplaint":
            return [FeedbackEvent(**base, event_id=f"bounce:{bounce_id}", kind="complained",
                                  recipient=email, occurred_at=at)]  # fmt: skip
        bounce = "hard" if kind_name in HARD else "soft" if kind_name in SOFT else None
        if bounce is None:
            return []
        return [FeedbackEvent(**base, event_id=f"bounce:{bounce_id}", kind="bounced",
                              recipient=email, occurred_at=at, bounce=bounce,
                              code=text_of(item.get("TypeCode")) or kind_name,
                              reason=text_of(item.get("Description")) or kind_name)]  # fmt: skip
    if record in ("Open", "Click"):
        at_text = field(item, "ReceivedAt", str)
        url = text_of(item.get("OriginalLink"), 2000) if record == "Click" else None
        digest = hashlib.sha256(f"{at_text}\n{url or ''}".encode()).hexdigest()[:16]
        return [FeedbackEvent(**base, event_id=f"{record.lower()}:{postmark_id}:{digest}",
                              kind="opened" if record == "Open" else "clicked",
                              recipient=_recipient(item), occurred_at=as_time(at_text, "ReceivedAt"),
                              url=url, user_agent=text_of(item.get("UserAgent")))]  # fmt: skip
    if record == "SubscriptionChange":
        # Only the recipient's own unsubscribe: a suppression for a HardBounce or SpamComplaint
        # comes with its own Bounce / SpamComplaint webhook, and a reactivation changes nothing.
        if field(item, "SuppressSending", bool) is not True:
            return []
        if item.get("SuppressionReason") not in (None, "ManualSuppression"):
            return []
        at_text = field(item, "ChangedAt", str)
        return [FeedbackEvent(**base, event_id=f"subscription:{postmark_id}:{at_text}",
                              kind="unsubscribed", recipient=_recipient(item),
                              occurred_at=as_time(at_text, "ChangedAt"),
                              reason=text_of(item.get("SuppressionReason")))]  # fmt: skip
    return []


def _recipient(item: dict[str, Any]) -> str:
    return str(field(item, "Recipient", str))


def _message_of(item: dict[str, Any]) -> tuple[str | None, int | None]:
    metadata = item.get("Metadata")
    action = header_action(metadata.get("nudge_action")) if isinstance(metadata, dict) else None
    message = None
    headers = item.get("Headers")
    if isinstance(headers, list):
        for header in headers:
            if not isinstance(header, dict):
                continue
            name = str(header.get("Name", "")).lower()
            if name == "message-id":
                message = message_id_of(header.get("Value"))
            elif name == "x-nudge-message" and action is None:
                action = header_action(header.get("Value"))
    return message, action
