"""Twilio's inbound SMS webhook on a real server (uvicorn on loopback), signed by Twilio's own
helper library (twilio.request_validator.RequestValidator): STOP and friends withdraw SMS consent
of the customer with that phone through a logged subscription_changed event, START restores it,
a wrong or missing signature is 403, and behind a proxy the public URL is what is signed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from twilio.request_validator import RequestValidator

from engine.dsl.triggers import TriggerIndex
from engine.runtime.api import create_app
from engine.runtime.processor import Processor
from engine.runtime.provider_routes import provider_router, twilio_signature
from engine.store.customers import customers_with_phone, load_profiles, upsert_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.inbox import customer_events
from tests.support import LocalServer

TOKEN = "twilio-auth-token-for-tests"
PHONE = "+14155550100"
PATH = "/v1/providers/twilio/inbound"


@pytest.fixture
def served(engine_store, monkeypatch) -> Iterator[tuple[object, str]]:
    monkeypatch.setenv("NUDGE_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("NUDGE_PUBLIC_URL", raising=False)
    engine_store.write(upsert_profiles, {
        "c1": {"customer_id": "c1", "phone": PHONE, "consent_sms": True},
        "c2": {"customer_id": "c2", "phone": "+14155550199", "consent_sms": True},
        "c3": {"customer_id": "c3", "note": f"used to have {PHONE}", "consent_sms": True},
    }, 0.0)  # fmt: skip
    with LocalServer(create_app(engine_store, "api-key")) as server:
        yield engine_store, server.url


def inbound(
    body: str, sid: str = "SM" + "1" * 32, phone: str = PHONE, **extra: str
) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": phone,
            "To": "+15005550006", "Body": body, "NumMedia": "0", **extra}  # fmt: skip


def post(
    url: str, form: dict[str, str], signed_url: str | None = None, token: str = TOKEN
) -> httpx.Response:
    signature = RequestValidator(token).compute_signature(signed_url or url, form)
    return httpx.post(url, data=form, headers={"X-Twilio-Signature": signature})


def consent(store, customer: str = "c1") -> object:
    Processor(store, TriggerIndex([])).run_until_empty()
    return store.read(load_profiles, [customer])[customer].get("consent_sms")


@pytest.mark.parametrize(
    "word", ["STOP", "stop", " Stop ", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
)
def test_an_opt_out_keyword_withdraws_sms_consent_as_a_logged_event(served, word):
    store, base = served
    response = post(base + PATH, inbound(word))
    assert response.status_code == 200 and response.text.endswith("<Response/>")
    assert response.headers["content-type"].startswith("application/xml")
    [event] = store.read(customer_events, "c1", 0, 10**10)
    assert event.event_type == "subscription_changed"
    assert consent(store) is False
    assert consent(store, "c2") is True and consent(store, "c3") is True, "only that number"


def test_start_resubscribes_and_a_retried_webhook_is_one_event(served):
    store, base = served
    post(base + PATH, inbound("STOP", sid="SM" + "a" * 32))
    assert consent(store) is False
    for _ in range(2):  # Twilio retries a webhook it got no answer to: same MessageSid
        assert post(base + PATH, inbound("START", sid="SM" + "b" * 32)).status_code == 200
    assert consent(store) is True
    assert len(store.read(customer_events, "c1", 0, 10**10)) == 2


def test_advanced_opt_out_marks_are_honoured(served):
    store, base = served
    post(base + PATH, inbound("Stop sending me these please", OptOutType="STOP"))
    assert consent(store) is False


def test_other_messages_are_acknowledged_and_change_nothing(served):
    store, base = served
    assert post(base + PATH, inbound("please stop")).status_code == 200
    assert store.read(customer_events, "c1", 0, 10**10) == [] and consent(store) is True


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl", "wrong-token"])
def test_a_missing_or_wrong_signature_is_refused(served, signature):
    store, base = served
    form = inbound("STOP")
    if signature == "wrong-token":
        response = post(base + PATH, form, token="another-token")
    else:
        headers = {} if signature is None else {"X-Twilio-Signature": signature}
        response = httpx.post(base + PATH, data=form, headers=headers)
    assert response.status_code == 403
    assert consent(store) is True


def test_a_tampered_body_fails_the_signature(served):
    store, base = served
    form = inbound("START")
    signature = RequestValidator(TOKEN).compute_signature(base + PATH, form)
    response = httpx.post(
        base + PATH, data={**form, "Body": "STOP"}, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 403 and consent(store) is True


def test_a_number_no_profile_has_is_kept_as_a_dead_letter(served):
    store, base = served
    assert post(base + PATH, inbound("STOP", phone="+14155550111")).status_code == 200
    [letter] = store.read(list_dead_letters)
    assert letter.source == "twilio" and "no profile has" in letter.reason


def test_behind_a_proxy_the_public_url_is_what_twilio_signed(engine_store):
    engine_store.write(
        upsert_profiles, {"c1": {"customer_id": "c1", "phone": PHONE, "consent_sms": True}}, 0.0
    )
    from fastapi import FastAPI

    app = FastAPI()
    public = "https://nudge.example.com"
    app.include_router(provider_router(engine_store, twilio_auth_token=TOKEN, public_url=public))
    with LocalServer(app) as server:
        form = inbound("STOP")
        assert post(server.url + PATH, form).status_code == 403, "signed for the local URL"
        assert post(server.url + PATH, form, signed_url=public + PATH).status_code == 200
        # Twilio's validator accepts the URL with its default port; so do we
        assert post(server.url + PATH, inbound("STOP", sid="SM" + "2" * 32),
                    signed_url="https://nudge.example.com:443" + PATH).status_code == 200  # fmt: skip
    assert consent(engine_store) is False


def test_without_an_auth_token_the_route_is_unavailable(engine_store):
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(provider_router(engine_store, from_settings=False))
    with LocalServer(app) as server:
        response = httpx.post(server.url + PATH, data=inbound("STOP"))
    assert response.status_code == 503 and "NUDGE_TWILIO_AUTH_TOKEN" in response.text


def test_our_signature_is_twilios():
    form = inbound("STOP") | {"Extra": "ünïcode & = ?"}
    url = "https://nudge.example.com/v1/providers/twilio/inbound?x=1"
    assert twilio_signature(TOKEN, url, form.items()) == RequestValidator(TOKEN).compute_signature(
        url, form
    )


def test_customers_are_found_by_their_phone_only(engine_store):
    engine_store.write(upsert_profiles, {
        "a": {"customer_id": "a", "phone": PHONE}, "b": {"customer_id": "b", "phone": PHONE},
        "c": {"customer_id": "c", "phone": PHONE + "9"}, "d": {"customer_id": "d", "bio": f'"{PHONE}"'},
    }, 0.0)  # fmt: skip
    assert engine_store.read(customers_with_phone, PHONE) == ["a", "b"]
