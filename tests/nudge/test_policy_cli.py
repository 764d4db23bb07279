"""NUDGE_POLICY_FILE on the command line: `triggers validate` checks it, the engine runs with it."""

import json
from pathlib import Path

from typer.testing import CliRunner

from engine.optimizer.assignment import in_global_holdout
from nudge.cli import app

runner = CliRunner()
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "policy.yaml"
BROKEN = 'caps:\n  email: {per_local_day: 0}\nquiet_hours: {start: "9pm"}\nglobal_holdout: 0.9\n'


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_validate_checks_the_policy_file_given_or_named_by_the_environment(tmp_path, monkeypatch):
    result = invoke("triggers", "validate", "--policy", str(DEPLOY))
    assert result.exit_code == 0, result.output
    assert f"the policy file {DEPLOY} is valid" in result.output.replace("\n", "")
    broken = tmp_path / "policy.yaml"
    broken.write_text(BROKEN)
    monkeypatch.setenv("NUDGE_POLICY_FILE", str(broken))
    result = invoke("triggers", "validate")
    assert result.exit_code == 1
    out = result.output.replace("\n", " ")
    assert (
        f"{broken}:2: caps.email.per_local_day: Input should be greater than or equal to 1" in out
    )
    assert f"{broken}:3: quiet_hours.start: expected a local time \"HH:MM\" (got '9pm')" in out
    assert f"{broken}:4: global_holdout: Input should be less than or equal to 0.5" in out
    assert "3 problem(s) in the triggers of" in out and "Traceback" not in out


def test_the_engine_refuses_to_start_on_a_broken_policy_file(nudge_home, tmp_path, monkeypatch):
    broken = tmp_path / "policy.yaml"
    broken.write_text(BROKEN)
    monkeypatch.setenv("NUDGE_POLICY_FILE", str(broken))
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = invoke("engine", "replay", str(events))
    assert result.exit_code == 1
    out = result.output.replace("\n", " ")
    assert f"{broken}:2: caps.email.per_local_day" in out and "Traceback" not in out


def test_the_engine_applies_the_global_holdout_of_the_policy_file(
    nudge_home, tmp_path, monkeypatch
):
    policy = tmp_path / "policy.yaml"
    policy.write_text("global_holdout: 0.5\n")
    monkeypatch.setenv("NUDGE_POLICY_FILE", str(policy))
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps({
        "event_id": f"s{i}", "customer_id": f"c{i}", "event_type": "signup",
        "timestamp": "2026-01-05T10:00:00Z",
        "properties": {"email": f"c{i}@example.com", "consent_email": True},
    }) for i in range(40)) + "\n")  # fmt: skip
    assert invoke("engine", "replay", str(events), "--no-dispatch").exit_code == 0
    listed = invoke("engine", "decisions", "--trigger", "welcome_series", "--last", "100", "--json")
    decisions = json.loads(listed.output)["decisions"]
    held = {d["customer_id"] for d in decisions if d["reason"] == "global holdout"}
    assert {d["outcome"] for d in decisions if d["customer_id"] in held} == {"held_out"}
    assert held == {f"c{i}" for i in range(40) if in_global_holdout(f"c{i}", 0.5)}
    assert 8 < len(held) < 32  # 40 customers, half held out: sd ≈ 3
