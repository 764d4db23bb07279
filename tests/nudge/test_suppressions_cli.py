"""`nudge suppressions list|add|remove|import|export|status|resume-marketing` through the CLI, on
SQLite and the real PostgreSQL: CSV in and out, errors naming the line and field, erased entries
kept as hashes, the guard's pause shown and resumed."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from engine.runtime.deliverability import PAUSE_FLAG, marketing_pause
from engine.runtime.inbox import accept_events
from engine.store import EngineDB
from engine.store.erasure import suppress
from engine.store.suppressions import list_suppressions, set_flag
from nudge.cli import app
from tests.nudge.test_data_cli import engine_url  # noqa: F401 (the fixture)

runner = CliRunner()


def nudge(*args: str):
    return runner.invoke(app, list(args))


def test_add_list_remove_and_clear_errors(engine_url):  # noqa: F811
    added = nudge("suppressions", "add", "Ada@Example.com", "--detail", "asked by phone")
    assert added.exit_code == 0, added.output
    assert "ada@example.com: suppressed (manual)" in added.output
    assert "already suppressed" in nudge("suppressions", "add", "ada@example.com").output
    listed = nudge("suppressions", "list", "--json")
    [row] = [json.loads(line) for line in listed.output.splitlines()]
    assert (row["address"], row["reason"], row["active"]) == ("ada@example.com", "manual", True)
    bad = nudge("suppressions", "add", "not-an-address")
    assert bad.exit_code == 2 and "address: expected an email address" in bad.output
    assert "Traceback" not in bad.output
    assert nudge("suppressions", "list", "--reason", "nope").exit_code == 2
    assert "removed (was manual)" in nudge("suppressions", "remove", "ada@example.com").output
    missing = nudge("suppressions", "remove", "ada@example.com")
    assert missing.exit_code == 2 and "not on the suppression list" in missing.output
    assert "empty" in nudge("suppressions", "list").output


def test_import_checks_the_whole_file_first_and_export_lists_addresses(engine_url, tmp_path):  # noqa: F811
    bad = tmp_path / "bad.csv"
    bad.write_text("email,reason\nann@example.com,manual\nbob@example.com,whatever\n")
    refused = nudge("suppressions", "import", str(bad))
    assert refused.exit_code == 2 and "bad.csv:3: reason: expected one of" in refused.output
    broken = tmp_path / "broken.csv"
    broken.write_text("email\nann@example.com\nnot an address\n")
    assert (
        "broken.csv:3: email: expected an email address"
        in nudge("suppressions", "import", str(broken)).output
    )
    noheader = tmp_path / "noheader.csv"
    noheader.write_text("who\nann@example.com\n")
    assert "column address (or email)" in nudge("suppressions", "import", str(noheader)).output
    store = EngineDB.open(engine_url)
    try:
        assert store.read(list_suppressions) == [], "nothing from a refused file"
        store.write(suppress, {"f" * 64: "email"}, "erased", 1.0)
    finally:
        store.dispose()

    good = tmp_path / "list.csv"
    good.write_text("address,reason,detail\nann@example.com,bounced,old ESP export\n"
                    "BOB@example.com,,\nann@example.com,manual,\n")  # fmt: skip
    imported = nudge("suppressions", "import", str(good))
    assert imported.exit_code == 0, imported.output
    assert "2 added, 1 already suppressed" in imported.output
    out = tmp_path / "out.csv"
    exported = nudge("suppressions", "export", str(out))
    assert exported.exit_code == 0 and "1 erased customers' hashes not exported" in exported.output
    rows = list(csv.DictReader(out.open()))
    assert {(r["address"], r["reason"]) for r in rows} == {
        ("ann@example.com", "bounced"), ("bob@example.com", "manual")}  # fmt: skip
    assert next(r for r in rows if r["address"] == "ann@example.com")["detail"] == "old ESP export"
    # The export reads back in: the same entries, nothing new.
    assert "0 added, 2 already suppressed" in nudge("suppressions", "import", str(out)).output
    erased = nudge("suppressions", "remove", "ann@example.com")
    assert erased.exit_code == 0


def test_status_shows_the_pause_and_resume_marketing_ends_it(engine_url):  # noqa: F811
    assert "marketing sends: running" in nudge("suppressions", "status").output
    store = EngineDB.open(engine_url)
    try:
        now = datetime.now(UTC)
        feedback = [{"event_id": f"f{n}", "customer_id": "c1", "event_type": kind,
                     "timestamp": now.isoformat(), "properties": {"trigger": trigger}}
                    for n, (kind, trigger) in enumerate([
                        ("email_delivered", "winback"), ("email_delivered", "winback"),
                        ("email_bounced", "winback"), ("email_delivered", "cart"),
                        ("email_complained", "cart")])]  # fmt: skip
        accept_events(store, feedback, source="t")
        daily = nudge("suppressions", "status").output
        assert "delivered 3, bounced 1 (33.33%), complained 1 (33.33%)" in daily, daily
        per_trigger = nudge("suppressions", "status", "--by-trigger").output
        assert "winback: delivered 2, bounced 1 (50.00%)" in per_trigger, per_trigger
        assert "cart: delivered 1, bounced 0 (0.00%), complained 1 (100.00%)" in per_trigger
        store.write(set_flag, PAUSE_FLAG, {"day": "2026-12-01", "delivered": 1000,
                                           "complained": 4, "rate": 0.004}, 1.0)  # fmt: skip
        shown = nudge("suppressions", "status")
        assert "marketing paused" in shown.output and "0.40%" in shown.output
        assert "resume-marketing" in shown.output
        status = json.loads(nudge("status", "--json").stdout)["engine"]
        assert status["marketing_paused"]["day"] == "2026-12-01"
        assert "paused" in nudge("status").output
        assert "resumed" in nudge("suppressions", "resume-marketing").output
        assert store.read(marketing_pause) is None
        assert "were not paused" in nudge("suppressions", "resume-marketing").output
    finally:
        store.dispose()
