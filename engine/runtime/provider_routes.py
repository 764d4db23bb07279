"""Providers calling the engine: Twilio's inbound SMS webhook (opt-out and opt-in keywords).

``POST /v1/providers/twilio/inbound`` is the Messaging webhook of the Twilio number. Twilio signs
each request (``X-Twilio-Signature``): base64 of HMAC-SHA1, keyed with the account's auth token,
over the full URL Twilio requested followed by every POST parameter's name and value, sorted by
name — the scheme of Twilio's own `RequestValidator` (the tests sign with it). Behind a proxy the
engine sees another URL than Twilio used, so the URL is `NUDGE_PUBLIC_URL` + the path (+ query)
when that is set, else the request's own; as Twilio's validator does, the URL with its default
port added or removed is accepted too. A missing or wrong signature is 403; without an auth
token configured the route answers 503 (it cannot tell Twilio from anyone).

A message whose whole text is an opt-out keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT,
and Twilio's newer REVOKE, OPTOUT) or an opt-in one (START, UNSTOP, YES) — or that Twilio's
Advanced Opt-Out marks with ``OptOutType`` — becomes a ``subscription_changed`` event with
``consent_sms`` false or true for every customer whose profile has that ``phone``: logged in the
inbox like any event (its id is the MessageSid's, so Twilio's retries are duplicates), applied to
the profile by the processor. A keyword from a number no profile has is kept in the dead letters
with the reason. Twilio gets an empty TwiML ``<Response/>`` (its Advanced Opt-Out sends the
confirmation text itself). Any other message is acknowledged and not stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.runtime.inbox import accept_events
from engine.store import EngineDB
from engine.store.customers import customers_with_phone
from engine.store.dead_letters import add_dead_letters

__all__ = [
    "OPT_IN",
    "OPT_OUT",
    "provider_router",
    "twilio_signature",
    "verify_twilio_signature",
]

log = logging.getLogger(__name__)

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "UNSTOP", "YES"})
MAX_INBOUND_BYTES = 64 * 1024
_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` of a form POST to `url`: base64(HMAC-SHA1(token, url +
    name + value for each parameter, names sorted, each name's distinct values sorted))."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_twilio_signature(
    auth_token: str, url: str, params: list[tuple[str, str]], signature: str | None
) -> bool:
    """Whether `signature` signs this POST for `url` or for it with its default port toggled."""
    if not signature or len(signature) > 256:
        return False
    return any(
        hmac.compare_digest(
            twilio_signature(auth_token, candidate, params).encode(),
            signature.encode("ascii", "replace"),
        )
        for candidate in _port_variants(url)
    )


def _port_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port == default:
        other = urlunsplit(parts._replace(netloc=host))
    elif parts.port is None and default is not None:
        other = urlunsplit(parts._replace(netloc=f"{host}:{default}"))
    else:
        return [url]
    return [url, other]


def keyword_consent(body: str, opt_out_type: str | None) -> bool | None:
    """False for an opt-out, True for an opt-in, None for any other message."""
    marked = (opt_out_type or "").strip().upper()
    if marked == "STOP":
        return False
    if marked == "START":
        return True
    word = body.strip().upper()
    if word in OPT_OUT:
        return False
    if word in OPT_IN:
        return True
    return None


def provider_router(
    store: EngineDB,
    *,
    twilio_auth_token: str | None = None,
    public_url: str | None = None,
    clock: Callable[[], float] = time.time,
    from_settings: bool = True,
) -> APIRouter:
    """The providers' routes over `store`. With `from_settings`, the auth token and public URL
    not given come from `nudge.settings` (NUDGE_TWILIO_AUTH_TOKEN, NUDGE_PUBLIC_URL)."""
    if from_settings and (twilio_auth_token is None or public_url is None):
        from nudge.settings import Settings

        s = Settings()
        if twilio_auth_token is None and s.twilio_auth_token is not None:
            twilio_auth_token = s.twilio_auth_token.get_secret_value()
        public_url = public_url if public_url is not None else s.public_url
    router = APIRouter()

    @router.post("/v1/providers/twilio/inbound", include_in_schema=True)
    async def twilio_inbound(request: Request) -> Response:
        if not twilio_auth_token:
            return _plain(503, "Twilio is not configured: set NUDGE_TWILIO_AUTH_TOKEN")
        raw = await request.body()
        if len(raw) > MAX_INBOUND_BYTES:
            return _plain(413, f"body over {MAX_INBOUND_BYTES} bytes")
        try:
            params = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return _plain(400, "expected an application/x-www-form-urlencoded UTF-8 body")
        url = _signed_url(request, public_url)
        if not verify_twilio_signature(
            twilio_auth_token, url, params, request.headers.get("x-twilio-signature")
        ):
            return _plain(403, "missing or wrong X-Twilio-Signature")
        form = dict(params)
        consent = keyword_consent(form.get("Body", ""), form.get("OptOutType"))
        if consent is None:
            return _twiml()
        phone, sid = form.get("From", ""), form.get("MessageSid") or form.get("SmsSid") or ""
        if not phone or not sid:
            return _plain(400, "From and MessageSid are required")
        keyword = form.get("Body", "").strip().upper()[:32]
        await run_in_threadpool(_record, store, phone, sid, consent, keyword, raw, clock())
        return _twiml()

    return router


def _record(store: EngineDB, phone: str, sid: str, consent: bool, keyword: str, raw: bytes,
            now: float) -> None:  # fmt: skip
    """The keyword as a subscription_changed event of each customer with `phone` (or a dead
    letter when none has it)."""
    customers = store.read(customers_with_phone, phone)
    if not customers:
        letter = {"event_id": None, "source": "twilio", "payload": raw.decode()[:4000],
                  "reason": f"inbound {keyword or 'opt-out'} from a number no profile has"}  # fmt: skip
        store.write(add_dead_letters, [letter], now)
        return
    events = [
        {"event_id": f"twilio-{sid[:64]}-{_short_hash(customer)}", "customer_id": customer,
         "event_type": "subscription_changed",
         "timestamp": datetime.fromtimestamp(now, UTC).isoformat(), "source": "twilio",
         "properties": {"consent_sms": consent, "channel": "sms", "keyword": keyword,
                        "message_sid": sid}}
        for customer in customers
    ]  # fmt: skip
    for result in accept_events(store, events, source="twilio", now=now):
        if result.status == "invalid":  # dead-lettered by accept_events, with the reason
            log.warning("inbound SMS %s: event refused: %s", sid, result.errors)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _signed_url(request: Request, public_url: str | None) -> str:
    if not public_url:
        return str(request.url)
    query = request.url.query
    return public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _twiml() -> Response:
    return Response(_TWIML, media_type="application/xml")


def _plain(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)
