"""Email providers calling back: ``POST /webhooks/{provider}`` for sendgrid, postmark, ses, mailgun.

Each request is verified as its provider documents it (engine.channels.feedback.<provider>): a
missing or wrong signature or password is 401/403 and nothing is stored; a provider that is not
configured answers 503 (it cannot tell the provider from anyone). A verified body that is not
what the provider sends is kept in the dead letters with the reason and answered 400 — never a
500; a body that cannot even be checked (Mailgun's or SNS's JSON, which carries the signature,
unreadable) is answered 400 and not stored, so that nobody can fill the dead letters unsigned. Every event becomes a normalised event in the inbox — ``email_delivered``,
``email_bounced`` (``bounce`` hard/soft, ``code``, ``reason``), ``email_complained``,
``email_opened``, ``email_clicked``, ``unsubscribed`` — whose ``properties.message_id`` is the
action's idempotency key (as the funnel reads it): the action is found by the Message-ID header
the dispatcher recorded (engine.store.suppressions.record_message) or the ``X-Nudge-Message``
action id where the provider echoes it, else the customers by the recipient's address; an event
matching neither is a dead letter. The event id is ``{provider}:{the provider's event id}``, so a
provider's retry is a duplicate; the suppression list changes once per provider event
(``provider_events``).

The suppression list (engine.store.suppressions): a hard bounce → ``bounced``; a complaint →
``complained`` and a ``subscription_changed`` event withdrawing ``consent_email``; soft bounces
in a row (NUDGE_SOFT_BOUNCE_LIMIT) suspend the address (NUDGE_SOFT_BOUNCE_SUSPEND_HOURS); a
delivery ends the run. After a complaint the deliverability guard
(engine.runtime.deliverability) looks at the day's complaint rate.

SES through SNS: the signing certificate is fetched over https only from an allowed host and
cached per URL; a ``SubscriptionConfirmation`` is confirmed by GETting its SubscribeURL (allowed
hosts only), so subscribing the endpoint in SNS needs no manual step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.channels.feedback import FeedbackError, FeedbackEvent, mailgun, postmark, sendgrid, ses
from engine.runtime.deliverability import GuardSettings, check_guard
from engine.runtime.erasure import address_hash
from engine.runtime.inbox import accept_events
from engine.store import EngineDB
from engine.store.dead_letters import add_dead_letters
from engine.store.suppressions import (
    MessageAction,
    action_by_id,
    action_for_message,
    actions_by_ids,
    actions_for_messages,
    add_suppression,
    customers_with_email,
    mark_provider_event,
    mark_provider_events,
    record_deliveries,
    record_delivery,
    record_soft_bounce,
)

__all__ = ["PROVIDERS", "WebhookConfig", "email_webhook_router", "normalised_events"]

log = logging.getLogger(__name__)

PROVIDERS = ("sendgrid", "postmark", "ses", "mailgun")
MAX_BODY = 1024 * 1024  # SendGrid batches up to ~1,000 events a POST (well under this)
EVENT_TYPES = {"delivered": "email_delivered", "bounced": "email_bounced",
               "complained": "email_complained", "opened": "email_opened",
               "clicked": "email_clicked", "unsubscribed": "unsubscribed"}  # fmt: skip
CERT_CACHE = 64


@dataclass(frozen=True)
class WebhookConfig:
    """The providers' secrets and the feedback rules (`from_settings` reads nudge.settings)."""

    salt: bytes
    sendgrid_public_key: str | None = None
    postmark_user: str | None = None
    postmark_password: str | None = None
    mailgun_signing_key: str | None = None
    sns_cert_hosts: tuple[str, ...] = ()
    sns_topic_arns: tuple[str, ...] = ()
    soft_bounce_limit: int = 3
    soft_bounce_suspend: float = 72 * 3600.0
    guard: GuardSettings = field(default_factory=GuardSettings)

    @classmethod
    def from_settings(cls) -> WebhookConfig:
        """The configuration of the NUDGE_* variables."""
        from nudge.settings import Settings

        s = Settings()

        def secret(value: Any) -> str | None:
            return None if value is None else str(value.get_secret_value())

        def names(text: str) -> tuple[str, ...]:
            return tuple(h.strip() for h in text.split(",") if h.strip())

        return cls(
            salt=s.erasure_key(), sendgrid_public_key=s.sendgrid_webhook_public_key,
            postmark_user=s.postmark_webhook_user,
            postmark_password=secret(s.postmark_webhook_password),
            mailgun_signing_key=secret(s.mailgun_webhook_signing_key),
            sns_cert_hosts=names(s.sns_cert_hosts), sns_topic_arns=names(s.sns_topic_arns),
            soft_bounce_limit=s.soft_bounce_limit,
            soft_bounce_suspend=s.soft_bounce_suspend_hours * 3600.0,
            guard=GuardSettings(s.complaint_warn_rate, s.complaint_pause_rate,
                                s.guard_min_delivered),
        )  # fmt: skip


def email_webhook_router(
    store: EngineDB,
    config: WebhookConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    tls: ssl.SSLContext | None = None,
) -> APIRouter:
    """The providers' webhook routes over `store` (`config` default: from the settings; `tls`
    the context SNS certificates and SubscribeURLs are fetched with, default the system's)."""
    cfg = config or WebhookConfig.from_settings()
    router = APIRouter()
    certificates: dict[str, bytes] = {}
    sendgrid_key = None
    sendgrid_problem = None
    if cfg.sendgrid_public_key:
        try:
            sendgrid_key = sendgrid.load_public_key(cfg.sendgrid_public_key)
        except ValueError as exc:
            sendgrid_problem = str(exc)
            log.error("%s", exc)

    def fetch(url: str) -> bytes:
        with httpx.Client(verify=tls if tls is not None else True, timeout=10.0,
                          follow_redirects=False, trust_env=False) as client:  # fmt: skip
            response = client.get(url)
            response.raise_for_status()
            return response.content[:MAX_BODY]

    def certificate(url: str) -> bytes:
        pem = certificates.get(url)
        if pem is None:
            pem = fetch(url)
            if len(certificates) >= CERT_CACHE:
                certificates.pop(next(iter(certificates)))
            certificates[url] = pem
        return pem

    @router.post("/webhooks/{provider}", include_in_schema=True)
    async def provider_webhook(provider: str, request: Request) -> Response:
        if provider not in PROVIDERS:
            return _json(404, {"detail": f"unknown provider {provider[:40]!r}: expected one of "
                                         f"{', '.join(PROVIDERS)}"})  # fmt: skip
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _json(413, {"detail": f"body over {MAX_BODY} bytes"})
        now = clock()
        try:
            if provider == "sendgrid":
                if sendgrid_key is None:
                    return _unconfigured(
                        sendgrid_problem or "set NUDGE_SENDGRID_WEBHOOK_PUBLIC_KEY"
                    )
                if not sendgrid.verify(sendgrid_key, raw,
                                       request.headers.get(sendgrid.SIGNATURE_HEADER),
                                       request.headers.get(sendgrid.TIMESTAMP_HEADER)):  # fmt: skip
                    return _json(403, {"detail": f"missing or wrong {sendgrid.SIGNATURE_HEADER}"})
                events = sendgrid.parse(raw)
            elif provider == "postmark":
                if not cfg.postmark_user or not cfg.postmark_password:
                    return _unconfigured(
                        "set NUDGE_POSTMARK_WEBHOOK_USER and NUDGE_POSTMARK_WEBHOOK_PASSWORD"
                    )
                if not postmark.verify(cfg.postmark_user, cfg.postmark_password,
                                       request.headers.get("authorization")):  # fmt: skip
                    return _json(401, {"detail": "missing or wrong basic auth"},
                                 {"WWW-Authenticate": 'Basic realm="nudge webhooks"'})  # fmt: skip
                events = postmark.parse(raw)
            elif provider == "mailgun":
                if not cfg.mailgun_signing_key:
                    return _unconfigured("set NUDGE_MAILGUN_WEBHOOK_SIGNING_KEY")
                try:
                    data = mailgun.load(raw)
                except FeedbackError as exc:  # no signature to check: not stored
                    return _json(400, {"detail": str(exc)})
                if not mailgun.verify(cfg.mailgun_signing_key, data):
                    return _json(403, {"detail": "missing or wrong signature"})
                events = mailgun.parse(data)
            else:
                try:
                    message = ses.parse_envelope(raw)
                except FeedbackError as exc:  # no signature to check: not stored
                    return _json(400, {"detail": str(exc)})
                refused = await run_in_threadpool(_check_sns, cfg, message, certificate)
                if refused is not None:
                    return refused
                if message["Type"] == "SubscriptionConfirmation":
                    return await run_in_threadpool(_confirm, cfg, message, fetch)
                if message["Type"] == "UnsubscribeConfirmation":
                    return _json(200, {"received": 0})
                events = ses.parse_message(message["MessageId"], message["Message"])
        except FeedbackError as exc:
            await run_in_threadpool(_dead_letter, store, provider, raw, str(exc), now)
            return _json(400, {"detail": str(exc)})
        try:
            counts = await run_in_threadpool(_apply, store, cfg, events, now)
        except sa.exc.OperationalError:
            log.exception("%s webhook: the engine database is unavailable", provider)
            return _json(503, {"detail": "the engine database is unavailable; retry later"})
        return _json(200, counts)

    return router


def _check_sns(
    cfg: WebhookConfig, message: dict[str, str], certificate: Callable[[str], bytes]
) -> Response | None:
    """None when the SNS message is authentic (else the response refusing it)."""
    url = message["SigningCertURL"]
    if not ses.host_allowed(url, cfg.sns_cert_hosts):
        return _json(403, {"detail": "SigningCertURL: not an https URL of an SNS host"})
    if cfg.sns_topic_arns and message["TopicArn"] not in cfg.sns_topic_arns:
        return _json(403, {"detail": "TopicArn: not one of NUDGE_SNS_TOPIC_ARNS"})
    try:
        pem = certificate(url)
    except (httpx.HTTPError, OSError) as exc:  # SNS retries: nothing is lost by waiting
        log.warning("SNS signing certificate %s could not be fetched: %s", url, exc)
        return _json(503, {"detail": "the SNS signing certificate could not be fetched"})
    if not ses.verify(message, pem):
        return _json(403, {"detail": "wrong SNS Signature"})
    return None


def _confirm(
    cfg: WebhookConfig, message: dict[str, str], fetch: Callable[[str], bytes]
) -> Response:
    url = message["SubscribeURL"]
    if not ses.host_allowed(url, cfg.sns_cert_hosts):
        return _json(403, {"detail": "SubscribeURL: not an https URL of an SNS host"})
    try:
        fetch(url)
    except (httpx.HTTPError, OSError) as exc:
        log.warning("SNS subscription %s could not be confirmed: %s", message["TopicArn"], exc)
        return _json(502, {"detail": "the SubscribeURL could not be fetched"})
    log.info("SNS subscription to %s confirmed", message["TopicArn"])
    return _json(200, {"confirmed": message["TopicArn"]})


def normalised_events(
    event: FeedbackEvent, action: MessageAction | None, customers: list[str]
) -> list[dict[str, Any]]:
    """The inbox events of one provider event for each of `customers` (the action's customer
    when the message is known): the feedback event, and for a complaint the consent change."""
    properties = {
        "message_id": action.idempotency_key if action else None,
        "trigger": action.trigger_id if action else None,
        "action_id": action.action_id if action else None,
        "provider": event.provider, "provider_event_id": event.event_id,
        "email_message_id": event.message_id, "email": event.recipient,
        "bounce": event.bounce, "code": event.code, "reason": event.reason,
        "url": event.url, "user_agent": event.user_agent,
    }  # fmt: skip
    if event.kind == "unsubscribed":
        properties["list"] = "marketing"
    props = {k: v for k, v in properties.items() if v is not None}
    base_id = f"{event.provider}:{event.event_id}"
    out = []
    for customer in customers:
        suffix = "" if len(customers) == 1 else ":" + _short_hash(customer)
        common = {"customer_id": customer, "timestamp": event.occurred_at.isoformat(),
                  "source": event.provider}  # fmt: skip
        out.append({**common, "event_id": _bounded(base_id + suffix),
                    "event_type": EVENT_TYPES[event.kind], "properties": props})  # fmt: skip
        if event.kind == "complained":
            out.append({**common, "event_id": _bounded(f"{base_id}:consent{suffix}"),
                        "event_type": "subscription_changed",
                        "properties": {"consent_email": False, "channel": "email",
                                       "reason": "complained", "provider": event.provider}})  # fmt: skip
    return out


def _apply(
    store: EngineDB, cfg: WebhookConfig, events: list[FeedbackEvent], now: float
) -> dict[str, int]:
    """The events of one request: as a batch (a few queries for all of them), or — when the
    batch fails for anything but the database being away — one by one, each failure a dead
    letter (what the batch had stored already is a duplicate then, counted once)."""
    try:
        return _apply_batch(store, cfg, events, now)
    except sa.exc.OperationalError:
        raise
    except Exception:
        log.warning("a batch of %d provider events failed; one by one", len(events), exc_info=True)
    counts = {"received": len(events), "accepted": 0, "duplicates": 0, "unmatched": 0}
    complaints = False
    for event in events:
        try:
            complaints = _apply_one(store, cfg, event, now, counts) or complaints
        except sa.exc.OperationalError:
            raise  # the database is away: the provider hears 503 and retries
        except Exception as exc:  # whatever an event holds, it is kept, never a 500
            log.exception("%s event %s could not be applied", event.provider, event.event_id)
            letter = {"event_id": None, "source": f"webhook:{event.provider}",
                      "payload": json.dumps(_describe(event), default=str)[:4000],
                      "reason": f"could not be applied: {type(exc).__name__}: {exc}"[:1000]}  # fmt: skip
            store.write(add_dead_letters, [letter], now)
    if complaints:
        check_guard(store, now, cfg.guard)
    return counts


def _apply_batch(
    store: EngineDB, cfg: WebhookConfig, events: list[FeedbackEvent], now: float
) -> dict[str, int]:
    counts = {"received": len(events), "accepted": 0, "duplicates": 0, "unmatched": 0}
    by_id = store.read(actions_by_ids, [e.action_id for e in events if e.action_id is not None])
    by_message = store.read(actions_for_messages, [e.message_id for e in events if e.message_id])
    rows: list[dict[str, Any]] = []
    letters = []
    for event in events:
        action = by_id.get(event.action_id) if event.action_id is not None else None
        if action is None and event.message_id:
            action = by_message.get(event.message_id)
        customers = [action.customer_id] if action else (
            store.read(customers_with_email, event.recipient) if event.recipient else []
        )  # fmt: skip
        found = normalised_events(event, action, customers)
        rows.extend(found)
        if not found:
            counts["unmatched"] += 1
            letters.append(_unmatched(event))
    source = f"webhook:{events[0].provider}" if events else "webhook"
    results = accept_events(store, rows, source=source, now=now) if rows else []
    for result in results:
        if result.status == "accepted":
            counts["accepted"] += 1
        elif result.status == "duplicate":
            counts["duplicates"] += 1
    store.write(add_dead_letters, letters, now)
    if store.write(_update_lists, cfg, events, now):
        check_guard(store, now, cfg.guard)
    return counts


def _update_lists(conn: Any, cfg: WebhookConfig, events: list[FeedbackEvent], now: float) -> bool:
    """The list changes of a batch in one transaction, in a few statements: the provider event
    ids marked together, the deliveries (most events) applied together; an address that also
    has a bounce or complaint in the batch has its events applied one by one, in order."""
    applicable = [e for e in events if e.recipient]
    fresh = mark_provider_events(conn, [_event_key(e) for e in applicable], now)
    new = [e for e in applicable if _event_key(e)[:200] in fresh]
    hashes = {id(e): address_hash(str(e.recipient), cfg.salt) for e in new}
    eventful = {hashes[id(e)] for e in new if e.kind != "delivered"}
    record_deliveries(conn, [hashes[id(e)] for e in new if e.kind == "delivered"
                             and hashes[id(e)] not in eventful], now)  # fmt: skip
    complaints = False
    for event in new:
        if hashes[id(event)] in eventful:
            _change_list(conn, cfg, event, hashes[id(event)], now)
            complaints = complaints or event.kind == "complained"
    return complaints


def _event_key(event: FeedbackEvent) -> str:
    return f"{event.provider}:{event.event_id}"


def _unmatched(event: FeedbackEvent) -> dict[str, Any]:
    return {"event_id": f"{event.provider}:{event.event_id}"[:128],
            "source": f"webhook:{event.provider}",
            "payload": json.dumps(_describe(event))[:4000],
            "reason": f"{event.kind} event matches no sent message "
                      f"(Message-ID {event.message_id or 'none'}) and no customer's email"}  # fmt: skip


def _apply_one(store: EngineDB, cfg: WebhookConfig, event: FeedbackEvent, now: float,
               counts: dict[str, int]) -> bool:  # fmt: skip
    """One provider event into the inbox and the suppression list; True for a new complaint."""
    action = None
    if event.action_id is not None:
        action = store.read(action_by_id, event.action_id)
    if action is None and event.message_id:
        action = store.read(action_for_message, event.message_id)
    customers = [action.customer_id] if action else (
        store.read(customers_with_email, event.recipient) if event.recipient else []
    )  # fmt: skip
    rows = normalised_events(event, action, customers)
    if rows:
        for result in accept_events(store, rows, source=f"webhook:{event.provider}", now=now):
            if result.status == "accepted":
                counts["accepted"] += 1
            elif result.status == "duplicate":
                counts["duplicates"] += 1
    else:
        counts["unmatched"] += 1
        store.write(add_dead_letters, [_unmatched(event)], now)
    return bool(event.recipient and store.write(_update_list, cfg, event, now)
                and event.kind == "complained")  # fmt: skip


def _update_list(conn: Any, cfg: WebhookConfig, event: FeedbackEvent, now: float) -> bool:
    """The provider event's change to the suppression list, once per provider event id."""
    if not mark_provider_event(conn, _event_key(event), now):
        return False
    _change_list(conn, cfg, event, address_hash(str(event.recipient), cfg.salt), now)
    return True


def _change_list(conn: Any, cfg: WebhookConfig, event: FeedbackEvent, key: str, now: float) -> None:
    address = str(event.recipient)
    detail = " ".join(x for x in (event.provider, event.code, event.reason) if x)[:300]
    if event.kind == "bounced" and event.bounce == "hard":
        add_suppression(conn, key, address, "bounced", now, detail=detail)
    elif event.kind == "bounced":
        record_soft_bounce(conn, key, address, now, threshold=cfg.soft_bounce_limit,
                           suspend_seconds=cfg.soft_bounce_suspend, detail=detail)  # fmt: skip
    elif event.kind == "complained":
        add_suppression(conn, key, address, "complained", now, detail=detail)
    elif event.kind == "delivered":
        record_delivery(conn, key, now)


def _dead_letter(store: EngineDB, provider: str, raw: bytes, reason: str, now: float) -> None:
    letter = {"event_id": None, "source": f"webhook:{provider}",
              "payload": raw.decode("utf-8", "replace").replace("\x00", "\\0"),
              "reason": f"{provider} webhook: {reason}"[:1000]}  # fmt: skip
    store.write(add_dead_letters, [letter], now)


def _describe(event: FeedbackEvent) -> dict[str, Any]:
    return {"provider": event.provider, "event_id": event.event_id, "kind": event.kind,
            "occurred_at": event.occurred_at.astimezone(UTC).isoformat(),
            "recipient": event.recipient, "message_id": event.message_id,
            "bounce": event.bounce, "code": event.code, "reason": event.reason}  # fmt: skip


def _bounded(event_id: str) -> str:
    return event_id if len(event_id) <= 128 else event_id[:95] + ":" + _short_hash(event_id)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _unconfigured(what: str) -> Response:
    return _json(503, {"detail": f"this provider is not configured: {what}"})


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)
