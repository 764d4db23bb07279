"""`nudge triggers validate` and `nudge engine …` end to end on a temporary NUDGE_HOME."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nudge.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_validate_accepts_the_examples():
    result = invoke("triggers", "validate")
    assert result.exit_code == 0, result.output
    assert "10 trigger(s)" in result.output and "cart_recovery" in result.output


def test_validate_reports_every_problem_with_file_and_line(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "id: ok_one\nwhen: {event: signup}\nactions: [{add_to_segment: {segment: s}}]\n"
    )
    (tmp_path / "b.yaml").write_text(
        "id: broken\nwhen: {event: signup}\nif:\n  all:\n    - behavior: {event: x, within: 1 week}\n    - score: {model: churn, gtee: 1}\nactions: []\n"
    )
    (tmp_path / "c.yaml").write_text(
        "id: ok_one\nwhen: {event: signup}\nactions: [{add_to_segment: {segment: s}}]\n"
    )
    result = invoke("triggers", "validate", str(tmp_path))
    assert result.exit_code == 1
    out = result.output.replace("\n", " ")
    assert "b.yaml:7: actions: List should have at least 1 item" in out
    assert "b.yaml:5: if.all[0].behavior: expected a duration" in out
    assert "b.yaml:6: if.all[1].score: unknown operator 'gtee'" in out
    assert "trigger id 'ok_one' is also defined in" in out
    assert "Traceback" not in out


def test_validate_warns_on_an_unknown_event_type_and_fails_only_when_strict(nudge_home, tmp_path):
    (tmp_path / "t.yaml").write_text(
        "id: typo\nwhen: {event: cart_abandonedd}\nactions: [{add_to_segment: {segment: s}}]\n"
    )
    result = invoke("triggers", "validate", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = result.output.replace("\n", " ")
    where = f"warning: {tmp_path / 't.yaml'}:2: when.event"
    assert f"{where}: unknown event type 'cart_abandonedd'" in out
    assert "did you mean 'cart_abandoned'?" in out and "1 trigger(s)" in out
    strict = invoke("triggers", "validate", str(tmp_path), "--strict")
    assert strict.exit_code == 1 and "1 warning(s)" in strict.output


SCORED = """id: {id}
when: {{event: session_start}}
if: {{score: {{model: {model}, gte: 0.5}}}}
actions: [{{add_to_segment: {{segment: s}}}}]
"""


def models_listing(served: list[str]):
    """A stand-in of the scoring service's `GET /v1/models` (one model defined but not loaded)."""
    from fastapi import FastAPI, Header, HTTPException

    listing = FastAPI()

    @listing.get("/v1/models")
    def models(x_api_key: str | None = Header(default=None)) -> dict:
        if x_api_key != "k" * 32:
            raise HTTPException(401)
        entries = [{"name": m, "version": "3", "status": "serving"} for m in served]
        return {"models": [*entries, {"name": "ltv", "version": None, "status": "not_loaded"}]}

    return listing


def test_validate_checks_score_models_against_the_service_when_it_answers(tmp_path, monkeypatch):
    from tests.support import LocalServer

    (tmp_path / "a.yaml").write_text(SCORED.format(id="churny", model="churn"))
    (tmp_path / "b.yaml").write_text(SCORED.format(id="spender", model="ltv"))
    monkeypatch.setenv("NUDGE_API_KEY", "k" * 32)
    with LocalServer(models_listing(["churn", "engagement"])) as server:
        monkeypatch.setenv("NUDGE_SCORING_URL", server.url)
        result = invoke("triggers", "validate", str(tmp_path))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("✗")]
    assert lines == [
        f"✗ {tmp_path / 'b.yaml'}:3: if.score.model: unknown model 'ltv'; the models the "
        f"scoring service at {server.url} serves are churn, engagement"
    ]


def test_validate_says_in_one_line_when_the_service_is_unreachable(tmp_path, monkeypatch):
    from tests.support import free_port

    (tmp_path / "a.yaml").write_text(SCORED.format(id="churny", model="churn"))
    (tmp_path / "b.yaml").write_text(SCORED.format(id="typo", model="chrun"))
    monkeypatch.setenv("NUDGE_SCORING_URL", f"http://127.0.0.1:{free_port()}")
    result = invoke("triggers", "validate", str(tmp_path))
    assert result.exit_code == 1
    out = result.output
    assert out.count("unreachable") == 1 and "checked against the model definitions" in out
    assert "b.yaml:3: if.score.model: unknown model 'chrun'; the model definitions are" in out
    assert "Traceback" not in out


@pytest.fixture
def events_file(tmp_path) -> Path:
    lines = [
        {"event_id": "s1", "customer_id": "c1", "event_type": "signup", "timestamp": "2026-01-05T10:00:00Z",
         "properties": {"email": "c1@example.com", "consent_email": True, "timezone": "Europe/Berlin"}},
        {"event_id": "p1", "customer_id": "c1", "event_type": "purchase_completed", "timestamp": "2026-01-06T10:00:00Z",
         "properties": {"total": 80}},
        {"event_id": "bad", "customer_id": "c1", "event_type": "purchase_completed", "timestamp": "yesterday"},
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n")
    return path


def test_replay_records_decisions_and_is_idempotent(nudge_home, events_file):
    result = invoke("engine", "replay", str(events_file))
    assert result.exit_code == 0, result.output
    assert "accepted 2, duplicate 0, invalid 2" in result.output
    assert "welcome_series" in result.output and "post_purchase_cross_sell" in result.output
    again = invoke("engine", "replay", str(events_file))
    assert "accepted 0, duplicate 2, invalid 2" in again.output
    assert "processed 0 events" in again.output


def test_dead_letters_list_and_redrive(nudge_home, events_file):
    invoke("engine", "replay", str(events_file))
    listed = invoke("engine", "dead-letters")
    assert "timestamp:" in listed.output and "2 shown" in listed.output
    redriven = invoke("engine", "dead-letters", "--redrive")
    assert "re-drove 2: 0 accepted or already there, 2 still invalid" in redriven.output


def test_explain_dry_runs_one_event(nudge_home, events_file, tmp_path):
    invoke("engine", "replay", str(events_file))
    event = tmp_path / "purchase.json"
    event.write_text(
        json.dumps(
            {
                "event_id": "p2",
                "event_type": "purchase_completed",
                "timestamp": "2026-01-07T10:00:00Z",
                "properties": {"total": 45},
            }
        )
    )
    result = invoke("engine", "explain", "--customer", "c1", "--event", str(event), "--json")
    report = {r["trigger"]: r for r in json.loads(result.output)}
    # The signup's own consent now lets its welcome emails through, so the frequency cap (3 a
    # week) binds before the cross-sell's cooldown after p1.
    assert report["post_purchase_cross_sell"]["verdict"] == "suppressed"
    assert report["post_purchase_cross_sell"]["reason"].startswith("frequency_cap")
    assert report["vip_nurture"]["verdict"] == "skipped"  # no scoring service configured
    text = invoke("engine", "explain", "--customer", "c1", "--event", str(event))
    assert "post_purchase_cross_sell" in text.output and "frequency_cap" in text.output
    decisions = invoke("engine", "decisions")
    assert "p2" not in decisions.output, "explain stores nothing"


def test_replay_from_the_lake(nudge_home):
    assert invoke("simulate", "--customers", "200", "--days", "30", "--seed", "3").exit_code == 0
    result = invoke("engine", "replay", "--from-lake", "2025-01-01", "2025-02-01")
    assert result.exit_code == 0, result.output
    assert "welcome_series" in result.output and "dead letters 0" in result.output


def test_replay_needs_exactly_one_source(nudge_home):
    result = runner.invoke(app, ["engine", "replay"])
    assert result.exit_code == 2 and "give a FILE or --from-lake" in result.output


# -- inspection as JSON --------------------------------------------------------------------------

DECISION_KEYS = {"decision_id", "trigger_id", "trigger_version", "customer_id", "event_id",
                 "outcome", "reason", "decided_at", "variant", "scores"}  # fmt: skip


def listed(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_decisions_json_is_the_documented_object(nudge_home, events_file):
    from datetime import UTC, datetime

    invoke("engine", "replay", str(events_file))
    body = listed("engine", "decisions")
    assert list(body) == ["decisions"] and body["decisions"]
    for row in body["decisions"]:
        assert set(row) == DECISION_KEYS
        assert datetime.fromisoformat(row["decided_at"]).utcoffset() == UTC.utcoffset(None)
        assert isinstance(row["scores"], dict) and isinstance(row["decision_id"], int)
    assert {r["trigger_id"] for r in body["decisions"]} >= {"welcome_series"}


@pytest.fixture
def seeded(nudge_home):
    """A log of 12 decisions and actions (triggers t0/t1, customers c0-c2), 5 tasks, 4 dead letters."""
    from engine.store import EngineDB, batch, dead_letters, outbox

    db = EngineDB.open(f"sqlite:///{nudge_home / 'engine.db'}")
    decisions = [{"event_id": f"e{i}", "customer_id": f"c{i % 3}", "trigger_id": f"t{i % 2}",
                  "trigger_version": "v1", "outcome": "fired", "reason": None, "trace": None,
                  "scores": json.dumps({"churn": i / 100}), "variant": None, "decided_at": 1.7e9 + i}
                 for i in range(12)]  # fmt: skip
    actions = [{"idempotency_key": f"t{i % 2}:c{i % 3}:e{i}:0", "event_id": f"e{i}", "customer_id": f"c{i % 3}",
                "trigger_id": f"t{i % 2}", "action_index": 0, "kind": "send_email",
                "params": json.dumps({"template": "welcome"}), "channel": "email", "due_at": 1.7e9 + i,
                "cancel_if": None, "variant": None, "trigger_at": 1.7e9 + i} for i in range(12)]  # fmt: skip
    with db.begin() as conn:
        batch.commit_batch(conn, processed=[], dead=[], decision_rows=decisions, action_rows=actions,
                           states={}, profile_updates={}, now=1.7e9)  # fmt: skip
        for i in range(5):
            outbox.add_task(conn, {"idempotency_key": f"k{i}", "customer_id": f"c{i % 3}", "trigger_id": f"t{i % 2}",
                                   "title": f"call {i}", "details": json.dumps({"queue": "billing"})}, 1.7e9 + i)  # fmt: skip
        dead_letters.add_dead_letters(conn, [{"event_id": f"d{i}", "payload": "{not json", "reason": f"bad {i}",
                                              "source": "api"} for i in range(4)], 1.7e9)  # fmt: skip
    db.dispose()
    return nudge_home


def test_decisions_json_filters_and_last_in_the_log(seeded):
    filters = ("--trigger", "t1", "--customer", "c2", "--last", "2")
    rows = listed("engine", "decisions", *filters)["decisions"]
    assert [r["event_id"] for r in rows] == ["e5", "e11"]  # the latest two of t1/c2, oldest first
    assert rows[0]["scores"] == {"churn": 0.05}
    assert rows[0]["decided_at"] == "2023-11-14T22:13:25+00:00"
    assert len(listed("engine", "decisions", "--last", "100")["decisions"]) == 12


def test_actions_json_lists_the_latest_with_filters(seeded):
    body = listed("engine", "actions", "--last", "3")
    assert list(body) == ["actions"]
    assert [a["event_id"] for a in body["actions"]] == ["e9", "e10", "e11"]
    first = body["actions"][0]
    assert set(first) == {"action_id", "idempotency_key", "trigger_id", "customer_id", "event_id", "kind",
                          "channel", "params", "variant", "status", "due_at", "attempts", "finished_at",
                          "result"}  # fmt: skip
    assert first["params"] == {"template": "welcome"} and first["finished_at"] is None
    mine = listed("engine", "actions", "--customer", "c0", "--trigger", "t0")["actions"]
    assert [a["event_id"] for a in mine] == ["e0", "e6"]
    assert listed("engine", "actions", "--status", "sent")["actions"] == []
    counts = invoke("engine", "actions", "--trigger", "t0")
    assert counts.exit_code == 0 and "send_email" in counts.output and " 6" in counts.output


def test_tasks_and_dead_letters_json(seeded):
    tasks = listed("engine", "tasks")["tasks"]
    assert [t["title"] for t in tasks] == [f"call {i}" for i in range(5)]
    assert set(tasks[0]) == {"task_id", "trigger_id", "customer_id", "title", "details", "status",
                             "created_at"}  # fmt: skip
    assert tasks[0]["details"] == {"queue": "billing"} and tasks[0]["status"] == "open"

    def titles(*options: str) -> list[str]:
        return [t["title"] for t in listed("engine", "tasks", *options)["tasks"]]

    assert titles("--last", "2") == ["call 3", "call 4"]
    assert titles("--customer", "c1") == ["call 1", "call 4"]
    assert titles("--trigger", "t1", "--limit", "1") == ["call 1"]
    letters = listed("engine", "dead-letters", "--last", "2")["dead_letters"]
    assert [d["event_id"] for d in letters] == ["d2", "d3"]
    assert set(letters[0]) == {"dead_letter_id", "event_id", "source", "reason", "created_at",
                               "redriven_at", "payload"}  # fmt: skip
    assert letters[0]["payload"] == "{not json" and letters[0]["redriven_at"] is None
    refused = runner.invoke(app, ["engine", "dead-letters", "--redrive", "--json"])
    assert refused.exit_code == 2 and "--redrive" in refused.output


def test_json_of_an_empty_log_is_empty_lists(nudge_home):
    assert listed("engine", "decisions") == {"decisions": []}
    assert listed("engine", "actions") == {"actions": []}
    assert listed("engine", "tasks") == {"tasks": []}
    assert listed("engine", "dead-letters") == {"dead_letters": []}


@pytest.mark.slow
def test_engine_serve_reloads_its_triggers_on_sighup(nudge_home, tmp_path):
    """A real `nudge engine serve`: after `kill -HUP` the next decisions carry the edited
    trigger's version; an invalid edit and another HUP leave that version deciding."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime

    import httpx

    from nudge.local_server import free_port, wait_until_ready

    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP on this platform")
    folder = tmp_path / "triggers"
    folder.mkdir()
    trigger = "id: greet\nwhen: {event: signup}\nactions: [{add_to_segment: {segment: %s}}]\n"
    (folder / "greet.yaml").write_text(trigger % "first")
    port, output = free_port(), tmp_path / "serve.out"
    env = {**os.environ, "NUDGE_HOME": str(nudge_home), "NUDGE_API_KEY": "k-hup",
           "NUDGE_TRIGGERS_DIR": str(folder), "NUDGE_LAKE_SYNC_SECONDS": "0",
           "NUDGE_ENGINE_DB": f"sqlite:///{nudge_home / 'engine.db'}"}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "nudge.cli", "engine", "serve", "--port",
                                str(port), "--poll", "0.1"], env=env, stdout=output.open("w"))  # fmt: skip
    base, key = f"http://127.0.0.1:{port}", {"X-API-Key": "k-hup"}
    sent = iter(range(1000))

    def decided_version() -> str:
        customer = f"c{next(sent)}"
        event = {"event_id": f"e-{customer}", "customer_id": customer, "event_type": "signup",
                 "timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
        assert httpx.post(f"{base}/v1/events", json=event, headers=key).status_code == 202
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = httpx.get(f"{base}/v1/decisions", params={"customer_id": customer},
                             headers=key).json()["decisions"]  # fmt: skip
            if rows:
                return str(rows[-1]["trigger_version"])
            time.sleep(0.1)
        raise AssertionError(f"no decision for {customer}")

    try:
        wait_until_ready(f"{base}/healthz", process, 90, "engine serve")
        first = decided_version()
        (folder / "greet.yaml").write_text(trigger % "second")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        version = first
        while version == first and time.monotonic() < deadline:  # the reload runs in a thread
            version = decided_version()
        assert version != first, "decisions after SIGHUP carry the new version"
        (folder / "greet.yaml").write_text("id: greet\nwhen: {event: signup}\nactions: []\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload refused" not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        refused = " ".join(output.read_text().split())
        assert f"reload refused: {folder / 'greet.yaml'}:3: actions:" in refused, refused
        assert process.poll() is None, "an invalid set does not stop the server"
        assert decided_version() == version, "the running set keeps deciding"
    finally:
        process.terminate()
        process.wait(timeout=30)
