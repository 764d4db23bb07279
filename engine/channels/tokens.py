"""Signed tokens of the public links nudge puts in messages: unsubscribe, open pixel, click.

The public routes (`engine.runtime.public_routes`) need no API key, so everything they act on —
which customer, which action, which URL a click may redirect to — comes from a token the engine
signed when it rendered the message. A token is two base64url parts joined by a dot::

    <payload>.<mac>

- payload: the compact JSON of an object (`{"c": customer, "a": action id, …}`, keys chosen by
  the caller), base64url without padding;
- mac: the first 16 bytes (128 bits) of HMAC-SHA256 over ``nudge/<purpose>/v1.`` + payload,
  keyed with the signing secret, base64url without padding (22 characters).

The purpose (``u`` unsubscribe, ``o`` open, ``c`` click) is inside the MAC and not in the token,
so a click token cannot be replayed as an unsubscribe token: it is simply a wrong signature. The
characters are all URL-safe (``A-Z a-z 0-9 - _ .``), so a token goes into a path as it is and a
List-Unsubscribe header stays plain ASCII. An unsubscribe token for a 20-character customer id
and an action id is ~70 characters.

Rotation: tokens are always signed with the current secret (``NUDGE_SIGNING_SECRET``) and
verified against it and then each older secret still accepted (``NUDGE_SIGNING_SECRETS_OLD``,
comma-separated), each in constant time (`hmac.compare_digest`). Mail sent before a rotation
keeps working until the old secret is dropped from the list.

Pure functions, no I/O: `sign` and `verify`; `verify` raises `TokenError` whose `status` is 400
for a token that is not one (cut off, not base64url, not JSON) and 403 for a well-formed token
that no accepted secret signed (tampered, foreign, another purpose).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_TOKEN_CHARS", "TokenError", "sign", "verify"]

MAX_TOKEN_CHARS = 4096  # a click token holds its URL; links longer than ~3 kB are not tracked
_MAC_BYTES = 16
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenError(ValueError):
    """A token that cannot be used: `status` 400 (malformed) or 403 (not signed by us)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(purpose: str, payload: Mapping[str, Any], secret: str) -> str:
    """The token for `payload` (a JSON-able mapping) and `purpose`, signed with `secret`."""
    _check_purpose(purpose)
    if not secret:
        raise ValueError("cannot sign a token without a secret")
    text = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    body = _b64(text.encode("utf-8"))
    return f"{body}.{_b64(_mac(purpose, body, secret))}"


def verify(purpose: str, token: str, secrets: Iterable[str]) -> dict[str, Any]:
    """The payload of `token` if one of `secrets` (current first, then older ones) signed it for
    `purpose`; else TokenError (400 malformed, 403 wrong signature)."""
    _check_purpose(purpose)
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise TokenError(400, "the link's token is too long or not text")
    body, dot, mac_text = token.partition(".")
    if not dot or not body or not mac_text or not _ALPHABET.issuperset(body + mac_text):
        raise TokenError(400, "the link's token is malformed (expected <payload>.<signature>)")
    try:
        mac = _unb64(mac_text)
        raw = _unb64(body)
    except (binascii.Error, ValueError):
        raise TokenError(400, "the link's token is not valid base64url") from None
    if len(mac) != _MAC_BYTES:
        raise TokenError(400, "the link's token has a signature of the wrong length")
    accepted = False
    for secret in secrets:
        if secret and hmac.compare_digest(_mac(purpose, body, secret), mac):
            accepted = True  # no early exit: every secret is tried, the time does not tell which
    if not accepted:
        raise TokenError(403, "the link's signature is not valid (tampered or foreign)")
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise TokenError(400, "the link's token does not hold a JSON object") from None
    if not isinstance(payload, dict):
        raise TokenError(400, "the link's token does not hold a JSON object")
    return payload


def _mac(purpose: str, body: str, secret: str) -> bytes:
    message = f"nudge/{purpose}/v1.{body}".encode("ascii")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()[:_MAC_BYTES]


def _check_purpose(purpose: str) -> None:
    if not purpose or not purpose.isascii() or not purpose.isalnum():
        raise ValueError(f"a token purpose is a short ASCII word, got {purpose!r}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if len(text) % 4 == 1:
        raise ValueError("impossible base64 length")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
