"""The public routes on a real server (uvicorn on loopback) over SQLite and PostgreSQL: a real
email rendered and written by the dispatcher carries the links, and they are followed as a
mailbox and a person would — RFC 8058 one-click unsubscribe, the preference page, resubscribe,
the open pixel, tracked clicks, machine flags, tampered tokens and secret rotation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from engine.channels import tokens
from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.api import create_app
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.runtime.public_routes import PIXEL
from engine.store.customers import load_profiles, upsert_profiles
from engine.store.outbox import list_actions
from engine.store.schema import inbox
from tests.support import LocalServer

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
SECRET = "current-secret-" + "x" * 32
OLD = "older-secret-" + "y" * 32
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
TRIGGERS = """
- id: cart_recovery
  when: {event: cart_abandoned}
  actions:
    - send_email: {template: cart_reminder}
      delay: 1h
"""
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "<b>Ada</b>",
           "consent_email": True, "consent_sms": True, "consent_push": False}  # fmt: skip


@dataclass
class World:
    store: Any
    url: str
    index: TriggerIndex
    outbox: Path
    offset: list[float] = field(default_factory=lambda: [0.0])
    sent: int = 0
    raw: bytes = b""

    def plan(self, event_id: str) -> None:
        """A cart event (a day after the previous one: one email a day) through the processor."""
        event = {"event_id": event_id, "customer_id": "c1", "event_type": "cart_abandoned",
                 "timestamp": (T0 + timedelta(days=self.sent)).isoformat(),
                 "properties": {"cart_value": 10, "items": 1}}  # fmt: skip
        accept_events(self.store, [event], source="t")
        Processor(self.store, self.index).run_until_empty()

    def send(self, event_id: str = "e1") -> EmailMessage:
        """A cart event through the processor and the dispatcher: the email as written."""
        self.plan(event_id)
        self.dispatch()
        self.sent += 1
        files = sorted(self.outbox.glob("*.eml"), key=lambda p: p.stat().st_mtime)
        self.raw = files[-1].read_bytes()
        message = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        return message

    def dispatch(self) -> dict[str, int]:
        email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=self.outbox, public_url=self.url,
                              unsubscribe_secret=SECRET)  # fmt: skip
        due = (T0 + timedelta(days=self.sent, minutes=61)).timestamp()
        webhooks = WebhookSender("whsec-test", timeout=2.0)
        return Dispatcher(self.store, self.index, email=email, webhooks=webhooks).run_due(
            due).outcomes  # fmt: skip

    def profile(self) -> dict[str, Any]:
        return self.store.read(load_profiles, ["c1"])["c1"]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The customer's events in the inbox, in arrival order."""
        return [e for e in self.store.read(logged) if event_type in (None, e["event_type"])]


@pytest.fixture
def world(engine_store, tmp_path, monkeypatch) -> Iterator[World]:
    import time

    monkeypatch.setenv("NUDGE_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("NUDGE_SIGNING_SECRETS_OLD", f" {OLD} ,")
    monkeypatch.setenv("NUDGE_TRACKING_SCANNER_SECONDS", "10")
    engine_store.write(upsert_profiles, {"c1": PROFILE}, 0.0)
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    offset = [0.0]
    app = create_app(engine_store, "api-key", clock=lambda: time.time() + offset[0])
    with LocalServer(app) as server:
        yield World(engine_store, server.url, index, tmp_path / "outbox", offset)


def logged(conn: Any) -> list[dict[str, Any]]:
    query = sa.select(inbox.c.payload).where(inbox.c.customer_id == "c1").order_by(inbox.c.seq)
    return [json.loads(payload) for (payload,) in conn.execute(query)]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return part.get_content()


def unsubscribe_url(message: EmailMessage) -> str:
    return str(message["List-Unsubscribe"]).strip().strip("<>")


def test_links_start_with_the_public_url_and_headers_stay_plain_ascii(world: World) -> None:
    message = world.send()
    raw = world.raw
    header = re.search(rb"List-Unsubscribe: <([^>]+)>\r?\n", raw)
    assert header is not None, raw[:2000]
    assert header.group(1).decode("ascii").startswith(f"{world.url}/u/")
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    html = html_of(message)
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert hrefs and all(h.startswith(world.url) for h in hrefs), hrefs
    assert any(h.startswith(f"{world.url}/c/") for h in hrefs)
    assert f'src="{world.url}/o/' in html
    assert "https://shop.example/cart" not in html  # rewritten ...
    text = message.get_body(("plain",)).get_content()
    assert "https://shop.example/cart" in text  # ... but the text part keeps the real URL


def test_one_click_unsubscribe_then_pending_sends_cancelled_as_no_consent(world: World) -> None:
    url = unsubscribe_url(world.send())
    world.plan("e2")  # the next reminder is planned before the unsubscribe arrives
    response = httpx.post(url, content=b"List-Unsubscribe=One-Click", follow_redirects=False,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert response.status_code == 200 and "unsubscribed" in response.text.lower()
    assert world.profile()["consent_email"] is False  # at once: no processor ran
    [event] = world.events("unsubscribed")
    assert event["properties"]["method"] == "one-click"
    assert isinstance(event["properties"]["action_id"], int)
    assert world.dispatch() == {"cancelled": 1}
    cancelled = [a for a in world.store.read(list_actions) if a.status == "cancelled"]
    assert [a.result.split(":")[0] for a in cancelled] == ["no_consent"]
    # a mailbox retrying the POST: still 200, nothing new logged
    again = httpx.post(url, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and len(world.events("unsubscribed")) == 1
    Processor(world.store, world.index).run_until_empty()  # the processor agrees
    assert world.profile()["consent_email"] is False


def test_get_shows_escaped_preferences_and_changes_nothing(world: World) -> None:
    url = unsubscribe_url(world.send())
    before = world.events()
    page = httpx.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;Ada&lt;/b&gt;" in page.text and "<b>Ada</b>" not in page.text
    assert re.search(r'name="consent_email" checked', page.text)
    assert re.search(r'name="consent_push">', page.text)  # not checked
    assert page.text.count('<form method="post">') == 2
    assert world.events() == before
    assert world.profile()["consent_email"] is True


def test_preference_form_and_resubscribe(world: World) -> None:
    url = unsubscribe_url(world.send())
    saved = httpx.post(url, data={"choice": "save", "consent_email": "on"})
    assert saved.status_code == 200 and "saved" in saved.text
    profile = world.profile()
    assert (profile["consent_email"], profile["consent_sms"], profile["consent_push"]) == (
        True, False, False)  # fmt: skip
    [change] = world.events("subscription_changed")
    assert change["properties"]["consent_sms"] is False and "consent_email" not in change[
        "properties"]  # fmt: skip
    httpx.post(url, data={"choice": "none"})
    assert not any(world.profile()[k] for k in ("consent_email", "consent_sms", "consent_push"))
    again = httpx.post(url, data={"choice": "save", "consent_email": "on", "consent_push": "on"})
    assert again.status_code == 200 and re.search(r'name="consent_push" checked', again.text)
    assert world.profile()["consent_email"] is True and world.profile()["consent_push"] is True
    assert len(world.events("subscription_changed")) == 3
    Processor(world.store, world.index).run_until_empty()
    assert world.profile()["consent_email"] is True  # replaying the log gives the same state
    assert httpx.post(url, data={"choice": "whatever"}).status_code == 400


def test_tampered_foreign_and_misused_tokens_change_nothing(world: World) -> None:
    message = world.send()
    url = unsubscribe_url(message)
    token = url.rsplit("/", 1)[1]
    body, mac = token.split(".")
    flipped = f"{body}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}"
    [click] = re.findall(rf'href="({re.escape(world.url)}/c/[^"]+)"', html_of(message))[:1]
    foreign = tokens.sign("u", {"c": "c1"}, "someone-elses-secret-" + "z" * 20)
    before = world.events()
    for bad, status in [(f"{world.url}/u/{flipped}", 403), (f"{world.url}/u/{foreign}", 403),
                        (f"{world.url}/u/{click.rsplit('/', 1)[1]}", 403),
                        (f"{world.url}/u/not-a-token", 400),
                        (f"{world.url}/unsubscribe?c=c1&t=" + "0" * 32, 403),
                        (f"{world.url}/o/{flipped}", 403), (f"{world.url}/c/{flipped}", 403)]:  # fmt: skip
        response = httpx.post(bad, data={"List-Unsubscribe": "One-Click"}) if "/u/" in bad or \
            "unsubscribe" in bad else httpx.get(bad, follow_redirects=False)  # fmt: skip
        assert response.status_code == status, (bad, response.text)
        assert "location" not in response.headers
    assert world.events() == before
    assert world.profile()["consent_email"] is True


def test_rotation_old_secret_accepted_legacy_links_served(world: World) -> None:
    old = tokens.sign("u", {"c": "c1"}, OLD)
    assert httpx.get(f"{world.url}/u/{old}").status_code == 200
    from engine.channels.links import legacy_unsubscribe_token

    legacy = f"{world.url}/unsubscribe?c=c1&t={legacy_unsubscribe_token('c1', OLD)}"
    assert httpx.post(legacy, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert world.profile()["consent_email"] is False


def test_open_pixel_and_clicks_are_events_of_the_action(world: World) -> None:
    message = world.send()
    html = html_of(message)
    [pixel] = re.findall(rf'src="({re.escape(world.url)}/o/[^"]+)"', html)
    [click] = re.findall(rf'href="({re.escape(world.url)}/c/[^"]+)"', html)
    [action] = world.store.read(list_actions)
    world.offset[0] = 120.0  # two minutes after sending: a person
    for _ in range(2):  # a reload is a second open
        image = httpx.get(pixel, headers={"User-Agent": SAFARI})
        assert image.status_code == 200 and image.content == PIXEL
        assert image.headers["content-type"] == "image/gif"
        assert "no-store" in image.headers["cache-control"]
    httpx.get(pixel, headers={"User-Agent": "Mozilla/5.0"})
    opens = world.events("email_opened")
    assert [o["properties"]["machine"] for o in opens] == [False, False, True]
    assert opens[2]["properties"]["machine_reason"] == "bare_user_agent"
    assert {o["properties"]["message_id"] for o in opens} == {action.idempotency_key}
    assert {o["properties"]["action_id"] for o in opens} == {action.id}

    went = httpx.get(click, headers={"User-Agent": SAFARI}, follow_redirects=False)
    assert went.status_code == 302 and went.headers["location"] == "https://shop.example/cart"
    head = httpx.head(click, headers={"User-Agent": SAFARI}, follow_redirects=False)
    assert head.status_code == 302
    world.offset[0] = 0.0  # right at delivery: a security gateway following links
    httpx.get(click, headers={"User-Agent": SAFARI}, follow_redirects=False)
    clicks = world.events("email_clicked")
    assert [(c["properties"]["machine"], c["properties"].get("machine_reason")) for c in clicks] \
        == [(False, None), (True, "head_request"), (True, "too_soon")]  # fmt: skip
    assert clicks[0]["properties"]["url"] == "https://shop.example/cart"
    assert clicks[0]["properties"]["message_id"] == action.idempotency_key


def test_every_link_at_once_is_a_scanner(world: World, tmp_path: Path) -> None:
    from engine.channels.email import render_email

    templates = tmp_path / "t"
    templates.mkdir()
    (templates / "three.html.j2").write_text(
        "{% block subject %}Three{% endblock %}<html><body>"
        '<a href="https://a.example/1?x=1&amp;y=2">1</a><a href="https://a.example/2">2</a>'
        '<a href="mailto:x@example.com">m</a><a href="https://a.example/3">3</a></body></html>'
    )
    email = render_email(
        EmailSettings(templates_dir=templates, public_url=world.url, unsubscribe_secret=SECRET),
        "three", idempotency_key="k", profile=PROFILE, event={}, scores={},
        trigger_id="cart_recovery", marketing=True, action_id=999,
    )  # fmt: skip
    assert email.html is not None
    links = re.findall(rf'href="({re.escape(world.url)}/c/[^"]+)"', email.html)
    assert len(links) == 3 and 'href="mailto:x@example.com"' in email.html
    world.offset[0] = 600.0
    targets = []
    for link in links:
        response = httpx.get(link, headers={"User-Agent": SAFARI}, follow_redirects=False)
        targets.append(response.headers["location"])
    assert targets == ["https://a.example/1?x=1&y=2", "https://a.example/2", "https://a.example/3"]
    reasons = [c["properties"].get("machine_reason") for c in world.events("email_clicked")]
    assert reasons == [None, None, "all_links"]
    assert all("message_id" not in c["properties"] for c in world.events("email_clicked"))


def test_bad_bodies_are_refused_and_change_nothing(world: World) -> None:
    url = unsubscribe_url(world.send())
    too_big = httpx.post(url, content=b"List-Unsubscribe=One-Click&x=" + b"a" * 20_000)
    assert too_big.status_code == 413
    not_utf8 = httpx.post(url, content=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert not_utf8.status_code == 400
    assert world.profile()["consent_email"] is True and not world.events("unsubscribed")


def test_a_trigger_with_tracking_false_sends_untracked_mail(world: World) -> None:
    world.index = TriggerIndex(
        load_trigger_text(TRIGGERS.replace("  when:", "  tracking: false\n  when:")).triggers
    )
    html = html_of(world.send())
    assert "/o/" not in html and "/c/" not in html and "https://shop.example/cart" in html
    assert unsubscribe_url(world.send("e2")).startswith(f"{world.url}/u/")


def test_one_click_as_multipart_form_data(world: World) -> None:
    """RFC 8058: the POST SHOULD be multipart/form-data (httpx's files= sends exactly that)."""
    url = unsubscribe_url(world.send())
    response = httpx.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200 and world.profile()["consent_email"] is False
    broken = httpx.post(url, content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
    assert broken.status_code == 400
