"""A loopback server implementing Twilio's Messages endpoints as Twilio documents them.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form: To, From or MessagingServiceSid,
Body, StatusCallback) with HTTP basic auth: 201 with the Message resource (sid ``SM`` + 32 hex,
status ``queued``, num_segments, date_created in RFC 2822, direction ``outbound-api``…); errors as
Twilio's error JSON ``{code, message, more_info, status}``: 401/20003 bad credentials, 400/21211
invalid To (``+15005550001``, Twilio's magic invalid-number test value, or anything not E.164),
400/21604 no To, 400/21603 no From, 400/21617 body over 1600 characters, 429/20429 with
Retry-After when `throttle` is set. ``GET …/Messages.json`` lists messages newest first with
To/From/DateSent filters, PageSize and next_page_uri paging.

Faults for the at-most-once tests: `drop_after_store` (create the message, then close the
connection without answering), `drop_before_store` (close without creating it), `list_down`
(the list endpoint answers 503).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SID = "AC" + "0" * 32
TOKEN = "twilio-test-token"
FROM = "+15005550006"
_GSM = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXT = set("\f^{}\\[~]|€")


def twilio_segments(body: str) -> int:
    """Segments as a carrier counts them (a separate, simple implementation for the fake)."""
    if set(body) <= _GSM | _EXT:
        units = [2 if c in _EXT else 1 for c in body]
        single, part = 160, 153
    else:
        units = [len(c.encode("utf-16-le")) // 2 for c in body]
        single, part = 70, 67
    if sum(units) <= single:
        return 1
    segments, room = 1, part
    for u in units:
        if u > room:
            segments, room = segments + 1, part
        room -= u
    return segments


class FakeTwilio:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.posts: list[dict[str, str]] = []
        self.gets: list[dict[str, list[str]]] = []
        self.throttle: int | None = None  # Retry-After seconds for the next POSTs
        self.drop_after_store = 0  # how many POSTs to create and then drop
        self.drop_before_store = 0
        self.list_down = False
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeTwilio:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer._post(self)

            def do_GET(self) -> None:
                outer._get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- handlers ---------------------------------------------------------------------------

    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if h.headers.get("Authorization") == expected:
            return True
        self._error(h, 401, 20003, "Authenticate")
        return False

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        if urlsplit(h.path).path != f"/2010-04-01/Accounts/{SID}/Messages.json":
            return self._error(h, 404, 20404, "The requested resource was not found")
        if not self._authorised(h):
            return None
        form = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        with self.lock:
            self.posts.append(form)
            if self.drop_before_store:
                self.drop_before_store -= 1
                return self._drop(h)
        if self.throttle is not None:
            return self._error(h, 429, 20429, "Too Many Requests",
                               {"Retry-After": str(self.throttle)})  # fmt: skip
        to, body = form.get("To"), form.get("Body", "")
        if not to:
            return self._error(h, 400, 21604, "A 'To' phone number is required.")
        if not (form.get("From") or form.get("MessagingServiceSid")):
            return self._error(h, 400, 21603, "A 'From' phone number is required.")
        if to == "+15005550001" or not re.fullmatch(r"\+[1-9]\d{6,14}", to):
            return self._error(h, 400, 21211, f"Invalid 'To' Phone Number: {to}")
        if len(body) > 1600:
            return self._error(h, 400, 21617, "The concatenated message body exceeds the 1600 character limit.")  # fmt: skip
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        sid = "SM" + secrets.token_hex(16)
        message = {
            "account_sid": SID, "api_version": "2010-04-01", "body": body,
            "date_created": now, "date_sent": None, "date_updated": now,
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0", "num_segments": str(twilio_segments(body)), "price": None,
            "price_unit": "USD", "sid": sid, "status": "queued", "to": to,
            "uri": f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
        }  # fmt: skip
        with self.lock:
            self.messages.append(message)
            if self.drop_after_store:
                self.drop_after_store -= 1
                return self._drop(h)
        self._json(h, 201, message)

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        if url.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
            return self._error(h, 404, 20404, "The requested resource was not found")
        if not self._authorised(h):
            return None
        query = parse_qs(url.query)
        self.gets.append(query)
        if self.list_down:
            return self._error(h, 503, 20503, "Service unavailable")
        one = {k: v[0] for k, v in query.items()}
        with self.lock:
            found = list(reversed(self.messages))  # newest first
        for key, field in (("To", "to"), ("From", "from")):
            if key in one:
                found = [m for m in found if m[field] == one[key]]
        if "DateSent>" in one:  # parse_qs splits "DateSent>=2026-01-01" at '='
            found = [
                m for m in found if m["date_sent"] and _day(m["date_sent"]) >= one["DateSent>"]
            ]
        size = min(int(one.get("PageSize", 50)), 1000)
        page = int(one.get("Page", 0))
        items = found[page * size : (page + 1) * size]
        base = f"/2010-04-01/Accounts/{SID}/Messages.json"
        kept = {k: v for k, v in one.items() if k not in {"Page", "PageSize", "PageToken"}}
        rest = "&" + urlencode(kept) if kept else ""
        more = (page + 1) * size < len(found)
        self._json(h, 200, {
            "messages": items, "page": page, "page_size": size, "start": page * size,
            "end": page * size + len(items) - 1, "uri": f"{base}?PageSize={size}&Page={page}{rest}",
            "first_page_uri": f"{base}?PageSize={size}&Page=0{rest}",
            "previous_page_uri": None if page == 0 else f"{base}?PageSize={size}&Page={page - 1}{rest}",
            "next_page_uri": f"{base}?PageSize={size}&Page={page + 1}&PageToken=PA{page + 1}{rest}" if more else None,
        })  # fmt: skip

    # -- answers ------------------------------------------------------------------------------

    def _json(self, h: BaseHTTPRequestHandler, status: int, payload: Any,
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        body = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: int, message: str,
               headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self._json(h, status, {"code": code, "message": message,
                               "more_info": f"https://www.twilio.com/docs/errors/{code}",
                               "status": status}, headers)  # fmt: skip

    def _drop(self, h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        h.connection.shutdown(2)


def _day(rfc2822: str) -> str:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(rfc2822).date().isoformat()
