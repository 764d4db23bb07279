"""The scoring client against a real local HTTP server: batching, caching, retries, the breaker,
the served models, the features' snapshot time."""

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.runtime.scoring import BreakerState, CircuitBreaker, ScoreClient
from engine.store.execution_log import list_decisions
from engine.store.inbox import pending_count
from tests.support import LocalServer


def scoring_app(scores: dict[str, float], calls: list[dict]) -> FastAPI:
    """A stand-in of the scoring service's /v1/scores contract."""
    app = FastAPI()

    @app.post("/v1/scores")
    async def score(request: Request) -> dict:
        body = await request.json()
        calls.append(body)
        return {
            "results": [
                {
                    "customer_id": c,
                    "known": c in scores,
                    "scores": {
                        m: {"value": scores.get(c, 0.1), "model_version": "7", "band": "high"}
                        for m in body["models"]
                    },
                }
                for c in body["customer_ids"]
            ]
        }

    return app


def test_one_batched_call_then_the_cache(tmp_path):
    calls: list[dict] = []
    with LocalServer(scoring_app({"a": 0.9, "b": 0.2}, calls)) as server:
        client = ScoreClient(server.url)
        first = client.fetch(["a", "b", "a"], ["churn", "ltv"])
        assert first["a"]["churn"].value == 0.9 and first["b"]["ltv"].model_version == "7"
        assert len(calls) == 1 and sorted(calls[0]["customer_ids"]) == ["a", "b"]
        client.fetch(["a"], ["churn"])
        assert len(calls) == 1, "served from the cache"
        assert client.fetch(["zz"], ["churn"])["zz"]["churn"].known is False


def test_breaker_opens_when_the_service_is_down_and_closes_when_it_is_back():
    calls: list[dict] = []
    server = LocalServer(scoring_app({"a": 0.9}, calls)).start()
    port = server.port
    server.stop()
    client = ScoreClient(server.url, timeout=0.5, retries=1, backoff=0.01, cache_ttl=0,
                         breaker=CircuitBreaker(failures=2, reset_after=0.3))  # fmt: skip
    for _ in range(2):
        assert client.fetch(["a"], ["churn"]) == {"a": {"churn": None}}
    assert client.breaker.state is BreakerState.OPEN
    calls_before = len(calls)
    assert client.fetch(["a"], ["churn"]) == {"a": {"churn": None}}
    assert "circuit open" in client.last_error and len(calls) == calls_before
    with LocalServer(scoring_app({"a": 0.9}, calls), port=port):
        import time

        time.sleep(0.35)
        assert client.fetch(["a"], ["churn"])["a"]["churn"].value == 0.9
        assert client.breaker.state is BreakerState.CLOSED


TRIGGER = """
id: winback
when: {event: session_start}
if: {score: {model: churn, gte: 0.7, on_missing: skip}}
actions: [{add_to_segment: {segment: winback}}]
"""


def test_while_scoring_is_down_decisions_skip_and_resume_after(engine_store):
    index = TriggerIndex(load_trigger_text(TRIGGER).triggers)
    t0 = datetime(2026, 1, 5, 12, tzinfo=UTC)

    def session(i: int) -> dict:
        return {
            "event_id": f"s{i}",
            "customer_id": "a",
            "event_type": "session_start",
            "timestamp": (t0 + timedelta(hours=i)).isoformat(),
        }

    calls: list[dict] = []
    server = LocalServer(scoring_app({"a": 0.9}, calls)).start()
    url, port = server.url, server.port
    server.stop()
    client = ScoreClient(
        url,
        timeout=0.3,
        retries=0,
        cache_ttl=0,
        breaker=CircuitBreaker(failures=1, reset_after=0.0),
    )
    processor = Processor(engine_store, index, scores=client)
    accept_events(engine_store, [session(1)], source="test")
    processor.run_until_empty()
    with LocalServer(scoring_app({"a": 0.9}, calls), port=port):
        accept_events(engine_store, [session(2)], source="test")
        processor.run_until_empty()
    outcomes = [(d.event_id, d.outcome, d.reason) for d in engine_store.read(list_decisions)]
    assert outcomes == [("s1", "skipped", "missing: churn"), ("s2", "fired", None)]
    assert engine_store.read(pending_count) == 0, "no event lost while scoring was down"


# -- the service's listing of served models, features' snapshot time, batches ------------------

SNAPSHOT = "2025-08-01T00:00:00+00:00"


def service_app(
    served: list[str],
    calls: list[dict],
    *,
    listings: list[int] | None = None,
    fail: Callable[[dict], int | None] | None = None,
) -> FastAPI:
    """A stand-in of the scoring service that, like the real one, lists its models and answers
    a 422 for a model it does not know; `served` may change while it runs. `fail(body)` may
    answer a status instead of scores."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        if listings is not None:
            listings.append(len(served))
        return {"models": [{"name": m, "version": "7", "status": "serving"} for m in served]}

    @app.post("/v1/scores")
    async def score(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(body)
        status = fail(body) if fail else None
        if status is not None:
            return JSONResponse({"detail": "planned"}, status_code=status)
        unknown = [m for m in body["models"] if m not in served]
        if unknown:
            return JSONResponse({"detail": [{"loc": ["body", "models", 0]}]}, status_code=422)
        return JSONResponse(
            {
                "results": [
                    {
                        "customer_id": c,
                        "known": c != "nobody",
                        "scores": {
                            m: {
                                "value": 0.9 if m == "churn" else 0.3,
                                "model_version": "7",
                                "known": c != "nobody",
                                "features_at": None if c == "nobody" else SNAPSHOT,
                                **({"best_send_hour": 19} if m == "engagement" else {}),
                            }
                            for m in body["models"]
                        },
                    }
                    for c in body["customer_ids"]
                ]
            }
        )

    return app


def test_the_snapshot_time_and_the_best_send_hour_come_with_the_score():
    calls: list[dict] = []
    with LocalServer(service_app(["churn", "engagement"], calls)) as server:
        client = ScoreClient(server.url)
        got = client.fetch(["a", "nobody"], ["churn", "engagement"])
    snapshot = datetime(2025, 8, 1, tzinfo=UTC).timestamp()
    assert got["a"]["churn"].features_at == snapshot and got["a"]["churn"].best_send_hour is None
    assert got["a"]["engagement"].best_send_hour == 19
    assert got["nobody"]["churn"].known is False and got["nobody"]["churn"].features_at is None


def test_an_unknown_model_is_none_and_the_others_arrive_logged_once(caplog):
    calls: list[dict] = []
    with LocalServer(service_app(["churn"], calls)) as server:
        client = ScoreClient(server.url, cache_ttl=0)
        with caplog.at_level(logging.WARNING, logger="engine.runtime.scoring"):
            for _ in range(3):
                got = client.fetch(["a"], ["churn", "upsel"])
                assert got["a"]["churn"].value == 0.9 and got["a"]["upsel"] is None
    assert [c["models"] for c in calls] == [["churn"]] * 3, "only served models are asked for"
    warnings = [r.getMessage() for r in caplog.records if "upsel" in r.getMessage()]
    assert len(warnings) == 1 and "serves churn" in warnings[0]


def test_a_422_refreshes_the_listing_and_asks_again_for_what_is_still_served():
    calls: list[dict] = []
    listings: list[int] = []
    served = ["churn", "ltv"]
    with LocalServer(service_app(served, calls, listings=listings)) as server:
        client = ScoreClient(server.url, cache_ttl=0, models_ttl=3600)
        assert client.fetch(["a"], ["churn", "ltv"])["a"]["ltv"].value == 0.3
        served.remove("ltv")  # retired while the engine runs; the listing is still cached
        got = client.fetch(["a"], ["churn", "ltv"])
        assert got["a"]["churn"].value == 0.9 and got["a"]["ltv"] is None
        assert [c["models"] for c in calls] == [["churn", "ltv"], ["churn", "ltv"], ["churn"]]
        assert listings == [2, 1] and client.breaker.state is BreakerState.CLOSED
        client.fetch(["a"], ["churn", "ltv"])
        assert calls[-1]["models"] == ["churn"] and len(listings) == 2


def test_the_listing_is_refreshed_after_models_ttl():
    calls: list[dict] = []
    listings: list[int] = []
    served = ["churn"]
    with LocalServer(service_app(served, calls, listings=listings)) as server:
        client = ScoreClient(server.url, cache_ttl=0, models_ttl=0.2)
        assert client.fetch(["a"], ["churn", "ltv"])["a"]["ltv"] is None
        served.append("ltv")  # a new champion registered
        time.sleep(0.25)
        assert client.fetch(["a"], ["churn", "ltv"])["a"]["ltv"].value == 0.3
        assert listings == [1, 2]


TWO_TRIGGERS = """
id: winback
when: {event: session_start}
if: {score: {model: churn, gte: 0.7, on_missing: skip}}
actions: [{add_to_segment: {segment: winback}}]
---
id: upsell
when: {event: session_start}
if: {score: {model: upsel, gte: 0.5, on_missing: skip}}
actions: [{add_to_segment: {segment: upsell}}]
"""


def test_a_trigger_on_an_unknown_model_skips_and_another_triggers_score_arrives(engine_store):
    index = TriggerIndex(load_trigger_text(TWO_TRIGGERS).triggers)
    calls: list[dict] = []
    with LocalServer(service_app(["churn"], calls)) as server:
        processor = Processor(engine_store, index, scores=ScoreClient(server.url))
        event = {"event_id": "s1", "customer_id": "a", "event_type": "session_start",
                 "timestamp": datetime(2025, 8, 1, 12, tzinfo=UTC).isoformat()}  # fmt: skip
        accept_events(engine_store, [event], source="test")
        processor.run_until_empty()
    outcomes = {d.trigger_id: (d.outcome, d.reason) for d in engine_store.read(list_decisions)}
    assert outcomes == {"winback": ("fired", None), "upsell": ("skipped", "missing: upsel")}


AGED = """
id: winback
when: {event: session_start}
if: {score: {model: churn, gte: 0.7, max_age: 7d, on_missing: skip}}
actions: [{add_to_segment: {segment: winback}}]
"""


def test_460_day_old_features_fail_max_age_of_7_days_though_just_fetched(engine_store):
    """The snapshot is 2025-08-01; an event 460 days later gets a score fetched that second
    (computed_at is now), which used to pass `max_age: 7d`."""
    index = TriggerIndex(load_trigger_text(AGED).triggers)
    snapshot = datetime(2025, 8, 1, tzinfo=UTC)
    calls: list[dict] = []
    with LocalServer(service_app(["churn"], calls)) as server:
        processor = Processor(engine_store, index, scores=ScoreClient(server.url))
        events = [
            {"event_id": f"s{days}", "customer_id": f"c{days}", "event_type": "session_start",
             "timestamp": (snapshot + timedelta(days=days)).isoformat()}
            for days in (3, 460)
        ]  # fmt: skip
        accept_events(engine_store, events, source="test")
        processor.run_until_empty()
    decisions = {d.event_id: d for d in engine_store.read(list_decisions)}
    assert (decisions["s3"].outcome, decisions["s460"].outcome) == ("fired", "skipped")
    trace = json.loads(decisions["s460"].trace)
    assert trace["age"] == 460 * 86400 and trace["age_from"] == "features" and trace["missing"]


# -- batches of at most 1,000 ----------------------------------------------------------------


def ids(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def test_large_lists_go_in_requests_of_at_most_1000_and_are_cached_per_request():
    calls: list[dict] = []
    second_chunk_first_id = ids(2500)[1000]
    failing = {"on": True}

    def fail(body: dict) -> int | None:
        planned = failing["on"] and body["customer_ids"][0] == second_chunk_first_id
        return 500 if planned else None

    with LocalServer(service_app(["churn"], calls, fail=fail)) as server:
        client = ScoreClient(server.url, retries=1, backoff=0.01)
        got = client.fetch(reversed(ids(2500)), ["churn"])
        sizes = [len(c["customer_ids"]) for c in calls]
        assert sizes == [1000, 1000, 1000, 500], "the failed request retried once, alone"
        missing = [c for c, row in got.items() if row["churn"] is None]
        assert missing == ids(2500)[1000:2000]
        assert client.breaker.state is BreakerState.CLOSED, "one failed request of three"
        failing["on"] = False
        again = client.fetch(ids(2500), ["churn"])
        assert [len(c["customer_ids"]) for c in calls[4:]] == [1000], "only the missing ones"
        assert all(row["churn"].value == 0.9 for row in again.values())


def test_once_the_breaker_opens_the_remaining_requests_are_not_made():
    calls: list[dict] = []
    seen: list[str] = []
    with LocalServer(service_app(["churn"], calls, fail=lambda body: 503)) as server:
        client = ScoreClient(server.url, retries=0,
                             breaker=CircuitBreaker(failures=2, reset_after=60))  # fmt: skip
        client.on_request = lambda seconds, result: seen.append(result)
        got = client.fetch(ids(5000), ["churn"])
    assert len(calls) == 2 and seen == ["error", "error", "circuit_open"]
    assert all(row["churn"] is None for row in got.values())
    assert client.breaker.state is BreakerState.OPEN


@pytest.mark.slow
def test_an_audience_of_100000_customers_in_100_requests():
    calls: list[dict] = []
    with LocalServer(service_app(["churn", "ltv"], calls)) as server:
        client = ScoreClient(server.url, timeout=30)
        got = client.fetch(ids(100_000), ["churn", "ltv"])
    assert len(calls) == 100 and max(len(c["customer_ids"]) for c in calls) == 1000
    assert sorted(c for call in calls for c in call["customer_ids"]) == ids(100_000)
    assert len(got) == 100_000 and all(row["ltv"].value == 0.3 for row in got.values())


def test_the_cache_keeps_at_most_cache_size_answers_dropping_the_oldest():
    calls: list[dict] = []
    with LocalServer(service_app(["churn"], calls)) as server:
        client = ScoreClient(server.url, cache_size=1500)
        client.fetch(ids(1000, "a"), ["churn"])
        client.fetch(ids(1000, "b"), ["churn"])
        assert len(client._cache) <= 1500
        asked = len(calls)
        client.fetch(ids(1000, "b")[-100:], ["churn"])
        assert len(calls) == asked, "the newest answers are still cached"
        client.fetch(ids(10, "a"), ["churn"])
        assert len(calls) == asked + 1, "the oldest were dropped"
