"""The loop without the simulator (issue 14, item 6): emails go out through a real SMTP server
(aiosmtpd on loopback); the outside world then loads the pixel and follows the links over real
HTTP from the delivered bytes, as a mail client, a person, Apple's proxy and a link scanner
would; and the funnel, the customer state engagement suppression reads and the lake's
engagement features see the people's opens and clicks and not the machines'."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import httpx
import pytest

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.lake import EventLake
from engine.optimizer.funnel import funnel
from engine.optimizer.labels import ALL
from engine.runtime.api import create_app
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.lake_sync import sync_once
from engine.runtime.processor import Processor
from engine.store.customers import load_states, upsert_profiles
from engine.store.exposures import load_exposures
from features.compute import lake_columns
from features.compute.engagement import engagement_features
from tests.support import LocalServer, SmtpSink

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
SECRET = "loop-secret-" + "q" * 32
SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
TRIGGERS = """
- id: cart_recovery
  quiet_hours: ignore
  when: {event: cart_abandoned}
  actions:
    - send_email: {template: cart_reminder}
      delay: 1h
  experiment:
    variants: {early: {delay: 1h}, late: {delay: 2h}}
"""
CUSTOMERS = ("c1", "c2", "c3")


def html_part(message: Message) -> str:
    [part] = [p for p in message.walk() if p.get_content_type() == "text/html"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(part.get_content_charset() or "utf-8")


@pytest.mark.slow
def test_sent_over_smtp_opened_and_clicked_over_http(engine_store, tmp_path, monkeypatch):
    monkeypatch.setenv("NUDGE_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("NUDGE_TRACKING_SCANNER_SECONDS", "10")
    now = time.time()
    t0 = datetime.fromtimestamp(now, UTC) - timedelta(days=1)
    engine_store.write(upsert_profiles, {
        c: {"customer_id": c, "email": f"{c}@example.com", "consent_email": True}
        for c in CUSTOMERS
    }, 0.0)  # fmt: skip
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    accept_events(engine_store, [
        {"event_id": f"cart-{c}", "customer_id": c, "event_type": "cart_abandoned",
         "timestamp": t0.isoformat(), "properties": {"cart_value": 20, "items": 1}}
        for c in CUSTOMERS
    ], source="shop")  # fmt: skip
    Processor(engine_store, index).run_until_empty()
    offset = [0.0]
    app = create_app(engine_store, "api-key", clock=lambda: time.time() + offset[0])
    with LocalServer(app) as server, SmtpSink() as smtp:
        email = EmailSettings(templates_dir=TEMPLATES, smtp_host="127.0.0.1", smtp_port=smtp.port,
                              smtp_timeout=5.0, public_url=server.url, unsubscribe_secret=SECRET)  # fmt: skip
        dispatcher = Dispatcher(engine_store, index, email=email,
                                webhooks=WebhookSender("whsec", timeout=2.0))  # fmt: skip
        assert dispatcher.run_due((t0 + timedelta(hours=3)).timestamp()).outcomes == {"sent": 3}
        delivered = {str(m["To"]).split("@")[0]: html_part(m) for m in smtp.messages}
        assert set(delivered) == set(CUSTOMERS)

        def links(customer: str) -> tuple[str, str]:
            html = delivered[customer]
            [pixel] = re.findall(rf'src="({re.escape(server.url)}/o/[^"]+)"', html)
            [click] = re.findall(rf'href="({re.escape(server.url)}/c/[^"]+)"', html)
            return pixel, click

        offset[0] = 0.0  # as the messages arrive: Apple's prefetch and a gateway's link check
        pixel, click = links("c2")
        assert httpx.get(pixel, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
        assert httpx.get(click, headers={"User-Agent": SAFARI}).status_code == 302
        offset[0] = 300.0  # five minutes later c1 reads the email and clicks
        pixel, click = links("c1")
        assert httpx.get(pixel, headers={"User-Agent": SAFARI}).content.startswith(b"GIF89a")
        landed = httpx.get(click, headers={"User-Agent": SAFARI}, follow_redirects=False)
        assert landed.status_code == 302 and landed.headers["location"] == (
            "https://shop.example/cart")  # fmt: skip

    # The funnel of the experiment: one person opened and clicked; c2's were machines.
    exposures = engine_store.read(load_exposures, "cart_recovery", attribution_window=7 * 86400)
    stages = funnel(exposures)
    overall = stages[stages["variant"] == ALL].set_index("stage")["users"]
    assert (overall["sent"], overall["opened"], overall["clicked"]) == (3, 1, 1)
    with_machines = engine_store.read(load_exposures, "cart_recovery",
                                      attribution_window=7 * 86400, include_machine=True)  # fmt: skip
    assert int(with_machines["opened"].sum()) == 2

    # The customer state that engagement suppression reads: c1's open, none for c2.
    Processor(engine_store, index).run_until_empty()
    states = engine_store.read(load_states, list(CUSTOMERS))
    opens = {
        c: len((states[c].get("events", {}).get("email_opened") or [[]])[0]) for c in CUSTOMERS
    }
    assert opens == {"c1": 1, "c2": 0, "c3": 0}

    # The lake, synced from the engine, and the engagement features computed from it.
    lake = EventLake(tmp_path / "lake")
    sync_once(engine_store, lake, settle=0)
    events = lake.read(columns=lake_columns()).to_pandas()  # what the feature pipelines read
    features = engagement_features(events, [datetime.fromtimestamp(now + 3600, UTC)])
    row = features.set_index("customer_id")
    assert row.loc["c1", "emails_opened_30d"] == 1 and row.loc["c1", "emails_clicked_30d"] == 1
    assert row.loc["c2", "emails_opened_30d"] == 0 and row.loc["c2", "emails_clicked_30d"] == 0
