"""Benchmark: HTTP ingestion end to end into the inbox — Segment's ``/v1/batch`` against nudge's own
``POST /v1/events``, in the same run, on the same server (uvicorn in a child process, one worker,
SQLite in WAL mode or PostgreSQL), with concurrent clients (threads, each with its own keep-alive
connection) posting batches until every event is acknowledged (the answer means committed).

Reported per endpoint: events/s over the whole run (first request sent → last answer), and the
median and p99 latency of one request. Target: ≥ 10,000 events/s with 8 clients.

    uv run python bench/ingest_http.py [--clients 8] [--events 200000] [--batch 500] [--db URL]
        [--schema NAME]

PostgreSQL: ``--db postgresql+psycopg://postgres@127.0.0.1:5432/test --schema bench_ingest``
puts the engine's tables in a schema of their own (created, then dropped at the end: it must
not exist before).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "bench-key"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def serve(url: str, port: int, schema: str | None = None) -> None:
    """The child process: the engine's API over the database at `url` (`schema`: PostgreSQL's)."""
    import uvicorn

    from engine.runtime.api import create_app
    from engine.store import EngineDB

    app = create_app(EngineDB.open(url, schema=schema), KEY)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def nudge_events(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"n{i}", "customer_id": f"c{i % 50_000}", "event_type": "product_view",
         "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
         "properties": {"sku": f"s{i % 977}", "price": 19.5}}
        for i in range(start, start + n)
    ]  # fmt: skip


def segment_messages(start: int, n: int) -> list[dict[str, Any]]:
    return [
        {"type": "track", "messageId": f"s{i}", "userId": f"c{i % 50_000}",
         "event": "Product Viewed", "timestamp": (T0 + timedelta(seconds=i)).isoformat(),
         "properties": {"sku": f"s{i % 977}", "price": 19.5},
         "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}}
        for i in range(start, start + n)
    ]  # fmt: skip


def run(base: str, path: str, bodies: list[bytes], clients: int, headers: dict[str, str]) -> dict:
    """Post `bodies` from `clients` threads; events/s and request latencies."""
    import httpx

    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))
    failures: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                started = time.perf_counter()
                response = http.post(path, content=body)
                took = time.perf_counter() - started
                with lock:
                    latencies.append(took)
                    if response.status_code >= 300:
                        failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{path}: {len(failures)} requests failed, e.g. {failures[0]}")
    ordered = sorted(latencies)
    return {
        "seconds": seconds,
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--events", type=int, default=200_000, help="per endpoint")
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--db", help="engine database URL (default: SQLite in a temp dir)")
    parser.add_argument("--schema", help="PostgreSQL schema of its own (created, then dropped)")
    parser.add_argument("--serve", nargs="+", metavar="URL PORT [SCHEMA]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), *args.serve[2:])
        return

    from engine.store import EngineDB
    from engine.store import schema as tables
    from engine.store.sql import count_rows
    from nudge.local_server import free_port, wait_until_ready

    workdir = Path(tempfile.mkdtemp(prefix="nudge-ingest-bench-"))
    url = args.db or f"sqlite:///{workdir / 'engine.db'}"
    schema = args.schema
    if schema and not schema.isidentifier():
        raise SystemExit(f"--schema: expected a plain name, not {schema!r}")
    if schema and _schema_exists(url, schema):
        raise SystemExit(f"--schema: {schema} exists already (this benchmark drops it at the end)")
    EngineDB.open(url, schema=schema).dispose()  # created at head before the server starts
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", url, str(port), *([schema] if schema else [])]
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/healthz", server, 60, "the engine API")
        n, size = args.events, args.batch
        nudge_bodies = [json.dumps({"events": nudge_events(i, min(size, n - i))}).encode()
                        for i in range(0, n, size)]  # fmt: skip
        segment_bodies = [json.dumps({"batch": segment_messages(i, min(size, n - i)),
                                      "sentAt": datetime.now(UTC).isoformat()}).encode()
                          for i in range(0, n, size)]  # fmt: skip
        basic = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        json_type = {"Content-Type": "application/json"}
        results = {
            "POST /v1/events": run(base, "/v1/events", nudge_bodies, args.clients,
                                   {**json_type, "X-API-Key": KEY}),
            "POST /v1/batch (Segment)": run(base, "/v1/batch", segment_bodies, args.clients,
                                            {**json_type, "Authorization": basic}),
        }  # fmt: skip
        db = EngineDB.open(url, schema=schema)
        stored = db.read(count_rows, tables.inbox)
        db.dispose()
    finally:
        server.terminate()
        server.wait(timeout=30)
        if schema:
            _drop_schema(url, schema)
    print(f"{args.clients} clients, {n:,} events per endpoint in batches of {size}, "
          f"database {url.split('://')[0]}; {stored:,} events in the inbox")  # fmt: skip
    for name, r in results.items():
        print(f"  {name:<26} {n / r['seconds']:>9,.0f} events/s   request median "
              f"{r['median_ms']:6.1f} ms, p99 {r['p99_ms']:6.1f} ms")  # fmt: skip
    if stored != 2 * n:
        raise SystemExit(f"expected {2 * n:,} events in the inbox, found {stored:,}")


def _schema_exists(url: str, schema: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                {"s": schema},
            ).first()
    finally:
        engine.dispose()
    return found is not None


def _drop_schema(url: str, schema: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
