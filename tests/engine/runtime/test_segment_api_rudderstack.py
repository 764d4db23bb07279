"""RudderStack's Python SDK (``rudder-sdk-python``, module ``rudderstack.analytics``) pointed at
nudge: it posts Segment's ``/v1/batch`` with the write key as the basic-auth user, gzipped by
default, and retries on a 5xx — every call lands once, mapped like Segment's. SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from rudderstack.analytics.client import Client

from engine.runtime.api import create_app
from engine.store.customers import load_profiles
from engine.store.identity import resolve
from tests.engine.runtime.test_segment_api import KEY, FailFirst, inbox_rows
from tests.support import LocalServer


@pytest.mark.parametrize("use_gzip", [True, False])
def test_rudderstacks_library_sends_batches_with_retries_and_every_call_lands_once(
    engine_store, use_gzip
):
    app = FailFirst(create_app(engine_store, KEY), n=2)
    errors: list[Any] = []
    with LocalServer(app) as server:
        client = Client(KEY, host=server.url, gzip=use_gzip, upload_size=20,
                        upload_interval=0.05, on_error=lambda e, batch: errors.append(e))  # fmt: skip
        client.identify("u1", {"email": "bo@example.com", "firstName": "Bo", "tier": "gold"},
                        anonymous_id="anon-r1", message_id="r-identify")  # fmt: skip
        client.track("u1", "Order Completed", {"revenue": 42.0, "order_id": "o1"},
                     message_id="r-order")  # fmt: skip
        client.page("u1", "Docs", "Pricing", {"url": "https://x.test/p"}, message_id="r-page")
        client.alias("anon-r2", "u1", message_id="r-alias")
        for i in range(45):  # several batches of 20
            client.track(anonymous_id="anon-r1", event="Button Clicked", properties={"i": i},
                         message_id=f"r-{i}")  # fmt: skip
        client.shutdown()
    assert errors == []
    assert app.posts >= 2 + 3  # two refused, then at least three batches
    rows = inbox_rows(engine_store)
    assert len(rows) == 4 + 45
    assert rows["r-order"]["event_type"] == "purchase_completed"
    assert rows["r-order"]["event"]["properties"]["amount"] == 42.0
    assert rows["r-page"]["event_type"] == "page_view"
    # sent under the anonymous id after the identify linked it: the customer's events
    assert {rows[f"r-{i}"]["customer_id"] for i in range(45)} == {"u1"}
    assert rows["r-0"]["event_type"] == "button_clicked"
    assert engine_store.read(resolve, ["anon-r1", "anon-r2"]) == {"anon-r1": "u1",
                                                                  "anon-r2": "u1"}  # fmt: skip
    profile = engine_store.read(load_profiles, ["u1"])["u1"]
    assert profile["email"] == "bo@example.com" and profile["first_name"] == "Bo"
    assert profile["tier"] == "gold"
