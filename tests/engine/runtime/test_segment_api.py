"""The Segment-compatible API over real HTTP: Segment's own Python library (batching, gzip, retries)
pointed at nudge, the write key, clock skew, spec names, traits, per-item dead letters, no 5xx."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from segment.analytics.client import Client

from engine.runtime.api import create_app
from engine.store import schema
from engine.store.customers import load_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.sql import count_rows
from tests.support import LocalServer

KEY = "write-key-0123"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)


def inbox_rows(store) -> dict[str, dict[str, Any]]:
    import sqlalchemy as sa

    with store.connect() as conn:
        rows = conn.execute(
            sa.select(
                schema.inbox.c.event_id,
                schema.inbox.c.customer_id,
                schema.inbox.c.event_type,
                schema.inbox.c.occurred_at,
                schema.inbox.c.payload,
            )
        ).all()
    return {
        r.event_id: {"customer_id": r.customer_id, "event_type": r.event_type,
                     "at": r.occurred_at, "event": json.loads(r.payload)}
        for r in rows
    }  # fmt: skip


class FailFirst:
    """ASGI wrapper: answers 503 to the first `n` POSTs, then passes requests through; counts them."""

    def __init__(self, app: Any, n: int) -> None:
        self.app, self.left, self.posts = app, n, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts += 1
            if self.left > 0:
                self.left -= 1
                body = b'{"code": "unavailable", "message": "try again"}'
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@pytest.mark.parametrize("use_gzip", [False, True])
def test_segments_library_sends_batches_with_retries_and_every_call_lands_once(
    engine_store, use_gzip
):
    app = FailFirst(create_app(engine_store, KEY), n=2)
    errors: list[Any] = []
    with LocalServer(app) as server:
        client = Client(KEY, host=server.url, gzip=use_gzip, upload_size=25,
                        upload_interval=0.05, on_error=lambda e, batch: errors.append(e))  # fmt: skip
        client.identify("u1", {"email": "ann@example.com", "firstName": "Ann", "plan": "pro",
                               "consentEmail": True}, anonymous_id="anon-1",
                        message_id="m-identify")  # fmt: skip
        client.track("u1", "Product Viewed", {"sku": "A1"}, message_id="m-view")
        client.track("u1", "Product Added", {"sku": "A1", "price": 9.5}, message_id="m-add")
        client.track("u1", "Checkout Started", {"total": 19.0}, message_id="m-checkout")
        client.track("u1", "Order Completed", {"revenue": 19.0, "order_id": "o1"},
                     message_id="m-order")  # fmt: skip
        client.track("u1", "Order Refunded", {"total": 19.0}, message_id="m-refund")
        client.track("u1", "Plan Upgraded", {"plan": "pro"}, message_id="m-plan")
        client.page("u1", "Docs", "Pricing", {"url": "https://x.test/p"}, message_id="m-page")
        client.screen("u1", "App", "Home", message_id="m-screen")
        client.group("u1", "g1", {"name": "Acme"}, message_id="m-group")
        client.alias("anon-2", "u1", message_id="m-alias")
        for i in range(60):  # enough for several batches of 25
            client.track(anonymous_id="anon-9", event="Button Clicked",
                         properties={"i": i}, message_id=f"m-{i}")  # fmt: skip
        client.shutdown()
    assert errors == []
    assert app.posts >= 2 + 3  # two refused, then at least three batches of at most 25
    rows = inbox_rows(engine_store)
    assert len(rows) == 11 + 60
    types = {k: v["event_type"] for k, v in rows.items()}
    assert types["m-view"] == "product_view"
    assert types["m-add"] == "cart_add"
    assert types["m-checkout"] == "checkout_started"
    assert types["m-order"] == "purchase_completed"
    assert types["m-refund"] == "refund"
    assert types["m-plan"] == "plan_upgraded"
    assert types["m-page"] == "page_view" and types["m-screen"] == "screen_view"
    assert types["m-group"] == "group" and types["m-alias"] == "alias"
    assert rows["m-order"]["event"]["properties"]["amount"] == 19.0
    assert rows["m-0"]["event_type"] == "button_clicked"
    assert rows["m-0"]["customer_id"] == "anon-9"
    assert rows["m-page"]["event"]["properties"]["name"] == "Pricing"
    # the library's context (library name) is not a field nudge keeps; its traits are the profile
    profile = engine_store.read(load_profiles, ["u1"])["u1"]
    assert profile["email"] == "ann@example.com" and profile["first_name"] == "Ann"
    assert profile["consent_email"] is True and profile["plan"] == "pro"


@pytest.fixture
def served(engine_store):
    clock = {"now": NOW.timestamp()}
    app = create_app(engine_store, KEY, clock=lambda: clock["now"])
    with LocalServer(app) as server:
        yield server.url, clock


def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None,
         **kwargs: Any) -> httpx.Response:  # fmt: skip
    if "content" not in kwargs:
        kwargs["json"] = body
    return httpx.post(url + path, headers=headers if headers is not None else BASIC, **kwargs)


def test_timestamps_are_corrected_for_the_clients_clock_skew(served, engine_store):
    url, _ = served
    # The client's clock is one hour fast: it says it sent at 13:00, the server got it at 12:00.
    skewed = {"batch": [{"type": "track", "userId": "u", "event": "Tapped", "messageId": "k1",
                         "timestamp": "2026-03-04T12:59:00Z"},
                        {"type": "track", "userId": "u", "event": "Tapped", "messageId": "k2",
                         "timestamp": "2026-03-04T12:58:00Z",
                         "sentAt": "2026-03-04T13:30:00Z"},
                        {"type": "track", "userId": "u", "event": "Tapped", "messageId": "k3"}],
              "sentAt": "2026-03-04T13:00:00Z"}  # fmt: skip
    assert post(url, "/v1/batch", skewed).status_code == 200
    rows = inbox_rows(engine_store)
    at = {k: datetime.fromtimestamp(v["at"], UTC) for k, v in rows.items()}
    assert at["k1"] == datetime(2026, 3, 4, 11, 59, tzinfo=UTC)
    assert at["k2"] == datetime(2026, 3, 4, 11, 28, tzinfo=UTC)  # its own sentAt wins
    assert at["k3"] == NOW  # no timestamp: when it was received


def test_the_write_key_is_basic_auth_the_body_or_the_header(served, engine_store):
    url, _ = served
    msg = {"userId": "u", "event": "Tapped"}
    assert post(url, "/v1/track", msg, headers={}).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"guess:").decode()}
    assert post(url, "/v1/track", msg, headers=wrong).status_code == 401
    assert post(url, "/v1/track", {**msg, "writeKey": "guess"}, headers={}).status_code == 401
    garbled = {"Authorization": "Basic !!!"}
    assert post(url, "/v1/track", msg, headers=garbled).status_code == 401
    assert engine_store.read(count_rows, schema.inbox) == 0
    assert (
        post(url, "/v1/track", {**msg, "writeKey": KEY, "messageId": "a"}, headers={}).json()[
            "accepted"
        ]
        == 1
    )
    assert (
        post(url, "/v1/track", {**msg, "messageId": "b"}, headers={"X-API-Key": KEY}).json()[
            "accepted"
        ]
        == 1
    )
    assert post(url, "/v1/track", {**msg, "messageId": "b"}).json()["duplicates"] == 1


def test_without_a_configured_key_the_routes_answer_503(engine_store):
    with LocalServer(create_app(engine_store, None)) as server:
        response = post(server.url, "/v1/batch", {"batch": [{"type": "track"}]})
    assert response.status_code == 503 and "NUDGE_API_KEY" in response.json()["message"]


def test_invalid_messages_are_dead_lettered_with_segments_field_and_the_rest_accepted(
    served, engine_store
):
    url, _ = served
    body = {"batch": [
        {"type": "track", "userId": "u", "event": "Tapped", "messageId": "ok1"},
        {"type": "track", "userId": "u", "messageId": "no-event"},
        {"type": "track", "event": "Tapped", "messageId": "no-user"},
        {"type": "shout", "userId": "u", "messageId": "bad-type"},
        {"type": "identify", "userId": "u", "traits": {"email": "not-an-address"},
         "messageId": "bad-trait"},
        {"type": "identify", "userId": "u", "traits": {"timezone": "Mars/Olympus"},
         "messageId": "bad-zone"},
        {"type": "track", "userId": "u", "event": "Tapped", "messageId": "late",
         "timestamp": "2030-01-01T00:00:00Z"},
        {"type": "alias", "userId": "u", "messageId": "half-alias"},
        "not a message",
        {"type": "track", "userId": "u", "event": "Tapped", "messageId": "ok2",
         "properties": {"x": 1}},
    ]}  # fmt: skip
    response = post(url, "/v1/batch", body)
    assert response.status_code == 200
    results = response.json()["results"]
    by_id = {r["event_id"] or str(r["index"]): r for r in results}
    assert [r["status"] for r in results].count("accepted") == 2
    assert by_id["no-event"]["errors"][0].startswith("event:")
    assert by_id["no-user"]["errors"][0].startswith("userId:")
    assert by_id["bad-type"]["errors"][0].startswith("type:")
    assert by_id["bad-trait"]["errors"][0].startswith("traits.email:")
    assert by_id["bad-zone"]["errors"][0].startswith("traits.timezone:")
    assert by_id["late"]["errors"][0].startswith("timestamp:")
    assert by_id["half-alias"]["errors"][0].startswith("previousId:")
    assert by_id["8"]["errors"][0].startswith("(message): expected a JSON object")
    letters = engine_store.read(list_dead_letters)
    assert len(letters) == 8 and all(d.reason for d in letters)
    assert {d.event_id for d in letters} >= {"no-event", "bad-trait", "late"}
    # every message invalid: 400, with the reasons
    response = post(url, "/v1/batch", {"batch": [{"type": "track", "userId": "u"}]})
    assert response.status_code == 400 and "event:" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "content", "headers", "code"),
    [
        ("/v1/batch", b"{", {}, 400),
        ("/v1/batch", b"[]", {}, 400),
        ("/v1/batch", b'{"batch": []}', {}, 400),
        ("/v1/batch", b'{"batch": "x"}', {}, 400),
        ("/v1/batch", b'{"batch": [1]}', {}, 400),
        ("/v1/track", b"null", {}, 400),
        ("/v1/track", b'"x"', {}, 400),
        ("/v1/identify", b'{"userId": "u", "traits": [1]}', {}, 400),
        ("/v1/track", b'{"userId": "u\\u0000", "event": "x"}', {}, 400),
        ("/v1/track", b'{"userId": "u", "event": "x", "timestamp": "yesterday"}', {}, 400),
        ("/v1/track", b"\xff\xfe", {}, 400),
        ("/v1/batch", b"not gzip", {"Content-Encoding": "gzip"}, 400),
        ("/v1/batch", b"{}", {"Content-Encoding": "br"}, 415),
        ("/v1/batch", b"x" * (6 * 1024 * 1024), {}, 413),
        ("/v1/batch", gzip.compress(b" " * (6 * 1024 * 1024)), {"Content-Encoding": "gzip"}, 400),
    ],
)
def test_malformed_bodies_get_4xx_with_the_reason_never_5xx(served, path, content, headers, code):
    url, _ = served
    response = post(url, path, None, headers={**BASIC, **headers}, content=content)
    assert response.status_code == code, response.text
    assert response.json()["message"]


def test_identify_traits_fill_the_profile_and_context_fills_gaps(served, engine_store):
    url, _ = served
    body = {"userId": "u7", "messageId": "i1",
            "traits": {"email": "u7@example.com", "lastName": "Ng", "phone": "+4915100000",
                       "address": {"country": "DE"}, "consentSms": "true", "tier": "gold"},
            "context": {"timezone": "Europe/Berlin", "locale": "de-DE", "ip": "10.0.0.1"}}  # fmt: skip
    assert post(url, "/v1/identify", body).status_code == 200
    profile = engine_store.read(load_profiles, ["u7"])["u7"]
    assert profile == {"customer_id": "u7", "email": "u7@example.com", "last_name": "Ng",
                       "phone": "+4915100000", "country": "DE", "consent_sms": True,
                       "tier": "gold", "address": {"country": "DE"},
                       "timezone": "Europe/Berlin", "language": "de-DE"}  # fmt: skip
    event = inbox_rows(engine_store)["i1"]["event"]
    assert event["event_type"] == "identify"
    assert event["properties"]["segment_context"]["ip"] == "10.0.0.1"
    # a later identify's context does not overwrite a time zone the profile has
    later = {"userId": "u7", "messageId": "i2", "traits": {},
             "context": {"timezone": "Asia/Tokyo"}}  # fmt: skip
    assert post(url, "/v1/identify", later).status_code == 200
    assert engine_store.read(load_profiles, ["u7"])["u7"]["timezone"] == "Europe/Berlin"
    # a repeated message is a duplicate and is not applied again
    assert (
        post(url, "/v1/identify", {**body, "traits": {"lastName": "Other"}}).json()["duplicates"]
        == 1
    )
    assert engine_store.read(load_profiles, ["u7"])["u7"]["last_name"] == "Ng"


def test_a_message_without_message_id_is_still_idempotent(served, engine_store):
    url, clock = served
    msg = {"userId": "u", "event": "Tapped", "timestamp": "2026-03-04T11:00:00Z"}
    assert post(url, "/v1/track", {**msg, "sentAt": "2026-03-04T12:00:00Z"}).json()["accepted"] == 1
    clock["now"] += 5  # the retry is sent later: sentAt differs, the message is the same
    assert (
        post(url, "/v1/track", {**msg, "sentAt": "2026-03-04T12:00:05Z"}).json()["duplicates"] == 1
    )
    assert engine_store.read(count_rows, schema.inbox) == 1


def test_random_json_never_causes_a_5xx(served):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    url, _ = served
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=20)
    )
    values = st.recursive(
        scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                       max_size=4), max_leaves=12
    )  # fmt: skip
    keys = st.sampled_from(["type", "userId", "anonymousId", "event", "messageId", "timestamp",
                            "sentAt", "traits", "properties", "context", "previousId",
                            "groupId", "name"])  # fmt: skip
    messages = st.dictionaries(keys, values, max_size=8)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(["/v1/track", "/v1/identify", "/v1/alias", "/v1/page"]),
           message=messages, wrap=st.booleans())  # fmt: skip
    def check(path: str, message: dict[str, Any], wrap: bool) -> None:
        body: Any = {"batch": [message]} if wrap else message
        response = post(url, "/v1/batch" if wrap else path, body)
        assert response.status_code in (200, 400), response.text

    check()


def test_context_and_send_time_of_the_batch_apply_to_its_messages(served, engine_store):
    url, _ = served
    body = {"batch": [{"type": "track", "userId": "u", "event": "Tapped", "messageId": "c1",
                       "timestamp": (NOW - timedelta(minutes=1)).isoformat()}],
            "context": {"userAgent": "curl/8"}, "sentAt": NOW.isoformat()}  # fmt: skip
    assert post(url, "/v1/batch", body).status_code == 200
    event = inbox_rows(engine_store)["c1"]["event"]
    assert event["properties"]["segment_context"] == {"userAgent": "curl/8"}
