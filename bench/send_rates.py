"""Benchmark: the cost of one send-rate acquire on each backend (in-process, SQLite, PostgreSQL,
Redis), granted and refused, from one worker — the figures in engine.channels.ratelimit's
docstring. Against a send budget: at 100 emails/s a worker has 10 ms per email.

    uv run python bench/send_rates.py [--n 2000] [--postgres URL] [--redis URL]

PostgreSQL gets a temporary schema (dropped after); Redis a key prefix of its own (deleted).
A backend that cannot be reached is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from engine.channels.ratelimit import MemoryRates, Rate, RateState
from engine.channels.redis_rates import RedisRates, redis_client
from engine.store import EngineDB
from engine.store.send_rates import DatabaseRates

GRANTED = Rate(count=1e9, per=1.0, burst=10**9)  # never refuses
REFUSED = Rate(count=1.0, per=3600.0, burst=1)  # refuses all but the first


def per_acquire(state: RateState, rate: Rate, n: int) -> tuple[float, float]:
    """Median and 95th percentile of one acquire, in milliseconds (the first 50 warm up)."""
    now = time.time()
    times = []
    for i in range(n + 50):
        started = time.perf_counter()
        state.acquire("email", rate, now + i * 1e-6)
        times.append((time.perf_counter() - started) * 1000)
    times = sorted(times[50:])
    return statistics.median(times), times[int(len(times) * 0.95)]


def run(name: str, make: Callable[[], tuple[RateState, Callable[[], None]]], n: int) -> None:
    try:
        state, cleanup = make()
    except Exception as exc:  # a backend that is not there is reported, not fatal
        print(f"{name:<11} unavailable: {str(exc).splitlines()[0]}")
        return
    try:
        granted = per_acquire(state, GRANTED, n)
        state.acquire("email", REFUSED, time.time() + 10**6)  # the one the refused rate allows
        refused = per_acquire(state, REFUSED, n)
    finally:
        cleanup()
    print(f"{name:<11} granted {granted[0]:8.3f} ms (p95 {granted[1]:7.3f})   "
          f"refused {refused[0]:8.3f} ms (p95 {refused[1]:7.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="Acquires per measurement.")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(f"{args.n:,} acquires per figure, one worker; median per acquire")

    run("in-process", lambda: (MemoryRates(), lambda: None), args.n)

    tmp = tempfile.TemporaryDirectory()

    def sqlite() -> tuple[RateState, Callable[[], None]]:
        db = EngineDB.open(f"sqlite:///{Path(tmp.name) / 'engine.db'}")
        return DatabaseRates(db), db.dispose

    run("SQLite", sqlite, args.n)
    tmp.cleanup()

    def postgres() -> tuple[RateState, Callable[[], None]]:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        db = EngineDB.open(args.postgres, schema=schema)

        def drop() -> None:
            db.dispose()
            engine = sa.create_engine(args.postgres)
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()

        return DatabaseRates(db), drop

    run("PostgreSQL", postgres, args.n)

    def redis() -> tuple[RateState, Callable[[], None]]:
        client = redis_client(args.redis)
        client.ping()
        prefix = f"nudge-bench:{uuid.uuid4().hex[:10]}:"

        def delete() -> None:
            for key in client.scan_iter(f"{prefix}*"):
                client.delete(key)
            client.close()

        return RedisRates(client, prefix=prefix), delete

    run("Redis", redis, args.n)


if __name__ == "__main__":
    main()
