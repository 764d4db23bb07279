"""Web push against a loopback push service that decrypts each message with http_ece (aes128gcm,
with the subscription's private key made here) and verifies its VAPID JWT (ES256 with the key in
the header, aud the endpoint's origin, sub, exp) — 201 for a live subscription, 410 for a gone one,
whose removal from the profile is asked for."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from engine.channels.base import Delivery, DeliveryError
from engine.channels.email import TemplateError
from engine.channels.push import (
    PushChannel,
    PushSettings,
    PushUnknownOutcome,
    load_vapid_key,
)
from engine.channels.webhooks import BlockedTarget, WebhookSender
from engine.events import push_subscriptions_problem as subscription_problem

SUBJECT = "mailto:push@nudge.example"
GUARD = WebhookSender("s" * 32, allow=("127.0.0.1",))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """One subscription: the keys a browser would make, and the endpoint's id at the service."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)

    def subscription(self, base: str) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": f"{base}/push/{self.name}",
            "keys": {"p256dh": b64(public), "auth": b64(self.auth)},
        }


def verify_vapid(header: str, audience: str) -> tuple[dict[str, Any], str]:
    """The claims of a ``vapid t=<jwt>,k=<key>`` header after checking its ES256 signature."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "vapid"
    parts = dict(item.split("=", 1) for item in rest.split(","))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(parts["k"]))
    head, claims, signature = parts["t"].split(".")
    raw = unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if forged
    assert json.loads(unb64(head)) == {"typ": "JWT", "alg": "ES256"}
    decoded = json.loads(unb64(claims))
    assert decoded["aud"] == audience and decoded["sub"] == SUBJECT
    assert time.time() < decoded["exp"] <= time.time() + 24 * 3600
    return decoded, parts["k"]


class PushService:
    def __init__(self, browsers: list[Browser]) -> None:
        self.browsers = {b.name: b for b in browsers}
        self.gone: set[str] = set()
        self.status: dict[str, int] = {}
        self.silent: set[str] = set()  # take the message, never answer
        self.received: list[dict[str, Any]] = []
        self.problems: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> PushService:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                name = self.path.rsplit("/", 1)[-1]
                browser = outer.browsers.get(name)
                if browser is None or name in outer.gone:
                    return self.answer(410)
                if name in outer.status:
                    return self.answer(outer.status[name])
                try:
                    _claims, key = verify_vapid(self.headers["Authorization"], outer.base)
                    assert self.headers["Content-Encoding"] == "aes128gcm"
                    plain = http_ece.decrypt(body, private_key=browser.key,
                                             auth_secret=browser.auth, version="aes128gcm")  # fmt: skip
                except (AssertionError, InvalidSignature, KeyError, ValueError) as exc:
                    outer.problems.append(f"{type(exc).__name__}: {exc}")
                    return self.answer(400)
                outer.received.append({"browser": name, "payload": json.loads(plain), "key": key,
                                       "ttl": self.headers["TTL"], "topic": self.headers["Topic"]})  # fmt: skip
                if name in outer.silent:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                return self.answer(201)

            def answer(self, status: int) -> None:
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "9")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "cart.push.j2").write_text(
        "title: {{ customer.name }}, your cart is waiting\nurl: https://shop.example/cart\n---\n"
        "{{ properties['items'] }} item(s) \"saved\" for you.\n"
    )
    (folder / "nourl.push.j2").write_text("title: Hello\n---\nBody only\n")
    (folder / "bad.push.j2").write_text("no title here\n")
    (folder / "huge.push.j2").write_text("title: x\n---\n{{ 'y' * 4000 }}\n")
    return folder


@pytest.fixture
def vapid_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()  # fmt: skip


@pytest.fixture
def browsers() -> list[Browser]:
    return [Browser("laptop"), Browser("phone")]


@pytest.fixture
def service(browsers) -> Iterator[PushService]:
    with PushService(browsers) as server:
        yield server


def delivery(subscriptions: Any, template: str = "cart", first_name: str = 'Eve "E"') -> Delivery:
    return Delivery(
        action_id=1, idempotency_key="key-1", customer_id="c1", trigger_id="t", event_id="e1",
        variant=None, params={"template": template},
        profile={"customer_id": "c1", "first_name": first_name, "push_subscriptions": subscriptions},
        event={"properties": {"items": 2}}, scores={}, marketing=True, before_commit=lambda ref: None,
    )  # fmt: skip


def channel(templates: Path, key: str, removed: list[tuple[str, str]] | None = None) -> PushChannel:
    remove = None if removed is None else (lambda c, e: removed.append((c, e)))
    return PushChannel(
        PushSettings(key, SUBJECT, templates, timeout=2.0), GUARD, remove_subscription=remove
    )


def test_each_subscription_gets_the_payload_encrypted_for_it_and_signed(
    service, browsers, templates, vapid_pem
):
    subs = [b.subscription(service.base) for b in browsers]
    result = channel(templates, vapid_pem).send(delivery(subs))
    assert result == "push delivered to 2/2"
    assert service.problems == []
    assert sorted(r["browser"] for r in service.received) == ["laptop", "phone"]
    expected = {"title": 'Eve "E", your cart is waiting', "body": '2 item(s) "saved" for you.',
                "url": "https://shop.example/cart"}  # fmt: skip
    assert all(r["payload"] == expected for r in service.received)
    public = load_vapid_key(vapid_pem).public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert {r["key"] for r in service.received} == {b64(public)}, "signed with the configured key"
    assert {r["ttl"] for r in service.received} == {"86400"}
    assert (
        len({r["topic"] for r in service.received}) == 1 and len(service.received[0]["topic"]) == 32
    )


def test_a_raw_base64url_vapid_key_works_too(service, browsers, templates):
    raw = (
        ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big")
    )
    channel(templates, b64(raw)).send(delivery([browsers[0].subscription(service.base)], "nourl"))
    assert service.received[0]["payload"] == {"title": "Hello", "body": "Body only"}


def test_a_gone_subscription_is_removed_and_the_others_still_get_it(
    service, browsers, templates, vapid_pem
):
    service.gone.add("phone")
    removed: list[tuple[str, str]] = []
    subs = [b.subscription(service.base) for b in browsers]
    result = channel(templates, vapid_pem, removed).send(delivery(subs))
    assert result == "push delivered to 1/2, 1 gone (removed)"
    assert removed == [("c1", f"{service.base}/push/phone")]


def test_when_every_subscription_is_gone_the_action_fails_and_all_are_removed(
    service, browsers, templates, vapid_pem
):
    service.status["laptop"] = 404
    service.gone.add("phone")
    removed: list[tuple[str, str]] = []
    with pytest.raises(DeliveryError, match="all 2 subscription") as caught:
        channel(templates, vapid_pem, removed).send(
            delivery([b.subscription(service.base) for b in browsers])
        )
    assert not caught.value.retryable and len(removed) == 2


def test_a_throttled_push_is_retried_after_the_service_says(
    service, browsers, templates, vapid_pem
):
    service.status["laptop"] = 429
    with pytest.raises(DeliveryError, match="HTTP 429") as caught:
        channel(templates, vapid_pem).send(delivery([browsers[0].subscription(service.base)]))
    assert caught.value.retryable and caught.value.retry_after == 9.0


def test_a_lost_answer_with_nothing_delivered_is_unknown_not_retried(
    service, browsers, templates, vapid_pem
):
    service.silent.add("laptop")
    with pytest.raises(PushUnknownOutcome):
        channel(templates, vapid_pem).send(delivery([browsers[0].subscription(service.base)]))
    assert len(service.received) == 1
    assert PushChannel.settle_in_doubt == "unconfirmed"


def test_a_private_endpoint_is_refused_unless_allow_listed(service, browsers, templates, vapid_pem):
    unguarded = PushChannel(PushSettings(vapid_pem, SUBJECT, templates), WebhookSender("s" * 32))
    with pytest.raises(DeliveryError, match="private address") as caught:
        unguarded.send(delivery([browsers[0].subscription(service.base)]))
    assert not caught.value.retryable and service.received == []
    assert issubclass(BlockedTarget, ValueError)


@pytest.mark.parametrize(
    ("subscriptions", "message"),
    [
        ([], "no push subscriptions"),
        ("x", "expected a list"),
        ([{"endpoint": "ftp://x/y", "keys": {}}], "endpoint"),
        (
            [
                {
                    "endpoint": "https://push.example/x",
                    "keys": {"p256dh": "AAAA", "auth": b64(bytes(16))},
                }
            ],
            "p256dh",
        ),
        (
            [
                {
                    "endpoint": "https://push.example/x",
                    "keys": {"p256dh": b64(b"\x04" + bytes(64)), "auth": "AA"},
                }
            ],
            "auth",
        ),
    ],
)
def test_a_malformed_subscription_list_fails_before_sending(
    templates, vapid_pem, subscriptions, message
):
    with pytest.raises(TemplateError, match=message):
        channel(templates, vapid_pem).send(delivery(subscriptions))


@pytest.mark.parametrize(("template", "message"), [("bad", "expected 'title: ...'"), ("huge", "at most 3993"),
                                                   ("missing", "not found")])  # fmt: skip
def test_a_template_that_cannot_be_a_push_fails_before_sending(
    service, browsers, templates, vapid_pem, template, message
):
    with pytest.raises(TemplateError, match=message):
        channel(templates, vapid_pem).send(
            delivery([browsers[0].subscription(service.base)], template)
        )
    assert service.received == []


def test_a_valid_subscription_list_has_no_problem(browsers):
    assert subscription_problem([b.subscription("https://push.example") for b in browsers]) is None


def test_a_bad_vapid_key_is_a_value_error():
    with pytest.raises(ValueError, match="not a VAPID private key"):
        load_vapid_key("not-a-key")


def test_the_receiver_refuses_a_wrong_vapid_subject_so_its_checks_can_fail(
    service, browsers, templates, vapid_pem
):
    other = PushChannel(
        PushSettings(vapid_pem, "mailto:someone-else@example.com", templates), GUARD
    )
    with pytest.raises(DeliveryError, match=r"push refused: .*HTTP 400") as caught:
        other.send(delivery([browsers[0].subscription(service.base)]))
    assert not caught.value.retryable and service.received == [] and service.problems
