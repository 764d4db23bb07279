"""Public links in rendered email: token unsubscribe URL, rewritten links, the pixel, switches."""

from __future__ import annotations

import re
from pathlib import Path

from engine.channels import tokens
from engine.channels.email import EmailSettings, render_email
from engine.dsl.triggers import load_trigger_text

SHIPPED = Path(__file__).resolve().parents[3] / "engine" / "templates"
PUBLIC = "https://nudge.shop.example/"
SECRET = "k" * 40
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "Ada"}


def render(settings: EmailSettings, **kwargs):  # type: ignore[no-untyped-def]
    args = {"idempotency_key": "k1", "profile": PROFILE, "event": {"properties": {}},
            "scores": {}, "trigger_id": "cart_recovery", "marketing": True, "action_id": 7,
            "now": 1_700_000_000.0, **kwargs}  # fmt: skip
    return render_email(settings, "cart_reminder", **args)


def settings(**kwargs) -> EmailSettings:  # type: ignore[no-untyped-def]
    return EmailSettings(templates_dir=SHIPPED, public_url=PUBLIC, unsubscribe_secret=SECRET,
                         **kwargs)  # fmt: skip


def test_token_links_and_tracking() -> None:
    email = render(settings())
    unsubscribe = email.headers["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("https://nudge.shop.example/u/")  # no double slash
    payload = tokens.verify("u", unsubscribe.rsplit("/", 1)[1], [SECRET])
    assert payload == {"c": "c1", "a": 7, "t": "cart_recovery"}
    assert email.html is not None
    [click] = re.findall(r'href="(https://nudge\.shop\.example/c/[^"]+)"', email.html)
    clicked = tokens.verify("c", click.rsplit("/", 1)[1], [SECRET])
    assert clicked["u"] == "https://shop.example/cart" and (clicked["l"], clicked["n"]) == (0, 1)
    assert clicked["s"] == 1_700_000_000
    assert email.html.count("/o/") == 1 and email.html.index("/o/") < email.html.index("</body>")
    assert f'href="{unsubscribe}"' in email.html  # the unsubscribe link is not rewritten
    assert "https://shop.example/cart" in email.body and "/c/" not in email.body


def test_tracking_off_globally_per_trigger_for_previews_and_transactional() -> None:
    for email in (render(settings(tracking=False)), render(settings(), tracking=False),
                  render(settings(), action_id=None), render(settings(), marketing=False)):  # fmt: skip
        assert email.html is not None
        assert "/c/" not in email.html and "/o/" not in email.html
        assert "https://shop.example/cart" in email.html
    assert render(settings(tracking=False)).headers["List-Unsubscribe"].startswith(
        "<https://nudge.shop.example/u/")  # fmt: skip


def test_deprecated_unsubscribe_url_overrides() -> None:
    email = render(settings(unsubscribe_base_url="https://old.example/unsub"))
    assert email.headers["List-Unsubscribe"].startswith("<https://old.example/unsub?c=c1&t=")
    assert "/c/" in (email.html or "")  # tracking still goes through the public URL


def test_trigger_tracking_flag() -> None:
    text = """
- id: t1
  tracking: false
  when: {event: signup}
  actions:
    - send_email: {template: welcome}
"""
    [trigger] = load_trigger_text(text).triggers
    assert trigger.spec.tracking is False
    [default] = load_trigger_text(text.replace("  tracking: false\n", "")).triggers
    assert default.spec.tracking is True
    bad = load_trigger_text(text.replace("false", '"no"'))
    assert not bad.triggers and "tracking" in str(bad.issues)
