"""Email: render a template for a customer, and deliver it exactly once — by SMTP or to a file outbox.

Templates are Jinja2 files `<name>.j2` in a templates folder: a `subject:` line, a line `---`, then
the plain-text body. They see `customer` (the profile; `customer.name` falls back to "Valued
Customer"), `event` (the triggering event), `properties` (its properties), `scores`, `trigger` and
`unsubscribe_url`. Marketing mail carries an unsubscribe link and a `List-Unsubscribe` header.

Delivery marks the action as *sending* in the database before the SMTP transaction is finalised
(the end-of-data dot), so a crash can never send an email twice; a crash in the microseconds between
that mark and the dot leaves the action flagged `sending` (in doubt) — reported, never silently lost.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import smtplib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

__all__ = [
    "EmailSettings",
    "FileOutbox",
    "RenderedEmail",
    "SmtpSender",
    "TemplateError",
    "render_email",
    "unsubscribe_token",
]

FALLBACK_NAME = "Valued Customer"


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
    outbox_dir: Path | None = None


@dataclass(frozen=True)
class RenderedEmail:
    to: str
    subject: str
    body: str
    message_id: str
    headers: Mapping[str, str]

    def to_message(self, sender: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Message-ID"] = self.message_id
        message["Date"] = formatdate(usegmt=True)
        for name, value in self.headers.items():
            message[name] = value
        message.set_content(self.body)
        return message


def unsubscribe_token(customer_id: str, secret: str) -> str:
    """An HMAC that proves an unsubscribe link was issued for this customer."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()[:32]


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
    """Render `template` for one customer; raises TemplateError for a missing or broken template."""
    to = profile.get("email")
    if not to:
        raise TemplateError("the customer has no email address in the profile")
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
    text = _environment(settings.templates_dir).get_template(f"{template}.j2")
    try:
        rendered = text.render(context)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"template {template!r}: {exc}") from None
    head, sep, body = rendered.partition("\n---\n")
    if not sep or not head.lower().startswith("subject:"):
        raise TemplateError(
            f"template {template!r}: expected 'subject: ...', a line '---', then the body"
        )
    body = body.strip() + "\n"
    headers: dict[str, str] = {"X-Nudge-Trigger": trigger_id}
    if marketing:
        body += f"\n--\nYou receive this because you subscribed. Unsubscribe: {unsubscribe_url}\n"
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return RenderedEmail(str(to), head.split(":", 1)[1].strip(), body, f"<{digest}@nudge>", headers)


class SmtpSender:
    """Delivers over SMTP; `before_commit` runs after the data is sent and before the final dot."""

    def __init__(self, settings: EmailSettings) -> None:
        if not settings.smtp_host:
            raise ValueError("SmtpSender needs smtp_host")
        self.settings = settings

    def send(self, email: RenderedEmail, before_commit: Callable[[], None]) -> str:
        message = email.to_message(self.settings.sender)
        with smtplib.SMTP(
            self.settings.smtp_host, self.settings.smtp_port, timeout=self.settings.smtp_timeout
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
            raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
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
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(email.to_message(self.sender).as_bytes())
            before_commit()
            os.replace(tmp, target)  # the file appears whole, once
        return f"file {target.name}"


def _address(sender: str) -> str:
    return sender.split("<")[-1].rstrip(">").strip()


_ENVIRONMENTS: dict[Path, jinja2.Environment] = {}


def _environment(directory: Path) -> jinja2.Environment:
    env = _ENVIRONMENTS.get(directory)
    if env is None:
        env = jinja2.Environment(
            loader=_Loader(directory), undefined=jinja2.ChainableUndefined, autoescape=False,
            keep_trailing_newline=True,
        )  # fmt: skip
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
