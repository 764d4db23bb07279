"""Email: render a template for a customer into the exact message that goes on the wire.

Templates live in a templates folder. An email template ``NAME`` is one or both of:

- ``NAME.j2`` — the text part: a ``subject:`` line, a line ``---``, then the plain-text body
  (not escaped: it is text);
- ``NAME.html.j2`` — the HTML part, usually ``{% extends "layouts/base.html.j2" %}`` filling the
  blocks ``content`` and ``preheader`` (the hidden preview text inboxes show after the subject),
  and ``subject`` when there is no text part. Partials live in ``partials/`` and are included or
  imported (``{% from "partials/button.html.j2" import button %}``). HTML templates render with
  autoescaping ON: a first name ``<b>Eve</b>`` arrives as the text ``&lt;b&gt;Eve&lt;/b&gt;``.

Both see `customer` (the profile; `customer.name` falls back to "Valued Customer"), `event` (the
triggering event), `properties` (its properties), `scores`, `trigger`, `marketing` and
`unsubscribe_url`; the HTML also sees `subject`. With both parts the email is
multipart/alternative (text, then HTML); with only HTML the text part is derived from it
(`engine.channels.email_html.html_to_text`, links kept as ``text (URL)``); the ``<style>`` of the
HTML is inlined into ``style`` attributes (css-inline) because most webmail drops ``<style>``.

Why Jinja2 HTML and not MJML (mjml-python): one template language and one sandbox for every part
and channel (the SMS and push templates use this environment too), autoescaping by Jinja's own
rules, errors with the template's name and line; MJML would add a second compiler whose input is
Jinja output (so escaping would have to be right twice) and a build step per render. The base
layout is a plain 600-pixel table layout, which is what MJML would have produced.

Marketing mail carries an unsubscribe link (appended to the text part and, when the HTML does not
already link it, to the HTML) and the headers ``List-Unsubscribe: <URL>``,
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) and ``List-Id:
<TRIGGER.DOMAIN>`` — one list per trigger, so that a mailbox can filter or unsubscribe per
campaign; transactional mail (receipts, payment failures) is not list mail and has none of them.
Every email has ``Message-ID: <digest@DOMAIN>`` (the digest of the action's idempotency key;
DOMAIN is ``NUDGE_MESSAGE_ID_DOMAIN``, else the sender's domain), ``Date``, ``MIME-Version``,
``X-Nudge-Trigger`` and — when rendered for an action — ``X-Nudge-Message: <action id>``, which
provider events (bounces, complaints) echo back so they can be matched to the action (and the
same id as ``X-PM-Metadata-nudge_action`` and in ``X-Mailgun-Variables``, which Postmark and
Mailgun return as the event's Metadata / user-variables). How the
headers are written on the wire (plain folded ASCII, never an encoded-word for List-*) is
`engine.channels.email_wire`'s docstring; DKIM signing is `engine.channels.dkim`'s.

Marketing mail is From ``NUDGE_EMAIL_SENDER``; transactional mail From
``NUDGE_EMAIL_SENDER_TRANSACTIONAL`` (default: the marketing sender), so that a complaint about a
newsletter cannot hurt the reputation of the address receipts come from. The `RenderedEmail`
carries its sender: `to_bytes(sender)`'s argument is only the fallback for an email built
without one, and `envelope_from` is the bare address for the SMTP envelope.

Template names are plain relative names (letters, digits, ``_``, ``-`` and ``/``; no ``..``, no
leading ``/``), so a name can never reach outside the templates folder.

Templates render in Jinja's immutable sandbox: no attribute starting with ``_``, no unsafe
methods, no changing lists or dicts (the event is shared with other actions), and ``*`` / ``**``
refuse results that would be huge (an unsafe attribute is an error at once, not an empty string);
a rendered part over a million characters is refused. *Every* failure to load or render —
missing, syntax error, undefined call, sandbox violation, an exception inside a filter, CSS that
cannot be inlined, a header that cannot be written — is a `TemplateError` naming the template
(``NAME`` for the text part, ``NAME.html`` for the HTML part, the partial or layout when the
error is in one) and, where Jinja knows it, the line: one bad template never escapes as another
exception type.

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

Transports (`engine.channels.smtp`) mark the action as *sending* in the database before the
message is final (the SMTP end-of-data dot), so a crash can never send an email twice.

This module is over 500 lines because the template environment, the two parts' rendering and
the message they make are one contract (what a template may do, and what it becomes); the wire
format and the HTML helpers are split out.
"""

from __future__ import annotations

import functools
import hashlib
import html as html_lib
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.channels.email_html import html_to_text, inline_css
from engine.channels.email_wire import message_bytes
from engine.channels.links import legacy_unsubscribe_token, public_links

if TYPE_CHECKING:
    from engine.channels.dkim import DkimSigner
    from engine.channels.smtp import SmtpSecurity

__all__ = [
    "EmailSettings",
    "EmailTemplate",
    "RenderedEmail",
    "TemplateError",
    "address_problem",
    "load_template",
    "render_email",
    "template_name_problem",
    "unsubscribe_token",
]

FALLBACK_NAME = "Valued Customer"
DEFAULT_MESSAGE_ID_DOMAIN = "nudge.invalid"  # RFC 2606: when the sender has no usable domain
MAX_PART = 1_000_000  # characters of a rendered part (Gmail clips HTML after ~102 kB anyway)
# A plain relative name: segments of letters, digits, _ and -, joined by single slashes.
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*")
# What str.splitlines() breaks on: all of them end a header line somewhere downstream.
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
# One addr-spec, nothing that would make a second recipient or a display name.
_PLAIN_ADDRESS = re.compile(r"[^\s@,;:<>()\"\[\]\\]+@[^\s@,;:<>()\"\[\]\\]+")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_LIST_LABEL = re.compile(r"[^A-Za-z0-9_-]+")
_SKIPPED_FOLDERS = ("layouts", "partials")  # not emails: what emails are built of


class TemplateError(ValueError):
    """A template is missing or broken: retrying will not help."""


@dataclass(frozen=True)
class EmailSettings:
    """Where mail goes, who it is from and how it is signed."""

    templates_dir: Path
    sender: str = "nudge <hello@nudge.example>"
    # Deprecated override (NUDGE_UNSUBSCRIBE_URL): old-style ``BASE?c=…&t=…`` links. None: the
    # signed ``{public_url}/u/<token>`` link, or DEFAULT_UNSUBSCRIBE_URL without a public URL.
    unsubscribe_base_url: str | None = None
    unsubscribe_secret: str = "change-me"  # the current signing secret: every token's key
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_timeout: float = 10.0
    smtp_security: SmtpSecurity | None = None  # TLS, AUTH, CA (engine.channels.smtp); None: none
    outbox_dir: Path | None = None
    # -- rendering and headers (issue 13): senders, Message-ID domain, DKIM ---------------------
    transactional_sender: str | None = None  # None: `sender`
    message_id_domain: str | None = None  # None: the sender's domain
    dkim: DkimSigner | None = None
    # -- public links (issue 14): NUDGE_PUBLIC_URL, tracking -------------------------------------
    public_url: str | None = None  # where engine serve is reachable: /u, /o, /c links
    tracking: bool = True  # open pixel + click rewriting in marketing HTML (needs public_url)

    def sender_for(self, marketing: bool) -> str:
        """The From of marketing or transactional mail."""
        return self.sender if marketing else (self.transactional_sender or self.sender)


@dataclass(frozen=True)
class EmailTemplate:
    """The compiled parts of one email template; at least one of them exists."""

    name: str
    text: jinja2.Template | None
    html: jinja2.Template | None


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered email. `to` is the envelope recipient; `body` the text part; `html` the HTML
    part (None: text only); `sender` the From (None: the one given to `to_bytes`)."""

    to: str
    subject: str
    body: str
    message_id: str
    headers: Mapping[str, str]
    html: str | None = None
    sender: str | None = None
    date: str | None = None  # RFC 5322 date; None: when the bytes are made
    dkim: DkimSigner | None = field(default=None, repr=False)

    @property
    def envelope_from(self) -> str:
        """The bare address of the From (MAIL FROM of the SMTP envelope)."""
        if self.sender is None:
            raise TemplateError(f"email to {self.to!r} has no sender")
        return bare_address(self.sender) or self.sender

    def to_bytes(self, sender: str | None = None, linesep: str = "\r\n") -> bytes:
        """The exact bytes to send (CRLF line ends unless `linesep` is ``"\\n"``), DKIM-signed
        when the settings had a key. The email's own `sender` wins; `sender` here is used only
        for an email built without one. Any header that cannot be written is a TemplateError."""
        from_ = self.sender or sender
        if not from_:
            raise TemplateError(f"email to {self.to!r} cannot be built: no sender")
        headers = [
            ("From", from_),
            ("To", self.to),
            ("Subject", self.subject),
            ("Date", self.date or formatdate(usegmt=True)),
            ("Message-ID", self.message_id),
            *self.headers.items(),
        ]
        for name, value in headers:
            # Checked here, not left to the email package: it lets a trailing CRLF through,
            # which ends the headers early.
            problem = _header_problem(value)
            if problem:
                raise TemplateError(f"email to {self.to!r} cannot be built: {name} {problem}")
        sign = self.dkim.signature if self.dkim is not None else None
        try:
            return message_bytes(
                headers, self.body, self.html, message_id=self.message_id, linesep=linesep,
                sign=sign,
            )  # fmt: skip
        except ValueError as exc:  # unencodable text, an over-long header: a retry changes nothing
            raise TemplateError(f"email to {self.to!r} cannot be built: {_one_line(exc)}") from None

    def to_message(self, sender: str | None = None) -> EmailMessage:
        """The email parsed back from its bytes (for inspection; TemplateError as `to_bytes`)."""
        message = message_from_bytes(self.to_bytes(sender), policy=email_policy.default)
        assert isinstance(message, EmailMessage)  # the default policy makes EmailMessages
        return message


def unsubscribe_token(customer_id: str, secret: str) -> str:
    """An HMAC that proves an old-style unsubscribe link was issued for this customer."""
    return legacy_unsubscribe_token(customer_id, secret)


def template_name_problem(name: Any) -> str | None:
    """Why `name` is not an acceptable template name, or None when it is."""
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        return (
            "expected a plain template name such as cart_reminder (letters, digits, _ - and /, "
            f"without .j2, no '..' and no leading '/'), got {name!r}"
        )
    return None


def address_problem(value: str) -> str | None:
    """Why `value` cannot be an email's recipient (one plain name@domain), or None."""
    problem = _header_problem(value)
    if problem is None and not _PLAIN_ADDRESS.fullmatch(value):
        problem = "is not a single plain address (name@domain)"
    return problem


def sender_problem(value: str) -> str | None:
    """Why `value` cannot be a From (``Name <name@domain>`` or ``name@domain``), or None."""
    problem = _header_problem(value)
    if problem:
        return problem
    address = parseaddr(value)[1]
    if not address or not _PLAIN_ADDRESS.fullmatch(address):
        return "is not an address such as 'Shop <hello@shop.example>' or hello@shop.example"
    return None


def domain_problem(value: str) -> str | None:
    """Why `value` cannot be the domain of Message-IDs and List-Ids, or None."""
    if not _DOMAIN.fullmatch(value):
        return "expected a domain name such as mail.shop.example (ASCII letters, digits, - and .)"
    return None


def load_template(templates_dir: Path, name: str) -> EmailTemplate:
    """The compiled parts of template `name` (``NAME.j2`` and/or ``NAME.html.j2``); any failure —
    neither exists, one does not compile, an HTML-only template without a subject block — is a
    TemplateError."""
    problem = template_name_problem(name)
    if problem:
        raise TemplateError(f"template name: {problem}")
    env = _environment(templates_dir)
    text = _compile(env, name, f"{name}.j2")
    html = _compile(env, f"{name}.html", f"{name}.html.j2")
    if text is None and html is None:
        raise TemplateError(f"template {name!r} not found in {templates_dir}")
    if text is None and html is not None and "subject" not in html.blocks:
        raise TemplateError(
            f"template '{name}.html': without a text part ({name}.j2) the HTML must give the "
            "subject in {% block subject %}…{% endblock %}"
        )
    return EmailTemplate(name, text, html)


def template_names(templates_dir: Path) -> list[str]:
    """The names of the email templates in `templates_dir` (layouts and partials left out)."""
    names: set[str] = set()
    for path in templates_dir.rglob("*.j2"):
        relative = path.relative_to(templates_dir)
        if relative.parts[0] in _SKIPPED_FOLDERS:
            continue
        stem = relative.as_posix().removesuffix(".j2")
        if stem.endswith(".html"):
            stem = stem.removesuffix(".html")
        elif "." in relative.name.removesuffix(".j2"):  # NAME.sms.j2, NAME.push.j2: other channels
            continue
        if template_name_problem(stem) is None:
            names.add(stem)
    return sorted(names)


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
    action_id: int | str | None = None,
    now: float | None = None,
    tracking: bool = True,
) -> RenderedEmail:
    """Render `template` for one customer: the message the transport sends as it is.

    `action_id` becomes ``X-Nudge-Message`` (omitted when None: previews, test sends); `now` is
    the Date (default: the wall clock). Marketing HTML rendered for an action gets tracked links
    and the open pixel when the settings have a public URL and tracking on, and `tracking`
    (the trigger's ``tracking:``) is not False. Raises TemplateError for a missing or broken template, a
    rendering failure, or a subject or address that cannot be a header.
    """
    to = profile.get("email")
    if not to:
        raise TemplateError("the customer has no email address in the profile")
    to = str(to)
    problem = address_problem(to)
    if problem:
        raise TemplateError(f"the customer's email address {problem}")
    sender = settings.sender_for(marketing)
    customer_id = str(profile.get("customer_id", ""))
    sent_at = time.time() if now is None else now
    links = public_links(settings, customer_id, action_id, trigger_id, sent_at)
    unsubscribe_url = links.unsubscribe_url
    context = {
        "customer": {**profile, "name": profile.get("first_name") or FALLBACK_NAME},
        "event": event,
        "properties": event.get("properties") or {},
        "scores": scores,
        "trigger": trigger_id,
        "marketing": marketing,
        "unsubscribe_url": unsubscribe_url,
    }
    compiled = load_template(settings.templates_dir, template)
    subject, body, html = _render_parts(compiled, context, marketing)
    if html is not None and marketing and tracking and links.trackable:
        html = links.track(html)  # after the text part was derived: text links stay as they are
    if marketing and unsubscribe_url not in body:
        body += f"\n--\nYou receive this because you subscribed. Unsubscribe: {unsubscribe_url}\n"
    domain = settings.message_id_domain or _domain_of(sender)
    headers: dict[str, str] = {}
    if marketing:
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        label = _LIST_LABEL.sub("-", trigger_id).strip("-") or "nudge"
        headers["List-Id"] = f"<{label}.{domain}>"
    headers["X-Nudge-Trigger"] = trigger_id
    if action_id is not None:
        headers["X-Nudge-Message"] = str(action_id)
        # Postmark keeps no custom header in its events but turns X-PM-Metadata-* into the
        # event's Metadata, so its bounces and opens are matched to the action too.
        headers["X-PM-Metadata-nudge_action"] = str(action_id)
        headers["X-Mailgun-Variables"] = f'{{"nudge_action": "{action_id}"}}'  # user-variables
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return RenderedEmail(
        to, subject, body, f"<{digest}@{domain}>", headers, html=html, sender=sender,
        date=formatdate(sent_at, usegmt=True), dkim=settings.dkim,
    )  # fmt: skip


def _render_parts(
    compiled: EmailTemplate, context: Mapping[str, Any], marketing: bool
) -> tuple[str, str, str | None]:
    """(subject, text body, HTML or None) of a template's parts."""
    name = compiled.name
    subject = body = None
    if compiled.text is not None:
        rendered = _render(compiled.text, name, context)
        head, sep, text = rendered.partition("\n---\n")
        if not sep or not head.lower().startswith("subject:"):
            raise TemplateError(
                f"template {name!r}: expected 'subject: ...', a line '---', then the body"
            )
        subject, body = head.split(":", 1)[1].strip(), text
    html = None
    if compiled.html is not None:
        html_name = f"{name}.html"
        if subject is None:
            subject = html_lib.unescape(_render_block(compiled.html, "subject", html_name, context))
            subject = " ".join(subject.split())
            if not subject:
                raise TemplateError(f"template {html_name!r}: the subject block renders empty")
        html = _render(compiled.html, html_name, {**context, "subject": subject})
        unsubscribe = html_lib.escape(str(context["unsubscribe_url"]))
        if marketing and unsubscribe not in html:  # a template that does not use the layout
            html = _append_footer(html, unsubscribe)
        try:
            html = inline_css(html)
        except ValueError as exc:
            raise TemplateError(f"template {html_name!r}: {_one_line(exc)}") from None
        if body is None:
            body = html_to_text(html)
    assert subject is not None and body is not None  # one part exists (load_template)
    problem = _header_problem(subject)
    if problem:
        raise TemplateError(f"template {name!r}: the subject {problem}")
    for part in (body, html or ""):
        if _has_surrogate(part):
            raise TemplateError(f"template {name!r}: the body holds text that is not valid Unicode")
    return subject, body.strip() + "\n", html


def _render(compiled: jinja2.Template, name: str, context: Mapping[str, Any]) -> str:
    try:
        rendered = compiled.render(context)
    except TemplateError:
        raise
    except Exception as exc:  # one bad template must never escape as another exception type
        raise _template_error(name, exc, compiled.filename) from None
    if len(rendered) > MAX_PART:
        raise TemplateError(f"template {name!r}: renders over {MAX_PART:,} characters")
    return rendered


def _render_block(
    compiled: jinja2.Template, block: str, name: str, context: Mapping[str, Any]
) -> str:
    try:
        return "".join(compiled.blocks[block](compiled.new_context(dict(context))))
    except TemplateError:
        raise
    except Exception as exc:
        raise _template_error(name, exc, compiled.filename) from None


def _append_footer(html: str, escaped_url: str) -> str:
    footer = (
        '<p style="font-size:12px;color:#6b7280">You receive this because you subscribed. '
        f'<a href="{escaped_url}">Unsubscribe</a></p>'
    )
    at = html.lower().rfind("</body>")
    return html + footer if at < 0 else html[:at] + footer + html[at:]


def _domain_of(sender: str) -> str:
    domain = bare_address(sender).rpartition("@")[2].strip().rstrip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return DEFAULT_MESSAGE_ID_DOMAIN
    return domain if domain_problem(domain) is None else DEFAULT_MESSAGE_ID_DOMAIN


def _compile(env: jinja2.Environment, name: str, filename: str) -> jinja2.Template | None:
    """The compiled file, None when it does not exist; any other failure is a TemplateError."""
    try:
        return env.get_template(filename)
    except _NotFound as exc:
        if exc.filename == filename:
            return None
        raise
    except TemplateError:
        raise
    except Exception as exc:  # syntax errors, unknown filters, unreadable files, anything
        raise _template_error(name, exc, None) from None


# -- headers -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def bare_address(value: str) -> str:
    """The addr-spec of ``Name <addr>`` (`email.utils.parseaddr`, cached: the senders repeat on
    every email and parsing one costs ~50 µs); empty when there is none."""
    return parseaddr(value)[1]


def _header_problem(value: str) -> str | None:
    """Why `value` cannot be a header value (line break, control character), or None."""
    if value.isascii() and value.isprintable():  # the common case: no break, no control
        return None
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
    """A TemplateError for `exc`: the template's name, the line where Jinja knows it, one line.

    An error inside a layout or partial names it too: ``template 'x.html' (partials/f.html.j2),
    line 3: …``.
    """
    line = None
    inner: str | None = None  # the layout or partial the error is in, when not `filename`
    if isinstance(exc, jinja2.TemplateSyntaxError):
        line, text = exc.lineno, exc.message or str(exc)
        if exc.filename and filename and exc.filename != filename:
            inner = exc.name or exc.filename
    else:
        # Jinja rewrites tracebacks so that template frames carry the template's own line.
        tb = exc.__traceback__
        while tb is not None and filename:
            frame_file = tb.tb_frame.f_code.co_filename
            if frame_file == filename:
                line, inner = tb.tb_lineno, None
            elif frame_file.endswith(".j2") and line is not None:
                line, inner = tb.tb_lineno, _relative_name(frame_file)
            tb = tb.tb_next
        text = str(exc)
    if isinstance(exc, SecurityError):
        text = f"not allowed in a template: {text}"
    elif not isinstance(exc, jinja2.TemplateError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    where = f"template {name!r}" + (f" ({inner})" if inner else "")
    where += f", line {line}" if line else ""
    return TemplateError(f"{where}: {_one_line(text)}")


def _relative_name(path: str) -> str:
    """A template file's name inside its templates folder (``partials/footer.html.j2``)."""
    for directory in _ENVIRONMENTS:
        try:
            return Path(path).relative_to(directory.resolve()).as_posix()
        except ValueError:
            continue
    return Path(path).name


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
            loader=_Loader(directory), undefined=jinja2.ChainableUndefined,
            autoescape=_autoescape, keep_trailing_newline=True,
        )  # fmt: skip
        env.filters["money"] = money_filter
        env.filters["number"] = number_filter
        _ENVIRONMENTS[directory] = env
    return env


def _autoescape(filename: str | None) -> bool:
    """HTML templates (and their layouts and partials) escape; text, SMS and push do not."""
    return filename is not None and filename.endswith((".html.j2", ".html"))


class _NotFound(TemplateError):
    """A template file that does not exist (`filename` says which)."""

    def __init__(self, message: str, filename: str) -> None:
        super().__init__(message)
        self.filename = filename


class _Loader(jinja2.FileSystemLoader):
    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        try:
            return super().get_source(environment, template)
        except jinja2.TemplateNotFound:
            raise _NotFound(
                f"template {template.removesuffix('.j2')!r} not found in {self.searchpath[0]}",
                template,
            ) from None
