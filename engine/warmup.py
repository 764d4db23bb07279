"""Warm up customer state from the event lake, so the engine can start mid-history.

Replaying a year of events through the whole engine only to build behavior counts would take
minutes; the conditions only need the recent history of the event types they read. This builds
exactly that — the tracked types, within the retention window before `until` — straight from the
lake, and stores it as the customers' state. No decisions are made for these events.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime

from engine.lake import EventLake
from engine.state import CustomerState, History, StateLimits
from engine.store import EngineStore
from engine.triggers import TriggerIndex

__all__ = ["warm_states"]


def warm_states(
    store: EngineStore, lake: EventLake, index: TriggerIndex, until: datetime, limits: StateLimits
) -> int:
    """Build and store the state of every customer with tracked events in [until - retention, until)."""
    start = datetime.fromtimestamp(until.timestamp() - limits.retention, until.tzinfo)
    table = lake.read(start, until, event_types=sorted(index.tracked_event_types),
                      columns=["customer_id", "event_type", "timestamp", "amount"])  # fmt: skip
    frame = table.to_pandas()
    states: dict[str, CustomerState] = {}
    grouped: dict[tuple[str, str], tuple[list[float], list[float | None]]] = defaultdict(
        lambda: ([], [])
    )
    stamps = frame["timestamp"].astype("int64").to_numpy() / 1e6 if len(frame) else []
    amounts = (
        frame["amount"].astype(object).where(frame["amount"].notna(), None).tolist()
        if len(frame)
        else []
    )
    for customer, event_type, at, amount in zip(
        frame["customer_id"], frame["event_type"], stamps, amounts, strict=True
    ):
        times, values = grouped[(customer, event_type)]
        times.append(float(at))
        values.append(amount)
    for (customer, event_type), (times, values) in grouped.items():
        state = states.setdefault(customer, CustomerState(customer))
        history = History(times, values)  # the lake returns events in time order
        history.trim(limits)
        state.events[event_type] = history
    store.save_states({c: s.to_json() for c, s in states.items()}, time.time())
    return len(states)
