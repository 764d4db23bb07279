"""SMS through Twilio's Messages API, against a loopback server that implements it as Twilio
documents it (tests/engine/channels/fake_twilio.py): the form POST and basic auth, GSM-7/UCS-2
segments, Twilio's error JSON, 429 with Retry-After, and at most once when an answer is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine.channels.sms as sms
from engine.channels.base import Delivery, DeliveryError
from engine.channels.email import TemplateError
from engine.channels.sms import (
    SmsChannel,
    SmsUnknownOutcome,
    TwilioSettings,
    sms_encoding,
)
from engine.channels.webhooks import BlockedTarget, WebhookSender
from engine.events import phone_problem
from tests.engine.channels.fake_twilio import FROM, SID, TOKEN, FakeTwilio, twilio_segments

PHONE = "+14155550100"


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "cart.sms.j2").write_text(
        "Hi {{ customer.name }}, your cart ({{ properties.cart_value | money('EUR') }}) is waiting.\n"
    )
    (folder / "emoji.sms.j2").write_text("{{ 'x' * 60 }} 🛒 {{ 'y' * 10 }}")
    (folder / "long.sms.j2").write_text("{{ 'a' * 1601 }}")
    (folder / "broken.sms.j2").write_text("{{ customer.__class__ }}")
    return folder


def settings(twilio: FakeTwilio, templates: Path, **changes: Any) -> TwilioSettings:
    values: dict[str, Any] = {"account_sid": SID, "auth_token": TOKEN, "sender": FROM,
                              "templates_dir": templates, "base_url": twilio.base_url,
                              "timeout": 2.0, **changes}  # fmt: skip
    return TwilioSettings(**values)


GUARD = WebhookSender("s" * 32, allow=("127.0.0.1",))


def delivery(template: str = "cart", phone: Any = PHONE, marks: list[str | None] | None = None,
             action_id: int = 1) -> Delivery:  # fmt: skip
    marks = [] if marks is None else marks
    return Delivery(
        action_id=action_id, idempotency_key=f"k{action_id}", customer_id="c1", trigger_id="t",
        event_id="e1", variant=None, params={"template": template},
        profile={"customer_id": "c1", "first_name": "Eve", "phone": phone},
        event={"properties": {"cart_value": "35"}}, scores={}, marketing=True,
        before_commit=marks.append,
    )  # fmt: skip


def test_a_message_is_a_form_post_with_basic_auth_and_its_result_names_sid_and_segments(
    twilio, templates
):
    marks: list[str | None] = []
    result = SmsChannel(settings(twilio, templates), GUARD).send(delivery(marks=marks))
    [form] = twilio.posts
    assert form == {"To": PHONE, "From": FROM, "Body": "Hi Eve, your cart (35.00 EUR) is waiting."}
    [message] = twilio.messages
    assert result.startswith(f"twilio {message['sid']} queued GSM-7 1 segment(s) 41 septets")
    assert "Twilio counts" not in result  # our count agrees with the server's
    [mark] = marks
    assert mark is not None and mark.startswith("twilio-posted at=")


def test_a_messaging_service_sid_is_sent_as_messaging_service_sid(twilio, templates):
    service = "MG" + "a" * 32
    SmsChannel(settings(twilio, templates, sender=service), GUARD).send(delivery())
    [form] = twilio.posts
    assert form["MessagingServiceSid"] == service and "From" not in form


def test_one_emoji_makes_the_message_ucs2_and_three_segments(twilio, templates):
    result = SmsChannel(settings(twilio, templates), GUARD).send(delivery("emoji"))
    assert " UCS-2 2 segment(s) 74 UTF-16 units" in result
    assert twilio.messages[0]["num_segments"] == "2"


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count two septets
        ("€" * 81, "GSM-7", 162, 2),
        ("a" * 152 + "€" + "a" * 10, "GSM-7", 164, 2),  # the escape pair is not split
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),
        ("ü" * 160, "GSM-7", 160, 1),  # ü is in the GSM basic table
        ("ж" * 70, "UCS-2", 70, 1),
        ("ж" * 71, "UCS-2", 71, 2),
        ("ж" * 134, "UCS-2", 134, 2),
        ("ж" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: a surrogate pair each
        ("ж" * 69 + "😀", "UCS-2", 71, 2),
        ("ж" * 66 + "😀" + "ж" * 66, "UCS-2", 134, 3),  # the pair is not split either
    ],
)
def test_encoding_and_segments(text, encoding, units, segments):
    assert sms_encoding(text) == sms.SmsEncoding(encoding, units, segments)
    assert twilio_segments(text) == segments


@pytest.mark.parametrize("phone", ["+14155550100", "+491761234567", "+4420794601234"])
def test_e164_numbers_are_accepted(phone):
    assert phone_problem(phone) is None


@pytest.mark.parametrize("phone", ["0176 1234567", "+0123456789", "+1415555010012345", "14155550100",
                                   "+1 415 555 0100", 4155550100, "+1415555"])  # fmt: skip
def test_anything_but_e164_is_refused_before_sending(twilio, templates, phone):
    if phone == "+1415555":
        phone = "+14155"  # too short
    with pytest.raises(TemplateError, match=r"E\.164"):
        SmsChannel(settings(twilio, templates), GUARD).send(delivery(phone=phone))
    assert twilio.posts == []


def test_no_phone_is_a_clear_failure(twilio, templates):
    with pytest.raises(TemplateError, match="no phone number"):
        SmsChannel(settings(twilio, templates), GUARD).send(delivery(phone=None))


def test_a_number_twilio_refuses_is_twilios_error_and_not_retried(twilio, templates):
    with pytest.raises(DeliveryError) as caught:
        SmsChannel(settings(twilio, templates), GUARD).send(delivery(phone="+15005550001"))
    assert not caught.value.retryable
    assert caught.value.reason == "twilio HTTP 400 21211: Invalid 'To' Phone Number: +15005550001"


def test_wrong_credentials_are_twilios_401(twilio, templates):
    with pytest.raises(DeliveryError, match="twilio HTTP 401 20003: Authenticate") as caught:
        SmsChannel(settings(twilio, templates, auth_token="wrong"), GUARD).send(delivery())
    assert not caught.value.retryable and twilio.messages == []


def test_429_is_retried_after_twilios_retry_after(twilio, templates):
    twilio.throttle = 7
    with pytest.raises(DeliveryError) as caught:
        SmsChannel(settings(twilio, templates), GUARD).send(delivery())
    assert caught.value.retryable and caught.value.retry_after == 7.0
    assert "20429" in caught.value.reason and twilio.messages == []


@pytest.mark.parametrize(("template", "message"), [("long", "at most 1600"), ("broken", "not allowed"),
                                                   ("missing", "not found")])  # fmt: skip
def test_a_body_that_cannot_be_an_sms_fails_before_sending(twilio, templates, template, message):
    with pytest.raises(TemplateError, match=message):
        SmsChannel(settings(twilio, templates), GUARD).send(delivery(template))
    assert twilio.posts == []


def test_a_private_base_url_is_refused_unless_allow_listed(twilio, templates):
    with pytest.raises(BlockedTarget, match="private address"):
        SmsChannel(settings(twilio, templates), WebhookSender("s" * 32)).send(delivery())
    assert twilio.posts == []


def test_a_lost_answer_is_looked_up_and_the_message_found_is_the_result(twilio, templates):
    twilio.drop_after_store = 1
    result = SmsChannel(settings(twilio, templates), GUARD).send(delivery())
    [message] = twilio.messages
    assert len(twilio.posts) == 1, "never sent twice"
    assert result.startswith(f"twilio {message['sid']} queued") and "found by lookup" in result
    [query] = twilio.gets
    assert query["To"] == [PHONE] and query["From"] == [FROM]


def test_a_lost_request_twilio_never_stored_is_retried_with_its_reference(twilio, templates):
    twilio.drop_before_store = 1
    with pytest.raises(DeliveryError) as caught:
        SmsChannel(settings(twilio, templates), GUARD).send(delivery())
    assert caught.value.retryable and caught.value.reason.startswith("twilio-posted at=")
    assert "checked again before a resend" in caught.value.reason


def test_when_twilio_cannot_be_asked_the_outcome_is_unknown_not_resent(twilio, templates):
    twilio.drop_after_store, twilio.list_down = 1, True
    with pytest.raises(SmsUnknownOutcome, match="could not be asked"):
        SmsChannel(settings(twilio, templates), GUARD).send(delivery())
    assert not isinstance(SmsUnknownOutcome("x"), DeliveryError)


def test_an_attempt_after_an_unknown_outcome_checks_first_and_does_not_resend(twilio, templates):
    marks: list[str | None] = []
    twilio.drop_after_store, twilio.list_down = 1, True
    with pytest.raises(SmsUnknownOutcome):
        SmsChannel(settings(twilio, templates), GUARD).send(delivery(marks=marks))
    twilio.list_down = False
    channel = SmsChannel(settings(twilio, templates), GUARD, prior=lambda _delivery: marks[-1])
    assert channel.settle_in_doubt == "pending"
    result = channel.send(delivery())
    assert "found after an unknown outcome, not resent" in result
    assert len(twilio.posts) == 1 and len(twilio.messages) == 1


def test_an_attempt_after_an_unknown_outcome_resends_when_twilio_has_none(twilio, templates):
    marks: list[str | None] = []
    twilio.drop_before_store = 1
    with pytest.raises(DeliveryError) as caught:
        SmsChannel(settings(twilio, templates), GUARD).send(delivery(marks=marks))
    channel = SmsChannel(
        settings(twilio, templates), GUARD, prior=lambda _delivery: caught.value.reason
    )
    result = channel.send(delivery())
    assert len(twilio.posts) == 2 and len(twilio.messages) == 1
    assert result.startswith(f"twilio {twilio.messages[0]['sid']}")


def test_the_lookup_ignores_other_bodies_and_pages_back_to_the_attempts_time(twilio, templates):
    channel = SmsChannel(settings(twilio, templates), GUARD)
    channel.send(delivery())  # the message in doubt, then 60 others to the same number
    for _ in range(60):
        channel.send(delivery("emoji"))
    body = sms._digest("Hi Eve, your cart (35.00 EUR) is waiting.")
    reference = f"twilio-posted at={int(time.time())} body={body}"
    twilio.gets.clear()
    again = SmsChannel(settings(twilio, templates), GUARD, prior=lambda _delivery: reference)
    assert "not resent" in again.send(delivery())
    assert len(twilio.gets) == 2, "two pages of 50, newest first"
    assert len(twilio.messages) == 61


def test_without_a_reader_of_earlier_attempts_crashed_sends_are_unconfirmed():
    channel = SmsChannel(TwilioSettings(SID, TOKEN, FROM, Path(".")), GUARD)
    assert channel.settle_in_doubt == "unconfirmed" and channel.consent_field == "consent_sms"


def test_an_sms_is_text_not_html_escaped(twilio, templates):
    (templates / "plain.sms.j2").write_text("{{ customer.name }} & {{ properties.cart_value }} <3")
    d = delivery("plain")
    d = Delivery(**{**d.__dict__, "profile": {**d.profile, "first_name": "<b>Eve</b>"}})
    SmsChannel(settings(twilio, templates), GUARD).send(d)
    assert twilio.posts[0]["Body"] == "<b>Eve</b> & 35 <3"
