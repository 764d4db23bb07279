"""Email: render a template for a customer, and deliver it exactly once — by SMTP or to a file outbox.

Templates are Jinja2 files `<name>.j2` in a templates folder: a `subject:` line, a line `---`, then
the plain-text body. They see `customer` (the profile; `customer.name` falls back to "Valued
Customer"), `event` (the triggering event), `properties` (its properties), `scores`, `trigger` and
`unsubscribe_url`. Marketing mail carries an unsubscribe link and a `List-Unsubscribe` header.

Template names are plain relative names (letters, digits, ``_``, ``-`` and ``/``; no ``..``, no
leading ``/``), so a name can never reach outside the templates folder.

Templates render in Jinja's immutable sandbox: no attribute starting with ``_``, no unsafe
methods, no changing lists or dicts (the event is shared with other actions), and ``*`` / ``**``
refuse results that would be huge (an unsafe attribute is an error at once, not an empty string). *Every* failure to load or render — missing, syntax error, undefined call, sandbox
violation, an exception inside a filter — is a `TemplateError` naming the template and, where Jinja
knows it, the line: one bad template never escapes as another exception type.

Number filters accept numbers and numeric text alike (event properties often carry "35.00"):

- ``{{ x | money }}`` → ``35.00``; ``{{ x | money("EUR") }}`` → ``35.00 EUR`` (the code after
  the amount, as given: no symbols, no locale);
- ``{{ x | number }}`` → ``35``; ``{{ x | number(1) }}`` → ``35.0`` (0 to 10 places).

Rounding is half-up on the decimal text (2.675 → 2.68, as a person would round), without
thousands separators. What is not a finite number below 10^16 renders as a fallback rather than
failing the email: a string unchanged ("abc" → "abc", "n/a" → "n/a"), anything else — None,
undefined, booleans, lists — as an empty string.

The rendered subject and the To address become headers: a line break or other control character
in either (say from a first name "Eve\\r\\nBcc: …") is a `TemplateError`, never a header injection
nor a ValueError from the email package later.

Delivery marks the action as *sending* in the database before the SMTP transaction is finalised
(the end-of-data dot), so a crash can never send an email twice; a crash in the microseconds between
that mark and the dot leaves the action flagged `sending` (in doubt) — reported, never silently lost.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import smtplib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from engine.channels.smtp import SmtpSecurity

__all__ = [
    "EmailSettings",
    "FileOutbox",
    "RenderedEmail",
    "SmtpSender",
    "TemplateError",
    "load_template",
    "render_email",
    "template_name_problem",
    "unsubscribe_token",
]

FALLBACK_NAME = "Valued Customer"
# A plain relative name: segments of letters, digits, _ and -, joined by single slashes.
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
# What str.splitlines() breaks on: all of them end a header line somewhere downstream.
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# One addr-spec, nothing that would make a second recipient or a display name.
_PLAIN_ADDRESS = re.compile(r"[^\s@,;:<>()\"\[\]\\]+@[^\s@,;:<>()\"\[\]\\]+")


class TemplateError(ValueError):
    """A template is missing or broken: retrying will not help."""


@dataclass(frozen=True)
class EmailSettings:
    """Where mail goes and how it is signed."""

    templates_dir: Path
    sender: str = "nudge <hello@nudge.example>"
    unsubscribe_base_url: str = "https://nudge.example/unsubscribe"
    unsubscribe_secret: str = "change-me"
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_timeout: float = 10.0
    smtp_security: SmtpSecurity | None = None  # TLS, AUTH, CA (engine.channels.smtp); None: none
    outbox_dir: Path | None = None


@dataclass(frozen=True)
class RenderedEmail:
    to: str
    subject: str
    body: str
    message_id: str
    headers: Mapping[str, str]

    def to_message(self, sender: str) -> EmailMessage:
        """The email as a message; a header value with a line break or control character, or
        anything else the email package refuses, is a TemplateError."""
        headers = {
            "From": sender,
            "To": self.to,
            "Subject": self.subject,
            "Message-ID": self.message_id,
            "Date": formatdate(usegmt=True),
            **self.headers,
        }
        for name, value in headers.items():
            # Checked here, not left to the email package: it lets a trailing CRLF through,
            # which ends the headers early.
            problem = _header_problem(value)
            if problem:
                raise TemplateError(f"email to {self.to!r} cannot be built: {name} {problem}")
        try:
            message = EmailMessage()
            for name, value in headers.items():
                message[name] = value
            message.set_content(self.body)
        except ValueError as exc:  # header injection, unencodable text: a retry changes nothing
            raise TemplateError(f"email to {self.to!r} cannot be built: {_one_line(exc)}") from None
        return message

    def to_bytes(self, sender: str, linesep: str = "\n") -> bytes:
        """The message as bytes (headers are encoded only here, so this is guarded too)."""
        message = self.to_message(sender)
        try:
            return message.as_bytes(policy=message.policy.clone(linesep=linesep))
        except ValueError as exc:
            raise TemplateError(f"email to {self.to!r} cannot be built: {_one_line(exc)}") from None


def unsubscribe_token(customer_id: str, secret: str) -> str:
    """An HMAC that proves an unsubscribe link was issued for this customer."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()[:32]


def template_name_problem(name: Any) -> str | None:
    """Why `name` is not an acceptable template name, or None when it is."""
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        return (
            "expected a plain template name such as cart_reminder (letters, digits, _ - and /, "
            f"without .j2, no '..' and no leading '/'), got {name!r}"
        )
    return None


def load_template(templates_dir: Path, name: str) -> jinja2.Template:
    """The compiled template `name` (file `<name>.j2`); any failure is a TemplateError."""
    problem = template_name_problem(name)
    if problem:
        raise TemplateError(f"template name: {problem}")
    try:
        return _environment(templates_dir).get_template(f"{name}.j2")
    except TemplateError:
        raise
    except Exception as exc:  # syntax errors, unknown filters, unreadable files, anything
        raise _template_error(name, exc, None) from None


def render_email(
    settings: EmailSettings,
    template: str,
    *,
    idempotency_key: str,
    profile: Mapping[str, Any],
    event: Mapping[str, Any],
    scores: Mapping[str, Any],
    trigger_id: str,
    marketing: bool,
) -> RenderedEmail:
    """Render `template` for one customer.

    Raises TemplateError for a missing or broken template, a rendering failure, or a subject or
    address that cannot be a header (line breaks, control characters).
    """
    to = profile.get("email")
    if not to:
        raise TemplateError("the customer has no email address in the profile")
    to = str(to)
    problem = _header_problem(to)
    if problem is None and not _PLAIN_ADDRESS.fullmatch(to):
        problem = "is not a single plain address (name@domain)"
    if problem:
        raise TemplateError(f"the customer's email address {problem}")
    customer_id = str(profile.get("customer_id", ""))
    query = urlencode(
        {"c": customer_id, "t": unsubscribe_token(customer_id, settings.unsubscribe_secret)}
    )
    unsubscribe_url = f"{settings.unsubscribe_base_url}?{query}"
    customer = {**profile, "name": profile.get("first_name") or FALLBACK_NAME}
    context = {
        "customer": customer,
        "event": event,
        "properties": event.get("properties") or {},
        "scores": scores,
        "trigger": trigger_id,
        "unsubscribe_url": unsubscribe_url,
    }
    compiled = load_template(settings.templates_dir, template)
    try:
        rendered = compiled.render(context)
    except TemplateError:
        raise
    except Exception as exc:  # one bad template must never escape as another exception type
        raise _template_error(template, exc, compiled.filename) from None
    head, sep, body = rendered.partition("\n---\n")
    if not sep or not head.lower().startswith("subject:"):
        raise TemplateError(
            f"template {template!r}: expected 'subject: ...', a line '---', then the body"
        )
    subject = head.split(":", 1)[1].strip()
    problem = _header_problem(subject)
    if problem:
        raise TemplateError(f"template {template!r}: the subject {problem}")
    if _has_surrogate(body):
        raise TemplateError(f"template {template!r}: the body holds text that is not valid Unicode")
    body = body.strip() + "\n"
    headers: dict[str, str] = {"X-Nudge-Trigger": trigger_id}
    if marketing:
        body += f"\n--\nYou receive this because you subscribed. Unsubscribe: {unsubscribe_url}\n"
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return RenderedEmail(to, subject, body, f"<{digest}@nudge>", headers)


class SmtpSender:
    """Delivers over SMTP; `before_commit` runs after the data is sent and before the final dot."""

    def __init__(self, settings: EmailSettings) -> None:
        if not settings.smtp_host:
            raise ValueError("SmtpSender needs smtp_host")
        self.settings = settings
        self.host: str = settings.smtp_host

    def send(self, email: RenderedEmail, before_commit: Callable[[], None]) -> str:
        raw = email.to_bytes(self.settings.sender, linesep="\r\n")  # before connecting: may fail
        with smtplib.SMTP(
            self.host, self.settings.smtp_port, timeout=self.settings.smtp_timeout
        ) as smtp:
            smtp.ehlo_or_helo_if_needed()
            code, reply = smtp.mail(_address(self.settings.sender))
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, self.settings.sender)
            code, reply = smtp.rcpt(email.to)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({email.to: (code, reply)})
            code, reply = smtp.docmd("DATA")
            if code != 354:
                raise smtplib.SMTPDataError(code, reply)
            data = smtplib._quote_periods(raw)  # type: ignore[attr-defined]  # dot-stuffing, as smtplib does
            smtp.send(data if data.endswith(b"\r\n") else data + b"\r\n")
            before_commit()  # the point of no return is the dot below
            smtp.send(b".\r\n")
            code, reply = smtp.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        return f"smtp {code} {email.message_id}"


class FileOutbox:
    """The embedded default: each email is a file named after its idempotency key (written once)."""

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    def send(self, email: RenderedEmail, before_commit: Callable[[], None]) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{email.message_id.strip('<>').split('@')[0]}.eml"
        if not target.exists():
            raw = email.to_bytes(self.sender)
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(raw)
            before_commit()
            os.replace(tmp, target)  # the file appears whole, once
        return f"file {target.name}"


def _address(sender: str) -> str:
    return sender.split("<")[-1].rstrip(">").strip()


# -- headers -------------------------------------------------------------------------------------


def _header_problem(value: str) -> str | None:
    """Why `value` cannot be a header value (line break, control character), or None."""
    for char in value:
        if char in _LINE_BREAKS:
            return "contains a line break"
        category = unicodedata.category(char)
        if category == "Cc":
            return f"contains a control character ({char!r})"
        if category == "Cs":
            return "holds text that is not valid Unicode (a lone surrogate)"
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# -- errors --------------------------------------------------------------------------------------


def _template_error(name: str, exc: Exception, filename: str | None) -> TemplateError:
    """A TemplateError for `exc`: the template's name, the line where Jinja knows it, one line."""
    line = None
    if isinstance(exc, jinja2.TemplateSyntaxError):
        line, text = exc.lineno, exc.message or str(exc)
    else:
        # Jinja rewrites tracebacks so that template frames carry the template's own line.
        tb = exc.__traceback__
        while tb is not None and filename:
            if tb.tb_frame.f_code.co_filename == filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        text = str(exc)
    if isinstance(exc, SecurityError):
        text = f"not allowed in a template: {text}"
    elif not isinstance(exc, jinja2.TemplateError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = f"template {name!r}, line {line}" if line else f"template {name!r}"
    return TemplateError(f"{where}: {_one_line(text)}")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# -- number filters ------------------------------------------------------------------------------

_MAX_PLACES = 10
_MAX_MAGNITUDE = 15  # adjusted exponent: amounts up to 10^16 — beyond that it is not an amount


def _decimal(value: Any) -> Decimal | None:
    """`value` as a finite Decimal, or None when it is not a (reasonable) number."""
    if isinstance(value, bool) or value is None or isinstance(value, jinja2.Undefined):
        return None
    try:
        if isinstance(value, Decimal | int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))  # the shortest text of the float: 2.675 stays 2.675
        elif isinstance(value, str) and len(value) <= 64:
            number = Decimal(value.strip())
        else:
            return None
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or (number and number.adjusted() > _MAX_MAGNITUDE):
        return None
    return number


def _fixed(value: Any, places: Any) -> str:
    if isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= _MAX_PLACES:
        raise ValueError(f"places must be a whole number from 0 to {_MAX_PLACES} (got {places!r})")
    number = _decimal(value)
    if number is None:
        return value if isinstance(value, str) else ""
    rounded = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return format(rounded.copy_abs() if rounded.is_zero() else rounded, "f")  # no "-0.00"


def number_filter(value: Any, places: int = 0) -> str:
    """``{{ x | number(2) }}``: a number or numeric text, fixed decimals (see the module doc)."""
    return _fixed(value, places)


def money_filter(value: Any, currency: str | None = None) -> str:
    """``{{ x | money }}`` → 35.00; ``{{ x | money("EUR") }}`` → 35.00 EUR (see the module doc)."""
    text = _fixed(value, 2)
    if currency and _decimal(value) is not None:
        return f"{text} {currency}"
    return text


# -- environment ---------------------------------------------------------------------------------

_MAX_SEQUENCE = 100_000  # characters or items a `*` may produce
_MAX_POWER_BITS = 4_096  # bits of an integer a `**` may produce


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, stricter: unsafe attributes fail at once, `*` and `**` are bounded.

    Immutable: the event, profile and scores are the dispatcher's cached objects, shared by the
    actions of a batch, so a template must not be able to change them (``properties.update()``).
    """

    # Intercepting also stops constant folding, so `{{ 9**9**9 }}` cannot hang the compiler.
    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > _MAX_SEQUENCE:
                    raise SecurityError(f"'*' would make more than {_MAX_SEQUENCE:,} items")
            return left * right
        if operator == "**":
            ints = isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1
            if ints and right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise SecurityError("'**' result would be too large")
            return left**right
        return super().call_binop(context, operator, left, right)


_ENVIRONMENTS: dict[Path, jinja2.Environment] = {}


def _environment(directory: Path) -> jinja2.Environment:
    env = _ENVIRONMENTS.get(directory)
    if env is None:
        env = _Sandbox(
            loader=_Loader(directory), undefined=jinja2.ChainableUndefined, autoescape=False,
            keep_trailing_newline=True,
        )  # fmt: skip
        env.filters["money"] = money_filter
        env.filters["number"] = number_filter
        _ENVIRONMENTS[directory] = env
    return env


class _Loader(jinja2.FileSystemLoader):
    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        try:
            return super().get_source(environment, template)
        except jinja2.TemplateNotFound:
            raise TemplateError(
                f"template {template.removesuffix('.j2')!r} not found in {self.searchpath[0]}"
            ) from None
