"""The engine's metrics after real traffic: events posted to the API on a loopback port,
processed and dispatched by the loop, scraped over HTTP and read with prometheus_client's own
parser; a worker's metrics server; the scoring client's latency and circuit; a database down."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.api import create_app
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.loop import EngineLoop
from engine.runtime.metrics import EngineMetrics, MetricsServer
from engine.runtime.processor import Processor
from engine.runtime.scoring import BreakerState, CircuitBreaker, ScoreClient
from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from engine.store.sql import create_engine
from tests.support import LocalServer, free_port

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
KEY = {"X-API-Key": "k"}
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
TRIGGERS = """
- id: cart_recovery
  when: {event: cart_abandoned}
  actions:
    - send_email: {template: cart_reminder}
      delay: 1h
- id: payment_failure
  category: transactional
  quiet_hours: ignore
  when: {event: payment_failed}
  actions:
    - send_email: {template: payment_failed}
"""


class Clock:
    """The metrics' clock: wall time unless set."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float:
        return time.time() if self.at is None else self.at


def at(minutes: float) -> float:
    return (T0 + timedelta(minutes=minutes)).timestamp()


def ev(event_id: str, customer: str, event_type: str, minutes: float) -> dict:
    return {"event_id": event_id, "customer_id": customer, "event_type": event_type,
            "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(), "properties": {}}  # fmt: skip


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus_client: (name, labels) → value."""
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def engine_parts(store: EngineDB, outbox: Path) -> tuple[TriggerIndex, Processor, Dispatcher]:
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    profiles = {
        f"c{i}": {"customer_id": f"c{i}", "email": f"c{i}@example.com", "consent_email": i != 5,
                  "timezone": "UTC"}
        for i in range(1, 6)
    }  # fmt: skip
    store.write(upsert_profiles, profiles, 0.0)
    email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=outbox)
    dispatcher = Dispatcher(store, index, email=email, webhooks=WebhookSender("s"))
    return index, Processor(store, index), dispatcher


def test_metrics_after_real_traffic_through_the_engine(engine_store, tmp_path):
    clock = Clock()
    metrics = EngineMetrics(engine_store, clock=clock)
    _, processor, dispatcher = engine_parts(engine_store, tmp_path / "outbox")
    events = [ev(f"a{i}", f"c{i}", "cart_abandoned", i) for i in range(1, 6)]
    events += [ev("p1", "c1", "payment_failed", 2), ev("p2", "c2", "payment_failed", 3)]
    events.append({"event_id": "bad", "customer_id": "c1", "event_type": ""})  # invalid
    with LocalServer(create_app(engine_store, "k", metrics=metrics)) as server:
        posted = httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=KEY)
        assert (posted.status_code, posted.json()["accepted"]) == (202, 7)
        unreadable = httpx.post(f"{server.url}/v1/events", content=b"{nope", headers=KEY)
        assert unreadable.status_code == 422

        clock.at = time.time() + 30  # the oldest pending event was received ~30 s "ago"
        before = scrape(f"{server.url}/metrics")
        assert value(before, "nudge_engine_database_up") == 1
        assert value(before, "nudge_engine_inbox_events", status="pending") == 7
        assert value(before, "nudge_engine_events_accepted_total") == 7
        assert 29 <= value(before, "nudge_engine_processing_lag_seconds") <= 60
        assert value(before, "nudge_engine_events_rejected_total", source="api") == 2
        assert value(before, "nudge_engine_dead_letters_open", source="api") == 2
        assert not [k for k in before if k[0].startswith("nudge_engine_lake_sync")], "no sync ran"

        # Processed and dispatched ten minutes after the first event: the two transactional
        # emails go out now, the cart reminders wait for their hour (timers).
        loop = EngineLoop(processor, dispatcher, clock=lambda: at(10), observer=metrics)
        loop.run(until_idle=True)
        clock.at = at(10) + 20
        after = scrape(f"{server.url}/metrics")
        assert value(after, "nudge_engine_inbox_events", status="pending") == 0
        assert value(after, "nudge_engine_processing_lag_seconds") == 0
        assert value(after, "nudge_engine_inbox_events", status="processed") == 7
        decisions = {
            (dict(labels)["trigger"], dict(labels)["outcome"]): n
            for (name, labels), n in after.items()
            if name == "nudge_engine_decisions_total"
        }
        assert decisions == {("cart_recovery", "fired"): 4, ("cart_recovery", "suppressed"): 1,
                             ("payment_failure", "fired"): 2}  # fmt: skip
        suppressions = [
            (dict(k[1]), n) for k, n in after.items() if k[0] == "nudge_engine_suppressions_total"
        ]
        assert suppressions == [({"trigger": "cart_recovery", "reason": "no_consent"}, 1)]
        assert value(after, "nudge_engine_actions", channel="email", status="sent") == 2
        assert value(after, "nudge_engine_actions", channel="email", status="pending") == 4
        assert value(after, "nudge_engine_timer_backlog") == 4
        assert value(after, "nudge_engine_due_actions") == 0
        assert value(after, "nudge_engine_sends_last_minute", channel="email") == 2
        assert value(after, "nudge_engine_throttled_actions", channel="email") == 0
        assert value(after, "nudge_engine_processed_events_total", result="processed") == 7
        assert value(after, "nudge_engine_dispatch_outcomes_total", outcome="sent") == 2
        assert value(after, "nudge_engine_step_duration_seconds_count", step="processor") >= 1
        assert value(after, "nudge_engine_loop_errors_total", step="dispatcher") == 0

        # Half an hour after the reminders fell due, before a dispatcher ran: the due queue.
        clock.at = at(5 + 60 + 30)
        due = scrape(f"{server.url}/metrics")
        assert value(due, "nudge_engine_due_actions") == 4
        assert value(due, "nudge_engine_timer_backlog") == 0
        assert value(due, "nudge_engine_oldest_due_age_seconds") == pytest.approx(34 * 60)
        assert value(due, "nudge_engine_sends_last_minute", channel="email") == 0


def test_loop_errors_are_counted_per_step(engine_store, tmp_path):
    metrics = EngineMetrics(engine_store)
    _, processor, _ = engine_parts(engine_store, tmp_path / "outbox")
    engine_store.dispose()
    broken = Processor(EngineDB(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")),
                       processor.index)  # fmt: skip
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        EngineLoop(broken, None, observer=metrics).run(until_idle=True)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert value(samples, "nudge_engine_loop_errors_total", step="processor") == 1


def test_a_scrape_with_the_database_down_says_so_and_does_not_fail():
    down = EngineDB(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    text = EngineMetrics(down).render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = families["nudge_engine_database_up"].samples
    assert sample.value == 0
    assert "nudge_engine_inbox_events" not in families


def test_scoring_latency_and_the_circuit_state(engine_store):
    scoring = FastAPI()

    @scoring.post("/v1/scores")
    def scores(body: dict) -> dict:
        return {"results": [{"customer_id": c, "known": True,
                             "scores": {"churn": {"value": 0.5, "model_version": "3"}}}
                            for c in body["customer_ids"]]}  # fmt: skip

    metrics = EngineMetrics(engine_store)
    with LocalServer(scoring) as server:
        client = ScoreClient(server.url, retries=0)
        metrics.watch_scores(client)
        assert client.fetch(["c1"], ["churn"])["c1"]["churn"].value == 0.5
    dead = ScoreClient(f"http://127.0.0.1:{free_port()}", retries=0, timeout=0.5,
                       breaker=CircuitBreaker(failures=2, reset_after=60))  # fmt: skip
    metrics.watch_scores(dead)
    for customer in ("a", "b", "c"):
        assert dead.fetch([customer], ["churn"])[customer]["churn"] is None
    assert dead.breaker.state is BreakerState.OPEN
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics.render().decode())
        for s in f.samples
    }
    assert value(samples, "nudge_engine_scoring_requests_total", result="ok") == 1
    assert value(samples, "nudge_engine_scoring_requests_total", result="error") == 2
    assert value(samples, "nudge_engine_scoring_requests_total", result="circuit_open") == 1
    assert value(samples, "nudge_engine_scoring_request_duration_seconds_count", result="ok") == 1
    assert value(samples, "nudge_engine_scoring_circuit_state", state="open") == 1
    assert value(samples, "nudge_engine_scoring_circuit_state", state="half_open") == 0


def test_a_worker_serves_its_metrics_on_a_port_of_its_own(engine_store):
    server = MetricsServer(EngineMetrics(engine_store), 0)
    try:
        samples = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
    assert value(samples, "nudge_engine_database_up") == 1
    assert value(samples, "nudge_engine_due_actions") == 0


def test_engine_run_metrics_port(nudge_home, monkeypatch):
    from nudge.cli import app

    monkeypatch.setenv("NUDGE_ENGINE_DB", f"sqlite:///{nudge_home / 'engine.db'}")
    result = CliRunner().invoke(app, ["engine", "run", "--until-idle", "--metrics-port", "0"])
    assert result.exit_code == 0, result.output
    assert "metrics on http://127.0.0.1:" in result.output
    port = free_port()
    with MetricsServer(EngineMetrics(None), port):
        busy = CliRunner().invoke(
            app, ["engine", "run", "--until-idle", "--metrics-port", str(port)]
        )
    assert (
        busy.exit_code == 2 and f"--metrics-port: cannot listen on 127.0.0.1:{port}" in busy.output
    )


def test_send_rate_against_its_limit_from_the_settings(engine_store, monkeypatch):
    from nudge.engine_cli import send_limits
    from nudge.settings import Settings

    monkeypatch.setenv("NUDGE_EMAIL_RATE", "10/s")
    monkeypatch.setenv("NUDGE_SMS_RATE", "120/h")
    limits = send_limits(Settings())
    assert limits == {"email": 600.0, "sms": 2.0}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(
            EngineMetrics(engine_store, send_limits=limits).render().decode()
        )
        for s in f.samples
    }
    assert value(samples, "nudge_engine_send_limit_per_minute", channel="email") == 600
    assert value(samples, "nudge_engine_sends_last_minute", channel="sms") == 0


def test_lake_sync_lag_is_the_age_of_the_oldest_row_not_copied(engine_store):
    import sqlalchemy as sa

    from engine.runtime.inbox import accept_events
    from engine.store import schema

    accept_events(
        engine_store, [ev("a1", "c1", "signup", 0), ev("a2", "c1", "signup", 1)], source="t"
    )
    with engine_store.begin() as conn:
        first = conn.execute(sa.select(sa.func.min(schema.inbox.c.seq))).scalar_one()
        received = conn.execute(sa.select(sa.func.max(schema.inbox.c.received_at))).scalar_one()
        conn.execute(sa.insert(schema.lake_watermarks),
                     [{"stream": "events", "position": float(first), "synced": 1, "updated_at": 0.0}])  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(
            EngineMetrics(engine_store, clock=lambda: received + 90).render().decode()
        )
        for s in f.samples
    }
    assert value(samples, "nudge_engine_lake_sync_behind", stream="events") == 1
    assert value(samples, "nudge_engine_lake_sync_lag_seconds", stream="events") == pytest.approx(
        90
    )


def test_events_received_are_counted_by_source_and_result(engine_store):
    """Whatever the route (nudge's own API, Segment's), every batch this process accepts is
    counted by its source and result once `watch_acceptance` is on."""
    metrics = EngineMetrics(engine_store)
    metrics.watch_acceptance()
    try:
        events = [ev("a1", "c1", "cart_add", 1), ev("a2", "c2", "cart_add", 2)]
        with LocalServer(create_app(engine_store, "k", metrics=metrics)) as server:
            httpx.post(f"{server.url}/v1/events", json={"events": events}, headers=KEY)
            httpx.post(f"{server.url}/v1/events", json={"events": events[:1]}, headers=KEY)
            httpx.post(f"{server.url}/v1/events", json={"events": [{"event_id": "x"}]}, headers=KEY)
            segment = {"batch": [{"type": "track", "event": "Product Viewed", "userId": "c3",
                                  "messageId": "m1", "timestamp": T0.isoformat()}]}  # fmt: skip
            assert (
                httpx.post(f"{server.url}/v1/batch", json=segment, auth=("k", "")).status_code < 300
            )
            samples = scrape(f"{server.url}/metrics")
    finally:
        metrics.stop_watching()
    received = {
        (dict(labels)["source"], dict(labels)["result"]): n
        for (name, labels), n in samples.items()
        if name == "nudge_engine_received_events_total"
    }
    segment_source = [s for s, _ in received if s != "api"]
    assert received[("api", "accepted")] == 2
    assert received[("api", "duplicate")] == 1
    assert received[("api", "invalid")] == 1
    assert len(segment_source) == 1 and received[(segment_source[0], "accepted")] == 1
