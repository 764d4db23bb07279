"""Webhooks: signed JSON POSTs that never reach a private address unless it is allow-listed.

Each request carries ``X-Nudge-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
and ``X-Nudge-Idempotency-Key``, so a receiver can verify the sender and drop a redelivery.
Delivery is at-least-once (a retry after a crash or a 5xx repeats the same key); receivers that
honour the key see each effect exactly once.

Where a request goes
--------------------
`WebhookSender.check_target` resolves the host name once and judges every address it gets
(`_blocked_reason`: private, loopback, link-local, carrier-grade NAT, benchmarking, documentation,
multicast, reserved, and IPv4 addresses embedded in IPv6 — mapped, NAT64, 6to4, Teredo,
IPv4-compatible). `send` then connects to one of exactly those addresses: httpx never resolves the
name again. Otherwise a name with a short TTL could answer a public address to the check and
127.0.0.1 to the connection (DNS rebinding).

The pin uses only httpx's public API, per request:

- the host of the request URL is replaced by the checked IP, so the TCP connection can only go
  there (resolving an IP literal is numeric; no DNS is asked);
- the ``Host`` header keeps the original ``host[:port]``, so virtual hosting works;
- the ``sni_hostname`` request extension carries the original host name, which httpcore passes to
  TLS as ``server_hostname``: SNI names the host and the certificate is verified against the host
  name, not against the IP.

A custom httpcore network backend would pin at the socket instead, but `httpx.HTTPTransport` takes
none publicly, and it would pin a proxy's connection too. Each `send` uses its own client: pooled
connections are keyed by IP, and a TLS connection made for one host name must not carry a request
for another. The client ignores proxy settings from the environment (through an HTTP proxy
httpcore verifies the certificate against the tunnelled host, here the IP, and a proxy resolves
names itself); ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are still honoured for the CA bundle. When a
checked address refuses the connection, the next checked one is tried (up to
`_MAX_ADDRESSES`), since nothing was sent. Redirects are never followed: a 3xx is a failure.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from engine.channels.base import Delivery, DeliveryError
from engine.channels.ratelimit import DEFAULT_PROVIDER_WAIT, retry_after_seconds

__all__ = [
    "BlockedTarget",
    "WebhookChannel",
    "WebhookError",
    "WebhookSender",
    "idempotency_header",
    "sign",
    "verify_signature",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_ADDRESSES = 3  # checked addresses tried in turn when a connection is refused
_MAX_SIGNATURE_HEADER = 1024
_HEX = frozenset("0123456789abcdef")


class BlockedTarget(ValueError):
    """The URL is not http(s) to a public address, and not allow-listed."""


class WebhookError(DeliveryError):
    """A delivery attempt failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after)


class WebhookChannel:
    """The `webhook` action: a signed POST of the action, its trigger and event to `params.url`.

    Webhooks carry the idempotency key (header and body), so a crash after the POST repeats it
    with the same key, which the receiver deduplicates: an action caught `sending` goes back to
    `pending`.
    """

    name = "webhook"
    consent_field: str | None = None  # a webhook reaches a system, not the customer
    settle_in_doubt = "pending"

    def __init__(self, sender: WebhookSender) -> None:
        self.sender = sender

    def send(self, delivery: Delivery) -> str:
        """POST the payload; WebhookError / BlockedTarget as `WebhookSender.send`."""
        payload = {
            "idempotency_key": delivery.idempotency_key,
            "trigger_id": delivery.trigger_id,
            "customer_id": delivery.customer_id,
            "event": dict(delivery.event) or None,
            "variant": delivery.variant,
            "data": delivery.params.get("data", {}),
        }
        return self.sender.send(str(delivery.params["url"]), payload, delivery.idempotency_key)

    def close(self) -> None:
        """Nothing is kept open between batches."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: Any, body: bytes, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """Whether `header` (``t=<unix time>,v1=<hex>``) signs `body` with `secret`, made no more than
    `tolerance` seconds before or after `now` (default: the current time).

    A valid signature proves origin (the sender knows the secret) and freshness within the
    tolerance. It is not replay protection: a captured request verifies again within the
    tolerance, and a legitimate redelivery (a retry) is signed afresh. Replay protection is the
    idempotency key: a receiver drops every request whose ``X-Nudge-Idempotency-Key`` it has
    already processed.

    Never raises on what a peer controls: a malformed, non-ASCII, oversized or non-string header,
    or a timestamp out of range, gives False. A header value as bytes is accepted if ASCII. The
    comparison is constant-time.
    """
    if isinstance(header, bytes | bytearray | memoryview):
        try:
            header = bytes(header).decode("ascii")
        except UnicodeDecodeError:
            return False
    if isinstance(body, str):
        body = body.encode()
    elif isinstance(body, bytearray | memoryview):
        body = bytes(body)
    if (
        not isinstance(header, str)
        or not isinstance(body, bytes)
        or len(header) > _MAX_SIGNATURE_HEADER
        or not header.isascii()
    ):
        return False
    fields: dict[str, str] = {}
    for item in header.split(","):
        key, separator, value = item.partition("=")
        if not separator or key in fields:
            return False
        fields[key] = value
    if fields.keys() != {"t", "v1"}:
        return False
    stamp, digest = fields["t"], fields["v1"]
    # ASCII digits only (int() would also take "+1", " 1", "1_0" and other scripts' digits).
    if not (stamp.isdigit() and len(stamp) <= 15 and len(digest) == 64 and _HEX.issuperset(digest)):
        return False
    timestamp = int(stamp)
    current = time.time() if now is None else now
    try:
        fresh = abs(current - timestamp) <= tolerance  # NaN compares False: fails closed
    except (TypeError, OverflowError):
        return False
    if not fresh:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest().encode(), digest.encode())


@dataclass(frozen=True)
class WebhookSender:
    """Posts JSON to URLs with signatures; refuses private targets unless allow-listed."""

    secret: str
    allow: tuple[str, ...] = ()  # host names, IPs or CIDR ranges that may be private
    timeout: float = 10.0

    def send(self, url: str, payload: Mapping[str, Any], idempotency_key: str) -> str:
        """POST `payload` to `url`, connecting only to an address `check_target` approved.

        Returns ``"HTTP <status>"`` for a 2xx. Raises BlockedTarget for a refused URL, and
        WebhookError otherwise: retryable for connection errors, timeouts, 5xx and 429; not
        retryable for 4xx or a 3xx (redirects are not followed). A 429 carries the receiver's
        ``Retry-After`` (seconds or an HTTP date; `DEFAULT_PROVIDER_WAIT` when it says none) as
        `retry_after`, and so does a 5xx that sends one: the dispatcher waits that long without
        counting an attempt.
        """
        target = _parse(url)
        addresses = self._checked_addresses(url, target)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {
            "Host": target.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "X-Nudge-Signature": sign(self.secret, int(time.time()), body),
            "X-Nudge-Idempotency-Key": idempotency_header(idempotency_key),
            "User-Agent": "nudge-webhooks/1",
        }
        extensions = {"sni_hostname": target.raw_host.decode("ascii")}
        refused: httpx.HTTPError | None = None
        with httpx.Client(
            timeout=self.timeout,
            follow_redirects=False,
            trust_env=False,
            verify=_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")),
        ) as client:
            for address in addresses[:_MAX_ADDRESSES]:
                try:
                    with client.stream(
                        "POST",
                        target.copy_with(host=str(address)),
                        content=body,
                        headers=headers,
                        extensions=extensions,
                    ) as response:
                        return _outcome(response)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    refused = exc  # nothing was sent: try the next checked address
                except httpx.HTTPError as exc:
                    raise WebhookError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        raise WebhookError(f"{type(refused).__name__}: {refused}", retryable=True)

    def check_target(self, url: str) -> tuple[IPAddress, ...]:
        """The addresses `url` resolves to, once; BlockedTarget unless it is http(s) and every
        address is public or allow-listed (an allow-listed host name admits all its addresses).

        WebhookError (retryable) when the name does not resolve.
        """
        return self._checked_addresses(url, _parse(url))

    def _checked_addresses(self, url: str, target: httpx.URL) -> tuple[IPAddress, ...]:
        host = target.raw_host.decode("ascii")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise WebhookError(f"cannot resolve {host!r}: {exc}", retryable=True) from None
        except UnicodeError as exc:  # e.g. an empty or over-long label
            raise BlockedTarget(f"{url!r}: invalid host name ({exc})") from None
        addresses: list[IPAddress] = []
        for family, *_, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(sockaddr[0])
            except ValueError:
                raise BlockedTarget(f"{url!r} resolves to {sockaddr[0]!r}") from None
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise WebhookError(f"{host!r} resolves to no IP address", retryable=True)
        if _normal_host(host) in {_normal_host(entry) for entry in self.allow}:
            return tuple(addresses)
        for ip in addresses:
            reason = _blocked_reason(ip)
            if reason and not _allowed(ip, self.allow):
                raise BlockedTarget(
                    f"{url!r} resolves to {ip}, a private address ({reason}); "
                    "allow-list it to send there"
                )
        return tuple(addresses)


def _parse(url: str) -> httpx.URL:
    """The URL as httpx will send it (one parser for the check and the request)."""
    try:
        target = httpx.URL(url)
        port = target.port
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise BlockedTarget(f"{url!r}: not a valid URL ({exc})") from None
    if target.scheme not in {"http", "https"} or not target.raw_host:
        raise BlockedTarget(f"{url!r}: only http and https URLs with a host are allowed")
    if port is not None and not 0 < port < 65536:
        raise BlockedTarget(f"{url!r}: port {port} is out of range")
    if b"%" in target.raw_host:  # an IPv6 zone, or a percent-escape no host name can contain
        raise BlockedTarget(f"{url!r}: the host may not contain '%'")
    return target


@functools.lru_cache(maxsize=4)
def _ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """httpx's default verifying context (it honours SSL_CERT_FILE / SSL_CERT_DIR), built once per
    setting rather than per send (loading a CA bundle takes ~20 ms)."""
    return httpx.create_ssl_context(trust_env=True)


def _outcome(response: httpx.Response) -> str:
    status = response.status_code
    if status == 429:  # a throttle: the receiver's Retry-After, else a default wait
        wait = retry_after_seconds(response.headers.get("retry-after"), time.time())
        wait = DEFAULT_PROVIDER_WAIT if wait is None else wait
        raise WebhookError(f"HTTP 429: retry after {wait:g}s", retryable=True, retry_after=wait)
    if status >= 500:
        wait = retry_after_seconds(response.headers.get("retry-after"), time.time())
        said = f": retry after {wait:g}s" if wait is not None else ""
        raise WebhookError(f"HTTP {status}{said}", retryable=True, retry_after=wait)
    if status >= 400:
        raise WebhookError(f"HTTP {status}: {_start_of_body(response)}", retryable=False)
    if 300 <= status < 400:
        location = _printable(response.headers.get("location", ""))[:200]
        raise WebhookError(
            f"HTTP {status}: redirect not followed (Location: {location or '-'})", retryable=False
        )
    if not 200 <= status < 300:
        raise WebhookError(f"HTTP {status}: unexpected status", retryable=False)
    return f"HTTP {status}"


def _start_of_body(response: httpx.Response, limit: int = 1024) -> str:
    """Up to 200 characters of the body, reading no more than `limit` bytes of it."""
    chunks, size = [], 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass
    return _printable(b"".join(chunks)[:limit].decode("utf-8", "replace"))[:200]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def idempotency_header(key: str) -> str:
    """The ``X-Nudge-Idempotency-Key`` value of a key: the key itself when it is printable ASCII,
    else ``sha256-<hex>`` of its UTF-8 bytes — stable, so a redelivery repeats it, and a customer
    whose id is not ASCII still gets webhooks. (The body always carries the key as it is.)"""
    if _is_header_value(key) and not key.startswith("sha256-"):
        return key
    return "sha256-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _is_header_value(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and value == value.strip()
        and all(" " <= c <= "~" for c in value)
    )


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


# -- which addresses are blocked ----------------------------------------------------------------

_BLOCKED_V4 = [
    (ipaddress.IPv4Network(net), why)
    for net, why in [
        ("0.0.0.0/8", "this network; 0.0.0.0 reaches the local host"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT, incl. the metadata address 100.100.100.200"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local, incl. the metadata address 169.254.169.254"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved, incl. broadcast 255.255.255.255"),
    ]
]
_BLOCKED_V6 = [
    (ipaddress.IPv6Network(net), why)
    for net, why in [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible, deprecated"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments, incl. Teredo 2001::/32"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local, deprecated"),
        ("ff00::/8", "multicast"),
    ]
]
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` may not be sent to, or None for a public address.

    Explicit tables, so the answer does not depend on the Python release's `ipaddress` tables,
    then `ipaddress`'s own flags as a backstop. An IPv6 address that carries an IPv4 address is
    judged by that address too: the mapped and NAT64 forms reach exactly it, and 6to4, Teredo and
    IPv4-compatible addresses are blocked when any IPv4 address they embed is.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        translated = _translated_ipv4(ip)
        if translated is not None:
            reason = _blocked_reason(translated)
            return f"it reaches {translated}: {reason}" if reason else None
        for embedded in _embedded_ipv4(ip):
            reason = _blocked_reason(embedded)
            if reason:
                return f"it embeds {embedded}: {reason}"
    for network, why in _BLOCKED_V4 if ip.version == 4 else _BLOCKED_V6:
        if ip in network:
            return f"{why}, {network}"
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    ):
        return "not globally reachable"
    return None


def _translated_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::a.b.c.d) address
    reaches."""
    if ip in _IPV4_MAPPED or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Iterator[ipaddress.IPv4Address]:
    """IPv4 addresses inside a 6to4 (2002::/16), Teredo (2001::/32: server and client) or
    IPv4-compatible (::a.b.c.d) address."""
    if ip.sixtofour is not None:
        yield ip.sixtofour
    if ip.teredo is not None:
        yield from ip.teredo
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # not :: or ::1
        yield ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)


def _allowed(ip: IPAddress, allow: Iterable[str]) -> bool:
    """Whether an allow-list entry that is an IP or CIDR range covers `ip` (or the IPv4 address
    its mapped or NAT64 form reaches)."""
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        translated = _translated_ipv4(ip)
        if translated is not None:
            candidates.append(translated)
    for entry in allow:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            continue  # a host name entry
        if any(candidate in network for candidate in candidates):
            return True
    return False
