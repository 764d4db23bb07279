"""HTTP to providers (Twilio, push services) through the webhooks' address guard, pinned.

A provider URL is an outbound target like a webhook's: `NUDGE_TWILIO_BASE_URL` and a push
subscription's endpoint (which the customer's browser chose) must not reach a private address
unless it is allow-listed (`NUDGE_WEBHOOK_ALLOW`). `request` asks `WebhookSender.check_target` —
the webhooks' own resolution and address checks, not a copy of them — and then connects to one
of exactly the addresses it approved, as webhooks do (the URL's host replaced by the checked IP,
``Host`` and TLS SNI/certificate name kept as the original host name), so DNS cannot answer
differently between the check and the connection.

Which failures left the request unsent matters to the channels' at-most-once rules:
`NotSent` (a DeliveryError, retryable) is raised only when no connection could be made, so
nothing reached the provider; any other `httpx.HTTPError` escapes, and the caller treats its
outcome as unknown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import httpx

from engine.channels.base import DeliveryError
from engine.channels.webhooks import WebhookSender, _ssl_context

__all__ = ["MAX_RESPONSE_BYTES", "NotSent", "json_object", "request"]

MAX_RESPONSE_BYTES = 1 << 20  # a provider's answer we read; more is cut
_MAX_ADDRESSES = 3


class NotSent(DeliveryError):
    """No connection could be made: the provider never saw the request."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=True)


def request(
    guard: WebhookSender,
    method: str,
    url: str,
    *,
    timeout: float,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> tuple[httpx.Response, bytes]:
    """One request to `url` via an address `guard` approved; the response and its body (read up
    to MAX_RESPONSE_BYTES). Raises BlockedTarget, WebhookError (name does not resolve), NotSent,
    or an httpx.HTTPError whose outcome is unknown."""
    addresses = guard.check_target(url)
    target = httpx.URL(url)
    sent_headers = {"Host": target.netloc.decode("ascii"), **(headers or {})}
    extensions = {"sni_hostname": target.raw_host.decode("ascii")}
    refused: httpx.HTTPError | None = None
    with httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        auth=auth,
        verify=_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
    ) as client:
        for address in addresses[:_MAX_ADDRESSES]:
            try:
                with client.stream(
                    method, target.copy_with(host=str(address)), params=params, data=data,
                    content=content, headers=sent_headers, extensions=extensions,
                ) as response:  # fmt: skip
                    return response, _read(response)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                refused = exc  # nothing was sent: try the next checked address
    raise NotSent(f"{type(refused).__name__}: {refused}")


def _read(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break
    return b"".join(chunks)[:MAX_RESPONSE_BYTES]


def json_object(body: bytes) -> dict[str, Any] | None:
    """`body` as a JSON object, or None when it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
