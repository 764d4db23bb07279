"""Accepting events into the engine: validate against the contract, store durably, never lose one.

Valid events go to the inbox (idempotent by `event_id`: a repeat is reported as a duplicate);
invalid ones go to the dead-letter table with the reason, and the caller gets a per-item result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from engine.events import Event, describe_validation_error, validate_event
from engine.store import EngineStore

__all__ = ["ItemResult", "accept_events", "event_row"]


@dataclass(frozen=True)
class ItemResult:
    """What happened to one submitted item."""

    index: int
    status: str  # "accepted", "duplicate" or "invalid"
    event_id: str | None = None
    errors: list[str] = field(default_factory=list)


def event_row(event: Event) -> dict[str, Any]:
    """An inbox row for a validated event."""
    return {
        "event_id": event.event_id,
        "customer_id": event.customer_id,
        "event_type": event.event_type,
        "occurred_at": event.timestamp.timestamp(),
        "payload": event.model_dump_json(),
    }


def accept_events(
    store: EngineStore,
    items: Sequence[Any],
    *,
    source: str,
    naive_timezone: str | None = None,
) -> list[ItemResult]:
    """Validate and store a batch; invalid items are dead-lettered with their reasons."""
    results: list[ItemResult | None] = [None] * len(items)
    valid: list[tuple[int, Event]] = []
    dead: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            valid.append((i, validate_event(item, naive_timezone=naive_timezone)))
        except ValidationError as exc:
            errors = describe_validation_error(exc)
            results[i] = ItemResult(i, "invalid", _raw_id(item), errors)
            dead.append(
                {
                    "event_id": _raw_id(item),
                    "payload": _as_text(item),
                    "reason": "; ".join(errors),
                    "source": source,
                }
            )
    now = time.time()
    store.add_dead_letters(dead, now)
    fresh = store.add_events([event_row(e) for _, e in valid], now)
    claimed: set[str] = set()
    for i, event in valid:
        is_new = event.event_id in fresh and event.event_id not in claimed
        claimed.add(event.event_id)
        results[i] = ItemResult(i, "accepted" if is_new else "duplicate", event.event_id)
    return [r for r in results if r is not None]


def accept_stream(store: EngineStore, items: Iterable[Any], *, source: str, batch_size: int = 1000,
                  naive_timezone: str | None = None) -> dict[str, int]:  # fmt: skip
    """Accept a long stream in batches; returns counts per status."""
    counts = {"accepted": 0, "duplicate": 0, "invalid": 0}
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            for r in accept_events(store, batch, source=source, naive_timezone=naive_timezone):
                counts[r.status] += 1
            batch = []
    if batch:
        for r in accept_events(store, batch, source=source, naive_timezone=naive_timezone):
            counts[r.status] += 1
    return counts


def _raw_id(item: Any) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("event_id"), str | int):
        return str(item["event_id"])[:128]
    return None


def _as_text(item: Any) -> str:
    if isinstance(item, str | bytes):
        return item if isinstance(item, str) else item.decode("utf-8", "replace")
    try:
        return json.dumps(item, default=str)
    except (TypeError, ValueError):
        return repr(item)
