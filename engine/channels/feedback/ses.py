"""Amazon SES events through Amazon SNS: the SNS envelope's signature, then SES's JSON inside.

SNS signs each message (``Signature``, base64) with the private key of the X.509 certificate at
``SigningCertURL``: RSA PKCS#1 v1.5 over SHA1 (``SignatureVersion`` 1) or SHA256 (2) of the
canonical string — for each documented field present, in this order, its name, a newline, its
value, a newline: Notification ``Message, MessageId, Subject (if present), Timestamp, TopicArn,
Type``; SubscriptionConfirmation and UnsubscribeConfirmation ``Message, MessageId, SubscribeURL,
Timestamp, Token, TopicArn, Type`` (AWS, "Verifying the signatures of Amazon SNS messages").
The certificate is taken only over https from a host ``sns.<region>.amazonaws.com`` (or
``…amazonaws.com.cn``) or one NUDGE_SNS_CERT_HOSTS names; the SubscribeURL of a confirmation
likewise (engine.runtime.email_webhooks fetches them; this module decides).

SES's JSON (event publishing's ``eventType`` or notifications' ``notificationType``): ``Bounce``
(``bounceType`` Permanent = hard, Transient = soft, Undetermined = soft; one event per
``bouncedRecipients`` entry, with its ``status`` and ``diagnosticCode``), ``Complaint``,
``Delivery``, ``Open``, ``Click``; the Message-ID header is ``mail.commonHeaders.messageId``
and ``mail.headers`` may hold ``X-Nudge-Message``. The event id is the SNS MessageId (and the
recipient's index when one message names several).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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

__all__ = [
    "NOTIFICATION_FIELDS",
    "SUBSCRIPTION_FIELDS",
    "host_allowed",
    "parse_envelope",
    "parse_message",
    "signing_string",
    "verify",
]

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                       "Type")  # fmt: skip
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


def parse_envelope(body: bytes) -> dict[str, str]:
    """The SNS message (FeedbackError naming the field when it is not one)."""
    data = json_body(body, "an SNS message in JSON")
    if not isinstance(data, dict):
        raise FeedbackError("body: expected an SNS message (a JSON object)")
    kind = field(data, "Type", str)
    if kind not in TYPES:
        raise FeedbackError(f"Type: expected one of {', '.join(TYPES)} (got {kind!r:.40})")
    names = NOTIFICATION_FIELDS if kind == "Notification" else SUBSCRIPTION_FIELDS
    for name in (*names, "Signature", "SigningCertURL", "SignatureVersion"):
        field(data, name, str, required=name != "Subject")
    if data["SignatureVersion"] not in ("1", "2"):
        raise FeedbackError(
            f"SignatureVersion: expected 1 or 2 (got {data['SignatureVersion']!r:.10})"
        )
    return {k: v for k, v in data.items() if isinstance(v, str)}


def signing_string(message: dict[str, str]) -> bytes:
    """The canonical string SNS signs for `message`."""
    names = NOTIFICATION_FIELDS if message["Type"] == "Notification" else SUBSCRIPTION_FIELDS
    return "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode("utf-8")


def host_allowed(url: str, extra_hosts: Iterable[str] = ()) -> bool:
    """Whether `url` is https on an SNS host (or one of `extra_hosts`, ``host`` or
    ``host:port``)."""
    try:
        parts = urlsplit(url)
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if parts.scheme != "https" or not host or parts.username or parts.password:
        return False
    extra = {h.strip().lower() for h in extra_hosts if h.strip()}
    if host in extra or (port is not None and f"{host}:{port}" in extra):
        return True
    return port in (None, 443) and bool(_SNS_HOST.match(host))


def verify(message: dict[str, str], certificate_pem: bytes) -> bool:
    """Whether `message`'s Signature is the certificate's key's signature of its canonical
    string (SHA1 for SignatureVersion 1, SHA256 for 2)."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = certificate.public_key()
        signature = base64.b64decode(message["Signature"], validate=True)
    except (ValueError, binascii.Error, KeyError):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    algorithm = hashes.SHA1() if message.get("SignatureVersion") == "1" else hashes.SHA256()
    try:
        key.verify(signature, signing_string(message), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_message(sns_message_id: str, text: str) -> list[FeedbackEvent]:
    """The SES events of a Notification's ``Message``."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FeedbackError(f"Message: expected SES's event JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FeedbackError("Message: expected SES's event JSON (an object)")
    kind = data.get("eventType") or data.get("notificationType")
    if not isinstance(kind, str):
        raise FeedbackError("Message.eventType: required (or notificationType)")
    mail = field(data, "mail", dict)
    message_id = message_id_of(field(mail, "commonHeaders.messageId", str, required=False))
    action_id = None
    headers = mail.get("headers")
    if isinstance(headers, list):
        for header in headers:
            if isinstance(header, dict):
                name = str(header.get("name", "")).lower()
                if name == "x-nudge-message":
                    action_id = header_action(header.get("value"))
                elif name == "message-id" and message_id is None:
                    message_id = message_id_of(header.get("value"))
    base: dict[str, Any] = {"provider": "ses", "message_id": message_id, "action_id": action_id}
    destination = [d for d in mail.get("destination") or [] if isinstance(d, str)]
    try:
        return _events(kind, data, base, sns_message_id, destination)
    except FeedbackError as exc:
        raise FeedbackError(f"Message.{exc}") from None


def _events(kind: str, data: dict[str, Any], base: dict[str, Any], sns_id: str,
            destination: list[str]) -> list[FeedbackEvent]:  # fmt: skip
    def ids(n: int) -> list[str]:
        return [sns_id if n == 1 else f"{sns_id}:{i}" for i in range(n)]

    if kind == "Bounce":
        bounce = field(data, "bounce", dict)
        hard = field(bounce, "bounceType", str, where="bounce.") == "Permanent"
        at = as_time(field(bounce, "timestamp", str, where="bounce."), "bounce.timestamp")
        recipients = field(bounce, "bouncedRecipients", list, where="bounce.")
        return [
            FeedbackEvent(**base, event_id=eid, kind="bounced", occurred_at=at,
                          recipient=field(r, "emailAddress", str, where=f"bounce.bouncedRecipients[{n}]."),
                          bounce="hard" if hard else "soft",
                          code=text_of(r.get("status")) or text_of(bounce.get("bounceSubType")),
                          reason=text_of(r.get("diagnosticCode")) or text_of(bounce.get("bounceSubType")))
            for n, (eid, r) in enumerate(zip(ids(len(recipients)), recipients, strict=True))
            if isinstance(r, dict)
        ]  # fmt: skip
    if kind == "Complaint":
        complaint = field(data, "complaint", dict)
        at = as_time(field(complaint, "timestamp", str, where="complaint."), "complaint.timestamp")
        recipients = field(complaint, "complainedRecipients", list, where="complaint.")
        return [
            FeedbackEvent(**base, event_id=eid, kind="complained", occurred_at=at,
                          recipient=field(r, "emailAddress", str,
                                          where=f"complaint.complainedRecipients[{n}]."),
                          reason=text_of(complaint.get("complaintFeedbackType")))
            for n, (eid, r) in enumerate(zip(ids(len(recipients)), recipients, strict=True))
            if isinstance(r, dict)
        ]  # fmt: skip
    if kind == "Delivery":
        delivery = field(data, "delivery", dict)
        at = as_time(field(delivery, "timestamp", str, where="delivery."), "delivery.timestamp")
        recipients = [r for r in field(delivery, "recipients", list, where="delivery.")
                      if isinstance(r, str)]  # fmt: skip
        return [
            FeedbackEvent(**base, event_id=eid, kind="delivered", occurred_at=at, recipient=r,
                          reason=text_of(delivery.get("smtpResponse")))
            for eid, r in zip(ids(len(recipients)), recipients, strict=True)
        ]  # fmt: skip
    if kind in ("Open", "Click"):
        detail = field(data, kind.lower(), dict)
        at = as_time(field(detail, "timestamp", str, where=f"{kind.lower()}."),
                     f"{kind.lower()}.timestamp")  # fmt: skip
        return [FeedbackEvent(**base, event_id=sns_id, kind="opened" if kind == "Open" else "clicked",
                              occurred_at=at, recipient=destination[0] if destination else None,
                              url=text_of(detail.get("link"), 2000),
                              user_agent=text_of(detail.get("userAgent")))]  # fmt: skip
    return []
