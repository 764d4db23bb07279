"""The scoring client against a real local HTTP server: batching, caching, retries, the breaker."""

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request

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
