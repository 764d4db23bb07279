"""Send rates from the environment (NUDGE_EMAIL_RATE, …, NUDGE_RATE_LIMIT_BACKEND): read like the
engine reads them, refused in one line naming the variable, wired into the dispatcher the CLI
builds (database or the real Redis), and the queues shown by `nudge engine actions`."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from engine.channels.ratelimit import RateError, SendRate, parse_rate
from engine.channels.redis_rates import RedisRates
from engine.store import EngineDB, outbox
from engine.store.send_rates import DatabaseRates
from nudge.cli import app
from nudge.settings import Settings
from tests.conftest import require_service
from tests.engine.store.test_send_rates import redis_available

runner = CliRunner()


@pytest.mark.parametrize("value", ["100/s", " 10 / s ", "600/min", "5000/h", "2.5/s", "1/second",
                                   "7200/hour", "30/MIN", "unlimited", "", None])  # fmt: skip
def test_rates_read_from_the_environment_are_those_of_the_engine(value):
    """The leaf cannot import engine.channels.ratelimit: its reading must agree with it."""
    read = Settings(email_rate=value).email_rate
    assert parse_rate(read) == parse_rate(value)


@pytest.mark.parametrize("value", ["100", "100/d", "fast", "-1/s", "0/s", "1e3/s", "/s"])
def test_what_the_engine_refuses_as_a_rate_the_settings_refuse_too(value):
    with pytest.raises(RateError):
        parse_rate(value)
    with pytest.raises(ValidationError, match="expected sends per time"):
        Settings(sms_rate=value)


def test_a_bad_rate_stops_the_cli_in_one_line_naming_the_variable(nudge_home, monkeypatch):
    monkeypatch.setenv("NUDGE_EMAIL_RATE", "lots")
    result = runner.invoke(app, ["engine", "actions"])
    assert result.exit_code == 2
    assert "NUDGE_EMAIL_RATE" in result.output and "100/s" in result.output
    assert "Traceback" not in result.output


def test_a_bad_backend_is_refused_naming_the_variable(nudge_home, monkeypatch):
    monkeypatch.setenv("NUDGE_RATE_LIMIT_BACKEND", "memcached")
    result = runner.invoke(app, ["engine", "actions"])
    assert result.exit_code == 2 and "NUDGE_RATE_LIMIT_BACKEND" in result.output


def built(nudge_home) -> SendRate:
    from nudge.engine_cli import build_send_rate

    store = EngineDB.open(f"sqlite:///{nudge_home / 'engine.db'}")
    try:
        return build_send_rate(Settings(), store)
    finally:
        store.dispose()


def test_the_dispatcher_gets_the_rates_on_the_database_by_default(nudge_home, monkeypatch):
    assert built(nudge_home).rates == {}, "nothing set: unlimited"
    monkeypatch.setenv("NUDGE_EMAIL_RATE", "100/s")
    monkeypatch.setenv("NUDGE_WEBHOOK_RATE", "600/min")
    limits = built(nudge_home)
    assert {c: str(r) for c, r in limits.rates.items()} == {"email": "100/s", "webhook": "600/min"}
    assert isinstance(limits.state, DatabaseRates)


@pytest.mark.redis
def test_the_redis_backend_uses_nudge_redis_url(nudge_home, monkeypatch):
    require_service("Redis at 127.0.0.1:6379", *redis_available())
    monkeypatch.setenv("NUDGE_EMAIL_RATE", "100/s")
    monkeypatch.setenv("NUDGE_RATE_LIMIT_BACKEND", "redis")
    monkeypatch.setenv("NUDGE_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert isinstance(built(nudge_home).state, RedisRates)


def test_an_unreachable_redis_stops_the_dispatcher_at_start(nudge_home, monkeypatch):
    import typer

    monkeypatch.setenv("NUDGE_EMAIL_RATE", "100/s")
    monkeypatch.setenv("NUDGE_RATE_LIMIT_BACKEND", "redis")
    monkeypatch.setenv("NUDGE_REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(typer.Exit) as stopped:
        built(nudge_home)
    assert stopped.value.exit_code == 2


def test_engine_actions_shows_each_channels_queue(nudge_home):
    now = time.time()
    rows = [{"idempotency_key": f"t:c{i}:e{i}:0", "event_id": f"e{i}", "customer_id": f"c{i}",
             "trigger_id": "t", "action_index": 0, "kind": kind, "params": json.dumps({"a": 1}),
             "channel": channel, "due_at": now - 600 + i, "cancel_if": None, "variant": None,
             "trigger_at": now - 900}
            for i, (kind, channel) in enumerate([("send_email", "email")] * 4 + [("webhook", "webhook")])]  # fmt: skip
    store = EngineDB.open(f"sqlite:///{nudge_home / 'engine.db'}")
    with store.begin() as conn:
        outbox.plan_actions(conn, rows)
        [first, second, *_] = outbox.claim_due(conn, now, 2, "w")
        outbox.defer_action(conn, first.id, now + 30, f"{outbox.THROTTLED}email rate 1/s")
        outbox.defer_action(conn, second.id, now + 31, f"{outbox.THROTTLED}email rate 1/s")
    store.dispose()
    result = runner.invoke(app, ["engine", "actions"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "queue" in line}
    assert set(lines) == {"email", "webhook"}
    email = lines["email"]
    assert "4 pending, 2 due now" in email and "2 throttled" in email
    assert "(oldest due 9m58s ago)" in email or "(oldest due 9m57s ago)" in email
    assert "next attempt in 2" in email or "next attempt in 3" in email, email
    assert "1 pending, 1 due now" in lines["webhook"] and "0 throttled" in lines["webhook"]
