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
    assert "8 trigger(s)" in result.output and "cart_recovery" in result.output


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
