"""The closed loop's opens and clicks go through the engine's public routes: each answered
email's pixel and link are requested (pipelines.loop_links), and the inbox holds the routes'
events — matched to the action, stamped at the simulated time, counted as people."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_dir
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.processor import Processor
from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from engine.store.outbox import list_actions
from engine.store.schema import inbox
from pipelines.closed_loop import run_closed_loop
from pipelines.loop_links import PUBLIC_URL, PublicVisitor
from pipelines.simulator import simulate
from pipelines.simulator.responder import Responder
from tests.pipelines.test_closed_loop import ROOT, window_events

SECRET = "loop-" + "s" * 40


def test_opens_and_clicks_through_the_public_routes(tmp_path):
    sim = simulate(1_500, 67, seed=9)
    index = TriggerIndex(load_trigger_dir(ROOT / "engine" / "examples").triggers)
    store = EngineDB.open(f"sqlite:///{tmp_path / 'engine.db'}")
    profiles = json.loads(sim.customers.to_json(orient="records", date_format="iso"))
    store.write(upsert_profiles, {p["customer_id"]: p for p in profiles}, 0.0)
    outbox = tmp_path / "outbox"
    email = EmailSettings(templates_dir=ROOT / "engine" / "templates", outbox_dir=outbox,
                          public_url=PUBLIC_URL, unsubscribe_secret=SECRET)  # fmt: skip
    dispatcher = Dispatcher(store, index, email=email, webhooks=WebhookSender("s"))
    visitor = PublicVisitor(store, outbox, SECRET)
    started = time.perf_counter()
    report = run_closed_loop(store, Processor(store, index), dispatcher,
                             Responder(sim.truth, sim.planted, 9), window_events(sim, 53),
                             visitor=visitor)  # fmt: skip
    seconds = time.perf_counter() - started
    visitor.close()
    assert report.funnel["opened"] > 0 and report.funnel["clicked"] > 0
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(inbox.c.event_type, inbox.c.occurred_at, inbox.c.payload).where(
                inbox.c.event_type.in_(["email_opened", "email_clicked"]))
        ).all()  # fmt: skip
    everything = [(t, at, json.loads(p)) for t, at, p in rows]
    events = [e for e in everything if e[2].get("source") == "tracking"]  # not the history
    opened = [e for e in events if e[0] == "email_opened"]
    clicked = [e for e in events if e[0] == "email_clicked"]
    # Every email has the pixel; the welcome templates have no link, so their clicks stay events.
    direct = [
        e for e in everything if e[2].get("source") == "closed-loop" and e[0] == "email_clicked"
    ]
    assert len(opened) == report.funnel["opened"]
    assert clicked and len(clicked) + len(direct) == report.funnel["clicked"]
    assert not [e for e in everything if e[2].get("source") == "closed-loop"
                and e[0] == "email_opened"]  # fmt: skip
    keys = {a.idempotency_key for a in store.read(list_actions, kind="send_email")}
    for _, at, payload in events:
        props = payload["properties"]
        assert props["machine"] is False
        assert props["message_id"] in keys
        assert at < time.time() - 86400 * 30, "stamped at the simulated time, not now"
    assert all(e[2]["properties"]["url"].startswith("https://") for e in clicked)
    print(f"closed loop with public routes: {len(events)} visits, {seconds:.1f} s")
