"""`nudge templates list|preview|send-test` through the CLI: the real profile from the engine
database, scores from a scoring service on loopback (or a note when it is down), an event file
validated against the contract, a test send through a real SMTP server or the file outbox."""

from __future__ import annotations

import json
import shutil
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from nudge.cli import app
from nudge.settings import Settings
from tests.support import LocalServer, SmtpSink, free_port

runner = CliRunner()
SHIPPED = Path(__file__).resolve().parents[2] / "engine" / "templates"


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def home(nudge_home, monkeypatch):
    """NUDGE_HOME with one customer, c1, in the engine database (SQLite)."""
    nudge_home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("NUDGE_ENV", "dev")
    monkeypatch.delenv("NUDGE_SMTP_HOST", raising=False)
    monkeypatch.delenv("NUDGE_SCORING_URL", raising=False)
    store = EngineDB.open(Settings().engine_url)
    profile = {"customer_id": "c1", "email": "ada@example.com", "first_name": "<b>Ada</b>",
               "consent_email": True}  # fmt: skip
    store.write(upsert_profiles, {"c1": profile}, 0.0)
    store.dispose()
    return nudge_home


@pytest.fixture
def templates(tmp_path, monkeypatch):
    """A copy of the shipped templates whose cart reminder shows the churn score."""
    folder = tmp_path / "templates"
    shutil.copytree(SHIPPED, folder)
    text = (folder / "cart_reminder.j2").read_text()
    (folder / "cart_reminder.j2").write_text(text + "\nchurn={{ scores.churn.value }}\n")
    monkeypatch.setenv("NUDGE_TEMPLATES_DIR", str(folder))
    return folder


def test_list_shows_every_template_its_parts_and_subject(home):
    result = invoke("templates", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["template", "text", "html", "sms", "push", "subject"]
    row = next(line for line in lines if line.startswith("cart_reminder "))
    assert row.split()[1:3] == ["yes", "yes"] and "{{ customer.name }}, your cart is waiting" in row
    names = [line.split()[0] for line in lines[1:]]
    assert "welcome" in names and not any(n.startswith(("layouts", "partials")) for n in names)


def test_preview_writes_the_eml_and_html_with_the_real_context(
    home, templates, tmp_path, monkeypatch
):
    asked = []
    scoring = FastAPI()

    @scoring.post("/v1/scores")
    def scores(body: dict) -> dict:
        asked.append(body)
        return {"results": [{"customer_id": "c1", "known": True,
                             "scores": {"churn": {"value": 0.81, "model_version": "7"}}}]}  # fmt: skip

    event = tmp_path / "event.json"
    event.write_text(json.dumps({"event_type": "cart_abandoned",
                                 "properties": {"cart_value": "42.5", "items": 3}}))  # fmt: skip
    out = tmp_path / "preview"
    with LocalServer(scoring) as server:
        monkeypatch.setenv("NUDGE_SCORING_URL", server.url)
        result = invoke("templates", "preview", "cart_reminder", "--customer", "c1",
                        "--event", str(event), "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert asked == [{"customer_ids": ["c1"], "models": ["churn"]}]
    raw = (out / "cart_reminder.eml").read_bytes()
    message = message_from_bytes(raw, policy=policy.default)
    assert (
        message["To"] == "ada@example.com"
        and message["Subject"] == "<b>Ada</b>, your cart is waiting"
    )
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
    assert "3 item(s) worth 42.50" in text and "churn=0.81" in text
    html = (out / "cart_reminder.html").read_text()
    assert "Hi &lt;b&gt;Ada&lt;/b&gt;," in html and "42.50" in html
    assert "List-Unsubscribe: <https://" in raw.decode()
    assert "wrote" in result.output and "cart_reminder.eml" in result.output


def test_preview_says_when_the_scoring_service_is_down(home, templates, tmp_path, monkeypatch):
    monkeypatch.setenv("NUDGE_SCORING_URL", f"http://127.0.0.1:{free_port()}")
    result = invoke(
        "templates", "preview", "cart_reminder", "--customer", "c1", "--out", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert "scoring service at http://127.0.0.1:" in result.output
    assert "rendered with empty scores" in result.output
    message = message_from_bytes(
        (tmp_path / "cart_reminder.eml").read_bytes(), policy=policy.default
    )
    text = next(p for p in message.walk() if p.get_content_type() == "text/plain").get_content()
    assert "churn=\n" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"event_type": "cart abandoned!"}', "event_type"),
        ('{"event_type": "x", "properties": []}', "properties"),
        ('{"event_type": "x", "surprise": 1}', "surprise: is not a field of this contract"),
        ("[1, 2]", "must hold one JSON object"),
        ("{not json", "is not JSON"),
    ],
)
def test_a_bad_event_file_is_one_line_naming_the_field(home, tmp_path, content, message):
    event = tmp_path / "event.json"
    event.write_text(content)
    result = invoke("templates", "preview", "welcome", "--customer", "c1", "--event", str(event),
                    "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output and "--event" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preview", "nope", "--customer", "c1"], "template 'nope' not found"),
        (["preview", "welcome", "--customer", "nobody"], "--customer: no customer 'nobody'"),
        (
            ["preview", "../etc", "--customer", "c1"],
            "template name: expected a plain template name",
        ),
        (["send-test", "nope", "--to", "a@b.example"], "template 'nope' not found"),
        (["send-test", "welcome", "--to", "not-an-address"], "--to: 'not-an-address' is not"),
        (["send-test", "welcome", "--to", "a@b.example", "--customer", "nobody"], "no customer"),
    ],
)
def test_unknown_template_or_customer_is_one_line_exit_2(home, tmp_path, args, message):
    result = invoke("templates", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_send_test_goes_through_smtp(home, monkeypatch):
    with SmtpSink() as smtp:
        monkeypatch.setenv("NUDGE_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("NUDGE_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("NUDGE_SMTP_SECURITY", "none")
        result = invoke("templates", "send-test", "winback_offer", "--to", "qa@shop.example",
                        "--customer", "c1")  # fmt: skip
        assert result.exit_code == 0, result.output
        [message] = smtp.messages
    assert message["To"] == "qa@shop.example" and "We miss you, <b>Ada</b>" in message["Subject"]
    assert message.get_content_type() == "multipart/alternative"
    assert f"the SMTP relay 127.0.0.1:{smtp.port}" in result.output
    assert message["Message-ID"] in result.output


def test_send_test_without_smtp_writes_the_outbox(home):
    result = invoke("templates", "send-test", "welcome", "--to", "qa@shop.example")
    assert result.exit_code == 0, result.output
    [path] = (home / "outbox").glob("*.eml")
    assert "To: qa@shop.example" in path.read_text() and "Welcome, Test!" in path.read_text()
    assert "the file outbox" in result.output and str(home / "outbox") in result.output.replace(
        "\n", ""
    )


def test_send_test_to_a_relay_that_is_down_is_one_line(home, monkeypatch):
    monkeypatch.setenv("NUDGE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NUDGE_SMTP_PORT", str(free_port()))
    monkeypatch.setenv("NUDGE_SMTP_SECURITY", "none")
    result = invoke("templates", "send-test", "welcome", "--to", "qa@shop.example")
    assert result.exit_code == 2
    assert "not sent through the SMTP relay 127.0.0.1:" in result.output
    assert "Traceback" not in result.output


def test_help_texts(home):
    for args in (["templates", "--help"], ["templates", "preview", "--help"],
                 ["templates", "send-test", "--help"]):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == 0
    assert "layouts/base.html.j2" in invoke("templates", "--help").output
    assert "--event" in invoke("templates", "preview", "--help").output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"NUDGE_DKIM_DOMAIN": "shop.example"},
            "missing: NUDGE_DKIM_SELECTOR, NUDGE_DKIM_KEY_FILE",
        ),
        (
            {
                "NUDGE_DKIM_DOMAIN": "shop.example",
                "NUDGE_DKIM_SELECTOR": "s1",
                "NUDGE_DKIM_KEY_FILE": "/nonexistent/k.pem",
            },
            "NUDGE_DKIM_KEY_FILE: cannot read",
        ),
        (
            {"NUDGE_EMAIL_SENDER_TRANSACTIONAL": "not an address"},
            "NUDGE_EMAIL_SENDER_TRANSACTIONAL",
        ),
        ({"NUDGE_MESSAGE_ID_DOMAIN": "bad domain"}, "NUDGE_MESSAGE_ID_DOMAIN: expected a domain"),
    ],
)
def test_bad_email_settings_are_one_line_at_start(home, monkeypatch, tmp_path, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = invoke("templates", "preview", "welcome", "--customer", "c1", "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.eml"))


def test_preview_as_transactional_uses_the_transactional_sender(home, monkeypatch, tmp_path):
    monkeypatch.setenv("NUDGE_EMAIL_SENDER_TRANSACTIONAL", "Shop <orders@shop.example>")
    result = invoke("templates", "preview", "payment_failed", "--customer", "c1",
                    "--transactional", "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    raw = (tmp_path / "payment_failed.eml").read_text()
    assert "From: Shop <orders@shop.example>" in raw and "List-Unsubscribe" not in raw
