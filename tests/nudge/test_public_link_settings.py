"""NUDGE_PUBLIC_URL, NUDGE_TRACKING, NUDGE_UNSUBSCRIBE_URL and NUDGE_SIGNING_SECRETS_OLD reach
the email settings and the public routes as documented."""

from __future__ import annotations

import pytest

from nudge.engine_cli import build_email_settings
from nudge.settings import Settings


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for name in ("NUDGE_PUBLIC_URL", "NUDGE_TRACKING", "NUDGE_UNSUBSCRIBE_URL", "NUDGE_SMTP_HOST",
                 "NUDGE_SIGNING_SECRETS_OLD"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NUDGE_SIGNING_SECRET", "n" * 40)


def test_defaults_and_overrides(monkeypatch):
    email = build_email_settings(Settings())
    assert (email.public_url, email.tracking, email.unsubscribe_base_url) == (None, True, None)
    monkeypatch.setenv("NUDGE_PUBLIC_URL", "https://nudge.shop.example")
    monkeypatch.setenv("NUDGE_TRACKING", "false")
    monkeypatch.setenv("NUDGE_UNSUBSCRIBE_URL", "https://old.example/unsub")
    email = build_email_settings(Settings())
    assert email.public_url == "https://nudge.shop.example" and email.tracking is False
    assert email.unsubscribe_base_url == "https://old.example/unsub"
    assert email.unsubscribe_secret == "n" * 40


def test_link_secrets_current_first(monkeypatch):
    monkeypatch.setenv("NUDGE_SIGNING_SECRETS_OLD", " old-one , ,old-two")
    assert Settings().link_secrets() == ["n" * 40, "old-one", "old-two"]
