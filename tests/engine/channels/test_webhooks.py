"""Webhooks against a real loopback receiver: pinning the checked address, blocked ranges,
redirects, and signature verification on hostile headers.

Nothing here reaches an address other than loopback: an autouse guard refuses every socket
connect to a non-loopback address (recording it), and host names are answered by a fake resolver.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import engine.channels.webhooks as webhooks
from engine.channels.webhooks import (
    BlockedTarget,
    WebhookError,
    WebhookSender,
    idempotency_header,
    sign,
    verify_signature,
)

SECRET = "whsec-test"
PUBLIC_V4 = "93.184.215.14"  # never contacted: the connect guard refuses it
PUBLIC_V6 = "2606:4700:4700::1111"


# -- a loopback receiver ------------------------------------------------------------------------


class Receiver:
    """A threaded HTTP(S) server on 127.0.0.1 that records each request and answers `status`."""

    def __init__(
        self,
        status: int = 200,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.status, self.headers, self.tls = status, headers or {}, tls
        self.requests: list[dict[str, Any]] = []
        self.sni: list[str | None] = []

    def __enter__(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                self.send_response(outer.status)
                for name, value in outer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a refused TLS handshake is expected in some tests

        self.server = Server(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# -- no traffic off loopback, fake DNS -----------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every address a socket connects to; anything but loopback is refused, never sent to."""
    seen: list[tuple[Any, ...]] = []
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        seen.append(tuple(address))
        if not _is_loopback(str(address[0])):
            raise ConnectionRefusedError(f"test guard: refusing to connect to {address[0]}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return seen


class FakeDNS:
    """Answers host names from `answers` (a list of successive answers per name; the last one
    repeats); IP literals resolve to themselves as the real resolver does, without DNS."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                 flags: int = 0) -> list[tuple[Any, ...]]:  # fmt: skip
        name = host.decode() if isinstance(host, bytes) else str(host)
        if _is_ip(name):
            return self._real(name, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        self.lookups.append(name)
        answers = self.answers.get(name.lower())
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        port = int(port or 0)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
            for ip in answer
        ]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        return False


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake)
    return fake


# -- the normal path --------------------------------------------------------------------------


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8"])
def test_allow_listed_loopback_receives_a_signed_post_with_the_key(allow, connects):
    with Receiver() as hook:
        result = WebhookSender(SECRET, allow=(allow,), timeout=5).send(
            f"http://127.0.0.1:{hook.port}/hook?x=1", {"customer_id": "c1", "n": 2}, "key-1"
        )
    assert result == "HTTP 200"
    [request] = hook.requests
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["path"] == "/hook?x=1"
    assert json.loads(request["body"]) == {"customer_id": "c1", "n": 2}
    assert headers["x-nudge-idempotency-key"] == "key-1"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{hook.port}"
    assert verify_signature(SECRET, headers["x-nudge-signature"], request["body"])
    assert connects == [("127.0.0.1", hook.port)]


def test_an_allow_listed_host_name_is_resolved_once_and_keeps_its_host_header(dns, connects):
    dns.answers["hooks.internal"] = [["127.0.0.1"]]
    with Receiver() as hook:
        sender = WebhookSender(SECRET, allow=("Hooks.Internal",), timeout=5)
        assert sender.send(f"http://hooks.internal:{hook.port}/h", {}, "k") == "HTTP 200"
    [request] = hook.requests
    assert request["headers"]["Host"] == f"hooks.internal:{hook.port}"
    assert dns.lookups == ["hooks.internal"], "resolved once, for the check, never again"
    assert connects == [("127.0.0.1", hook.port)]


def test_the_next_checked_address_is_tried_when_one_refuses(dns, connects):
    dns.answers["hooks.internal"] = [["127.0.0.2", "127.0.0.1"]]
    with Receiver() as hook:
        sender = WebhookSender(SECRET, allow=("127.0.0.0/8",), timeout=5)
        assert sender.send(f"http://hooks.internal:{hook.port}/h", {}, "k") == "HTTP 200"
    assert connects == [("127.0.0.2", hook.port), ("127.0.0.1", hook.port)]
    assert len(hook.requests) == 1


# -- DNS rebinding ----------------------------------------------------------------------------


def test_dns_rebinding_to_loopback_never_reaches_it(dns, connects):
    """The check sees a public address, a second lookup would give 127.0.0.1: the connection
    must go to the address that was checked."""
    dns.answers["rebind.example"] = [[PUBLIC_V4], ["127.0.0.1"]]
    with Receiver() as hook, pytest.raises(WebhookError) as caught:
        WebhookSender(SECRET, timeout=2).send(f"http://rebind.example:{hook.port}/h", {}, "k")
    assert hook.requests == [], "the rebinding reached the loopback receiver"
    assert connects == [(PUBLIC_V4, hook.port)], "only the checked address may be connected to"
    assert dns.lookups == ["rebind.example"]
    assert caught.value.retryable


def test_dns_rebinding_over_ipv6_connects_to_the_checked_address(dns, connects):
    dns.answers["rebind6.example"] = [[PUBLIC_V6], ["::1"]]
    with pytest.raises(WebhookError):
        WebhookSender(SECRET, timeout=2).send("https://rebind6.example/h", {}, "k")
    assert [c[:2] for c in connects] == [(PUBLIC_V6, 443)]
    assert dns.lookups == ["rebind6.example"]


def test_rebinding_for_an_allow_listed_name_is_pinned_too(dns, connects):
    dns.answers["hooks.internal"] = [["127.0.0.1"], [PUBLIC_V4]]
    with Receiver() as hook:
        sender = WebhookSender(SECRET, allow=("hooks.internal",), timeout=5)
        assert sender.send(f"http://hooks.internal:{hook.port}/h", {}, "k") == "HTTP 200"
    assert connects == [("127.0.0.1", hook.port)]


def test_a_name_with_any_private_address_is_blocked_before_connecting(dns, connects):
    dns.answers["mixed.example"] = [[PUBLIC_V4, "10.0.0.8"]]
    with pytest.raises(BlockedTarget, match=r"10\.0\.0\.8.*private address"):
        WebhookSender(SECRET).send("http://mixed.example/h", {}, "k")
    assert connects == []


# -- HTTPS: the certificate is checked against the host name, SNI carries it -------------------


def _tls_files(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `name`, written as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: Any, key: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nudge test CA")])
    ca = build("nudge test CA", ca_name, ca_key, ca_key, ca=True)
    leaf = build(name, ca_name, key, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.mark.parametrize("cert_name", ["hooks.test", "someone-else.test"])
def test_https_is_pinned_with_sni_and_verified_against_the_host_name(
    cert_name, tmp_path, monkeypatch, dns, connects
):
    ca, leaf, key = _tls_files(tmp_path, cert_name)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(leaf, key)
    dns.answers["hooks.test"] = [["127.0.0.1"], [PUBLIC_V4]]
    sender = WebhookSender(SECRET, allow=("127.0.0.1",), timeout=5)
    with Receiver(tls=server_tls) as hook:
        url = f"https://hooks.test:{hook.port}/h"
        if cert_name == "hooks.test":
            assert sender.send(url, {"a": 1}, "k") == "HTTP 200"
            assert hook.requests[0]["headers"]["Host"] == f"hooks.test:{hook.port}"
        else:
            with pytest.raises(WebhookError, match="certificate"):
                sender.send(url, {"a": 1}, "k")
            assert hook.requests == []
    assert hook.sni == ["hooks.test"]
    assert connects == [("127.0.0.1", hook.port)]


# -- blocked ranges ---------------------------------------------------------------------------

BLOCKED = [
    # IPv4
    "0.0.0.0", "0.1.2.3", "10.0.0.8", "100.64.0.1", "100.100.100.200", "100.127.255.254",
    "127.0.0.1", "127.255.255.254", "169.254.169.254", "169.254.0.1", "172.16.0.1",
    "172.31.255.255", "192.0.0.8", "192.0.0.170", "192.0.2.1", "192.88.99.1", "192.168.1.1",
    "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255",
    # IPv6
    "::", "::1", "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "fec0::1", "ff02::1", "ff0e::1",
    "2001:db8::1", "3fff::1", "100::1", "2001:2::1", "5f00::1",
    # IPv4 embedded in IPv6
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.100.100.200",
    "::ffff:0.0.0.0", "::ffff:7f00:1", "::127.0.0.1", "::10.0.0.1", "::169.254.169.254",
    "2002:7f00:1::1", "2002:a00:1::", "2002:a9fe:a9fe::1", "2002:6464:64c8::1", "2002:c0a8:101::1",
    "64:ff9b::127.0.0.1", "64:ff9b::10.0.0.1", "64:ff9b::169.254.169.254", "64:ff9b::c612:1",
    "64:ff9b:1::8.8.8.8", "64:ff9b:1:2::a00:1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:0:a00:1:8000:63bf:3fff:fdd2",  # Teredo, server 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fff7",  # Teredo, client 10.0.0.8
]  # fmt: skip

PUBLIC = ["8.8.8.8", "1.1.1.1", PUBLIC_V4, PUBLIC_V6, "2a00:1450:4001::1", "2002:808:808::1",
          "64:ff9b::8.8.8.8", "::ffff:8.8.8.8"]  # fmt: skip


def _literal(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@pytest.mark.parametrize("ip", BLOCKED)
def test_blocked_addresses_as_literals_and_behind_names(ip, dns, connects):
    sender = WebhookSender(SECRET)
    with pytest.raises(BlockedTarget, match="private address"):
        sender.check_target(f"http://{_literal(ip)}:8080/x")
    dns.answers["target.example"] = [[ip]]
    with pytest.raises(BlockedTarget, match="private address"):
        sender.send("https://target.example/x", {}, "k")
    assert connects == []


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass_the_check(ip, dns):
    sender = WebhookSender(SECRET)
    sender.check_target(f"https://{_literal(ip)}/x")
    dns.answers["target.example"] = [[ip]]
    sender.check_target("https://target.example/x")


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://8.8.8.8/x",
        "gopher://8.8.8.8/x",
        "http:///x",
        "http://:80/x",
        "http://[::1/x",
        "http://[::1]:80/x",
        "http://0x7f000001/x",
        "http://2130706433/x",
        "http://127.1/x",
        "http://0177.0.0.1/x",
        "http://evil.example\\@127.0.0.1/x",
        "http://user:pw@127.0.0.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1%25eth0]/x",
        "http://localhost/x",
        "http://8.8.8.8:99999/x",
        "http://8.8.8.8:0/x",
        "http://a..b/x",
        "http://" + "a" * 64 + ".example/x",
        "http://127。0。0。1/x",
        "http://[::ffff:a9fe:a9fe]/x",
        "http://0/x",
        "http://127.0.0.1\t/x",
        None,
        "javascript:alert(1)",
        "",
    ],
)
def test_hostile_urls_are_blocked_at_once(url, monkeypatch, connects):
    real = socket.getaddrinfo

    def numeric_only(host, port, family=0, type=0, proto=0, flags=0):  # never real DNS
        host = "127.0.0.1" if str(host).lower() == "localhost" else host
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", numeric_only)
    with pytest.raises(BlockedTarget):
        WebhookSender(SECRET).send(url, {}, "k")
    assert connects == []


def test_an_allow_listed_cidr_admits_the_ipv4_mapped_form(connects):
    WebhookSender(SECRET, allow=("127.0.0.0/8",)).check_target("http://[::ffff:127.0.0.1]/x")
    WebhookSender(SECRET, allow=("10.0.0.0/8",)).check_target("http://10.1.2.3/x")
    with pytest.raises(BlockedTarget):
        WebhookSender(SECRET, allow=("10.0.0.0/8",)).check_target("http://127.0.0.1/x")


@pytest.mark.parametrize("key", ["ü", "a\r\nX-Injected: 1", "k\x00", "", " k", "sha256-x"])
def test_a_key_that_cannot_be_a_header_is_sent_as_its_hash(key):
    with Receiver() as hook:
        WebhookSender(SECRET, allow=("127.0.0.1",)).send(f"http://127.0.0.1:{hook.port}/", {}, key)
        WebhookSender(SECRET, allow=("127.0.0.1",)).send(f"http://127.0.0.1:{hook.port}/", {}, key)
    sent = [{k.lower(): v for k, v in r["headers"].items()} for r in hook.requests]
    first, again = (h["x-nudge-idempotency-key"] for h in sent)
    assert first == again == idempotency_header(key) and first.startswith("sha256-")
    assert "x-injected" not in sent[0]


def test_an_unresolvable_name_is_retryable(dns):
    with pytest.raises(WebhookError) as caught:
        WebhookSender(SECRET).send("https://nowhere.example/x", {}, "k")
    assert caught.value.retryable and not isinstance(caught.value, BlockedTarget)


# -- responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308])
def test_a_redirect_is_a_failure_not_followed_and_not_retried(status, connects):
    location = {"Location": "http://169.254.169.254/latest/meta-data"}
    sender = WebhookSender(SECRET, allow=("127.0.0.1",), timeout=5)
    with (
        Receiver(status=status, headers=location) as hook,
        pytest.raises(WebhookError, match="redirect not followed") as caught,
    ):
        sender.send(f"http://127.0.0.1:{hook.port}/h", {}, "k")
    assert not caught.value.retryable
    assert len(hook.requests) == 1
    assert connects == [("127.0.0.1", hook.port)]


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (410, False), (429, True), (500, True),
                              (503, True)]
)  # fmt: skip
def test_error_statuses(status, retryable):
    sender = WebhookSender(SECRET, allow=("127.0.0.1",), timeout=5)
    with Receiver(status=status) as hook, pytest.raises(WebhookError, match=f"HTTP {status}") as e:
        sender.send(f"http://127.0.0.1:{hook.port}/h", {}, "k")
    assert e.value.retryable is retryable


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_sent(status):
    with Receiver(status=status) as hook:
        sender = WebhookSender(SECRET, allow=("127.0.0.1",), timeout=5)
        assert sender.send(f"http://127.0.0.1:{hook.port}/h", {}, "k") == f"HTTP {status}"


# -- signatures -------------------------------------------------------------------------------

BODY = b'{"a":1}'


def test_a_fresh_signature_verifies_and_a_changed_body_does_not():
    header = sign(SECRET, 1_000_000, BODY)
    assert verify_signature(SECRET, header, BODY, now=1_000_000)
    assert verify_signature(SECRET, header, BODY, now=1_000_000 + 300)
    assert not verify_signature(SECRET, header, BODY, now=1_000_000 + 301)
    assert not verify_signature(SECRET, header, BODY, now=1_000_000 - 301)
    assert not verify_signature(SECRET, header, b'{"a":2}', now=1_000_000)
    assert not verify_signature("other", header, BODY, now=1_000_000)


def test_an_explicit_now_is_honoured_even_when_it_is_zero():
    assert verify_signature(SECRET, sign(SECRET, 0, BODY), BODY, now=0)
    assert verify_signature(SECRET, sign(SECRET, 100, BODY), BODY, now=0.0)
    assert not verify_signature(SECRET, sign(SECRET, 10_000, BODY), BODY, now=0)


def test_the_signature_of_the_sender_verifies_now():
    import time

    header = sign(SECRET, int(time.time()), BODY)
    assert verify_signature(SECRET, header, BODY)
    assert verify_signature(SECRET, header.encode(), BODY), "a header value as bytes is accepted"


def _digest(timestamp: str) -> str:
    return hmac.new(SECRET.encode(), f"{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()


T = 1_000_000
VALID = _digest(str(T))
HOSTILE_HEADERS = [
    "", "garbage", ",", "=", "t=", "v1=", "t=,v1=", f"t={T}", f"v1={VALID}", f"t={T},v1=",
    "t=é,v1=..", f"t={T},v1=ü", f"t={T},v1={VALID[:-1]}ü", f"t={T},v1=é{VALID[1:]}",
    f"t=١٠٠٠٠٠٠,v1={VALID}",  # Arabic-Indic digits: int() accepts them
    f"t=1_000_000,v1={VALID}", f"t=+1000000,v1={VALID}", f"t= {T},v1={VALID}",
    f"t={T}.0,v1={VALID}", f"t=1e6,v1={VALID}", f"t=-{T},v1={VALID}", f"t=0x{T:x},v1={VALID}",
    "t=" + "9" * 400 + f",v1={VALID}", "t=" + "9" * 5000 + f",v1={VALID}",
    f"t={10**20},v1={VALID}", "t=nan,v1=" + VALID, "t=inf,v1=" + VALID,
    f"t={T},v1={VALID.upper()}", f"t={T},v1={VALID}0", f"t={T},v1={VALID[:32]}",
    f"t={T},v1={VALID},t={T + 1}", f"t={T + 1},t={T},v1={VALID}", f"t={T};v1={VALID}",
    f"t={T},,v1={VALID}", f"t={T},v1={VALID},", f" t={T},v1={VALID}", f"t={T},v1={VALID}\x00",
    f"t={T}\r\nv1={VALID}", f"b't={T},v1={VALID}'", repr(f"t={T},v1={VALID}".encode()),
    f"t={T},v1=" + "0" * 64, "t=" * 10_000, "," * 100_000, "x" * 1_000_000,
    b"t=\xff,v1=00", f"t={T},v1={VALID}".encode("utf-16"), bytearray(b"t=1,v1=2"),
    None, 12345, ["t=1", "v1=2"], {"t": T, "v1": VALID},
]  # fmt: skip


@pytest.mark.parametrize("now", [T, float(T)])
@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=lambda h: repr(h)[:40])
def test_verify_signature_returns_false_and_never_raises_on_hostile_headers(header, now):
    assert verify_signature(SECRET, header, BODY, now=now) is False


def test_the_valid_counterpart_of_the_hostile_headers_verifies():
    assert verify_signature(SECRET, f"t={T},v1={VALID}", BODY, now=T) is True
    assert verify_signature(SECRET, f"v1={VALID},t={T}", BODY, now=T) is True


@pytest.mark.parametrize(
    "kwargs", [{"now": float("nan")}, {"now": float("inf")}, {"tolerance": float("nan")},
               {"now": 1e308}, {"now": -1e308}]
)  # fmt: skip
def test_non_finite_clocks_and_tolerances_fail_closed(kwargs):
    kwargs.setdefault("now", T)
    assert verify_signature(SECRET, f"t={T},v1={VALID}", BODY, **kwargs) is False


def test_the_docstring_says_replay_protection_is_the_idempotency_key():
    doc = " ".join((verify_signature.__doc__ or "").split())
    assert "X-Nudge-Idempotency-Key" in doc and "replay" in doc.lower()
