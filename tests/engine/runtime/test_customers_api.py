"""The customer API over real HTTP: a customer's profile, consent, segments, scores and events;
a segment's members page by page; erasure — everything of the person gone (database, lake
partitions, outbox files), decisions kept under a salted hash, the address suppressed, an audit
entry, then 404. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from engine.lake import EventLake
from engine.runtime.api import create_app
from engine.runtime.erasure import Eraser, address_hash, customer_hash
from engine.runtime.inbox import accept_events
from engine.store import schema
from engine.store.batch import commit_batch
from engine.store.customers import add_to_segment, upsert_profiles
from engine.store.erasure import erasure_log, suppressed_hashes
from engine.store.execution_log import list_decisions
from tests.support import LocalServer

KEY = {"X-API-Key": "k-customers"}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SALT = b"test-salt-0123456789abcdef"


def event(i: int, customer: str, event_type: str, hours: float, **props) -> dict:
    return {"event_id": f"e{i}", "customer_id": customer, "event_type": event_type,
            "timestamp": (T0 + timedelta(hours=hours)).isoformat(), "properties": props}  # fmt: skip


def decision(event_id: str, customer: str, scores: dict, at: float) -> dict:
    return {"event_id": event_id, "customer_id": customer, "trigger_id": "t", "trigger_version": "1",
            "outcome": "fired", "reason": None, "trace": None, "scores": json.dumps(scores),
            "variant": None, "decided_at": at}  # fmt: skip


@pytest.fixture
def served(engine_store, tmp_path):
    eraser = Eraser(engine_store, SALT, lake_dir=tmp_path / "lake", outbox_dir=tmp_path / "outbox")
    with LocalServer(create_app(engine_store, "k-customers", erasure=eraser)) as server:
        yield server.url, tmp_path


def seed(store) -> None:
    store.write(upsert_profiles, {"c1": {"customer_id": "c1", "email": "c1@example.com",
                                         "first_name": "Cy", "consent_email": True,
                                         "tier": "gold"}}, 0.0)  # fmt: skip
    accept_events(store, [event(1, "c1", "product_view", 0, sku="A"),
                          event(2, "c1", "purchase_completed", 2, amount=30),
                          event(3, "c2", "product_view", 1)], source="test")  # fmt: skip
    store.write(commit_batch, processed=[], dead=[], action_rows=[], states={},
                profile_updates={}, now=0.0, decision_rows=[
                    decision("e1", "c1", {"churn": {"value": 0.2, "model_version": "3"}}, 10.0),
                    decision("e2", "c1", {"churn": {"value": 0.7, "model_version": "4"},
                                          "clv": None}, 20.0)])  # fmt: skip
    for c in ("c1", "c2", "c3", "c4", "c5"):
        store.write(add_to_segment, c, "vip", 1.0)


def test_a_customer_is_their_profile_consent_segments_scores_and_newest_events(
    served, engine_store
):
    url, _ = served
    seed(engine_store)
    body = httpx.get(f"{url}/v1/customers/c1", headers=KEY).json()
    assert body["customer_id"] == "c1"
    assert body["profile"] == {"email": "c1@example.com", "first_name": "Cy", "tier": "gold"}
    assert body["consent"] == {"email": True, "sms": False, "push": False}
    assert body["segments"] == ["vip"]
    assert body["scores"] == {"churn": {"value": 0.7, "model_version": "4", "decided_at": 20.0}}
    assert [e["event_id"] for e in body["events"]] == ["e2", "e1"]
    assert body["events"][0] == {"event_id": "e2", "event_type": "purchase_completed",
                                 "timestamp": (T0 + timedelta(hours=2)).isoformat(),
                                 "properties": {"amount": 30}}  # fmt: skip
    assert len(httpx.get(f"{url}/v1/customers/c1?events=1", headers=KEY).json()["events"]) == 1
    # known only by an event: still a customer
    assert httpx.get(f"{url}/v1/customers/c2", headers=KEY).status_code == 200
    assert httpx.get(f"{url}/v1/customers/nobody", headers=KEY).status_code == 404
    assert httpx.get(f"{url}/v1/customers/c1").status_code == 401
    assert httpx.get(f"{url}/v1/customers/c1?events=5000", headers=KEY).status_code == 422
    assert httpx.get(f"{url}/v1/customers/%00", headers=KEY).status_code == 422


def test_a_segment_pages_by_cursor(served, engine_store):
    url, _ = served
    seed(engine_store)
    first = httpx.get(f"{url}/v1/segments/vip?limit=2", headers=KEY).json()
    assert [m["customer_id"] for m in first["members"]] == ["c1", "c2"]
    assert first["total"] == 5 and first["next"] == "c2"
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"after": cursor} if cursor else {})}
        page = httpx.get(f"{url}/v1/segments/vip", params=params, headers=KEY).json()
        seen += [m["customer_id"] for m in page["members"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ["c1", "c2", "c3", "c4", "c5"]
    empty = httpx.get(f"{url}/v1/segments/nobody-here", headers=KEY).json()
    assert empty == {"segment": "nobody-here", "total": 0, "members": [], "next": None}
    assert httpx.get(f"{url}/v1/segments/vip?limit=0", headers=KEY).status_code == 422


def test_erasure_removes_the_person_everywhere_and_keeps_accounting_under_a_hash(
    served, engine_store
):
    url, home = served
    seed(engine_store)
    lake = EventLake(home / "lake")
    from engine.events import validate_event
    from engine.lake import events_to_table

    lake.append(events_to_table([validate_event(event(i, c, "product_view", h)) for i, c, h in
                                 [(1, "c1", 0), (2, "c1", 30), (3, "c2", 0), (4, "c3", 30)]]))  # fmt: skip
    import pandas as pd

    lake.upsert_customers(pd.DataFrame({"customer_id": ["c1", "c2"], "email": ["c1@example.com",
                                                                              "c2@example.com"]}))  # fmt: skip
    outbox = home / "outbox"
    outbox.mkdir()
    (outbox / "mail-c1.eml").write_text("To: C1@example.com\r\nSubject: hi\r\n\r\nbody")
    (outbox / "mail-c2.eml").write_text("To: c2@example.com\r\nSubject: hi\r\n\r\nbody")

    response = httpx.delete(f"{url}/v1/customers/c1", headers=KEY)
    assert response.status_code == 200, response.text
    removed = response.json()["removed"]
    assert removed["profile"] == 1 and removed["events"] == 2 and removed["segments"] == 1
    assert removed["lake_events"] == 2 and removed["lake_files_rewritten"] == 2
    assert removed["outbox_files"] == 1 and removed["decisions"] == 2

    assert httpx.get(f"{url}/v1/customers/c1", headers=KEY).status_code == 404
    assert lake.read(customer_ids=["c1"]).num_rows == 0
    assert sorted(lake.read()["customer_id"].to_pylist()) == ["c2", "c3"]
    assert list(lake.read_customers()["customer_id"]) == ["c2"]
    for path in (home / "lake" / "events").glob("date=*/*.parquet"):
        assert "c1" not in pq.ParquetFile(path).read()["customer_id"].to_pylist()
    assert [p.name for p in outbox.iterdir()] == ["mail-c2.eml"]
    pseudonym = customer_hash("c1", SALT)
    assert {d.customer_id for d in engine_store.read(list_decisions)} == {pseudonym}
    assert address_hash("c1@example.com", SALT) in engine_store.read(suppressed_hashes)
    [audit] = engine_store.read(erasure_log, pseudonym)
    assert audit["requested_by"] == "api" and audit["removed"]["events"] == 2
    with engine_store.connect() as conn:
        for table in (schema.inbox, schema.profiles, schema.segments, schema.customer_state):
            rows = conn.execute(sa.select(sa.func.count()).where(table.c.customer_id == "c1"))
            assert rows.scalar_one() == 0
    # c2 untouched; erasing again is harmless
    assert httpx.get(f"{url}/v1/customers/c2", headers=KEY).json()["segments"] == ["vip"]
    assert httpx.delete(f"{url}/v1/customers/c1", headers=KEY).json()["removed"]["events"] == 0


def test_without_an_eraser_delete_is_503(engine_store):
    with LocalServer(create_app(engine_store, "k-customers")) as server:
        response = httpx.delete(f"{server.url}/v1/customers/c1", headers=KEY)
    assert response.status_code == 503


def test_an_erased_address_sent_again_by_identify_is_not_stored(served, engine_store):
    import base64

    url, _ = served
    seed(engine_store)
    assert httpx.delete(f"{url}/v1/customers/c1", headers=KEY).status_code == 200
    auth = {"Authorization": "Basic " + base64.b64encode(b"k-customers:").decode()}
    body = {"userId": "c1-again", "messageId": "re1",
            "traits": {"email": "C1@Example.com", "firstName": "Cy"}}  # fmt: skip
    answer = httpx.post(f"{url}/v1/identify", json=body, headers=auth).json()
    assert answer["accepted"] == 1
    assert "belongs to an erased customer" in answer["results"][0]["errors"][0]
    profile = httpx.get(f"{url}/v1/customers/c1-again", headers=KEY).json()
    assert profile["profile"] == {"first_name": "Cy"}
    assert profile["events"][0]["properties"]["traits"] == {"firstName": "Cy"}


def test_the_processor_forgets_an_erased_customers_cached_state(engine_store):
    from engine.dsl.triggers import TriggerIndex
    from engine.runtime.processor import Processor

    processor = Processor(engine_store, TriggerIndex([]))
    accept_events(engine_store, [event(1, "c9", "page_view", 0)], source="test")
    processor.run_until_empty()
    eraser = Eraser(engine_store, SALT, hooks=[("processor", processor.forget)])
    assert eraser("c9")["removed"]["processor"] == {"cached_states": 1}
    assert eraser("c9")["removed"]["processor"] == {"cached_states": 0}
