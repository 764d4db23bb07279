"""Webhooks: signed JSON POSTs that never reach a private address unless it is allow-listed.

Each request carries ``X-Nudge-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
and ``X-Nudge-Idempotency-Key``, so a receiver can verify the sender and drop a redelivery.
Delivery is at-least-once (a retry after a crash or a 5xx repeats the same key); receivers that
honour the key see each effect exactly once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["BlockedTarget", "WebhookError", "WebhookSender", "sign", "verify_signature"]


class BlockedTarget(ValueError):
    """The URL resolves to a private, loopback or link-local address that is not allow-listed."""


class WebhookError(RuntimeError):
    """A delivery attempt failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """Check a signature header (constant-time) and that it is no older than `tolerance` seconds."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


@dataclass(frozen=True)
class WebhookSender:
    """Posts JSON to URLs with signatures; refuses private targets unless allow-listed."""

    secret: str
    allow: tuple[str, ...] = ()  # host names, IPs or CIDR ranges that may be private
    timeout: float = 10.0

    def send(self, url: str, payload: Mapping[str, Any], idempotency_key: str) -> str:
        self.check_target(url)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Nudge-Signature": sign(self.secret, int(time.time()), body),
            "X-Nudge-Idempotency-Key": idempotency_key,
            "User-Agent": "nudge-webhooks/1",
        }
        try:
            response = httpx.post(
                url, content=body, headers=headers, timeout=self.timeout, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise WebhookError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise WebhookError(f"HTTP {response.status_code}", retryable=True)
        if response.status_code >= 400:
            raise WebhookError(
                f"HTTP {response.status_code}: {response.text[:200]}", retryable=False
            )
        return f"HTTP {response.status_code}"

    def check_target(self, url: str) -> None:
        """Raise BlockedTarget unless the URL is http(s) to a public address (or allow-listed)."""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise BlockedTarget(f"{url!r}: only http and https URLs with a host are allowed")
        host = parts.hostname
        if host in self.allow:
            return
        try:
            infos = socket.getaddrinfo(
                host,
                parts.port or (443 if parts.scheme == "https" else 80),
                proto=socket.IPPROTO_TCP,
            )
        except socket.gaierror as exc:
            raise WebhookError(f"cannot resolve {host!r}: {exc}", retryable=True) from None
        for address in {info[4][0] for info in infos}:
            ip = ipaddress.ip_address(address)
            if _is_private(ip) and not _allowed(ip, self.allow):
                raise BlockedTarget(
                    f"{url!r} resolves to {ip}, a private address; allow-list it to send there"
                )


def _is_private(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


def _allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: Iterable[str]) -> bool:
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name entry
    return False
