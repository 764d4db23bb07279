"""The ingestion API: keys, durability before 202, field-level 422s, batches with per-item results."""

import json
import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from engine.runtime.api import create_app
from engine.store import schema
from engine.store.batch import commit_batch
from engine.store.customers import load_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.execution_log import list_decisions
from engine.store.inbox import pending_count
from engine.store.sql import count_rows

KEY = {"X-API-Key": "s3cret"}
EVENT = {
    "event_id": "e1",
    "customer_id": "c1",
    "event_type": "signup",
    "timestamp": "2026-01-01T09:00:00Z",
}


@pytest.fixture
def client(engine_store):
    return TestClient(create_app(engine_store, "s3cret"))


def test_write_routes_need_the_key(client, engine_store):
    assert client.post("/v1/events", json=EVENT).status_code == 401
    assert client.post("/v1/events", json=EVENT, headers={"X-API-Key": "guess"}).status_code == 401
    assert client.put("/v1/customers/c1", json={}).status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert engine_store.read(count_rows, schema.inbox) == 0


def test_without_a_configured_key_writes_are_refused(engine_store):
    response = TestClient(create_app(engine_store, None)).post(
        "/v1/events", json=EVENT, headers=KEY
    )
    assert response.status_code == 503 and "NUDGE_API_KEY" in response.json()["detail"]


def test_one_event_is_stored_before_202_and_a_repeat_is_a_duplicate(client, engine_store):
    first = client.post("/v1/events", json=EVENT, headers=KEY)
    assert (first.status_code, first.json()) == (202, {"event_id": "e1", "status": "accepted"})
    assert engine_store.read(pending_count) == 1
    assert client.post("/v1/events", json=EVENT, headers=KEY).json()["status"] == "duplicate"


def test_an_invalid_event_gets_field_errors_and_a_dead_letter(client, engine_store):
    response = client.post(
        "/v1/events",
        json={**EVENT, "timestamp": "2026-01-01T09:00:00", "colour": "red"},
        headers=KEY,
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(d.startswith("timestamp: has no time zone") for d in detail)
    assert any(d.startswith("colour: is not a field") for d in detail)
    assert len(engine_store.read(list_dead_letters)) == 1


def test_a_batch_accepts_the_valid_items_and_reports_each(client):
    batch = {
        "events": [
            EVENT,
            {**EVENT, "event_id": "e2", "event_type": ""},
            {**EVENT, "event_id": "e3"},
            EVENT,
        ]
    }
    response = client.post("/v1/events", json=batch, headers=KEY)
    body = response.json()
    assert response.status_code == 202
    assert (body["accepted"], body["duplicates"], body["invalid"]) == (2, 1, 1)
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "invalid",
        "accepted",
        "duplicate",
    ]
    assert body["results"][1]["errors"][0].startswith("event_type:")


def test_batch_limits_and_bad_json(client):
    assert client.post("/v1/events", json={"events": []}, headers=KEY).status_code == 422
    too_many = {"events": [{**EVENT, "event_id": f"e{i}"} for i in range(1001)]}
    assert client.post("/v1/events", json=too_many, headers=KEY).status_code == 422
    response = client.post(
        "/v1/events", content=b"{not json", headers={**KEY, "content-type": "application/json"}
    )
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"][0]
    huge = b"x" * (5 * 1024 * 1024 + 1)
    assert client.post("/v1/events", content=huge, headers=KEY).status_code == 413


def test_profiles_are_validated_and_stored(client, engine_store):
    ok = client.put(
        "/v1/customers/c9",
        json={"email": "ada@example.com", "timezone": "Europe/Berlin", "consent_email": True},
        headers=KEY,
    )
    assert (
        ok.status_code == 200
        and engine_store.read(load_profiles, ["c9"])["c9"]["timezone"] == "Europe/Berlin"
    )
    bad = client.put("/v1/customers/c9", json={"timezone": "Moon/Base"}, headers=KEY)
    assert bad.status_code == 422 and bad.json()["detail"][0].startswith("timezone:")


# -- hostile input: no 5xx, and nothing lost --------------------------------------------------


def raw(obj) -> bytes:
    """JSON with \\u escapes, so that lone surrogates reach the server as JSON allows."""
    return json.dumps(obj).encode()


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def post(client, body: bytes, **headers):
    return client.post(
        "/v1/events", content=body, headers={**KEY, "content-type": "application/json", **headers}
    )


def test_a_batch_with_one_deep_event_stores_the_five_valid_and_reports_each(client, engine_store):
    events = [{**EVENT, "event_id": f"ok{i}"} for i in range(5)]
    events.insert(3, {**EVENT, "event_id": "deep", "properties": {"a": nested(300)}})
    response = post(client, raw({"events": events}))
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["invalid"]) == (5, 1)
    bad = body["results"][3]
    assert (bad["status"], bad["event_id"]) == ("invalid", "deep")
    assert bad["errors"] == [f"properties.a{'.0' * 31}: nested deeper than 32 levels"]
    assert engine_store.read(pending_count) == 5
    [letter] = engine_store.read(list_dead_letters)
    assert letter.event_id == "deep" and "nested deeper than 32 levels" in letter.reason


@pytest.mark.parametrize("bad", ["\ud800", "\udfff", "a\x00b"])
def test_a_surrogate_or_nul_anywhere_is_an_item_error_never_a_500(client, engine_store, bad):
    single = post(client, raw({**EVENT, "event_id": bad}))
    assert single.status_code == 422 and single.json()["detail"][0].startswith("event_id: ")
    items = [
        {**EVENT, "event_id": "p1", "properties": {"note": bad}},
        {**EVENT, "event_id": "p2", "properties": {bad: 1}},
        {**EVENT, "event_id": "p3", "customer_id": bad},
        {**EVENT, "event_id": "p4", "location": {"city": bad}},
        {**EVENT, "event_id": "p5", "session_id": bad},
        {**EVENT, "event_id": "fine"},
    ]
    batch = post(client, raw({"events": items}))
    assert batch.status_code == 202, batch.text
    assert [r["status"] for r in batch.json()["results"]] == ["invalid"] * 5 + ["accepted"]
    assert len(engine_store.read(list_dead_letters)) == 6  # the single one and the five


def letters(store) -> list:
    return store.read(list_dead_letters, limit=1000)


@pytest.mark.parametrize(
    ("body", "headers", "code", "reason"),
    [
        (b"{not json", {}, 422, "not valid JSON"),
        (b'{"event_id": "\xff\xfe"}', {}, 422, "not UTF-8"),
        (b'"just a string"', {}, 422, "expected one event (a JSON object)"),
        (b"[1, 2]", {}, 422, "expected one event (a JSON object)"),
        (b'{"events": "x"}', {}, 422, "events: expected a list of 1 to 1000 events"),
        (b'{"events": []}', {}, 422, "events: expected a list of 1 to 1000 events"),
        (b"[" * 100_000 + b"]" * 100_000, {}, 422, "nested too deeply"),
        (b'{"a": 1}', {"content-length": "abc"}, 400, "Content-Length"),
        (b'{"a": 1}', {"content-length": "-5"}, 400, "Content-Length"),
        (b'{"a": 1}', {"content-length": str(6 * 1024 * 1024)}, 413, "larger than 5 MiB"),
        (b"x" * (5 * 1024 * 1024 + 1), {}, 413, "larger than 5 MiB"),
    ],
)
def test_bad_bodies_get_a_clear_4xx_and_a_dead_letter(
    client, engine_store, body, headers, code, reason
):
    response = post(client, body, **headers)
    assert response.status_code == code, response.text
    detail = response.json()["detail"]
    assert reason in (detail if isinstance(detail, str) else detail[0])
    [letter] = letters(engine_store)
    assert reason in letter.reason and letter.source == "api"
    assert len(letter.payload) <= 64 * 1024 + 1
    shown = body[: 64 * 1024].decode("utf-8", "replace")
    assert letter.payload.startswith(shown[:1000])
    assert engine_store.read(count_rows, schema.inbox) == 0


def test_a_batch_over_the_limit_is_refused_and_kept(client, engine_store):
    too_many = {"events": [{**EVENT, "event_id": f"e{i}"} for i in range(1001)]}
    response = post(client, raw(too_many))
    assert response.status_code == 422 and "1 to 1000" in response.json()["detail"][0]
    [letter] = letters(engine_store)
    assert letter.payload.startswith('{"events": [{"event_id": "e0"')
    assert len(letter.payload) <= 64 * 1024 + 1


def test_a_streamed_body_without_content_length_is_cut_at_the_limit(client, engine_store):
    def chunks():
        for _ in range(6):
            yield b" " * (1024 * 1024)

    response = client.post("/v1/events", content=chunks(), headers=KEY)
    assert response.status_code == 413
    assert "larger than 5 MiB" in letters(engine_store)[0].reason


def test_a_far_future_event_is_dead_lettered_against_the_apps_clock(engine_store):
    now = datetime(2026, 1, 1, 10, tzinfo=UTC)
    app = create_app(engine_store, "s3cret", clock=now.timestamp, max_future="6h")
    client = TestClient(app)
    soon = {**EVENT, "event_id": "soon", "timestamp": "2026-01-01T15:00:00Z"}
    later = {**EVENT, "event_id": "later", "timestamp": "2026-01-01T17:00:00Z"}
    absurd = {**EVENT, "event_id": "absurd", "timestamp": "9999-01-01T00:00:00Z"}
    response = client.post("/v1/events", json={"events": [soon, later, absurd]}, headers=KEY)
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "invalid", "invalid"]
    assert "more than 6h ahead" in response.json()["results"][1]["errors"][0]
    assert {d.event_id for d in engine_store.read(list_dead_letters)} == {"later", "absurd"}


def test_profiles_refuse_deep_json_and_surrogates_with_422(client, engine_store):
    deep = client.put(
        "/v1/customers/c1",
        content=raw({"prefs": nested(300)}),
        headers={**KEY, "content-type": "application/json"},
    )
    assert deep.status_code == 422 and "nested deeper than 32 levels" in deep.json()["detail"][0]
    for body in ({"first_name": "\ud800"}, {"\udfff": "x"}, {"note": "a\x00b"}):
        response = client.put("/v1/customers/c1", content=raw(body), headers=KEY)
        assert response.status_code == 422, (body, response.text)
    bad = client.put("/v1/customers/c1", content=b"\xff{", headers=KEY)
    assert bad.status_code == 422 and "not UTF-8" in bad.json()["detail"][0]
    assert engine_store.read(load_profiles, ["c1"]) == {}


HOSTILE = [
    b"",
    b" ",
    b"null",
    b"true",
    b"0",
    b"[]",
    b"[{}]",
    b"{}",
    b"\xef\xbb\xbf{}",
    '{"a": 1}'.encode("utf-16"),
    b"NaN",
    b'{"event_id": NaN, "customer_id": Infinity}',
    b'{"events": [null, 1, "x", [], {}]}',
    b'{"events": {"a": 1}}',
    b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"a": ' + b"9" * 5000 + b"}",
    b'{"a": 1e999}',
    b'{"\\ud800": 1}',
    b'{"event_id": "\\ud800\\udc00"}',
    b'{"event_id": "\\u0000"}',
    b'{"event_id": "\xed\xa0\x80"}',
    b'{"event_id": {"$gt": ""}, "customer_id": ["a"]}',
    b'{"event_id": "e", "event_id": "f"}',
    raw({**EVENT, "timestamp": "9999-12-31T23:59:59-14:00"}),
    raw({**EVENT, "timestamp": "0001-01-01T00:00:00+14:00"}),
    raw({**EVENT, "timestamp": 10**30}),
    raw({**EVENT, "timestamp": -(10**12)}),
    raw({**EVENT, "event_id": "e\r\nX-Injected: 1"}),
    raw({**EVENT, "properties": None}),
    raw({**EVENT, "properties": [1, 2]}),
    raw({**EVENT, "properties": {"k" * 10_000: 1}}),
    raw({**EVENT, "properties": {"a": "\ud800" * 1000}}),
    raw({**EVENT, "location": {"latitude": "NaN", "country": "\ud800"}}),
    raw({**EVENT, "event_type": "\ud800"}),
    raw({**EVENT, "customer_id": "x" * 100_000}),
    raw({"events": [{**EVENT, "event_id": "\ud800"}] * 3}),
    raw({"__proto__": {"admin": True}, "constructor": 1}),
]


def test_fuzz_hostile_bodies_never_get_a_5xx(client, engine_store):
    for body in HOSTILE:
        response = post(client, body)
        assert response.status_code < 500, (body[:80], response.text[:300])
        response.json()  # always an answer the client can read
        profile = client.put(
            "/v1/customers/c1", content=body, headers={**KEY, "content-type": "application/json"}
        )
        assert profile.status_code < 500, (body[:80], profile.text[:300])
    for path in ("a%00b", "a%0Ab", "%ED%A0%80", "x" * 300, "%F0%9F%8E%89"):
        response = client.put(f"/v1/customers/{path}", json={}, headers=KEY)
        assert response.status_code < 500, (path, response.text[:300])
    for letter in letters(engine_store):
        letter.payload.encode("utf-8")
        letter.reason.encode("utf-8")


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc"])
def test_decisions_limit_is_validated(client, limit):
    assert client.get(f"/v1/decisions?limit={limit}", headers=KEY).status_code == 422


@pytest.mark.parametrize(
    "query", ["trigger_id=%00", "customer_id=a%00b", "customer_id=a%0Ab", f"trigger_id={'x' * 129}"]
)
def test_decisions_filters_refuse_what_the_database_cannot_compare(client, query):
    response = client.get(f"/v1/decisions?{query}", headers=KEY)  # NUL: a 500 from PostgreSQL
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] == ["query", query.split("=")[0]]


# -- reading the decisions log: only what is shown --------------------------------------------


def decision(i: int, trigger: str, customer: str) -> dict:
    return {
        "event_id": f"e{i}",
        "customer_id": customer,
        "trigger_id": trigger,
        "trigger_version": "1",
        "outcome": "fired",
        "reason": None,
        "trace": None,
        "scores": "{}",
        "variant": None,
        "decided_at": float(i),
    }


@pytest.fixture
def logged(engine_store):
    rows = [decision(i, ("t1", "t2")[i % 2], ("c1", "c2", "c3")[i % 3]) for i in range(30)]
    engine_store.write(commit_batch, processed=[], dead=[], decision_rows=rows, action_rows=[],
                       states={}, profile_updates={}, now=0.0)  # fmt: skip
    return engine_store


def captured(store) -> tuple[list[str], object]:
    import sqlalchemy as sa

    statements: list[str] = []

    def keep(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(store.engine.engine, "before_cursor_execute", keep)
    return statements, lambda: sa.event.remove(store.engine.engine, "before_cursor_execute", keep)


def test_the_latest_decisions_are_ordered_and_limited_in_sql(logged):
    statements, stop = captured(logged)
    try:
        rows = logged.read(list_decisions, last=4)
    finally:
        stop()
    assert [r.event_id for r in rows] == ["e26", "e27", "e28", "e29"]
    [sql] = [s for s in statements if "decisions" in s]
    assert re.search(r"ORDER BY (\w+\.)?decisions\.id DESC\s+LIMIT", sql), sql
    t1 = logged.read(list_decisions, trigger_id="t1", last=3)
    assert [r.event_id for r in t1] == ["e24", "e26", "e28"]
    mine = logged.read(list_decisions, customer_id="c2", last=2)
    assert [r.event_id for r in mine] == ["e25", "e28"]
    both = logged.read(list_decisions, trigger_id="t2", customer_id="c1", last=10)
    assert [r.event_id for r in both] == ["e3", "e9", "e15", "e21", "e27"]


def test_existing_callers_keep_the_whole_log_or_the_first_rows(logged):
    assert [r.event_id for r in logged.read(list_decisions)] == [f"e{i}" for i in range(30)]
    assert [r.event_id for r in logged.read(list_decisions, limit=2)] == ["e0", "e1"]
    assert len(logged.read(list_decisions, trigger_id="t1")) == 15


def test_the_decisions_route_returns_the_latest_in_order(logged):
    client = TestClient(create_app(logged, "s3cret"))
    body = client.get("/v1/decisions?limit=3", headers=KEY).json()
    assert [r["event_id"] for r in body["decisions"]] == ["e27", "e28", "e29"]
    body = client.get("/v1/decisions?limit=2&trigger_id=t1&customer_id=c1", headers=KEY).json()
    assert [r["event_id"] for r in body["decisions"]] == ["e18", "e24"]
    assert len(client.get("/v1/decisions", headers=KEY).json()["decisions"]) == 30


def test_the_decisions_command_lists_the_latest_of_a_customer(nudge_home):
    from typer.testing import CliRunner

    from engine.store import EngineDB
    from nudge.cli import app

    store = EngineDB.open(f"sqlite:///{nudge_home / 'engine.db'}")
    rows = [decision(i, ("t1", "t2")[i % 2], ("c1", "c2", "c3")[i % 3]) for i in range(30)]
    store.write(commit_batch, processed=[], dead=[], decision_rows=rows, action_rows=[], states={},
                profile_updates={}, now=0.0)  # fmt: skip
    store.engine.dispose()
    result = CliRunner().invoke(app, ["engine", "decisions", "--customer", "c2", "--last", "2"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.splitlines() if line.startswith("  e")]
    assert listed == ["e25", "e28"]
    assert CliRunner().invoke(app, ["engine", "decisions", "--last", "0"]).exit_code == 2


def test_accept_stream_checks_timestamps_against_the_given_clock(engine_store):
    from engine.runtime.inbox import accept_stream

    era = [
        {**EVENT, "event_id": f"f{i}", "timestamp": f"2031-06-0{i + 1}T00:00:00Z"} for i in range(3)
    ]
    assert accept_stream(engine_store, era, source="t")["invalid"] == 3  # ahead of the wall clock
    clock = datetime(2031, 6, 3, tzinfo=UTC)
    counts = accept_stream(engine_store, era, source="t", batch_size=2, now=clock)
    assert counts == {"accepted": 3, "duplicate": 0, "invalid": 0}
    late = {**EVENT, "event_id": "late", "timestamp": "2031-06-03T07:00:00Z"}
    assert (
        accept_stream(engine_store, [late], source="t", now=clock, max_future="6h")["invalid"] == 1
    )


def test_pathological_items_are_dead_lettered_never_raised(engine_store):
    from engine.runtime.inbox import accept_events

    very_deep = nested(100_000)
    items = [
        very_deep,
        {**EVENT, "event_id": 10**5000},
        {**EVENT, "event_id": "\ud800\x00", "colour": very_deep},
        b"\xff\xfe not json",
        "[" * 100_000,
        {**EVENT, "event_id": "fine"},
    ]
    results = accept_events(engine_store, items, source="t")
    assert [r.status for r in results] == ["invalid"] * 5 + ["accepted"]
    letters = engine_store.read(list_dead_letters)
    assert len(letters) == 5
    assert letters[2].event_id == "\\ud800\\x00"
    for letter in letters:
        json.dumps([letter.payload, letter.reason], ensure_ascii=False).encode("utf-8")
