"""Warm up customer state from the event lake, so the engine can start mid-history.

Replaying a year of events through the whole engine only to build behavior counts would take
minutes; the conditions only need the recent history of the event types they read. This builds
exactly that — the tracked types, within the retention window before `until` — straight from the
lake, and stores it as the customers' state. No decisions are made for these events.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from engine.decisions.state import CustomerState, History, StateLimits
from engine.dsl.triggers import TriggerIndex
from engine.events import CustomerProfile, describe_validation_error
from engine.lake import EventLake
from engine.store import EngineDB
from engine.store.customers import merge_profiles, save_states
from engine.store.dead_letters import add_dead_letters

__all__ = ["ProfileLoad", "load_lake_profiles", "warm_states"]


def warm_states(
    store: EngineDB, lake: EventLake, index: TriggerIndex, until: datetime, limits: StateLimits
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
    store.write(save_states, {c: s.to_json() for c, s in states.items()}, time.time())
    return len(states)


@dataclass(frozen=True)
class ProfileLoad:
    """What loading the lake's customer table did."""

    loaded: int
    kept_newer: int
    invalid: int


def load_lake_profiles(store: EngineDB, lake: EventLake) -> ProfileLoad:
    """Merge the lake's customer profiles into the engine's, the newer one winning.

    The lake's table is as of its `updated_at` column where it has one, else as of the time the
    file was written: a consent the engine recorded after that (an unsubscribe) is kept. Each
    profile is validated like ``PUT /v1/customers``; an invalid one goes to the dead letters.
    """
    frame = lake.read_customers()
    if not len(frame) or "customer_id" not in frame.columns:
        return ProfileLoad(0, 0, 0)
    written_at = lake.customers_path.stat().st_mtime
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    rows: dict[str, tuple[dict[str, object], float]] = {}
    dead = []
    for record in records:
        as_of = record.pop("updated_at", None)
        attributes = {k: v for k, v in record.items() if v is not None}
        try:
            profile = CustomerProfile.model_validate(attributes)
        except ValidationError as exc:
            dead.append({"event_id": None, "payload": json.dumps(record, default=str)[:65536],
                         "reason": "invalid customer profile: " + "; ".join(describe_validation_error(exc)),
                         "source": "lake:customers"})  # fmt: skip
            continue
        at = _epoch(as_of) if as_of is not None else written_at
        rows[profile.customer_id] = (profile.model_dump(mode="json", exclude_unset=True), at)
    store.write(add_dead_letters, dead, time.time())
    kept = store.write(merge_profiles, rows)
    return ProfileLoad(len(rows), kept, len(dead))


def _epoch(value: object) -> float:
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)  # pandas writes epoch ms
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
