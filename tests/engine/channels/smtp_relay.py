"""A loopback SMTP relay that behaves like the real ones: TLS from a CA made on the spot, AUTH.

`make_pki` writes a throwaway CA and a server certificate for ``localhost`` and ``127.0.0.1``
(cryptography, EC P-256): clients trust the server only when given the CA file, as with a
private relay. `Relay` is aiosmtpd on loopback with ``require_starttls`` (or implicit TLS),
``auth_required`` and an authenticator checking username and password; it keeps the messages it
accepted, counts the connections it was opened (one SMTP instance per connection: the
controller's factory), and advertises PIPELINING (or not), and can misbehave on cue — answer 421 to a MAIL, close the connection
after a message, or close it before answering a message's end of data.

`RelayProcess` runs one in a child process with a trivial handler (counting only), so that a
benchmark measures the client, not aiosmtpd sharing its interpreter; with `rtt` it sits behind a
proxy that delays every byte by half of it each way, as a relay across a network would. Used by
tests/engine/channels/test_smtp.py and bench/delivery.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import multiprocessing
import socket
import ssl
import threading
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from nudge.local_server import free_port

__all__ = ["Pki", "Relay", "RelayProcess", "make_pki"]

Mode = Literal["starttls", "tls", "none"]


@dataclass(frozen=True)
class Pki:
    """A CA certificate and a server certificate + key signed by it (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_pki(directory: Path, hosts: Collection[str] = ("localhost", "127.0.0.1")) -> Pki:
    """A new CA and a server certificate for `hosts` (DNS names or IP addresses) in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nudge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, next(iter(hosts)))]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@dataclass
class _Faults:
    """Misbehaviour on cue, by the relay-wide ordinal of the MAIL command / message (1-based)."""

    busy_mail: set[int] = field(default_factory=set)  # answer 421 to that MAIL, then close
    close_after: set[int] = field(default_factory=set)  # accept that message, then close
    lose_reply: set[int] = field(default_factory=set)  # keep that message, close before the 250
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # recipient → reply, e.g. "550 …"


class _Handler:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.relay.pipelining:  # aiosmtpd reads and answers one line at a time: it can
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        self.relay.mails += 1
        if getattr(session, "hanging_up", False):  # pipelined after the message it hung up on:
            _close(server)  # a server that hangs up answers nothing more
            return "421 4.4.2 closing"  # written to a closed transport: never read
        if self.relay.mails in self.relay.faults.busy_mail:
            asyncio.get_running_loop().call_soon(_close, server)
            return "421 4.7.0 too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        refusal = self.relay.faults.refuse_rcpt.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        relay = self.relay
        if relay.keep:
            relay.messages.append(bytes(envelope.original_content or envelope.content))
        relay.count += 1
        if relay.count in relay.faults.lose_reply:
            _close(server)  # the message is here, the client never hears so
            session.hanging_up = True
            return "250 OK"
        if relay.count in relay.faults.close_after:
            session.hanging_up = True  # commands already pipelined behind it go unanswered
            asyncio.get_running_loop().call_soon(_close, server)  # after the reply is written
        return "250 OK"


def _close(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


class _CountingController(Controller):
    def __init__(self, relay: Relay, **kwargs: Any) -> None:
        super().__init__(relay.handler, **kwargs)
        self.relay = relay

    def factory(self) -> SMTP:
        self.relay.connections += 1  # one SMTP protocol instance per connection
        with warnings.catch_warnings():  # AUTH without STARTTLS: implicit TLS, or plain loopback
            warnings.simplefilter("ignore", UserWarning)
            return super().factory()  # type: ignore[no-any-return]


class Relay:
    """`with Relay(pki, users={"u": "p"}) as relay:` — a relay at 127.0.0.1:`relay.port`."""

    def __init__(
        self,
        pki: Pki | None,
        *,
        mode: Mode = "starttls",
        users: dict[str, str] | None = None,
        port: int | None = None,
        keep: bool = True,
        pipelining: bool = True,
    ) -> None:
        if mode != "none" and pki is None:
            raise ValueError(f"mode {mode} needs a Pki")
        self.pki, self.mode, self.users, self.keep = pki, mode, users, keep
        self.pipelining = pipelining  # advertise PIPELINING (RFC 2920), as the big relays do
        self.port = port or free_port()
        self.handler = _Handler(self)
        self.faults = _Faults()
        self.messages: list[bytes] = []
        self.count = 0  # messages accepted
        self.mails = 0  # MAIL commands seen
        self.connections = 0
        self.auth_attempts = 0
        self._controller: _CountingController | None = None

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        ok = (
            isinstance(data, LoginPassword)
            and self.users is not None
            and self.users.get(data.login.decode()) == data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> Relay:
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port,
                                  "server_hostname": "relay.test", "timeout": 30}  # fmt: skip
        if self.users is not None:
            kwargs.update(auth_required=True, authenticator=self._authenticate)
        if self.mode == "starttls":
            assert self.pki is not None
            kwargs.update(tls_context=self.pki.server_context(), require_starttls=True)
        elif self.mode == "tls":
            assert self.pki is not None
            # aiosmtpd offers AUTH "over TLS" only after STARTTLS; this connection is TLS throughout
            kwargs.update(ssl_context=self.pki.server_context(), auth_require_tls=False)
        elif self.users is not None:
            kwargs.update(auth_require_tls=False)  # plaintext AUTH: the loopback-only case
        self._controller = _CountingController(self, **kwargs)
        self._controller.start()
        self.connections = 0  # the controller's own start-up probe is not a client
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Latency:
    """A TCP proxy on `port` in front of 127.0.0.1:`target` that delays every byte by `delay`
    seconds each way (a relay one round trip of 2 × `delay` away), order kept."""

    def __init__(self, port: int, target: int, delay: float) -> None:
        self.port, self.target, self.delay = port, target, delay
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"latency proxy on port {self.port} did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for sock in (writer.get_extra_info("socket"),):
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)  # fmt: skip

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((self.loop.time() + self.delay, chunk))
                if not chunk:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()


def _serve(pki: Pki | None, mode: Mode, users: dict[str, str] | None, port: int,
           pipe: Connection, rtt: float = 0.0) -> None:  # fmt: skip
    if rtt > 0:
        relay = Relay(pki, mode=mode, users=users, keep=False).start()
        _Latency(port, relay.port, rtt / 2).start()
    else:
        relay = Relay(pki, mode=mode, users=users, port=port, keep=False).start()
    pipe.send("ready")
    while True:
        command = pipe.recv()
        if command == "counts":
            pipe.send((relay.connections, relay.count))
        elif command == "stop":
            relay.stop()
            pipe.send("stopped")
            return


class RelayProcess:
    """A `Relay` (counting, not keeping) in a child process; `counts()` → (connections, messages);
    `rtt` seconds of round trip added by a delaying proxy in front of it."""

    def __init__(self, pki: Pki | None, *, mode: Mode = "starttls",
                 users: dict[str, str] | None = None, rtt: float = 0.0) -> None:  # fmt: skip
        self.port = free_port()
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(pki, mode, users, self.port, child, rtt), daemon=True
        )

    def counts(self) -> tuple[int, int]:
        self._pipe.send("counts")
        connections, messages = self._pipe.recv()
        return int(connections), int(messages)

    def __enter__(self) -> RelayProcess:
        self._process.start()
        if not self._pipe.poll(30) or self._pipe.recv() != "ready":
            raise RuntimeError(f"SMTP relay on port {self.port} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipe.send("stop")
        self._pipe.poll(10)
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
