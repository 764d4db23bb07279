"""Benchmark: engine throughput for rule-only triggers (10, 100, 1,000) over 100k customers.

In-process: `decide` with in-memory state (targets: ≥ 20,000 events/s on one core at 1,000
triggers). End to end: accept into the SQLite inbox and process with the durable execution log
(target ≥ 5,000 events/s). Baseline, same run: bench/baselines/engine_naive.py — the design
sketch's loop (every trigger on every event, state read from the database per condition).

    uv run python bench/engine_throughput.py [--customers 100000] [--events 200000] [--e2e-events 50000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines.engine_naive import NaiveEngine
from engine.decisions.decide import EventView, decide
from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.triggers import Trigger, TriggerIndex, load_trigger_text
from engine.events import EventType
from engine.runtime.inbox import accept_stream
from engine.runtime.processor import Processor
from engine.runtime.replay import events_from_rows
from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from nudge.heap import freeze_startup_heap
from pipelines.simulator import simulate

# A property per event type that rule filters can test, with a plausible range.
FILTERS = {
    "cart_abandoned": ("cart_value", 10, 150), "checkout_started": ("cart_value", 10, 150),
    "purchase_completed": ("total", 10, 200), "refund": ("amount", 10, 200),
    "product_view": ("price", 10, 80), "cart_add": ("price", 10, 80),
}  # fmt: skip
TYPES = [t.value for t in EventType]


def make_triggers(n: int, seed: int = 0) -> list[Trigger]:
    """`n` rule-only triggers spread over the standard event types."""
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        event_type = TYPES[i % len(TYPES)]
        lines = [
            f"- id: t{i:04d}",
            f"  priority: {rnd.choice(['low', 'normal', 'high'])}",
            f"  when: {{event: {event_type}",
        ]
        if event_type in FILTERS and rnd.random() < 0.7:
            prop, lo, hi = FILTERS[event_type]
            lines[-1] += f", where: {{properties.{prop}: {{gte: {rnd.randint(lo, hi)}}}}}"
        lines[-1] += "}"
        # Thresholds grow with the window, as a marketer would set them ("3+ views in an hour").
        counted, window = rnd.choice(TYPES), rnd.choice(["1h", "1d", "7d", "30d"])
        at_least = rnd.randint(
            *{"1h": (2, 6), "1d": (3, 10), "7d": (5, 20), "30d": (10, 40)}[window]
        )
        condition = (
            f"{{behavior: {{event: {counted}, within: {window}, count: {{gte: {at_least}}}}}}}"
        )
        if rnd.random() < 0.3:
            condition = f"{{all: [{condition}, {{attribute: {{country: {{in: [US, GB, DE]}}}}}}]}}"
        lines.append(f"  if: {condition}")
        action = (
            "{send_email: {template: t}}"
            if rnd.random() < 0.5
            else "{add_to_segment: {segment: s}}"
        )
        lines.append(f"  actions: [{action}]")
        lines.append("  limits: {cooldown: 1d}")
        docs.append("\n".join(lines))
    result = load_trigger_text("\n".join(docs))
    assert not result.issues, result.issues[:3]
    return result.triggers


def in_process(index: TriggerIndex, views: list[EventView], profiles: dict) -> tuple[float, float]:
    states: dict[str, CustomerState] = {}
    policy, limits = (
        SuppressionPolicy(),
        StateLimits(retention=max(index.longest_window(), 86400 * 30)),
    )
    decided = 0
    started = time.perf_counter()
    for view in views:
        state = states.get(view.customer_id)
        if state is None:
            state = states[view.customer_id] = CustomerState(view.customer_id)
        profile = profiles.get(view.customer_id, {})
        decided += len(decide(view, profile, state, index, {}, policy, limits))
    return len(views) / (time.perf_counter() - started), decided / len(views)


def end_to_end(index: TriggerIndex, items: list[dict], profiles: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = EngineDB.open(f"sqlite:///{tmp}/engine.db")
        store.write(upsert_profiles, profiles, 0.0)
        started = time.perf_counter()
        accept_stream(store, items, source="bench", batch_size=2000)
        Processor(store, index, batch_size=2000).run_until_empty()
        rate = len(items) / (time.perf_counter() - started)
        store.dispose()
    return rate


def naive(triggers: list[Trigger], views: list[EventView], profiles: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        engine = NaiveEngine(f"{tmp}/naive.db", triggers, profiles)
        started = time.perf_counter()
        for v in views:
            engine.handle(v.customer_id, v.event_type, v.at, v.amount, v.fields)
        return len(views) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--e2e-events", type=int, default=50_000)
    parser.add_argument("--naive-events", type=int, default=2_000)
    args = parser.parse_args()

    sim = simulate(args.customers, args.days, seed=5)
    items = list(events_from_rows(sim.events.slice(0, args.events).to_pylist()))
    profiles = {
        r["customer_id"]: {**r, "signup_at": str(r["signup_at"])}
        for r in sim.customers.to_dict("records")
    }
    views = [
        EventView(
            e["event_id"],
            e["customer_id"],
            e["event_type"],
            datetime.fromisoformat(e["timestamp"]).timestamp(),
            (e.get("properties") or {}).get("total"),
            e,
        )
        for e in items
    ]
    print(f"{len(items):,} simulated events of {args.customers:,} customers\n")
    freeze_startup_heap()  # as `nudge engine run` does once it is set up
    print(
        "| triggers | decisions per event | in-process events/s | end to end (SQLite) events/s "
        "| baseline (sketch loop) events/s | in-process ÷ baseline | end to end ÷ baseline |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in (10, 100, 1000):
        triggers = make_triggers(n)
        index = TriggerIndex(triggers)
        rate, per_event = in_process(index, views, profiles)
        e2e = end_to_end(index, items[: args.e2e_events], profiles)
        base = naive(triggers, views[: args.naive_events], profiles)
        print(
            f"| {n:,} | {per_event:.2f} | {rate:,.0f} | {e2e:,.0f} | {base:,.0f} | {rate / base:,.0f}× | {e2e / base:,.0f}× |"
        )


if __name__ == "__main__":
    main()
