"""SMS through Twilio's Messages API, at most once per action.

Sending is a form POST to ``{base}/2010-04-01/Accounts/{sid}/Messages.json`` with HTTP basic auth
(account SID, auth token), ``To`` (the profile's ``phone``, E.164), ``From`` (a Twilio number or
sender ID) or ``MessagingServiceSid`` (an ``MG…`` SID), and ``Body`` rendered from the action's
template ``<name>.sms.j2`` (`engine.channels.channel_templates`: the email sandbox). The result
stored with the action names the message, its encoding and segment count: ``twilio SM… queued
GSM-7 2 segment(s) 161 septets``.

Encoding and segments (`sms_encoding`)
--------------------------------------
A body that is all GSM 03.38 characters goes as GSM-7: 160 septets in one SMS, else 153 per
segment of a concatenated message (7 go to the UDH); a character of the extension table
(``^ { } \\ [ ~ ] | €`` and form feed) takes two septets and is never split across segments. Any
other character makes the whole message UCS-2: 70 UTF-16 units in one SMS, else 67 per segment,
surrogate pairs kept whole. One emoji in a 150-character text thus turns 1 segment into 3.

At most once: what happens when the answer is lost
--------------------------------------------------
Twilio's Messages API takes no idempotency key, so an unknown outcome is checked, not repeated:

1. Right before the POST the action is marked *sending* with a reference
   ``twilio-posted at=<unix time> body=<16 hex of SHA-256(body)>`` (`Delivery.before_commit`).
2. A 201 ends it. A 4xx is Twilio's refusal (nothing was sent): failed, or retried after
   ``Retry-After`` for a 429. A failure to connect left nothing sent either: retried.
3. A timeout, a dropped connection or a 5xx after the request went out is *in doubt*: the channel
   asks Twilio at once (`find_sent`: ``GET Messages.json?To=<phone>[&From=<from>]``, newest
   first, following ``next_page_uri`` back to the reference's time less 5 minutes) for an
   outbound message to that number, created since then, whose body has the same hash. Found:
   the action is sent, with that message's SID. Not found: retried — with the reference kept in
   the action's result. Twilio could not be asked: the action becomes ``unconfirmed`` (never
   resent: at most once beats at least once for a text message to a person).
4. Before any later attempt of an action whose stored result carries a reference (a retry after
   step 3, or a crash between steps 1 and 2, which `recover()` turns back to pending), the same
   lookup runs first; only when it finds nothing is the message sent again.

The lookup filters on ``To`` (and ``From``), not ``DateSent``: a message still ``queued`` or
``accepted`` has no ``date_sent`` yet, so a ``DateSent>=`` filter could miss exactly the message
in doubt; ``date_created`` is set when Twilio accepts the POST. The body hash stands in for a
marker Twilio does not store (its Message resource has no metadata field, and ``StatusCallback``
is not returned by the list endpoint); two actions sending the same text to the same number
within the window would be taken for one — only when the first of them is in doubt.

Step 4 needs the action's stored result, which the dispatcher does not pass to channels: the
channel gets a reader (`prior`, in production `engine.runtime.delivery_channels`); without one it
settles crashed sends as ``unconfirmed`` and never resends after a crash.

Every URL (`NUDGE_TWILIO_BASE_URL`) goes through the webhooks' address guard
(`engine.channels.provider_http`): a private base URL needs to be allow-listed.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin

import httpx

from engine.channels.base import Delivery, DeliveryError
from engine.channels.channel_templates import render_channel_template
from engine.channels.email import TemplateError
from engine.channels.provider_http import json_object, request
from engine.channels.ratelimit import retry_after_seconds
from engine.channels.webhooks import WebhookSender
from engine.events import phone_problem

__all__ = [
    "MAX_BODY_CHARS",
    "SmsChannel",
    "SmsEncoding",
    "SmsUnknownOutcome",
    "TwilioSettings",
    "find_sent",
    "sms_encoding",
]

MAX_BODY_CHARS = 1600  # Twilio's limit on Body
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
_REFERENCE = re.compile(r"twilio-posted at=(\d{1,12}) body=([0-9a-f]{16})")
_LOOKBACK_SLACK = 300.0  # seconds before the reference's time the lookup also accepts
_LOOKUP_PAGES = 10  # pages of 50 messages at most per lookup

# GSM 03.38: the basic table (ESC excluded: it introduces the extension table) and the extension.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")


@dataclass(frozen=True)
class SmsEncoding:
    """How a body travels: its encoding, its length in that encoding's units, its segments."""

    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def sms_encoding(text: str) -> SmsEncoding:
    """The encoding and segment count of `text` (see the module docstring)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENSION for c in text):
        sizes = [2 if c in _GSM_EXTENSION else 1 for c in text]
        return SmsEncoding("GSM-7", sum(sizes), _segments(sizes, single=160, part=153))
    sizes = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SmsEncoding("UCS-2", sum(sizes), _segments(sizes, single=70, part=67))


def _segments(sizes: list[int], *, single: int, part: int) -> int:
    total = sum(sizes)
    if total <= single:
        return 1
    count, used = 1, 0
    for size in sizes:  # a two-unit character never straddles two segments
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count


@dataclass(frozen=True)
class TwilioSettings:
    """The Twilio account and sender that SMS go out with."""

    account_sid: str
    auth_token: str
    sender: str  # a phone number / sender ID (From), or a Messaging Service SID (MG…)
    templates_dir: Path
    base_url: str = "https://api.twilio.com"
    timeout: float = 10.0
    status_callback: str | None = None

    @property
    def messages_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    @property
    def uses_service(self) -> bool:
        return bool(_SERVICE_SID.fullmatch(self.sender))


class SmsUnknownOutcome(Exception):
    """The POST went out, its answer was lost, and Twilio could not be asked whether it arrived.

    Not a DeliveryError on purpose: after the point of no return the dispatcher marks it
    ``unconfirmed`` and never sends it again."""


class SmsChannel:
    """The `send_sms` action through Twilio (see the module docstring)."""

    name = "sms"
    consent_field: str | None = "consent_sms"

    def __init__(
        self,
        settings: TwilioSettings,
        guard: WebhookSender,
        *,
        prior: Callable[[Delivery], str | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.prior = prior
        self.clock = clock
        # With a reader of earlier attempts a crashed send is looked up and resent only if Twilio
        # has none; without one it cannot be checked, so it is never resent.
        self.settle_in_doubt = "pending" if prior is not None else "unconfirmed"

    def send(self, delivery: Delivery) -> str:
        """Render and send one SMS; DeliveryError / TemplateError / SmsUnknownOutcome."""
        phone = delivery.profile.get("phone")
        if phone is None or phone == "":
            raise TemplateError("the customer has no phone number in the profile")
        problem = phone_problem(phone)
        if problem:
            raise TemplateError(f"the customer's phone: {problem}")
        body = self.render(delivery)
        digest = _digest(body)
        earlier = _reference(self.prior(delivery) if self.prior else None)
        if earlier is not None:
            try:
                found = self._lookup(phone, earlier[1], since=earlier[0])
            except Exception as exc:  # keep the reference: the next attempt must check again
                at, body_hash = earlier
                raise DeliveryError(
                    f"twilio-posted at={at} body={body_hash}: an earlier attempt's outcome is "
                    f"unknown and Twilio could not be asked ({_reason(exc)}); not resent",
                    retryable=True,
                ) from None
            if found is not None:
                return _result(found, body, note="found after an unknown outcome, not resent")
        posted_at = int(self.clock())
        reference = f"twilio-posted at={posted_at} body={digest}"
        form = {"To": phone, "Body": body}
        form["MessagingServiceSid" if self.settings.uses_service else "From"] = self.settings.sender
        if self.settings.status_callback:
            form["StatusCallback"] = self.settings.status_callback
        delivery.before_commit(reference)
        try:
            response, raw = request(
                self.guard, "POST", self.settings.messages_url, data=form,
                auth=self._auth, timeout=self.settings.timeout,
            )  # fmt: skip
        except httpx.HTTPError as exc:  # the request went out; its answer did not come back
            return self._in_doubt(phone, digest, posted_at, body, f"{type(exc).__name__}: {exc}")
        if response.status_code >= 500:
            return self._in_doubt(phone, digest, posted_at, body, f"HTTP {response.status_code}")
        resource = json_object(raw)
        if response.status_code in (200, 201) and resource and isinstance(resource.get("sid"), str):
            return _result(resource, body)
        raise _refusal(response, resource)

    def render(self, delivery: Delivery) -> str:
        """The body of the delivery's SMS (TemplateError when it cannot be one)."""
        template = str(delivery.params["template"])
        body = render_channel_template(self.settings.templates_dir, template, "sms", delivery)
        body = body.strip()
        if not body:
            raise TemplateError(f"template {template!r}: the SMS body is empty")
        if len(body) > MAX_BODY_CHARS:
            raise TemplateError(
                f"template {template!r}: the SMS body has {len(body)} characters "
                f"(Twilio takes at most {MAX_BODY_CHARS})"
            )
        if any(0xD800 <= ord(c) <= 0xDFFF for c in body):
            raise TemplateError(f"template {template!r}: the body holds text that is not Unicode")
        return body

    def close(self) -> None:
        """Nothing is kept open between batches."""

    @property
    def _auth(self) -> tuple[str, str]:
        return self.settings.account_sid, self.settings.auth_token

    def _in_doubt(self, phone: str, digest: str, posted_at: int, body: str, why: str) -> str:
        reference = f"twilio-posted at={posted_at} body={digest}"
        try:
            found = self._lookup(phone, digest, since=posted_at)
        except Exception as exc:  # Twilio cannot be asked: never resend blindly
            raise SmsUnknownOutcome(
                f"{reference}: {why}; Twilio could not be asked whether it arrived ({_reason(exc)})"
            ) from None
        if found is not None:
            return _result(found, body, note=f"answer lost ({why}), found by lookup")
        raise DeliveryError(
            f"{reference}: {why}; Twilio has no such message yet: checked again before a resend",
            retryable=True,
        )

    def _lookup(self, phone: str, digest: str, *, since: int) -> dict[str, Any] | None:
        return find_sent(self.guard, self.settings, phone, digest, since=since - _LOOKBACK_SLACK)


def find_sent(
    guard: WebhookSender, settings: TwilioSettings, phone: str, digest: str, *, since: float
) -> dict[str, Any] | None:
    """The outbound message to `phone` created at or after `since` whose body hashes to `digest`,
    or None. Raises DeliveryError (or httpx errors) when Twilio cannot be read."""
    for message in _messages(guard, settings, phone, since):
        direction = str(message.get("direction") or "")
        body = message.get("body")
        if direction.startswith("outbound") and isinstance(body, str) and _digest(body) == digest:
            return message
    return None


def _messages(
    guard: WebhookSender, settings: TwilioSettings, phone: str, since: float
) -> Iterator[dict[str, Any]]:
    params: dict[str, str] | None = {"To": phone, "PageSize": "50"}
    if params is not None and not settings.uses_service:
        params["From"] = settings.sender
    url = settings.messages_url
    for _ in range(_LOOKUP_PAGES):
        response, raw = request(guard, "GET", url, params=params,
                                auth=(settings.account_sid, settings.auth_token),
                                timeout=settings.timeout)  # fmt: skip
        page = json_object(raw)
        if (
            response.status_code != 200
            or page is None
            or not isinstance(page.get("messages"), list)
        ):
            raise DeliveryError(f"Twilio's message list answered HTTP {response.status_code}",
                                retryable=True)  # fmt: skip
        older = False
        for message in page["messages"]:
            if not isinstance(message, dict):
                continue
            created = _created_at(message.get("date_created"))
            if created is not None and created < since:
                older = True  # newest first: the rest of the list is older still
                break
            yield message
        next_uri = page.get("next_page_uri")
        if older or not isinstance(next_uri, str) or not next_uri:
            return
        # next_page_uri is a path on the same API host (with its own query): stay on that host
        url, params = urljoin(settings.base_url.rstrip("/") + "/", next_uri.lstrip("/")), None


def _created_at(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _refusal(response: httpx.Response, error: dict[str, Any] | None) -> DeliveryError:
    """Twilio's 4xx as a DeliveryError: its code and message (``{code, message, more_info}``)."""
    status = response.status_code
    code = (error or {}).get("code")
    message = " ".join(str((error or {}).get("message") or "").split())[:300]
    reason = (
        f"twilio HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    )
    if status == 429:
        return DeliveryError(reason, retryable=True, retry_after=_retry_after(response))
    return DeliveryError(reason, retryable=False)


def _retry_after(response: httpx.Response) -> float | None:
    wait = retry_after_seconds(response.headers.get("retry-after"), time.time())
    return None if wait is None else min(wait, 86_400.0)  # a day at most: a bad header is not a ban


def _result(message: dict[str, Any], body: str, note: str = "") -> str:
    enc = sms_encoding(body)
    unit = "septets" if enc.encoding == "GSM-7" else "UTF-16 units"
    text = (f"twilio {message.get('sid')} {message.get('status') or '?'} {enc.encoding} "
            f"{enc.segments} segment(s) {enc.units} {unit}")  # fmt: skip
    reported = message.get("num_segments")
    if reported not in (None, "", "0", 0) and str(reported) != str(enc.segments):
        text += f" (Twilio counts {reported})"
    return f"{text}; {note}" if note else text


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]


def _reference(result: str | None) -> tuple[int, str] | None:
    """The time and body hash of an earlier POST recorded in an action's result, if any."""
    match = _REFERENCE.search(result or "")
    return (int(match.group(1)), match.group(2)) if match else None
