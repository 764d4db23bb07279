"""Mistakes on the command line get one line naming the problem and exit 2 — no traceback, and
nothing accepted before every option was checked. Servers refuse the development secret."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.store import schema
from engine.store.sql import count_rows
from nudge.cli import app

runner = CliRunner()
EVENT = {"event_id": "e1", "customer_id": "c1", "event_type": "signup",
         "timestamp": "2026-01-05T10:00:00Z"}  # fmt: skip


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def assert_user_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for word in words:
        assert word in text, text


def inbox_size(home: Path) -> int:
    from engine.store import EngineDB

    db = home / "engine.db"
    if not db.exists():
        return 0
    store = EngineDB.open(f"sqlite:///{db}")
    try:
        return store.read(count_rows, schema.inbox)
    finally:
        store.engine.dispose()


def test_replay_refuses_a_file_of_the_wrong_kind(nudge_home, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("a,b\n")
    assert_user_error(invoke("engine", "replay", str(events)), "events.csv", ".jsonl")
    assert_user_error(invoke("engine", "replay", str(tmp_path / "missing.jsonl")), "no such file")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('[{"event_id": "e1",', ["not valid JSON at line 1"]),
        ("[" * 100_000 + "]" * 100_000, ["nested too deep"]),
        (b"\xff\xfe[]", ["not UTF-8"]),
    ],
)
def test_replay_refuses_a_json_file_it_cannot_read(nudge_home, tmp_path, content, words):
    events = tmp_path / "events.json"
    if isinstance(content, bytes):
        events.write_bytes(content)
    else:
        events.write_text(content)
    assert_user_error(invoke("engine", "replay", str(events)), "events.json", *words)
    assert inbox_size(nudge_home) == 0


def test_replay_dead_letters_unreadable_lines_and_keeps_the_rest(nudge_home, tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [json.dumps(EVENT), "[" * 100_000, "not json", json.dumps({**EVENT, "event_id": "e2"})]
    events.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")
    result = invoke("engine", "replay", str(events), "--no-dispatch")
    assert result.exit_code == 0, result.output
    assert "accepted 2" in result.output and "invalid 3" in result.output


def test_replay_checks_every_option_before_accepting_anything(nudge_home, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(EVENT) + "\n")
    replay = ("engine", "replay", str(events))
    assert_user_error(invoke(*replay, "--clock", "yesterday"), "--clock")
    assert_user_error(invoke(*replay, "--clock", "1969-12-31"), "--clock", "1970")
    assert_user_error(invoke(*replay, "--tz", "Mars/Olympus"), "--tz", "Mars/Olympus")
    assert inbox_size(nudge_home) == 0
    lake = ("engine", "replay", "--from-lake")
    assert_user_error(invoke(*lake, "2026-13-01", "2026-02-01"), "--from-lake", "2026-13-01")
    assert_user_error(invoke(*lake, "2026-02-01", "2026-01-01"), "START must be before END")


def test_explain_refuses_deep_json_with_one_line(nudge_home, tmp_path):
    event = tmp_path / "event.json"
    event.write_text("[" * 100_000 + "]" * 100_000)
    assert_user_error(
        invoke("engine", "explain", "--customer", "c1", "--event", str(event)), "nested too deep"
    )


@pytest.mark.parametrize(
    "command", [("engine", "serve"), ("engine", "run", "--until-idle"), ("serve",)]
)
def test_servers_refuse_the_development_secret_outside_dev(nudge_home, monkeypatch, command):
    monkeypatch.delenv("NUDGE_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("NUDGE_ENV", raising=False)
    assert_user_error(invoke(*command), "NUDGE_SIGNING_SECRET", "development secret")
    monkeypatch.setenv("NUDGE_SIGNING_SECRET", "short-secret")
    assert_user_error(invoke(*command), "NUDGE_SIGNING_SECRET", "shorter than 32")


def test_dev_may_run_with_the_development_secret(nudge_home, monkeypatch):
    monkeypatch.delenv("NUDGE_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("NUDGE_ENV", "dev")
    result = invoke("engine", "run", "--until-idle")
    assert result.exit_code == 0, result.output


def test_a_long_random_secret_is_accepted(nudge_home, monkeypatch):
    monkeypatch.setenv("NUDGE_SIGNING_SECRET", "x" * 32)
    monkeypatch.delenv("NUDGE_ENV", raising=False)
    assert invoke("engine", "run", "--until-idle").exit_code == 0


@pytest.mark.parametrize(
    "text",
    [
        "segments: [\n  {a: 1\n",
        "[" * 600 + "]" * 600,
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n"
            for a, b in zip("abcdefg", "bcdefgh", strict=True)
        ),
        "- just\n- a list\n",
    ],
)
def test_simulate_refuses_a_bad_planted_file(nudge_home, tmp_path, text):
    planted = tmp_path / "planted.yaml"
    planted.write_text(text)
    result = invoke("simulate", "--customers", "10", "--days", "5", "--planted", str(planted))
    assert_user_error(result, "planted.yaml")


def test_replay_refuses_absurd_timestamps_against_its_clock(nudge_home, tmp_path):
    events = tmp_path / "events.jsonl"
    rows = [
        {**EVENT, "event_id": "far", "timestamp": "9999-01-01T00:00:00Z"},
        {**EVENT, "event_id": "old", "timestamp": "1969-12-31T23:59:59Z"},
        {**EVENT, "event_id": "ok", "timestamp": "2029-06-01T00:00:00Z"},
    ]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = invoke("engine", "replay", str(events), "--clock", "2029-06-01T12:00:00Z")
    assert result.exit_code == 0, result.output
    assert "accepted 1" in result.output and "invalid 2" in result.output
    letters = invoke("engine", "dead-letters").output
    assert "far" in letters and "old" in letters


def test_replay_that_mails_real_people_needs_a_real_secret(nudge_home, tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(EVENT) + "\n")
    monkeypatch.delenv("NUDGE_SIGNING_SECRET", raising=False)
    monkeypatch.delenv("NUDGE_ENV", raising=False)
    monkeypatch.setenv("NUDGE_SMTP_HOST", "127.0.0.1")
    assert_user_error(invoke("engine", "replay", str(events)), "NUDGE_SMTP_HOST")
    assert inbox_size(nudge_home) == 0
    monkeypatch.delenv("NUDGE_SMTP_HOST")
    assert invoke("engine", "replay", str(events)).exit_code == 0, "the file outbox is local"


def test_a_bug_is_not_disguised_as_a_user_error(nudge_home, monkeypatch):
    import pipelines.simulate

    def broken(**_: object) -> None:
        raise ValueError("a bug in the simulator, not the user's input")

    monkeypatch.setattr(pipelines.simulate, "run_simulation", broken)
    result = invoke("simulate", "--customers", "10", "--days", "5")
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error:" not in result.output


def test_every_app_turns_a_user_error_into_one_line(monkeypatch):
    import typer

    from engine.errors import UserError
    from nudge.errors import Commands

    sub = typer.Typer(cls=Commands)

    @sub.command()
    def mistake() -> None:
        raise UserError("--thing: expected a number (got 'x')")

    @sub.command()
    def bug() -> None:
        raise KeyError("oops")

    assert_user_error(runner.invoke(sub, ["mistake"]), "error:", "--thing: expected a number")
    assert isinstance(runner.invoke(sub, ["bug"]).exception, KeyError)
    top = typer.Typer(cls=Commands)
    top.add_typer(sub, name="sub")
    assert_user_error(runner.invoke(top, ["sub", "mistake"]), "--thing")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("engine", "run", "--worker", "2/2"), ["--worker", "0 <= I < N", "'2/2'"]),
        (("simulate", "--customers", "10", "--days", "5", "--start", "2025-13-01"), ["--start"]),
    ],
)
def test_option_mistakes_are_one_line(nudge_home, args, words):
    assert_user_error(invoke(*args), *words)
