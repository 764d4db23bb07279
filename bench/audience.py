"""Benchmark: a scheduled audience of 100,000 customers with a churn-score condition (issue 16).

The engine decides every known customer at the cron time: pages of 1,000 ids, their state and
profiles read, scores fetched over real HTTP (one request per page), `if` + suppression + limits,
decisions and actions committed per page. Baseline, same run, same customers, same condition:
one event per customer through an event trigger (the processor's ordinary path).

    uv run python bench/audience.py [--customers 100000] [--scoring-url URL]

Without --scoring-url, scores come from a stub scoring service in its own process (uvicorn, the
`/v1/scores` contract, a deterministic score per customer), so the engine's side is what is
measured; with it, from a real nudge scoring service that knows the customers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import Request  # at module level: the stub's route annotation must resolve

TRIGGER = """
id: winback_audience
when: {{schedule: {{cron: "0 10 * * *", timezone: UTC}}}}
if: {{score: {{model: churn, gte: 0.7, max_age: 7d, on_missing: skip}}}}
actions: [{{send_email: {{template: winback_offer}}}}]
"""
EVENT_TRIGGER = """
id: winback_on_event
when: {event: page_view}
if: {score: {model: churn, gte: 0.7, max_age: 7d, on_missing: skip}}
actions: [{send_email: {template: winback_offer}}]
"""
OCCURRENCE = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()  # in the past: events accepted


def stub_app():
    """A scoring service for benchmarks: the contract, a fixed pseudo-random score each."""
    from fastapi import FastAPI
    from fastapi.responses import Response

    app = FastAPI()

    @app.post("/v1/scores")
    async def scores(request: Request) -> Response:
        body = json.loads(await request.body())
        results = []
        for customer in body["customer_ids"]:
            value = int(hashlib.md5(customer.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            results.append({"customer_id": customer, "known": True, "scores": {
                m: {"value": value, "model_version": "1"} for m in body["models"]}})  # fmt: skip
        return Response(json.dumps({"results": results}), media_type="application/json")

    return app


def serve_stub(port: int) -> None:
    import uvicorn

    uvicorn.run(stub_app(), host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--scoring-url")
    parser.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return

    from engine.dsl.triggers import TriggerIndex, load_trigger_text
    from engine.runtime.inbox import accept_stream
    from engine.runtime.processor import Processor
    from engine.runtime.scoring import ScoreClient
    from engine.store import EngineDB
    from engine.store.customers import upsert_profiles
    from tests.support import free_port

    stub = None
    url = args.scoring_url
    if url is None:
        port = free_port()
        stub = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port)])
        url = f"http://127.0.0.1:{port}"
        _wait(url)
    try:
        n = args.customers
        ids = [f"cust{i:07d}" for i in range(n)]
        profiles = {c: {"customer_id": c, "email": f"{c}@example.com", "consent_email": True,
                        "timezone": "UTC"} for c in ids}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            # The audience.
            store = EngineDB.open(f"sqlite:///{tmp}/audience.db")
            store.write(upsert_profiles, profiles, 0.0)
            index = TriggerIndex(load_trigger_text(TRIGGER.format()).triggers)
            processor = Processor(store, index, scores=ScoreClient(url, timeout=30.0))
            processor.occasions.pages_per_run = 10**6
            processor.run_occasions(OCCURRENCE - 60)  # the engine sees the schedule
            started = time.perf_counter()
            stats = processor.run_occasions(OCCURRENCE + 1)
            audience_s = time.perf_counter() - started
            assert stats.audience == n, stats
            # Baseline: one event per customer through the same condition.
            events_store = EngineDB.open(f"sqlite:///{tmp}/events.db")
            events_store.write(upsert_profiles, profiles, 0.0)
            stamp = datetime.fromtimestamp(OCCURRENCE, UTC).isoformat()
            accept_stream(events_store, ({"event_id": f"pv-{c}", "customer_id": c,
                                          "event_type": "page_view", "timestamp": stamp}
                                         for c in ids), source="bench")  # fmt: skip
            event_index = TriggerIndex(load_trigger_text(EVENT_TRIGGER).triggers)
            baseline = Processor(events_store, event_index, scores=ScoreClient(url, timeout=30.0))
            started = time.perf_counter()
            done = baseline.run_until_empty()
            events_s = time.perf_counter() - started
            assert done.events == n
            outcomes = (_outcomes(store), _outcomes(events_store))
    finally:
        if stub is not None:
            stub.terminate()
            stub.wait(timeout=10)
    load = os.getloadavg()
    print(f"scheduled audience: {n:,} customers in {audience_s:.1f} s ({n / audience_s:,.0f} customers/s), "
          f"decisions {outcomes[0]}")  # fmt: skip
    print(
        f"baseline, one event each: {n:,} events in {events_s:.1f} s ({n / events_s:,.0f} events/s)"
    )
    print(f"audience / events throughput: {events_s / audience_s:.2f}×; target ≤ 60 s: "
          f"{'met' if audience_s <= 60 else 'NOT met'}; load average {load[0]:.2f} {load[1]:.2f}")  # fmt: skip


def _outcomes(store):
    from collections import Counter

    from engine.store.execution_log import list_decisions

    return dict(Counter(f"{d.outcome}{': ' + d.reason if d.reason else ''}"[:40]
                        for d in store.read(list_decisions)))  # fmt: skip


def _wait(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"{url}/v1/scores", json={"customer_ids": [], "models": []}, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"stub scoring service at {url} did not start")


if __name__ == "__main__":
    main()
