"""Reloading a running engine: `LiveConfig` behind ``POST /v1/admin/reload`` on a real server
(uvicorn on loopback) with the engine loop running in its thread, as ``engine serve`` runs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.decisions.suppression import SuppressionPolicy
from engine.errors import UserError
from engine.lake import EventLake
from engine.runtime.api import create_app
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.event_vocabulary import event_type_warnings
from engine.runtime.live_config import ConfigRefused, LiveConfig, load_engine_config
from engine.runtime.loop import EngineLoop
from engine.runtime.processor import Processor
from engine.runtime.supervisor import start_supervised
from engine.store import EngineDB
from engine.store.execution_log import DecisionRow, list_decisions
from tests.support import LocalServer

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
KEY = {"X-API-Key": "admin-key"}
GREET = (
    "id: greet\nwhen: {{event: signup}}\nactions: [{{add_to_segment: {{segment: {segment}}}}}]\n"
)


def wait_decision(store: EngineDB, customer: str, timeout: float = 15.0) -> DecisionRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.read(list_decisions, customer_id=customer)
        if rows:
            return rows[-1]
        time.sleep(0.05)
    raise AssertionError(f"no decision for {customer} within {timeout} s")


@dataclass
class Engine:
    store: EngineDB
    url: str
    triggers: Path
    live: LiveConfig
    processor: Processor
    policies: list[SuppressionPolicy | Exception]
    reported: list[str]

    def signup(self, customer: str) -> DecisionRow:
        event = {"event_id": f"e-{customer}", "customer_id": customer, "event_type": "signup",
                 "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
        response = httpx.post(f"{self.url}/v1/events", json=event, headers=KEY, timeout=10)
        assert response.status_code == 202, response.text
        return wait_decision(self.store, customer)

    def reload(self, headers: dict[str, str] = KEY) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/admin/reload", headers=headers, timeout=30)


@pytest.fixture
def engine(engine_store: EngineDB, tmp_path: Path) -> Iterator[Engine]:
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "greet.yaml").write_text(GREET.format(segment="greeted"))
    policies: list[SuppressionPolicy | Exception] = [SuppressionPolicy()]

    def load_policy() -> SuppressionPolicy:
        latest = policies[-1]
        if isinstance(latest, Exception):
            raise latest
        return latest

    lake = EventLake(tmp_path / "lake")

    def load():  # what `nudge engine serve` loads (nudge.engine_cli.live_config)
        return load_engine_config(
            triggers, TEMPLATES, load_policy=load_policy,
            warnings=lambda found: event_type_warnings(found, engine_store, lake),
        )  # fmt: skip

    reported: list[str] = []
    live = LiveConfig(load, report=reported.append)
    processor = Processor(engine_store, live.current.index)
    email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=tmp_path / "outbox")
    dispatcher = Dispatcher(
        engine_store, live.current.index, email=email, webhooks=WebhookSender("s")
    )
    live.bind(processor, dispatcher)
    loop = EngineLoop(processor, dispatcher, poll=0.05, guard=live.guard)
    stop = threading.Event()
    worker = start_supervised(loop, stop)
    app = create_app(engine_store, "admin-key", reload=live.reload)
    try:
        with LocalServer(app) as server:
            yield Engine(engine_store, server.url, triggers, live, processor, policies, reported)
    finally:
        stop.set()
        worker.join(timeout=10)


def test_a_decision_after_a_reload_carries_the_new_version(engine: Engine) -> None:
    before = engine.signup("c1")
    old = engine.live.current.versions()["greet"]
    assert (before.trigger_id, before.trigger_version, before.outcome) == ("greet", old, "fired")

    (engine.triggers / "greet.yaml").write_text(GREET.format(segment="welcomed"))
    response = engine.reload()
    assert response.status_code == 200, response.text
    body = response.json()
    new = body["triggers"]["greet"]
    assert new != old and body["templates_dir"] == str(TEMPLATES) and body["warnings"] == []
    assert set(body) == {"triggers", "warnings", "templates_dir", "reloaded_at"}
    after = engine.signup("c2")
    assert (after.trigger_version, after.outcome) == (new, "fired")


def test_an_invalid_set_is_refused_with_file_and_line_and_the_old_one_keeps_deciding(
    engine: Engine,
) -> None:
    running = engine.live.current.versions()["greet"]
    path = engine.triggers / "greet.yaml"
    path.write_text(
        "id: greet\nwhen: {event: signup}\nif: {behavior: {event: x, within: soon}}\n"
        "actions: [{send_email: {template: no_such_template}}]\n"
    )
    response = engine.reload()
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(line.startswith(f"{path}:3: if.behavior") for line in detail), detail
    assert engine.reported and engine.reported[0].startswith("reload refused: ")
    decided = engine.signup("c3")
    assert (decided.trigger_version, decided.outcome) == (running, "fired")


def test_a_policy_is_swapped_in_and_an_invalid_one_refuses_the_reload(engine: Engine) -> None:
    strict = SuppressionPolicy(engagement_floor=0.5)
    engine.policies.append(strict)
    assert engine.reload().status_code == 200
    assert engine.processor.policy is strict
    engine.policies.append(UserError("policy.yaml:4: caps.email.per_day: expected a number"))
    refused = engine.reload()
    assert refused.status_code == 422
    assert refused.json() == {"detail": ["policy.yaml:4: caps.email.per_day: expected a number"]}
    assert engine.processor.policy is strict, "the running policy stays"


def test_reload_takes_the_api_key_like_every_write(engine: Engine) -> None:
    assert engine.reload(headers={}).status_code == 401
    assert engine.reload(headers={"X-API-Key": "wrong"}).status_code == 401


def test_warnings_name_unknown_event_types_on_reload(engine: Engine) -> None:
    (engine.triggers / "typo.yaml").write_text(
        "id: typo\nwhen: {event: signupp}\nactions: [{add_to_segment: {segment: s}}]\n"
    )
    response = engine.reload()
    assert response.status_code == 200, response.text
    [warning] = response.json()["warnings"]
    assert warning.startswith(f"{engine.triggers / 'typo.yaml'}:2: when.event: unknown event")
    assert "did you mean 'signup'?" in warning
    assert engine.reported == [f"warning: {warning}"]


def test_the_swap_waits_for_the_batch_in_progress(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "greet.yaml").write_text(GREET.format(segment="a"))
    live = LiveConfig(lambda: load_engine_config(folder, TEMPLATES))

    class Target:
        index = live.current.index

    target = Target()
    live.bind(target)
    first = live.current.index
    (folder / "greet.yaml").write_text(GREET.format(segment="b"))
    with live.guard:  # a batch is running
        reloading = threading.Thread(target=live.reload)
        reloading.start()
        reloading.join(timeout=1.0)
        assert reloading.is_alive() and target.index is first, "never swapped mid-batch"
    reloading.join(timeout=10)
    assert target.index is live.current.index and target.index is not first


def test_an_invalid_set_at_start_raises_with_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigRefused) as refused:
        LiveConfig(lambda: load_engine_config(tmp_path / "missing", TEMPLATES))
    assert refused.value.issues == [f"{tmp_path / 'missing'}: no such folder of triggers"]


def test_without_a_reloadable_configuration_the_route_answers_503(engine_store: EngineDB) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_app(engine_store, "admin-key"))
    response = client.post("/v1/admin/reload", headers=KEY)
    assert response.status_code == 503
    assert response.json() == {"detail": "this server has no reloadable configuration"}


def test_warnings_are_reported_at_start(engine_store: EngineDB, tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "typo.yaml").write_text(
        "id: typo\nwhen: {event: cart_abandonedd}\nactions: [{add_to_segment: {segment: s}}]\n"
    )
    lake = EventLake(tmp_path / "lake")
    reported: list[str] = []
    LiveConfig(
        lambda: load_engine_config(
            folder, TEMPLATES, warnings=lambda found: event_type_warnings(found, engine_store, lake)
        ),
        report=reported.append,
    )
    [line] = reported
    assert line.startswith(f"warning: {folder / 'typo.yaml'}:2: when.event: unknown event type")
    assert line.endswith("did you mean 'cart_abandoned'?")
