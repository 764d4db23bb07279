"""Email transports: SMTP to a relay, or a file outbox (the embedded default).

Both take a `RenderedEmail` and a `before_commit` callback that marks the action *sending*; it runs
after the message data is transferred and before the transaction is final (the SMTP end-of-data
dot, the file's rename), so a crash never sends an email twice.

SMTP is written for the relays people actually use (SendGrid, Amazon SES, Postmark, Mailgun: all
want TLS and AUTH):

- Security (`SmtpSecurity.mode`): ``starttls`` — EHLO, STARTTLS, EHLO again; a server that does
  not offer STARTTLS is refused, never talked to in plaintext; ``tls`` — implicit TLS from the
  first byte (SMTPS, port 465); ``none`` — plaintext. The default is ``starttls`` when a username
  is set, else ``none``. Certificates are always verified, chain and host name, against the system
  store plus the private CA of `ca_file` when one is given. Username and password go through
  smtplib's ``login`` (CRAM-MD5, PLAIN or LOGIN, whichever the server offers first in that order).
  Credentials are never sent in plaintext over a network: AUTH with ``none`` is accepted only to a
  loopback host (a local relay such as Postfix on the same machine), anything else is a
  `UserError` when the sender is built.
- One connection per dispatcher batch: the connection stays open between `send` calls and `close`
  (QUIT) ends it — the dispatcher closes its channels after each batch. A refused transaction is
  followed by RSET, so the next message starts clean on the same connection. With PIPELINING
  (offered by the big relays) the envelope is one round trip, and a committed group
  (`send_data` with ``marked`` and ``then``: the dispatcher's group commit) writes each email's
  data, its final dot and the next email's MAIL, RCPT and DATA in one write (RFC 2920 3.1), then
  reads the dot's reply (which alone decides that email) and the next envelope's — one round
  trip an email on a kept connection, against ~11 with a connection per email (TCP, STARTTLS,
  AUTH, QUIT); a refused next envelope fails only its own email, when it is sent. Measured in
  `bench/delivery.py` (STARTTLS + AUTH, aiosmtpd in its own process, BENCHMARKS.md) with a 10 ms
  round trip: 12.6 ms an email through one dispatcher worker (24.3 ms with 2 round trips),
  8.1× the connection-per-email path (4.2× before). Since the data and the dot are one write,
  a connection lost during that write leaves the email in doubt (never resent). TCP_NODELAY
  matters — without it Nagle's algorithm and delayed ACKs cost ~40 ms per message.
- A connection found dead (closed by the server's idle timeout, reset, a 421) before the point of
  no return is reopened once, transparently; after `before_commit` nothing is ever sent again: a
  lost connection there raises `SMTPServerDisconnected` (or `OSError`), which the dispatcher
  records as *unconfirmed*.
- Failures are `DeliveryError`s with the server's code and text: a 5xx reply to MAIL, RCPT, DATA
  or the end of data will not pass (``retryable=False``); a 4xx, an unreachable relay, a failed
  TLS handshake or certificate check, refused credentials (535) may pass once someone fixes the
  configuration, so they are retried and end ``failed`` with the server's answer after the
  dispatcher's last attempt — the action, its content and its reason stay in the outbox.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from engine.channels.base import DeliveryError
from engine.channels.email import EmailSettings, RenderedEmail, bare_address
from engine.errors import UserError

__all__ = [
    "SECURITY_MODES",
    "FileOutbox",
    "Mailer",
    "SmtpSecurity",
    "SmtpSender",
    "mailer_for",
    "tls_context",
]

log = logging.getLogger(__name__)

SecurityMode = Literal["starttls", "tls", "none"]
SECURITY_MODES: tuple[SecurityMode, ...] = ("starttls", "tls", "none")

# What a dead or dying connection looks like before the end of data: reopen it once.
_LOST = (smtplib.SMTPServerDisconnected, OSError)


@dataclass(frozen=True)
class SmtpSecurity:
    """How the SMTP relay is reached: encryption, credentials, the private CA to trust."""

    mode: SecurityMode | None = None  # None: starttls when a username is set, else none
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr or a log line
    ca_file: Path | None = None  # PEM certificates trusted on top of the system store

    @property
    def effective_mode(self) -> SecurityMode:
        """The mode in force: the one set, else ``starttls`` with a username, else ``none``."""
        if self.mode is not None:
            return self.mode
        return "starttls" if self.username else "none"

    def problem(self, host: str) -> str | None:
        """Why this cannot be used to reach `host`, or None. Names the settings to change."""
        if self.mode is not None and self.mode not in SECURITY_MODES:
            return f"NUDGE_SMTP_SECURITY: expected one of starttls, tls, none (got {self.mode!r})"
        if self.password and not self.username:
            return "NUDGE_SMTP_PASSWORD is set without NUDGE_SMTP_USERNAME"
        if self.username and not self.password:
            return "NUDGE_SMTP_USERNAME is set without NUDGE_SMTP_PASSWORD"
        if self.username and self.effective_mode == "none" and not is_loopback(host):
            return (
                f"NUDGE_SMTP_SECURITY=none would send the SMTP password to {host} in plaintext: "
                "use starttls (port 587) or tls (port 465); none with credentials is only for a "
                "relay on this machine (127.0.0.1, ::1, localhost)"
            )
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (localhost, 127.0.0.0/8, ::1) — not a DNS lookup."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context that verifies chain and host name (TLS 1.2 or later): the system's CAs,
    plus those in `ca_file`. A file that is not readable PEM is a UserError naming it."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=os.fspath(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UserError(
                f"NUDGE_SMTP_CA_FILE: {ca_file}: expected a readable file of PEM certificates "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return context


class SmtpSender:
    """Delivers over SMTP, one connection kept for many messages until `close`;
    `before_commit` runs after the data is sent and before the final dot."""

    def __init__(self, settings: EmailSettings) -> None:
        if not settings.smtp_host:
            raise ValueError("SmtpSender needs smtp_host")
        self.settings = settings
        self.host: str = settings.smtp_host
        self.port = settings.smtp_port
        self.security = settings.smtp_security or SmtpSecurity()
        problem = self.security.problem(self.host)
        if problem:
            raise UserError(problem)
        self.mode = self.security.effective_mode
        self._context = tls_context(self.security.ca_file) if self.mode != "none" else None
        self._smtp: smtplib.SMTP | None = None
        # An envelope sent with the previous final dot (send_data's `then`): its sender and
        # recipient, and None when the server took it (now waiting for the data) or its refusal.
        self._announced: tuple[str, str, DeliveryError | None] | None = None
        self.connections = 0  # connections opened (tests and the benchmark read it)

    # -- one message --------------------------------------------------------------------------

    def send(self, email: RenderedEmail, before_commit: Callable[[], None]) -> str:
        """Deliver `email` on the open connection (opened if need be); the result to store."""
        return self.send_data(email, self.encode(email), before_commit)

    def encode(self, email: RenderedEmail) -> bytes:
        """The DATA of `email`: its bytes, dot-stuffed, CRLF-terminated, without the final dot
        (TemplateError when a header cannot be written). Done before connecting: it may fail."""
        raw = email.to_bytes(self.settings.sender, linesep="\r\n")
        data: bytes = smtplib._quote_periods(raw)  # type: ignore[attr-defined]  # dot-stuffing, as smtplib does
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        return data

    def send_data(
        self, email: RenderedEmail, data: bytes, before_commit: Callable[[], None], *,
        marked: bool = False, then: RenderedEmail | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> str:  # fmt: skip
        """`send` with the DATA already made by `encode` (the dispatcher builds it before the
        *sending* commit of a group, engine.runtime.dispatcher).

        `marked`: the *sending* mark is already durable (group commit), so `before_commit` is a
        check and runs before the data, which goes with its final dot in one write. `then` (with
        `marked`): the email the caller sends next on this connection; with PIPELINING its
        envelope (MAIL, RCPT, DATA) goes in that same write, after the final dot (RFC 2920 3.1:
        message content may open a group, DATA closes one), and its replies are read after the
        reply to the dot, which alone decides this email — one round trip an email. A refusal
        of that envelope is raised by the next `send_data` for it, not here. `meanwhile` (with
        `marked`) runs between the final dot and reading its reply: the caller's own work
        (preparing its next emails) overlaps the server's; it must not use this sender."""
        envelope_from = bare_address(email.sender or self.settings.sender)
        smtp = self._announced_session(envelope_from, email.to)
        if not marked:
            if smtp is None:
                smtp = self._transfer(envelope_from, email.to, data)
            else:
                self._send_or_drop(smtp, data)
            before_commit()  # the point of no return is the dot below
            tail = b".\r\n"
        else:
            if smtp is None:
                smtp = self._transfer(envelope_from, email.to, None)
            before_commit()  # a check only: nothing below is written before it passes
            tail = data + b".\r\n"
        announce = then is not None and marked and smtp.has_extn("pipelining")
        if announce:
            assert then is not None
            then_from = bare_address(then.sender or self.settings.sender)
            tail += _envelope_commands(then_from, then.to)
        try:
            smtp.send(tail)
            if meanwhile is not None and marked:
                try:
                    meanwhile()
                except Exception:  # the caller's own trouble: this email's reply is still read
                    log.exception("work done while waiting for the SMTP reply failed")
            code, reply = smtp.getreply()
        except BaseException:
            # Lost after the data: the server may or may not have the message. Not a
            # DeliveryError — the dispatcher records it as unconfirmed and never sends it again.
            self._drop()
            raise
        if code == 421:
            self._drop()  # closing: the next envelope's replies will not come
        elif announce:
            assert then is not None
            self._read_announced(smtp, then_from, then.to)
        if code != 250:
            raise _refused("end of data", code, reply)
        return f"smtp {code} {email.message_id}"

    def _send_or_drop(self, smtp: smtplib.SMTP, data: bytes) -> None:
        """The data after an announced envelope: a connection lost here is retried by the
        dispatcher like one lost during `_transfer` (nothing is final before the dot)."""
        try:
            smtp.send(data)
        except _LOST as exc:
            self._drop()
            raise DeliveryError(
                f"SMTP {self.host}:{self.port}: connection lost before the message was sent "
                f"({_describe(exc)})",
                retryable=True,
            ) from exc

    def _read_announced(self, smtp: smtplib.SMTP, envelope_from: str, to: str) -> None:
        """Read the replies to the envelope sent after a final dot and remember what they mean
        for the email it belongs to: ready for its data, refused (raised by its own send), or
        nothing (the connection was lost or is closing: its send starts over)."""
        try:
            mail, rcpt, data = smtp.getreply(), smtp.getreply(), smtp.getreply()
        except _LOST:
            self._drop()
            return
        if 421 in (mail[0], rcpt[0], data[0]):
            self._drop()
            return
        refused: DeliveryError | None = None
        if mail[0] != 250:
            refused = _refused("MAIL FROM", *mail)
        elif rcpt[0] not in (250, 251):
            refused = _refused("RCPT TO", *rcpt)
        elif data[0] != 354:
            refused = _refused("DATA", *data)
        if refused is None:
            self._announced = (envelope_from, to, None)
            return
        if data[0] == 354:
            self._drop()  # DATA taken with no valid recipient: leave without a dot (aborts it)
        else:
            self._reset(smtp)  # RSET, or drop the connection when even that fails
        self._announced = (envelope_from, to, refused)

    def _announced_session(self, envelope_from: str, to: str) -> smtplib.SMTP | None:
        """The connection when an envelope announced with the previous email's final dot is this
        email's and was accepted (it is then waiting for the data); raises its refusal; None when
        there is none (a connection left waiting for another email's data is dropped)."""
        announced, self._announced = self._announced, None
        if announced is None:
            return None
        sender, recipient, refused = announced
        if (sender, recipient) == (envelope_from, to):
            if refused is not None:
                raise refused
            return self._smtp
        if refused is None:
            self._drop()  # in DATA for another message: only closing without a dot aborts it
        return None

    def _transfer(self, envelope_from: str, to: str, data: bytes | None) -> smtplib.SMTP:
        """MAIL, RCPT, DATA and the message up to (not including) the final dot (`data` None:
        up to the 354), on a connection reopened once if it turns out dead — nothing is final
        before the dot."""
        for attempt in (1, 2):
            smtp = self._session()
            try:
                if smtp.has_extn("pipelining"):
                    self._envelope_pipelined(smtp, envelope_from, to)
                else:
                    self._expect(smtp, "MAIL FROM", smtp.mail(envelope_from), (250,))
                    self._expect(smtp, "RCPT TO", smtp.rcpt(to), (250, 251))
                    self._expect(smtp, "DATA", smtp.docmd("DATA"), (354,))
                if data is not None:
                    smtp.send(data)
                return smtp
            except _LOST as exc:
                self._drop()
                if attempt == 2:
                    raise DeliveryError(
                        f"SMTP {self.host}:{self.port}: connection lost before the message was "
                        f"sent ({_describe(exc)})",
                        retryable=True,
                    ) from exc
                log.info("SMTP connection to %s:%d lost (%s); reconnecting", self.host,
                         self.port, _describe(exc))  # fmt: skip
        raise AssertionError("unreachable")  # pragma: no cover

    def _envelope_pipelined(self, smtp: smtplib.SMTP, envelope_from: str, to: str) -> None:
        """MAIL, RCPT and DATA in one write, then their three replies (RFC 2920 PIPELINING,
        which the big relays offer): one round trip instead of three."""
        smtp.send(_envelope_commands(envelope_from, to))
        mail, rcpt, data = smtp.getreply(), smtp.getreply(), smtp.getreply()
        if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
            # A server that takes DATA with no valid recipient: leave without the final dot,
            # which aborts the transaction (RFC 5321 4.1.1.4), and start over next time.
            self._drop()
            raise _refused("RCPT TO" if mail[0] == 250 else "MAIL FROM",
                           *(rcpt if mail[0] == 250 else mail))  # fmt: skip
        self._expect(smtp, "MAIL FROM", mail, (250,))  # the first refusal RSETs and raises
        self._expect(smtp, "RCPT TO", rcpt, (250, 251))
        self._expect(smtp, "DATA", data, (354,))

    def _expect(
        self, smtp: smtplib.SMTP, step: str, answer: tuple[int, bytes], ok: tuple[int, ...]
    ) -> None:
        code, reply = answer
        if code in ok:
            return
        if code == 421:  # the server is closing this connection: a new one may do
            raise smtplib.SMTPServerDisconnected(f"{code} {_text(reply)}")
        self._reset(smtp)
        raise _refused(step, code, reply)

    def _reset(self, smtp: smtplib.SMTP) -> None:
        """RSET after a refused transaction, so the connection can carry the next message."""
        try:
            code, _ = smtp.rset()
        except _LOST:
            code = 0
        if code != 250:
            self._drop()

    # -- the connection -----------------------------------------------------------------------

    def _session(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = self._connect()
        return self._smtp

    def _connect(self) -> smtplib.SMTP:
        """A connection ready for MAIL FROM: encrypted as `mode` says, authenticated when
        credentials are set. Every failure is a retryable DeliveryError saying what failed."""
        where = f"SMTP {self.host}:{self.port}"
        timeout = self.settings.smtp_timeout
        try:
            if self.mode == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=timeout, context=self._context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            raise _untrusted(where, exc) from exc
        except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, greeting not 220
            raise DeliveryError(f"{where} unreachable ({_describe(exc)})", retryable=True) from exc
        self.connections += 1
        try:
            # The data and the final dot are two writes, then we wait for the reply: with Nagle's
            # algorithm and delayed ACKs that cost ~40 ms a message (measured: 20 emails/s).
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if self.mode == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{where} does not offer STARTTLS: refusing to send in plaintext "
                        "(NUDGE_SMTP_SECURITY=starttls; tls is implicit TLS, usually port 465)",
                        retryable=True,
                    )
                smtp.starttls(context=self._context)
                smtp.ehlo()
            if self.security.username:
                smtp.login(self.security.username, self.security.password or "")
        except DeliveryError:
            smtp.close()
            raise
        except ssl.SSLCertVerificationError as exc:
            smtp.close()
            raise _untrusted(where, exc) from exc
        except smtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise DeliveryError(
                f"{where} refused the credentials of {self.security.username!r}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}",
                retryable=True,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:  # no AUTH offered (or STARTTLS vanished)
            smtp.close()
            raise DeliveryError(f"{where}: {exc}", retryable=True) from exc
        except (OSError, smtplib.SMTPException) as exc:  # TLS handshake, dropped, odd replies
            smtp.close()
            raise DeliveryError(
                f"{where}: could not open a session ({_describe(exc)})", retryable=True
            ) from exc
        return smtp

    def _drop(self) -> None:
        """Forget the connection without a QUIT (it is broken or in an unknown state)."""
        smtp, self._smtp = self._smtp, None
        self._announced = None
        if smtp is not None:
            smtp.close()

    def close(self) -> None:
        """End the batch's connection politely (QUIT); a broken one is just closed, and so is one
        waiting for the data of an envelope never used (a QUIT there would be message text)."""
        if self._announced is not None and self._announced[2] is None:
            self._drop()
        smtp, self._smtp, self._announced = self._smtp, None, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (*_LOST, smtplib.SMTPException):
            smtp.close()


def _envelope_commands(envelope_from: str, to: str) -> bytes:
    """MAIL, RCPT and DATA, pipelined (RFC 2920): DATA is last, its 354 awaited."""
    return f"MAIL FROM:{_path(envelope_from)}\r\nRCPT TO:{_path(to)}\r\nDATA\r\n".encode("ascii")


# A plain addr-spec (atext and dots @ a domain): quoted as ``<addr>`` without smtplib's
# `quoteaddr`, whose parseaddr costs ~30 µs an address (two an email).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def _path(address: str) -> str:
    """The reverse- or forward-path of `address` as smtplib writes it (``<addr>``)."""
    if _PLAIN_PATH.fullmatch(address):
        return f"<{address}>"
    return str(smtplib.quoteaddr(address))


def _refused(step: str, code: int, reply: bytes) -> DeliveryError:
    """The server's refusal as a DeliveryError: 5xx will not pass, anything else may."""
    return DeliveryError(
        f"SMTP {step} refused: {code} {_text(reply)}", retryable=not 500 <= code < 600
    )


def _untrusted(where: str, exc: ssl.SSLCertVerificationError) -> DeliveryError:
    return DeliveryError(
        f"{where}: TLS certificate not trusted ({exc.verify_message or exc}); nothing was sent "
        "— NUDGE_SMTP_CA_FILE trusts a private CA",
        retryable=True,
    )


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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


Mailer = SmtpSender | FileOutbox


def mailer_for(settings: EmailSettings) -> Mailer:
    """The transport `settings` select: SMTP when a host is set, else the file outbox."""
    if settings.smtp_host:
        return SmtpSender(settings)
    return FileOutbox(settings.outbox_dir or settings.templates_dir / "outbox", settings.sender)
