"""Segment-compatible ingestion: ``/v1/batch``, ``/v1/track``, ``/identify``, ``/page``, ``/screen``,
``/alias``, ``/group`` — so that code already instrumented with Segment's or RudderStack's
libraries sends to nudge by changing only the host and the write key.

The write key is `NUDGE_API_KEY`, sent as the HTTP basic-auth user the way Segment's libraries do
(``Authorization: Basic base64(key:)``), or as the body's ``writeKey``, or in ``X-API-Key``.
A message becomes a nudge event (then through `engine.runtime.inbox.accept_events`, so the same
contract, limits, idempotency and dead letters apply):

- ``messageId`` → ``event_id`` (a message without one gets a hash of its content, so that a
  library's retry is still a duplicate); ``userId`` → ``customer_id``, or else the customer an
  ``anonymousId`` is linked to (`engine.store.identity`), or else the anonymousId itself;
- ``timestamp`` (or ``originalTimestamp``) corrected for the client's clock skew the way Segment
  does it: ``timestamp − (sentAt − receivedAt)``; without a timestamp, the time it was received.
  Segment's timestamps are UTC: one without an offset is read as UTC;
- ``track`` names of Segment's e-commerce, email and lifecycle specs map to the standard types
  (`SPEC_EVENT_TYPES`: ``Order Completed`` → purchase_completed, with ``total`` or else
  ``revenue`` as the amount); other names become snake_case types (``Plan Upgraded`` →
  plan_upgraded); ``page`` → page_view, ``screen`` → screen_view, ``group`` → group;
- ``identify`` traits (top-level, or ``context.traits`` where RudderStack's SDKs put them) map
  onto the profile (`TRAIT_FIELDS`: ``firstName`` → first_name, …; the
  rest kept as attributes) through the same contract as ``PUT /v1/customers``, and are stored as
  an ``identify`` event too (its history, idempotency); ``identify`` with both ids and ``alias``
  link the anonymous id to the customer;
- ``context`` (timezone, ip, userAgent, locale) is kept in the event's properties as
  ``segment_context``; its timezone and locale fill a profile that has none.

Answers: 200 ``{"success": true, ...counts, "results": [...]}`` when at least one message was
accepted (or was a duplicate); 400 with the reasons when none could be; invalid messages of a
batch are dead-lettered (source ``segment``) with the reason, naming Segment's field, while the
others are accepted. A body that is not JSON, not gzip it claims to be, or too large is 400/413;
input never causes a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.events import CustomerProfile, describe_validation_error
from engine.limits import find_json_problem, storable_text
from engine.runtime.api import MAX_BODY_BYTES, BadBody, _parse, _read_body
from engine.runtime.erasure import address_hash
from engine.runtime.identity import MERGE_KEY
from engine.runtime.inbox import ItemResult, _as_text, accept_events
from engine.store import EngineDB
from engine.store.customers import load_profiles, update_profile
from engine.store.dead_letters import add_dead_letters
from engine.store.erasure import suppressed_hashes
from engine.store.identity import link, resolve
from engine.store.inbox import event_times
from nudge.security import key_matches

__all__ = [
    "MAX_MESSAGES",
    "SPEC_EVENT_TYPES",
    "TRAIT_FIELDS",
    "SegmentBatch",
    "SegmentContext",
    "SegmentMessage",
    "accept_messages",
    "event_type_for",
    "segment_router",
]

MAX_MESSAGES = 5000  # per /v1/batch: Segment's own limit is 500 KB, ~2,000 small messages
SOURCE = "segment"

MessageType = Literal["track", "identify", "page", "screen", "alias", "group"]

# Segment's spec names (e-commerce v2, email, B2B SaaS lifecycle) → nudge's event types.
SPEC_EVENT_TYPES: dict[str, str] = {
    "products searched": "product_search",
    "product list viewed": "product_list_view",
    "product list filtered": "product_list_view",
    "product clicked": "product_click",
    "product viewed": "product_view",
    "product added": "cart_add",
    "product removed": "cart_remove",
    "cart viewed": "cart_view",
    "checkout started": "checkout_started",
    "checkout step viewed": "checkout_step_viewed",
    "checkout step completed": "checkout_step_completed",
    "payment info entered": "payment_info_entered",
    "order completed": "purchase_completed",
    "order updated": "order_updated",
    "order refunded": "refund",
    "order cancelled": "order_cancelled",
    "cart abandoned": "cart_abandoned",
    "signed up": "signup",
    "account created": "signup",
    "email delivered": "email_delivered",
    "email opened": "email_opened",
    "email link clicked": "email_clicked",
    "email bounced": "email_bounced",
    "email marked as spam": "unsubscribed",
    "unsubscribed": "unsubscribed",
    "application opened": "session_start",
}
# Where an order's money value is, in order of preference (it becomes properties.amount).
ORDER_AMOUNT_KEYS = ("total", "revenue", "value")
AMOUNT_TYPES = frozenset({"purchase_completed", "refund"})

# Segment's identify traits → the profile contract's fields (anything else stays an attribute).
TRAIT_FIELDS: dict[str, str] = {
    "email": "email",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "phone": "phone",
    "timezone": "timezone",
    "country": "country",
    "language": "language",
    "createdAt": "signup_at",
    "created_at": "signup_at",
    "consentEmail": "consent_email",
    "consent_email": "consent_email",
    "consentSms": "consent_sms",
    "consent_sms": "consent_sms",
    "consentPush": "consent_push",
    "consent_push": "consent_push",
}
_CONTEXT_KEYS = ("timezone", "ip", "userAgent", "locale")
# Ids reach database keys (PostgreSQL refuses NUL), logs and headers: plain text only (checked in
# pydantic's core: a Python validator per field cost as much as the rest of the model).
_PLAIN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
_PLAIN_MESSAGE = f"String should match pattern '{_PLAIN}'"
_PLAIN_SAID = "must be plain text (no control characters)"
_NOT_SNAKE = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


class SegmentContext(BaseModel):
    """The parts of Segment's ``context`` nudge reads; the rest is accepted and ignored."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    timezone: str | None = Field(default=None, max_length=64)
    ip: str | None = Field(default=None, max_length=64)
    userAgent: str | None = Field(default=None, max_length=1024)
    locale: str | None = Field(default=None, max_length=35)


class SegmentMessage(BaseModel):
    """One Segment message (the Spec's common fields and those of each call)."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    type: MessageType
    messageId: str | None = Field(default=None, min_length=1, max_length=128, pattern=_PLAIN)
    userId: str | None = Field(default=None, min_length=1, max_length=128, pattern=_PLAIN)
    anonymousId: str | None = Field(default=None, min_length=1, max_length=128, pattern=_PLAIN)
    previousId: str | None = Field(default=None, min_length=1, max_length=128, pattern=_PLAIN)
    groupId: str | None = Field(default=None, min_length=1, max_length=128, pattern=_PLAIN)
    event: str | None = Field(default=None, min_length=1, max_length=200, pattern=_PLAIN)
    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=200)
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: SegmentContext | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ids_of_the_call(self) -> SegmentMessage:
        if self.type == "alias":
            missing = [n for n in ("previousId", "userId") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"{missing[0]}: an alias needs previousId and userId")
        elif self.userId is None and self.anonymousId is None:
            raise ValueError("userId: expected userId or anonymousId (at least one)")
        if self.type == "track" and self.event is None:
            raise ValueError("event: a track call needs the event's name")
        if self.type == "group" and self.groupId is None:
            raise ValueError("groupId: a group call needs it")
        return self


class SegmentBatch(BaseModel):
    """The body of ``/v1/batch``: the messages and what applies to all of them."""

    model_config = ConfigDict(extra="allow")

    batch: list[Any] = Field(min_length=1, max_length=MAX_MESSAGES)
    sentAt: datetime | None = None
    writeKey: str | None = None
    context: dict[str, Any] | None = None


@dataclass
class _Pending:
    """A message on its way in: its nudge event and what it says about identity and profile."""

    index: int
    event: dict[str, Any]
    message: SegmentMessage
    profile: dict[str, Any] = field(default_factory=dict)
    link: tuple[str, str, str] | None = None  # (anonymous id, customer, via)
    notes: list[str] = field(default_factory=list)


def event_type_for(message: SegmentMessage) -> str:
    """The nudge event type of a message (see the module docstring)."""
    if message.type == "track":
        name = message.event or ""
        mapped = SPEC_EVENT_TYPES.get(" ".join(name.lower().split()))
        return mapped or _snake(name)
    return {"page": "page_view", "screen": "screen_view"}.get(message.type, message.type)


def _snake(name: str) -> str:
    text = _NOT_SNAKE.sub("_", _CAMEL.sub("_", name.strip()).lower()).strip("_")
    if text and not text[0].isalpha():
        text = f"event_{text}"
    return text[:64]


def accept_messages(
    store: EngineDB,
    items: Sequence[Any],
    *,
    received_at: float,
    sent_at: datetime | None = None,
    shared_context: Mapping[str, Any] | None = None,
    max_future: timedelta | float | str | None = None,
    salt: bytes | None = None,
) -> list[ItemResult]:
    """Accept Segment messages: valid ones into the inbox (profiles and links applied first),
    invalid ones dead-lettered with the reason; one result per item, in order.

    With `salt` (the erasure salt), an identify's email or phone that belongs to an erased
    customer (on the suppression list) is not stored, and the item's result says so.
    """
    results: dict[int, ItemResult] = {}
    dead: list[dict[str, Any]] = []
    pending: list[_Pending] = []
    for i, item in enumerate(items):
        try:
            pending.append(_convert(i, item, received_at, sent_at, shared_context))
        except _Invalid as exc:
            results[i] = ItemResult(i, "invalid", _message_id(item), exc.lines)
            dead.append({"event_id": _message_id(item), "payload": _as_text(item),
                         "reason": "; ".join(exc.lines), "source": SOURCE})  # fmt: skip
    if dead:
        store.write(add_dead_letters, dead, received_at)
    _resolve_anonymous(store, pending)
    if salt is not None:
        _drop_erased_addresses(store, pending, salt)
    _apply_identity_and_profiles(store, pending, received_at)
    accepted = accept_events(store, [p.event for p in pending], source=SOURCE,
                             naive_timezone="UTC", now=received_at, max_future=max_future)  # fmt: skip
    for p, result in zip(pending, accepted, strict=True):
        errors = [_segment_names(line) for line in result.errors] + p.notes
        results[p.index] = ItemResult(p.index, result.status, result.event_id, errors)
    return [results[i] for i in range(len(items))]


def _validation_lines(exc: ValidationError, item: Any) -> list[str]:
    """Readable lines for a refused message; a structure too deep to print is named instead."""
    try:
        lines = [line.replace("(event): Value error, ", "", 1).replace(_PLAIN_MESSAGE, _PLAIN_SAID)
                 for line in describe_validation_error(exc)]  # fmt: skip
    except (RecursionError, ValueError):
        problem = find_json_problem(item)
        lines = [problem.describe() if problem else "(message): cannot be read as a message"]
    return [storable_text(line, max_chars=2000) for line in lines]


class _Invalid(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def _convert(
    index: int,
    item: Any,
    received_at: float,
    batch_sent_at: datetime | None,
    shared_context: Mapping[str, Any] | None,
) -> _Pending:
    if not isinstance(item, dict):
        raise _Invalid([f"(message): expected a JSON object, not {type(item).__name__}"])
    data = dict(item)
    if shared_context and isinstance(data.get("context", {}), dict):
        data["context"] = {**shared_context, **data.get("context", {})}
    try:
        message = SegmentMessage.model_validate(data)
    except ValidationError as exc:
        raise _Invalid(_validation_lines(exc, item)) from None
    # Everything a message carries into storage is checked on the way (ids and the event name
    # by the events contract, properties and traits by its JSON limits, traits by the profile
    # contract); what is not kept (integrations, extra fields) needs no check.
    event_type = event_type_for(message)
    if not event_type:
        raise _Invalid([f"event: {message.event!r} has no letter or digit to name a type by"])
    properties = dict(message.properties or {})
    if message.type in ("page", "screen"):
        properties.update({k: v for k, v in (("name", message.name),
                                              ("category", message.category)) if v})  # fmt: skip
    if event_type in AMOUNT_TYPES and "amount" not in properties:
        amount = next(
            (properties[k] for k in ORDER_AMOUNT_KEYS if _number(properties.get(k))), None
        )
        if amount is not None:
            properties["amount"] = amount
    context = message.context
    seen = {k: getattr(context, k) for k in _CONTEXT_KEYS if context and getattr(context, k)}
    if seen and "segment_context" not in properties:
        properties["segment_context"] = seen
    pending = _Pending(index, {}, message)
    customer = message.userId or message.anonymousId or ""
    if message.type == "identify":
        pending.profile = _profile_from_traits(message)
        properties = {**properties, "traits": _traits(message)}
        if message.userId and message.anonymousId:
            pending.link = (message.anonymousId, message.userId, "identify")
    elif message.type == "alias":
        assert message.previousId and message.userId  # the model's validator
        properties = {**properties, "previous_id": message.previousId}
        pending.link = (message.previousId, message.userId, "alias")
    elif message.type == "group":
        properties = {**properties, "group_id": message.groupId,
                      "traits": _traits(message)}  # fmt: skip
    pending.event = {
        "event_id": message.messageId or _content_id(item),
        "customer_id": customer,
        "event_type": event_type,
        "timestamp": _corrected_time(message, received_at, batch_sent_at),
        "properties": properties,
        "source": SOURCE,
    }
    return pending


def _corrected_time(
    message: SegmentMessage, received_at: float, batch_sent_at: datetime | None
) -> datetime:
    """Segment's rule: timestamp − (sentAt − receivedAt); the received time when there is none."""
    stamp = message.timestamp or message.originalTimestamp
    if stamp is None:
        moment = received_at
    else:
        moment = _utc(stamp).timestamp()
        sent = message.sentAt or batch_sent_at
        if sent is not None:
            moment -= _utc(sent).timestamp() - received_at
    try:
        return datetime.fromtimestamp(moment, UTC)
    except (OverflowError, OSError, ValueError):
        raise _Invalid(
            [f"timestamp: {stamp!s:.40} is outside the years 1-9999 once corrected"]
        ) from None


def _traits(message: SegmentMessage) -> dict[str, Any]:
    """The message's traits: top-level as Segment sends them, else ``context.traits`` where
    RudderStack's SDKs put an identify's traits."""
    if message.traits is not None:
        return dict(message.traits)
    nested = (message.context.model_extra or {}).get("traits") if message.context else None
    return dict(nested) if isinstance(nested, dict) else {}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.utcoffset() is None else value


def _profile_from_traits(message: SegmentMessage) -> dict[str, Any]:
    """The identify's profile changes, validated like ``PUT /v1/customers`` (else _Invalid)."""
    traits = _traits(message)
    customer = message.userId or message.anonymousId or ""
    given: dict[str, Any] = {}
    names: dict[str, str] = {}  # profile field → the trait it came from
    for key, value in traits.items():
        if value is None or key in ("customer_id", "id", "userId", "anonymousId"):
            continue
        target = TRAIT_FIELDS.get(key, key)
        given[target], names[target] = value, key
    address = traits.get("address")
    if isinstance(address, dict) and isinstance(address.get("country"), str):
        given.setdefault("country", address["country"])
        names.setdefault("country", "address.country")
    context = message.context
    if context and context.timezone and "timezone" not in given:
        given["timezone"], names["timezone"] = context.timezone, "context.timezone"
    if context and context.locale and "language" not in given:
        given["language"], names["language"] = context.locale, "context.locale"
    if not given:
        return {}
    try:
        profile = CustomerProfile.model_validate({**given, "customer_id": customer})
    except ValidationError as exc:
        lines = []
        for line in _validation_lines(exc, traits):
            head, _, rest = line.partition(":")
            where = names.get(head, head)
            where = where if where.startswith("context.") else f"traits.{where}"
            lines.append(storable_text(f"{where}:{rest}", max_chars=2000))
        raise _Invalid(lines) from None
    return profile.model_dump(mode="json", include=set(given))


def _resolve_anonymous(store: EngineDB, pending: list[_Pending]) -> None:
    """Events sent under an anonymousId only are the linked customer's; a userId is resolved too
    when it is itself a linked id (an alias's previousId used as userId)."""
    ids = {p.event["customer_id"] for p in pending} | {p.link[0] for p in pending if p.link}
    linked = store.read(resolve, ids) if ids else {}
    for p in pending:  # in order: a link made earlier in the batch applies to the later messages
        if p.message.type != "alias" and p.event["customer_id"] in linked:
            p.event["customer_id"] = linked[p.event["customer_id"]]
        if p.link:
            anonymous, customer, via = p.link
            customer = linked.get(customer, customer)
            p.link = (anonymous, customer, via)
            if anonymous != customer:
                linked.setdefault(anonymous, customer)  # rule 1: the first link wins


def _drop_erased_addresses(store: EngineDB, pending: list[_Pending], salt: bytes) -> None:
    """Addresses of erased customers stay erased: not in the profile, not in the stored event."""
    wanted = {(p.index, kind): address_hash(str(p.profile[kind]), salt)
              for p in pending for kind in ("email", "phone") if p.profile.get(kind)}  # fmt: skip
    if not wanted:
        return
    erased = store.read(suppressed_hashes, wanted.values())
    for p in pending:
        for kind in ("email", "phone"):
            if wanted.get((p.index, kind)) in erased:
                del p.profile[kind]
                traits = p.event["properties"].get("traits") or {}
                for key in [k for k in traits if TRAIT_FIELDS.get(k, k) == kind]:
                    del traits[key]
                p.notes.append(f"traits.{kind}: belongs to an erased customer; not stored")


def _apply_identity_and_profiles(store: EngineDB, pending: list[_Pending], now: float) -> None:
    """Links and identify traits of messages not seen before, before their events are stored.

    Applying them first and storing the event after means a crash in between leaves the message
    unacknowledged: the library sends it again, and the same traits and link apply again (both
    are idempotent), while a message already in the inbox is not applied twice.
    """
    relevant = [p for p in pending if p.profile or p.link]
    if not relevant:
        return
    seen = store.read(event_times, [p.event["event_id"] for p in relevant])
    fresh = [p for p in relevant if p.event["event_id"] not in seen]
    if not fresh:
        return
    with store.begin() as conn:
        for p in fresh:
            if p.link:
                anonymous, customer, via = p.link
                outcome = link(conn, anonymous, customer, via=via,
                               message_id=p.event["event_id"], now=now)  # fmt: skip
                if outcome == "conflict":
                    p.notes.append(
                        f"{'anonymousId' if via == 'identify' else 'previousId'}: already linked "
                        "to another customer; the first link wins (not merged)"
                    )
                elif outcome == "linked":
                    p.event["properties"][MERGE_KEY] = anonymous
            if p.profile:
                customer = p.event["customer_id"]
                current = load_profiles(conn, [customer]).get(customer, {})
                changes = dict(p.profile)
                for key in ("timezone", "language"):  # from the context: only fill a gap
                    if key in changes and key in current and _from_context(p, key):
                        del changes[key]
                update_profile(conn, customer, changes, now)


def _from_context(p: _Pending, key: str) -> bool:
    traits = _traits(p.message)
    return key not in traits and not any(TRAIT_FIELDS.get(t) == key for t in traits)


def _segment_names(line: str) -> str:
    """A contract error named by Segment's field (event_id: → messageId:, …)."""
    for ours, theirs in (("event_id", "messageId"), ("customer_id", "userId/anonymousId"),
                         ("event_type", "event"), ("timestamp", "timestamp")):  # fmt: skip
        if line.startswith(f"{ours}:"):
            return f"{theirs}:{line[len(ours) + 1 :]}"
    return line


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _message_id(item: Any) -> str | None:
    value = item.get("messageId") if isinstance(item, dict) else None
    return storable_text(value, max_chars=128) if isinstance(value, str) and value else None


def _content_id(item: Mapping[str, Any]) -> str:
    """A stable id for a message without messageId: its content without the send-time fields."""
    content = {k: v for k, v in item.items() if k not in ("sentAt", "writeKey", "context")}
    try:
        text = json.dumps(content, sort_keys=True, default=str)
    except (RecursionError, ValueError, TypeError):
        raise _Invalid(["messageId: is required for a message nested this deeply"]) from None
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"segment-{digest[:40]}"


# -- HTTP ------------------------------------------------------------------------------------


def segment_router(
    store: EngineDB,
    api_key: str | None,
    *,
    max_future: timedelta | float | str | None = None,
    clock: Callable[[], float] = time.time,
    salt: bytes | None = None,
) -> APIRouter:
    """The Segment-compatible routes over `store`, with `api_key` as the write key; `salt` the
    erasure salt (erased customers' addresses are not stored again: see `accept_messages`)."""
    router = APIRouter(tags=["segment"])
    batches = threading.Lock()

    def one_at_a_time(*args: Any, **kwargs: Any) -> list[ItemResult]:
        with batches:
            return accept_messages(*args, **kwargs)

    def refuse(reason: str, raw: bytes, code: int = 400) -> JSONResponse:
        text = raw[:65_536].decode("utf-8", "replace")
        letter = {"event_id": None, "payload": storable_text(text), "source": SOURCE,
                  "reason": storable_text(reason, max_chars=2000)}  # fmt: skip
        store.write(add_dead_letters, [letter], time.time())
        return _error(code, reason)

    async def read(request: Request) -> tuple[bytes, Any] | JSONResponse:
        """The body as JSON, checked against the write key (or the response refusing it)."""
        if not api_key:
            return _error(503, "no write key is configured (set NUDGE_API_KEY)")
        try:
            raw = await _read_body(request)
        except BadBody as exc:
            return _error(exc.code, exc.reason)
        presented = _presented_key(request)
        if presented is not None and not key_matches(presented, api_key):
            return _error(401, "wrong write key")
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            try:
                raw = _gunzip(raw, MAX_BODY_BYTES)
            except _Invalid as exc:
                return _error(400, exc.lines[0]) if presented else _error(401, _NO_KEY)
        elif encoding not in ("", "identity"):
            return _error(415, f"Content-Encoding: {encoding[:40]!r} is not supported (use gzip)")
        try:
            body = _parse(raw)
        except BadBody as exc:
            return refuse(exc.reason, raw) if presented else _error(401, _NO_KEY)
        if presented is None:
            body_key = body.get("writeKey") if isinstance(body, dict) else None
            if not isinstance(body_key, str) or not key_matches(body_key, api_key):
                return _error(401, _NO_KEY)
        return raw, body

    @router.post("/v1/batch", summary="Segment's batch call")
    async def batch(request: Request) -> JSONResponse:
        read_ = await read(request)
        if isinstance(read_, JSONResponse):
            return read_
        raw, body = read_
        try:
            parsed = SegmentBatch.model_validate(body)
        except ValidationError as exc:
            return refuse("; ".join(describe_validation_error(exc))[:2000], raw)
        # In a worker thread: the event loop keeps reading the other clients' bodies meanwhile.
        # One batch at a time: 8 batches at once in 8 threads fought over the GIL and the
        # database's write lock (measured: 3,700 → 4,700 events/s, p99 3.7 s → 1.1 s).
        results = await run_in_threadpool(
            one_at_a_time, store, parsed.batch, received_at=clock(), sent_at=parsed.sentAt,
            shared_context=parsed.context, max_future=max_future, salt=salt,
        )  # fmt: skip
        return _answer(results)

    def single(kind: MessageType) -> Callable[[Request], Any]:
        async def route(request: Request) -> JSONResponse:
            read_ = await read(request)
            if isinstance(read_, JSONResponse):
                return read_
            _, body = read_
            if isinstance(body, dict):
                body = {**body, "type": kind}
                body.pop("writeKey", None)
            results = accept_messages(
                store, [body], received_at=clock(), max_future=max_future, salt=salt
            )
            return _answer(results)

        route.__name__ = f"segment_{kind}"
        return route

    for kind in ("track", "identify", "page", "screen", "alias", "group"):
        router.add_api_route(f"/v1/{kind}", single(kind), methods=["POST"],
                             summary=f"Segment's {kind} call")  # fmt: skip
    return router


_NO_KEY = "missing or wrong write key (HTTP basic auth user, X-API-Key, or the body's writeKey)"


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            user, _, _ = (
                base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return user
    return request.headers.get("x-api-key")


def _gunzip(raw: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise _Invalid([f"(body): Content-Encoding says gzip but it is not: {exc}"]) from None
    if len(out) > limit:
        raise _Invalid([f"(body): larger than {limit // 1024 // 1024} MiB once decompressed"])
    return out


def _answer(results: list[ItemResult]) -> JSONResponse:
    counts = {
        "accepted": sum(r.status == "accepted" for r in results),
        "duplicates": sum(r.status == "duplicate" for r in results),
        "invalid": sum(r.status == "invalid" for r in results),
    }
    payload = {**counts, "results": [r.__dict__ for r in results]}
    if counts["invalid"] == len(results):
        reasons = "; ".join(f"[{r.index}] {'; '.join(r.errors)}" for r in results)
        return JSONResponse({"success": False, "code": "invalid_request",
                             "message": reasons[:2000], **payload}, status_code=400)  # fmt: skip
    return JSONResponse({"success": True, **payload}, status_code=200)


def _error(code: int, message: str) -> JSONResponse:
    names = {400: "invalid_request", 401: "unauthorized", 413: "too_large", 415: "unsupported",
             503: "not_configured"}  # fmt: skip
    headers = {"WWW-Authenticate": 'Basic realm="nudge"'} if code == 401 else None
    return JSONResponse({"success": False, "code": names.get(code, "error"), "message": message,
                         "detail": message}, status_code=code, headers=headers)  # fmt: skip
