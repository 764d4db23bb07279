"""The profile's SMS and push fields: `phone` in E.164, `push_subscriptions` of the Push API's
shape, `consent_sms`/`consent_push` strict flags — refused at the edge with the field named."""

import base64
import os

import pytest
from pydantic import ValidationError

from engine.events import (
    CustomerProfile,
    phone_problem,
    profile_changes,
    push_subscriptions_problem,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


GOOD = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/abc",
    "keys": {"p256dh": b64(b"\x04" + os.urandom(64)), "auth": b64(os.urandom(16))},
}


def test_a_profile_takes_a_phone_and_subscriptions():
    p = CustomerProfile(
        customer_id="c1", phone="+491761234567", push_subscriptions=[GOOD], consent_sms="true"
    )
    assert (p.phone, p.push_subscriptions, p.consent_sms, p.consent_push) == (
        "+491761234567",
        [GOOD],
        True,
        False,
    )


@pytest.mark.parametrize(
    "phone",
    [
        "0176 1234567",
        "+49 176 1234567",
        "+0123456789",
        "4915112345678",
        4915112345678,
        "+1234567890123456",
    ],
)
def test_a_phone_that_is_not_e164_is_refused_naming_the_field(phone):
    with pytest.raises(ValidationError) as caught:
        CustomerProfile(customer_id="c1", phone=phone)
    [error] = caught.value.errors()
    assert error["loc"] == ("phone",) and "E.164" in error["msg"]
    assert phone_problem(str(phone))


@pytest.mark.parametrize(
    ("subs", "message"),
    [
        ({"endpoint": "https://x"}, "expected a list"),
        ([{"keys": GOOD["keys"]}], "[0] endpoint"),
        ([{**GOOD, "endpoint": "javascript:alert(1)"}], "[0] endpoint"),
        ([{**GOOD, "keys": {"p256dh": "!!", "auth": GOOD["keys"]["auth"]}}], "[0] keys.p256dh"),
        (
            [GOOD, {**GOOD, "keys": {"p256dh": GOOD["keys"]["p256dh"], "auth": b64(b"short")}}],
            "[1] keys.auth",
        ),
        ([GOOD] * 21, "at most 20"),
    ],
)
def test_a_subscription_list_of_the_wrong_shape_is_refused(subs, message):
    assert message in (push_subscriptions_problem(subs) or "")
    with pytest.raises(ValidationError) as caught:
        CustomerProfile(customer_id="c1", push_subscriptions=subs)
    assert caught.value.errors()[0]["loc"] == ("push_subscriptions",)


def test_subscription_changed_sets_the_sms_and_push_flags():
    assert profile_changes("c1", "subscription_changed", {"consent_sms": "false", "consent_push": True}) == {
        "consent_sms": False, "consent_push": True}  # fmt: skip
