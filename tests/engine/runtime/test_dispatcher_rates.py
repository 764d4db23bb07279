"""Send rates and backpressure end to end: emails through the file outbox under a shared rate
(SQLite and PostgreSQL), two dispatcher workers sharing it, and a real HTTP receiver answering
429 with Retry-After — delayed, never dropped, never twice, no attempt used up."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response

from engine.channels.base import Delivery
from engine.channels.email import EmailSettings
from engine.channels.email_channel import EmailChannel
from engine.channels.ratelimit import Rate, SendRate, parse_rate
from engine.channels.webhooks import WebhookError, WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store import ActionRow, EngineDB
from engine.store.customers import upsert_profiles
from engine.store.outbox import THROTTLED, list_actions, pending_by_channel
from engine.store.send_rates import DatabaseRates
from tests.support import LocalServer

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)
SECRET = "whsec-test"

TRIGGERS = """
- id: payment_failure
  category: transactional
  quiet_hours: ignore
  when: {event: payment_failed}
  actions:
    - send_email: {template: payment_failed}
- id: hook
  category: transactional
  quiet_hours: ignore
  when: {event: refund_requested}
  actions:
    - webhook: {url: "URL", data: {reason: refund}}
"""


def rate(text: str) -> Rate:
    parsed = parse_rate(text)
    assert parsed is not None
    return parsed


def plan(
    store: EngineDB, customers: int, event_type: str = "payment_failed", url: str = ""
) -> TriggerIndex:
    """`customers` customers, one event each at T0: one action each, due at once."""
    index = TriggerIndex(load_trigger_text(TRIGGERS.replace("URL", url or "http://x/")).triggers)
    ids = [f"c{i:03d}" for i in range(customers)]
    profiles = {c: {"customer_id": c, "email": f"{c}@example.com", "first_name": c} for c in ids}
    store.write(upsert_profiles, profiles, 0.0)
    events = [{"event_id": f"e-{c}", "customer_id": c, "event_type": event_type,
               "timestamp": T0.isoformat(), "properties": {"amount": 10}} for c in ids]  # fmt: skip
    accept_events(store, events, source="t")
    Processor(store, index).run_until_empty()
    return index


class CountingEmail(EmailChannel):
    """The email channel to the file outbox, counting what it is asked to send (the outbox's
    files are named by idempotency key, so a second send of one would not show as a file)."""

    def __init__(self, settings: EmailSettings, sends: list[str]) -> None:
        super().__init__(settings)
        self.sends = sends
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> str:
        with self._lock:
            self.sends.append(delivery.idempotency_key)
        return super().send(delivery)


def dispatcher(
    store, index, outbox: Path | None, sends: list[str] | None = None, **kwargs
) -> Dispatcher:
    email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=outbox)
    webhooks = WebhookSender(SECRET, allow=("127.0.0.1",), timeout=2.0)
    channels = {"send_email": CountingEmail(email, sends if sends is not None else [])}
    return Dispatcher(store, index, email=email, webhooks=webhooks, channels=channels, **kwargs)


def within_the_rate(times: list[float], limit: Rate) -> None:
    times = sorted(times)
    for i, start in enumerate(times):
        for width in (0.1, 0.5, 1.0, 2.0):
            inside = sum(1 for t in times[i:] if t < start + width)
            assert inside <= limit.burst + width / limit.interval + 1e-6, (start, width, inside)


def all_sent(store: EngineDB) -> bool:
    return all(r.status == "sent" for r in store.read(list_actions))


def sent_once(store: EngineDB, outbox: Path, count: int, sends: list[str]) -> list[ActionRow]:
    assert len(sends) == count and len(set(sends)) == count, "each sent once"
    rows = store.read(list_actions)
    assert [r.status for r in rows] == ["sent"] * count, "none lost"
    files = list(outbox.glob("*.eml"))
    recipients = sorted(
        line.split(":", 1)[1].strip()
        for path in files
        for line in path.read_text().splitlines()
        if line.startswith("To:")
    )
    assert len(files) == count and recipients == sorted({r for r in recipients}), "none twice"
    assert all(r.attempts == 0 for r in rows), "a throttled send is not a failed attempt"
    return rows


def test_thirty_emails_at_ten_per_second_take_two_seconds_of_engine_clock(engine_store, tmp_path):
    index = plan(engine_store, 30)
    before = {r.id: r.params for r in engine_store.read(list_actions)}
    limit = rate("10/s")
    outbox, sends = tmp_path / "outbox", list[str]()
    d = dispatcher(
        engine_store,
        index,
        outbox,
        sends,
        send_rate=SendRate({"email": limit}, DatabaseRates(engine_store)),
    )
    start = T0.timestamp() + 1
    first = d.run_due(start)
    assert first.outcomes == {"sent": 10, "throttled": 20}, "a burst of one second's worth"

    waiting = [r for r in engine_store.read(list_actions) if r.status == "pending"]
    assert len(waiting) == 20
    assert all(r.result == f"{THROTTLED}email rate 10/s" and r.attempts == 0 for r in waiting)
    assert all(r.params == before[r.id] for r in waiting), "its content untouched"
    slots = sorted(r.next_attempt_at - start for r in waiting)
    assert slots[0] == pytest.approx(0.1, abs=1e-5) and slots[-1] == pytest.approx(2.0, abs=1e-5)
    [queue] = engine_store.read(pending_by_channel, start)
    assert (queue.channel, queue.pending, queue.due, queue.throttled) == ("email", 20, 0, 20)
    assert queue.next_attempt_at == pytest.approx(start + 0.1, abs=1e-5)

    now = start
    while now < start + 10 and not all_sent(engine_store):
        now += 0.05
        d.run_due(now)
    rows = sent_once(engine_store, outbox, 30, sends)
    finished = [r.finished_at for r in rows if r.finished_at is not None]
    assert max(finished) - min(finished) >= 1.9, "20 after the burst at 10/s: two seconds"
    within_the_rate(finished, limit)
    assert engine_store.read(pending_by_channel, now) == []


@pytest.mark.slow
def test_two_dispatcher_workers_share_one_rate(engine_store, tmp_path):
    index = plan(engine_store, 30)
    limit = rate("10/s")
    outbox, sends = tmp_path / "outbox", list[str]()
    url = engine_store.engine.url.render_as_string(hide_password=False)
    stores = [
        EngineDB.open(url, schema=engine_store.schema) for _ in range(2)
    ]  # like two processes
    workers = [
        dispatcher(db, index, outbox, sends, worker_id=f"dispatcher-{i}", batch_size=3,
                   send_rate=SendRate({"email": limit}, DatabaseRates(db)), clock=time.time)
        for i, db in enumerate(stores)
    ]  # fmt: skip
    # The actions fall due now on the wall clock, which both workers read.
    with engine_store.begin() as conn:
        from engine.store.schema import actions

        conn.execute(actions.update().values(due_at=time.time()))
    done = threading.Event()
    errors: list[BaseException] = []

    def work(d: Dispatcher) -> None:
        try:
            while not done.is_set():
                if not d.run_due().handled:
                    time.sleep(0.01)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in workers]
    started = time.time()
    for thread in threads:
        thread.start()
    try:
        while time.time() - started < 15 and not all_sent(engine_store):
            time.sleep(0.05)
    finally:
        done.set()
        for thread in threads:
            thread.join()
        for db in stores:
            db.dispose()
    assert errors == []
    rows = sent_once(engine_store, outbox, 30, sends)
    finished = [r.finished_at for r in rows if r.finished_at is not None]
    assert max(finished) - min(finished) >= 1.9
    within_the_rate(finished, limit)
    by_worker = {r.claimed_by for r in rows}
    assert by_worker == {"dispatcher-0", "dispatcher-1"}, "both workers sent some"


def throttling_receiver(answers: list[tuple[int, dict[str, str]]], seen: list[str]) -> FastAPI:
    """A receiver that answers the queued (status, headers), then 200."""
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        seen.append(request.headers["x-nudge-idempotency-key"])
        status, headers = answers.pop(0) if answers else (200, {})
        return Response(status_code=status, headers=headers)

    return app


def test_a_429_with_retry_after_waits_as_told_without_using_up_attempts(engine_store):
    seen: list[str] = []
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    answers = [(429, {"Retry-After": "5"}), (429, {"Retry-After": date}), (429, {}),
               (503, {"Retry-After": "2"})]  # fmt: skip
    with LocalServer(throttling_receiver(answers, seen)) as server:
        index = plan(engine_store, 1, "refund_requested", f"{server.url}/hook")
        d = dispatcher(engine_store, index, None, max_attempts=2)
        now = T0.timestamp() + 1
        waits = []
        for expected in (5.0, 30.0, 30.0, 2.0):
            assert d.run_due(now).outcomes == {"throttled": 1}
            [row] = engine_store.read(list_actions)
            assert row.status == "pending" and row.attempts == 0, "not a failed attempt"
            assert row.result.startswith(f"{THROTTLED}HTTP ")
            waits.append(row.next_attempt_at - now)
            assert waits[-1] == pytest.approx(expected, abs=1.5), row.result
            assert d.run_due(row.next_attempt_at - 0.5).handled == 0, "not before the wait"
            now = row.next_attempt_at
        assert d.run_due(now).outcomes == {"sent": 1}, "four throttles, max_attempts 2: sent"
    [row] = engine_store.read(list_actions)
    assert row.status == "sent" and row.attempts == 0 and len(seen) == 5 and len(set(seen)) == 1


def test_a_provider_that_throttles_forever_fails_in_the_end(engine_store):
    with LocalServer(throttling_receiver([(429, {"Retry-After": "60"})] * 10, [])) as server:
        index = plan(engine_store, 1, "refund_requested", f"{server.url}/hook")
        d = dispatcher(engine_store, index, None, max_attempts=2, throttle_deadline=100.0)
        now = T0.timestamp() + 1
        assert d.run_due(now).outcomes == {"throttled": 1}
        now += 200  # past the deadline: a throttle now counts as an attempt
        assert d.run_due(now).outcomes == {"retried": 1}
        [row] = engine_store.read(list_actions)
        assert row.attempts == 1 and row.next_attempt_at == pytest.approx(now + 60)
        assert d.run_due(now + 60).outcomes == {"failed": 1}
    [row] = engine_store.read(list_actions)
    assert (
        row.status == "failed" and "HTTP 429" in row.result and "after 2 attempt(s)" in row.result
    )


def test_the_webhook_sender_reads_retry_after_from_a_real_server():
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    answers = [(429, {"Retry-After": "7"}), (429, {"Retry-After": date}), (429, {}),
               (503, {}), (429, {"Retry-After": "soon"})]  # fmt: skip
    with LocalServer(throttling_receiver(answers, [])) as server:
        sender = WebhookSender(SECRET, allow=("127.0.0.1",), timeout=2.0)
        waits = []
        for _ in range(5):
            with pytest.raises(WebhookError) as caught:
                sender.send(f"{server.url}/hook", {"a": 1}, "k1")
            assert caught.value.retryable
            waits.append(caught.value.retry_after)
    assert waits[0] == 7.0 and waits[1] == pytest.approx(120, abs=2)
    assert waits[2:] == [30.0, None, 30.0], "429 without a readable wait: the default; 503: none"


def test_a_limiter_that_cannot_be_asked_delays_the_send(engine_store, tmp_path):
    class Down:
        def acquire(self, channel: str, rate: Rate, now: float) -> float:
            raise ConnectionError("redis: connection refused")

    index = plan(engine_store, 2)
    d = dispatcher(engine_store, index, tmp_path / "outbox",
                   send_rate=SendRate({"email": rate("10/s")}, Down()))  # fmt: skip
    now = T0.timestamp() + 1
    assert d.run_due(now).outcomes == {"throttled": 2}
    rows = engine_store.read(list_actions)
    assert all(r.status == "pending" and r.attempts == 0 for r in rows)
    assert all(
        "rate limiter unavailable" in r.result and "connection refused" in r.result for r in rows
    )
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").glob("*.eml"))
    d.send_rate = SendRate.unlimited()
    assert d.run_due(now + 10).outcomes == {"sent": 2}
    assert json.loads(rows[0].params) == {"template": "payment_failed"}


@pytest.mark.parametrize("replay", [True, False], ids=["replay-clock", "wall-clock"])
def test_run_until_idle_waits_for_throttled_sends(engine_store, tmp_path, replay):
    """`engine run --until-idle` is idle only once the throttled sends have gone out: in replay
    the engine clock moves on to their slots, on the wall clock the loop waits for them."""
    from engine.runtime.loop import EngineLoop, EventClock

    index = plan(engine_store, 12)
    outbox, sends = tmp_path / "outbox", list[str]()
    start = T0.timestamp() + 1
    offset = start - time.time()
    clock = EventClock(start) if replay else (lambda: time.time() + offset)
    limits = SendRate({"email": rate("4/s")}, DatabaseRates(engine_store))
    d = dispatcher(engine_store, index, outbox, sends, send_rate=limits, clock=clock)
    began = time.monotonic()
    EngineLoop(None, d, clock=clock, poll=0.05).run(until_idle=True)
    sent_once(engine_store, outbox, 12, sends)
    if replay:
        assert clock() >= start + 1.9, "replay time moved through the slots"
    else:
        assert time.monotonic() - began >= 1.9, "12 at 4/s: a burst of 4, then 8 slots"
