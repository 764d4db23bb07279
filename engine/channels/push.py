"""Web push: VAPID-signed, aes128gcm-encrypted notifications to the profile's subscriptions.

A customer's browsers subscribe through the Push API; each subscription is stored on the profile
as ``push_subscriptions``: a list of ``{endpoint, keys: {p256dh, auth}}`` (what
``PushSubscription.toJSON()`` gives; `engine.events.push_subscriptions_problem` checks the
shape when a profile arrives and again before sending). The action ``send_push: {template: NAME}`` renders
``<name>.push.j2`` (`engine.channels.channel_templates`: the email sandbox) — ``title:`` and an
optional ``url:`` line, a line ``---``, then the body — into the JSON payload
``{"title", "body", "url"}`` a service worker shows. Building JSON from a parsed template rather
than rendering JSON text keeps a quote in a first name from breaking it.

pywebpush encrypts the payload for each subscription (RFC 8291, aes128gcm) and py_vapid signs
the VAPID JWT (RFC 8292: ``aud`` the endpoint's origin, ``sub`` `NUDGE_VAPID_SUBJECT`, ``exp`` in
12 hours); the POST goes through `engine.channels.provider_http` — the webhooks' address guard,
pinned — because the endpoint is a URL the browser chose, not one we trust. pywebpush's own
sender (requests, unpinned) is not used.

Outcomes per subscription: 201 (or any 2xx) delivered; 404/410 the subscription is gone — it is
removed from the profile through `remove_subscription` (a profile change in the store) and not
counted as a failure of the action; 429/5xx/no connection not delivered, may pass; another 4xx
refused. The action is sent when any subscription took it (the others are listed in the result);
it is retried only when none did and one may pass later — never re-sent to a browser that
already has it. A lost answer (timeout after the request went out) cannot be asked about: with
nothing delivered the action is ``unconfirmed`` (`PushUnknownOutcome`), like SMTP. A ``Topic``
header derived from the idempotency key lets a push service replace, not duplicate, an
undelivered copy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02
from pywebpush import WebPusher

from engine.channels.base import Delivery, DeliveryError
from engine.channels.channel_templates import render_channel_template
from engine.channels.email import TemplateError
from engine.channels.provider_http import NotSent, request
from engine.channels.ratelimit import retry_after_seconds
from engine.channels.webhooks import BlockedTarget, WebhookError, WebhookSender
from engine.events import push_subscriptions_problem

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "PushChannel",
    "PushSettings",
    "PushUnknownOutcome",
    "load_vapid_key",
    "render_push",
    "subscriptions_without",
]

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 3993  # 4096 bytes of a push message less aes128gcm's header and tag (RFC 8291)
_VAPID_LIFETIME = 12 * 3600


class PushUnknownOutcome(Exception):
    """A request went out, its answer was lost, and no subscription is known to have the message.

    Not a DeliveryError: after the point of no return the dispatcher marks it ``unconfirmed``."""


@dataclass(frozen=True)
class PushSettings:
    """VAPID identity and where push templates are."""

    vapid_private_key: (
        str  # PEM, or the base64url raw / DER key `web-push generate-vapid-keys` prints
    )
    vapid_subject: str  # mailto:… or https://… (RFC 8292)
    templates_dir: Path
    ttl: int = 24 * 3600  # seconds a push service keeps an undelivered message
    timeout: float = 10.0


def load_vapid_key(text: str) -> Vapid02:
    """The VAPID signing key from PEM or base64url (raw 32 bytes or DER); ValueError otherwise."""
    try:
        if "-----BEGIN" in text:
            return Vapid02.from_pem(text.strip().encode())
        return Vapid02.from_string(text.strip())
    except Exception as exc:  # cryptography and py_vapid raise a variety of types
        raise ValueError(
            f"not a VAPID private key (PEM or base64url): {type(exc).__name__}"
        ) from None


def render_push(templates_dir: Path, delivery: Delivery) -> dict[str, str]:
    """The payload ``{title, body, url}`` of the delivery's push (TemplateError)."""
    template = str(delivery.params["template"])
    text = render_channel_template(templates_dir, template, "push", delivery)
    head, sep, body = text.partition("\n---\n")
    fields: dict[str, str] = {}
    for line in head.splitlines() if sep else []:
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() in {"title", "url"}:
            fields[key.strip().lower()] = " ".join(value.split())
    if not sep or not fields.get("title"):
        raise TemplateError(
            f"template {template!r}: expected 'title: ...' (and optionally 'url: ...'), "
            "a line '---', then the body"
        )
    url = fields.get("url")
    if url and urlsplit(url).scheme not in {"https", "http"}:
        raise TemplateError(
            f"template {template!r}: url: expected an http(s) URL (got {url[:60]!r})"
        )
    payload = {"title": fields["title"], "body": body.strip()}
    if url:
        payload["url"] = url
    return payload


@dataclass
class _Outcome:
    delivered: list[str]
    gone: list[str]
    retry: list[str]
    refused: list[str]
    unknown: list[str]
    retry_after: float | None = None


class PushChannel:
    """The `send_push` action to every subscription on the profile (see the module docstring)."""

    name = "push"
    consent_field: str | None = "consent_push"
    settle_in_doubt = "unconfirmed"  # a push service cannot be asked whether it took a message

    def __init__(
        self,
        settings: PushSettings,
        guard: WebhookSender,
        *,
        remove_subscription: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.remove_subscription = remove_subscription
        self.clock = clock
        self.vapid = load_vapid_key(settings.vapid_private_key)

    def send(self, delivery: Delivery) -> str:
        """Encrypt, sign and post to each subscription; DeliveryError / PushUnknownOutcome."""
        subscriptions = delivery.profile.get("push_subscriptions")
        if not subscriptions:
            raise TemplateError("the customer has no push subscriptions in the profile")
        problem = push_subscriptions_problem(subscriptions)
        if problem:
            raise TemplateError(f"the customer's push_subscriptions: {problem}")
        payload = json.dumps(render_push(self.settings.templates_dir, delivery),
                             ensure_ascii=False, separators=(",", ":")).encode()  # fmt: skip
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise TemplateError(
                f"template {delivery.params['template']!r}: the push payload has {len(payload)} "
                f"bytes (a push message carries at most {MAX_PAYLOAD_BYTES})"
            )
        topic = base64.urlsafe_b64encode(
            hashlib.sha256(delivery.idempotency_key.encode()).digest()[:24]
        ).decode()  # 32 base64url characters, as RFC 8030 allows for Topic
        outcome = _Outcome([], [], [], [], [])
        delivery.before_commit(f"push to {len(subscriptions)} subscription(s)")
        for subscription in subscriptions:
            self._post(subscription, payload, topic, outcome)
        for endpoint in outcome.gone:
            self._remove(delivery.customer_id, endpoint)
        return _summary(outcome, len(subscriptions))

    def close(self) -> None:
        """Nothing is kept open between batches."""

    def _post(self, subscription: Mapping[str, Any], payload: bytes, topic: str,
              outcome: _Outcome) -> None:  # fmt: skip
        endpoint = str(subscription["endpoint"])
        label = _label(endpoint)
        body = WebPusher(dict(subscription)).encode(payload, "aes128gcm")["body"]
        parts = urlsplit(endpoint)
        claims = {"aud": f"{parts.scheme}://{parts.netloc}", "sub": self.settings.vapid_subject,
                  "exp": int(self.clock()) + _VAPID_LIFETIME}  # fmt: skip
        headers = {**self.vapid.sign(claims), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "TTL": str(self.settings.ttl),
                   "Urgency": "normal", "Topic": topic}  # fmt: skip
        try:
            response, raw = request(self.guard, "POST", endpoint, content=body, headers=headers,
                                    timeout=self.settings.timeout)  # fmt: skip
        except (NotSent, WebhookError) as exc:
            outcome.retry.append(f"{label}: {exc}")
            return
        except BlockedTarget as exc:
            outcome.refused.append(f"{label}: {exc}")
            return
        except httpx.HTTPError as exc:
            outcome.unknown.append(f"{label}: {type(exc).__name__}: {exc}")
            return
        status = response.status_code
        if 200 <= status < 300:
            outcome.delivered.append(label)
        elif status in (404, 410):
            outcome.gone.append(endpoint)
        elif status == 429 or status >= 500:
            outcome.retry.append(f"{label}: HTTP {status}")
            wait = retry_after_seconds(response.headers.get("retry-after"), self.clock())
            if wait is not None:
                outcome.retry_after = max(outcome.retry_after or 0.0, min(wait, 86_400.0))
        else:
            text = " ".join(raw[:200].decode("utf-8", "replace").split())
            outcome.refused.append(f"{label}: HTTP {status}" + (f" {text}" if text else ""))

    def _remove(self, customer_id: str, endpoint: str) -> None:
        if self.remove_subscription is None:
            return
        try:
            self.remove_subscription(customer_id, endpoint)
        except Exception:  # the next send meets the same 404/410 and tries again
            log.exception("could not remove a gone push subscription of %s", customer_id)


def _summary(outcome: _Outcome, total: int) -> str:
    gone = f", {len(outcome.gone)} gone (removed)" if outcome.gone else ""
    others = outcome.retry + outcome.refused + outcome.unknown
    if outcome.delivered:
        text = f"push delivered to {len(outcome.delivered)}/{total}{gone}"
        return text + (f"; not delivered: {'; '.join(others)}" if others else "")
    if outcome.unknown:
        raise PushUnknownOutcome(f"push: no answer from {'; '.join(outcome.unknown)}{gone}")
    if outcome.retry:
        raise DeliveryError(f"push not delivered: {'; '.join(outcome.retry + outcome.refused)}{gone}",
                            retryable=True, retry_after=outcome.retry_after)  # fmt: skip
    if outcome.refused:
        raise DeliveryError(f"push refused: {'; '.join(outcome.refused)}{gone}", retryable=False)
    raise DeliveryError(f"push: all {total} subscription(s) gone (removed)", retryable=False)


def _label(endpoint: str) -> str:
    """An endpoint as results name it: its host and a hash (the path is a bearer secret)."""
    parts = urlsplit(endpoint)
    return f"{parts.hostname}#{hashlib.sha256(endpoint.encode()).hexdigest()[:8]}"


def subscriptions_without(subscriptions: Sequence[Any], endpoint: str) -> list[Any]:
    """`subscriptions` less those to `endpoint` (for removing a gone one)."""
    return [
        s for s in subscriptions if not (isinstance(s, Mapping) and s.get("endpoint") == endpoint)
    ]
