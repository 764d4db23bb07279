"""Email transports: SMTP to a relay, or a file outbox (the embedded default).

Both take a `RenderedEmail` and a `before_commit` callback that marks the action *sending*; it runs
after the message data is transferred and before the transaction is final (the SMTP end-of-data
dot, the file's rename), so a crash never sends an email twice.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Callable
from pathlib import Path

from engine.channels.email import EmailSettings, RenderedEmail

__all__ = ["FileOutbox", "Mailer", "SmtpSender", "mailer_for"]


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


Mailer = SmtpSender | FileOutbox


def mailer_for(settings: EmailSettings) -> Mailer:
    """The transport `settings` select: SMTP when a host is set, else the file outbox."""
    if settings.smtp_host:
        return SmtpSender(settings)
    return FileOutbox(settings.outbox_dir or settings.templates_dir / "outbox", settings.sender)
