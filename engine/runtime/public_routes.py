"""The routes recipients reach from a message: unsubscribe, preferences, open pixel, clicks.

They need no API key: each carries a token the engine signed when it rendered the message
(`engine.channels.tokens`, built by `engine.channels.links`), and acts only on what the token
names. A token that is not one is 400, one no accepted secret signed (tampered, foreign, another
purpose) is 403, and nothing is recorded or changed.

``/u/<token>`` — unsubscribe and preferences:

- ``POST`` with the body ``List-Unsubscribe=One-Click`` (RFC 8058: what Gmail and Yahoo send
  from their unsubscribe button; URL-encoded or ``multipart/form-data``, which the RFC says a
  sender SHOULD expect) → 200, no redirect, no login: email marketing consent is
  withdrawn *in the same transaction* as the ``unsubscribed`` event enters the inbox, so a
  send that falls due a moment later is already cancelled by the dispatcher (``no_consent``).
- ``GET`` changes nothing (link scanners and previews fetch it): an HTML page of the customer's
  subscriptions — marketing as a whole, and email, SMS and push each — with forms that POST
  back to the same URL: ``choice=save`` with a checkbox per channel, or ``choice=none`` (no
  marketing at all). Those become one ``subscription_changed`` event naming the consent flags,
  again in the transaction that sets them. A change that changes nothing logs nothing.
- A customer without a profile (erased since) gets 200 and nothing is created.

``/unsubscribe?c=<customer>&t=<hmac>`` answers the same way for links in mail sent before the
token links (the deprecated ``NUDGE_UNSUBSCRIBE_URL`` form, checked against every accepted
secret).

``GET /o/<token>`` — the open pixel: a 1×1 transparent GIF, never cached, and an
``email_opened`` event. ``GET|HEAD /c/<token>`` — a click: 302 to the URL inside the token (only
that one: no open redirect) and an ``email_clicked`` event. Both events carry the action
(``action_id``, ``message_id`` = the action's idempotency key — what the funnel, the reports and
experiment metrics match on — ``trigger``) and, when a machine rather than a person fetched the
URL, ``machine: true`` and ``machine_reason`` (`engine.channels.machine_events`); machine events
are kept, never dropped. Each load is its own event (a reload is a second open). The client
address is the connection's: behind a reverse proxy run uvicorn with ``--proxy-headers`` and
``--forwarded-allow-ips`` so that it is the recipient's (Apple's proxies are recognised by it).
"""

from __future__ import annotations

import hmac
import html as html_lib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from engine.channels import machine_events, tokens
from engine.channels.links import legacy_unsubscribe_token
from engine.events import CONSENT_KEYS, validate_event
from engine.runtime.inbox import accept_events, event_row
from engine.store import EngineDB
from engine.store.customers import load_profiles, update_profile
from engine.store.inbox import add_events
from engine.store.schema import actions, inbox

__all__ = ["PIXEL", "public_router"]

log = logging.getLogger(__name__)

# The smallest transparent 1×1 GIF (43 bytes).
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, private", "Pragma": "no-cache"}
_CHANNELS = (("consent_email", "Email"), ("consent_sms", "Text messages (SMS)"),
             ("consent_push", "Push notifications"))  # fmt: skip
_MAX_AGENT = 256


def public_router(
    store: EngineDB,
    *,
    secrets: Sequence[str] | None = None,
    scanner_seconds: float | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """The public routes over `store`. `secrets` are the accepted signing secrets, current
    first (default: NUDGE_SIGNING_SECRET then NUDGE_SIGNING_SECRETS_OLD); `scanner_seconds`
    how soon after sending a click counts as a link scanner's (NUDGE_TRACKING_SCANNER_SECONDS)."""
    if secrets is None or scanner_seconds is None:
        from nudge.settings import Settings

        s = Settings()
        secrets = secrets if secrets is not None else s.link_secrets()
        scanner_seconds = (
            scanner_seconds if scanner_seconds is not None else s.tracking_scanner_seconds
        )
    accepted = [secret for secret in secrets if secret]
    scanner = float(scanner_seconds)
    router = APIRouter(include_in_schema=False)

    @router.api_route("/u/{token}", methods=["GET", "POST"])
    async def unsubscribe(token: str, request: Request) -> Response:
        try:
            payload = tokens.verify("u", token, accepted)
        except tokens.TokenError as exc:
            return _page(exc.status, "This link is not valid", exc.reason)
        customer = payload.get("c")
        if not isinstance(customer, str) or not customer:
            return _page(400, "This link is not valid", "the link names no customer")
        return await _preferences(store, request, customer, payload, clock)

    @router.api_route("/unsubscribe", methods=["GET", "POST"])
    async def legacy_unsubscribe(request: Request) -> Response:
        customer = request.query_params.get("c") or ""
        given = request.query_params.get("t") or ""
        if not customer or not given:
            return _page(400, "This link is not valid", "expected ?c=<customer>&t=<token>")
        valid = False
        for secret in accepted:  # every secret, no early exit
            expected = legacy_unsubscribe_token(customer, secret)
            valid |= hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
        if not valid:
            return _page(403, "This link is not valid", "the link's signature is not valid")
        return await _preferences(store, request, customer, {"c": customer}, clock)

    @router.get("/o/{token}")
    async def opened(token: str, request: Request) -> Response:
        try:
            payload = tokens.verify("o", token, accepted)
        except tokens.TokenError as exc:
            return Response(status_code=exc.status, headers=_NO_STORE)
        agent = request.headers.get("user-agent")
        client = request.client.host if request.client else None
        reason = machine_events.open_reason(agent, client)
        await run_in_threadpool(_track, store, "email_opened", payload, reason, agent,
                                {}, clock())  # fmt: skip
        return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)

    @router.api_route("/c/{token}", methods=["GET", "HEAD"])
    async def clicked(token: str, request: Request) -> Response:
        try:
            payload = tokens.verify("c", token, accepted)
        except tokens.TokenError as exc:
            return _page(exc.status, "This link is not valid", exc.reason)
        url = payload.get("u")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            return _page(400, "This link is not valid", "the link holds no web address")
        now = clock()
        agent = request.headers.get("user-agent")
        await run_in_threadpool(_click, store, payload, request.method, agent, now, scanner)
        return RedirectResponse(url, status_code=302, headers=_NO_STORE)

    return router


# -- unsubscribe and preferences -----------------------------------------------------------------


async def _preferences(
    store: EngineDB, request: Request, customer: str, payload: dict[str, Any],
    clock: Callable[[], float],
) -> Response:  # fmt: skip
    """The preference page (GET) or the change a POST asks for, then the page as it now is."""
    if request.method == "GET":
        profile = await run_in_threadpool(_profile, store, customer)
        return _preference_page(profile, None)
    raw = await _read_form(request)
    if raw is None:
        return _page(413, "Request too large", f"the form is over {MAX_FORM_BYTES} bytes")
    try:
        form = _form_fields(request.headers.get("content-type", ""), raw)
    except (UnicodeDecodeError, ValueError):
        return _page(400, "Not understood", "expected a form (x-www-form-urlencoded or multipart)")
    properties: dict[str, Any] = {"channel": "email", "source": "unsubscribe_link"}
    if payload.get("a") is not None:
        properties["action_id"] = payload["a"]
    if isinstance(payload.get("t"), str):
        properties["trigger"] = payload["t"]
    if form.get("List-Unsubscribe") == "One-Click":
        event_type, changes = "unsubscribed", {"consent_email": False}
        properties.update(list="marketing", method="one-click")
        done = "You are unsubscribed from marketing email."
    elif form.get("choice") == "none":
        event_type, changes = "subscription_changed", dict.fromkeys(CONSENT_KEYS, False)
        done = "You will receive no marketing messages."
    elif form.get("choice") == "save":
        event_type = "subscription_changed"
        changes = {key: form.get(key) == "on" for key in CONSENT_KEYS}
        done = "Your preferences are saved."
    else:
        return _page(400, "Not understood",
                     "expected the body List-Unsubscribe=One-Click or the preference form")  # fmt: skip
    try:
        profile = await run_in_threadpool(
            store.write, _change_consent, customer, event_type, changes, properties, clock()
        )
    except ValueError as exc:  # the event does not pass the contract: nothing was changed
        return _page(400, "Not understood", str(exc).splitlines()[0][:300])
    if event_type == "unsubscribed":  # RFC 8058: a plain 200, the mailbox shows its own notice
        return HTMLResponse(_html("Unsubscribed", f"<p>{html_lib.escape(done)}</p>"),
                            headers=_NO_STORE)  # fmt: skip
    return _preference_page(profile, done)


async def _read_form(request: Request) -> bytes | None:
    """The body, None once it passes MAX_FORM_BYTES (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                return None
            chunks.append(chunk)
    except ClientDisconnect:
        return b""
    return b"".join(chunks)


def _form_fields(content_type: str, raw: bytes) -> dict[str, str]:
    """The fields of a form body: ``multipart/form-data`` (what RFC 8058 says a one-click POST
    SHOULD be, parsed with the standard library's MIME parser) or URL-encoded (anything else)."""
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=email_policy.default).parsebytes(head + raw)
    if not message.is_multipart():
        raise ValueError("a multipart/form-data body without parts")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode("utf-8").strip()
    return fields


def _profile(store: EngineDB, customer: str) -> dict[str, Any] | None:
    return store.read(load_profiles, [customer]).get(customer)


def _change_consent(
    conn: Connection, customer: str, event_type: str, changes: dict[str, bool],
    properties: dict[str, Any], now: float,
) -> dict[str, Any] | None:  # fmt: skip
    """Set the consent flags that differ and log the event saying so, in one transaction; the
    profile as it now is (None: no profile, nothing done)."""
    profile = load_profiles(conn, [customer]).get(customer)
    if profile is None:
        return None
    changed = {key: value for key, value in changes.items() if profile.get(key) is not value}
    if not changed:
        return profile
    props = {**properties, **(changed if event_type == "subscription_changed" else {})}
    event = validate_event(
        {"event_id": f"pref-{uuid.uuid4().hex}", "customer_id": customer,
         "event_type": event_type, "timestamp": _iso(now), "source": "public",
         "properties": props},
        now=now,
    )  # fmt: skip
    add_events(conn, [event_row(event)], now)
    update_profile(conn, customer, changed, now)
    return {**profile, **changed}


def _preference_page(profile: dict[str, Any] | None, done: str | None) -> Response:
    if profile is None:
        body = "<p>We have no subscriptions for you: you will receive no marketing from us.</p>"
        return HTMLResponse(_html("Your subscriptions", body), headers=_NO_STORE)
    notice = f'<p class="done">{html_lib.escape(done)}</p>' if done else ""
    email = profile.get("email")
    name = profile.get("first_name")
    greeting = f"<p>Hi {html_lib.escape(str(name))},</p>" if name else ""
    who = greeting + (f"<p>Subscriptions of {html_lib.escape(str(email))}</p>" if email else "")
    any_on = any(profile.get(key) is True for key, _ in _CHANNELS)
    rows = "".join(
        f'<p><label><input type="checkbox" name="{key}"'
        f"{' checked' if profile.get(key) is True else ''}> {html_lib.escape(label)}</label></p>"
        for key, label in _CHANNELS
    )
    state = "You receive marketing messages." if any_on else "You receive no marketing messages."
    body = (
        f"{notice}{who}<h2>Marketing</h2><p>{state}</p>"
        '<form method="post"><input type="hidden" name="choice" value="none">'
        '<button type="submit">Unsubscribe from all marketing</button></form>'
        "<h2>By channel</h2>"
        f'<form method="post"><input type="hidden" name="choice" value="save">{rows}'
        '<button type="submit">Save preferences</button></form>'
        "<p><small>Receipts and other messages about your orders are not marketing and are "
        "still sent.</small></p>"
    )
    return HTMLResponse(_html("Your subscriptions", body), headers=_NO_STORE)


def _page(status: int, title: str, detail: str) -> Response:
    body = f"<p>{html_lib.escape(detail)}</p>"
    return HTMLResponse(_html(title, body), status_code=status, headers=_NO_STORE)


def _html(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html_lib.escape(title)}</title><style>body{{font-family:sans-serif;"
        "max-width:32rem;margin:2rem auto;padding:0 1rem}.done{color:#166534}</style></head>"
        f"<body><h1>{html_lib.escape(title)}</h1>{body}</body></html>"
    )


# -- opens and clicks ----------------------------------------------------------------------------


def _click(
    store: EngineDB, payload: dict[str, Any], method: str, agent: str | None, now: float,
    scanner: float,
) -> None:  # fmt: skip
    link, links = _int(payload.get("l")), _int(payload.get("n"))
    earlier: list[int] = []
    if links is not None and links > 1 and isinstance(payload.get("c"), str):
        earlier = store.read(_recent_links, payload["c"], payload.get("a"),
                             now - machine_events.BURST_SECONDS)  # fmt: skip
    reason = machine_events.click_reason(
        method=method, user_agent=agent, clicked_at=now, sent_at=_float(payload.get("s")),
        link=link, links=links, earlier_links=earlier, scanner_seconds=scanner,
    )  # fmt: skip
    extra = {"url": payload.get("u"), "link": link, "method": method.upper()}
    _track(store, "email_clicked", payload, reason, agent, extra, now)


def _track(
    store: EngineDB, event_type: str, payload: dict[str, Any], reason: str | None,
    agent: str | None, extra: dict[str, Any], now: float,
) -> None:  # fmt: skip
    """Log one open or click of the token's action (a dead letter when it cannot be an event)."""
    customer = payload.get("c")
    properties: dict[str, Any] = {**extra, "machine": reason is not None}
    if reason is not None:
        properties["machine_reason"] = reason
    if agent:
        properties["user_agent"] = agent[:_MAX_AGENT]
    action = payload.get("a")
    if action is not None:
        properties["action_id"] = action
        key = store.read(_idempotency_key, action, customer)
        if key is not None:
            properties["message_id"] = key
    if isinstance(payload.get("t"), str):
        properties["trigger"] = payload["t"]
    event = {"event_id": f"{event_type.removeprefix('email_')}-{uuid.uuid4().hex}",
             "customer_id": customer, "event_type": event_type, "timestamp": _iso(now),
             "source": "tracking", "properties": properties}  # fmt: skip
    for result in accept_events(store, [event], source="tracking", now=now):
        if result.status == "invalid":  # dead-lettered with the reason by accept_events
            log.warning("%s of action %s refused: %s", event_type, action, result.errors)


def _idempotency_key(conn: Connection, action_id: Any, customer: Any) -> str | None:
    """The action's idempotency key (the ``message_id`` feedback events carry) when the action
    exists and is the token's customer's."""
    if isinstance(action_id, bool) or not isinstance(action_id, int):
        return None
    row = conn.execute(
        sa.select(actions.c.idempotency_key, actions.c.customer_id).where(actions.c.id == action_id)
    ).first()
    return row[0] if row is not None and row[1] == customer else None


def _recent_links(conn: Connection, customer: str, action_id: Any, since: float) -> list[int]:
    """Link indexes of the action's clicks logged since `since`."""
    query = sa.select(inbox.c.payload).where(
        inbox.c.customer_id == customer, inbox.c.event_type == "email_clicked",
        inbox.c.occurred_at >= since,
    )  # fmt: skip
    found = []
    for (payload,) in conn.execute(query):
        properties = json.loads(payload).get("properties") or {}
        link = properties.get("link")
        if properties.get("action_id") == action_id and isinstance(link, int):
            found.append(link)
    return found


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat()
