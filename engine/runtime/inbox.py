"""Accepting events into the engine: validate against the contract, store durably, never lose one.

Valid events go to the inbox (idempotent by `event_id`: a repeat is reported as a duplicate);
invalid ones go to the dead-letter table with the reason, and the caller gets a per-item result.
Whatever an item holds — deep nesting, NUL, lone surrogates, a broken clock — it ends as one of
those, never as an exception that would fail the whole batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from engine.events import (
    Event,
    InvalidProfileChange,
    describe_validation_error,
    event_context,
    profile_changes,
    validate_event_in,
)
from engine.limits import storable_text, text_problem
from engine.store import EngineDB
from engine.store.dead_letters import add_dead_letters
from engine.store.inbox import add_events

__all__ = [
    "MAX_DEAD_PAYLOAD",
    "AcceptanceListener",
    "ItemResult",
    "accept_events",
    "accept_stream",
    "add_acceptance_listener",
    "event_row",
]

# A dead letter keeps this much of an item's text (an item of a 5 MiB body fits whole).
log = logging.getLogger(__name__)

MAX_DEAD_PAYLOAD = 5 * 1024 * 1024


@dataclass  # not frozen: its __init__ costs a quarter of a frozen one's (one per item)
class ItemResult:
    """What happened to one submitted item."""

    index: int
    status: str  # "accepted", "duplicate" or "invalid"
    event_id: str | None = None
    errors: list[str] = field(default_factory=list)


# Told what every acceptance did: (source, {"accepted": n, "duplicate": n, "invalid": n}).
AcceptanceListener = Callable[[str, Mapping[str, int]], None]
_listeners: list[AcceptanceListener] = []


def add_acceptance_listener(listener: AcceptanceListener) -> Callable[[], None]:
    """Call `listener` after each batch this process accepts, whatever the route (the engine's
    metrics count events by source this way); returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


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
    store: EngineDB,
    items: Sequence[Any],
    *,
    source: str,
    naive_timezone: str | None = None,
    now: datetime | float | None = None,
    max_future: timedelta | float | str | None = None,
) -> list[ItemResult]:
    """Validate and store a batch; invalid items are dead-lettered with their reasons.

    `now` is the engine's clock that timestamps are checked against (an aware datetime or epoch
    seconds; default: wall time), `max_future` how far ahead of it they may be (default 1 day);
    see `validate_event`.
    """
    context = event_context(naive_timezone=naive_timezone, now=now, max_future=max_future)
    results: list[ItemResult | None] = [None] * len(items)
    valid: list[tuple[int, Event, dict[str, Any]]] = []
    dead: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            event = _validate(item, context)
            valid.append((i, event, event_row(event)))
            continue
        except Exception as exc:  # whatever an item does, it is dead-lettered, never lost
            errors = _errors(exc)
        raw_id = _raw_id(item)
        results[i] = ItemResult(i, "invalid", raw_id, errors)
        dead.append(
            {"event_id": raw_id, "payload": _as_text(item), "reason": "; ".join(errors),
             "source": source}
        )  # fmt: skip
    received = time.time()
    if dead:  # not even an empty transaction: most batches have none
        store.write(add_dead_letters, dead, received)
    fresh = store.write(add_events, [row for _, _, row in valid], received)
    claimed: set[str] = set()
    for i, event, _ in valid:
        is_new = event.event_id in fresh and event.event_id not in claimed
        claimed.add(event.event_id)
        results[i] = ItemResult(i, "accepted" if is_new else "duplicate", event.event_id)
    done = [r for r in results if r is not None]
    if _listeners:
        counts = {"accepted": 0, "duplicate": 0, "invalid": 0}
        for r in done:
            counts[r.status] += 1
        for listener in list(_listeners):
            try:
                listener(source, counts)
            except Exception:  # a metrics hook must never fail an acceptance
                log.warning("acceptance listener failed", exc_info=True)
    return done


def accept_stream(
    store: EngineDB,
    items: Iterable[Any],
    *,
    source: str,
    batch_size: int = 1000,
    naive_timezone: str | None = None,
    now: datetime | float | None = None,
    max_future: timedelta | float | str | None = None,
) -> dict[str, int]:
    """Accept a long stream in batches; returns counts per status.

    `now` and `max_future` as in `accept_events`: a replay with a fixed clock passes that clock;
    by default each batch is checked against the wall time it is accepted at.
    """
    counts = {"accepted": 0, "duplicate": 0, "invalid": 0}
    batch: list[Any] = []

    def flush() -> None:
        for r in accept_events(store, batch, source=source, naive_timezone=naive_timezone,
                               now=now, max_future=max_future):  # fmt: skip
            counts[r.status] += 1

    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
            batch = []
    if batch:
        flush()
    return counts


def _validate(item: Any, context: dict[str, Any]) -> Event:
    event = validate_event_in(item, context)
    # What the event says about the profile (signup details, consent) must pass the profile
    # contract too: refused here, the sender hears it at once instead of a later dead letter.
    profile_changes(event.customer_id, event.event_type, event.properties)
    return event


def _errors(exc: Exception) -> list[str]:
    """Readable, storable lines for why an item was refused."""
    if isinstance(exc, InvalidProfileChange):
        return [storable_text(line, max_chars=2000) for line in exc.lines]
    try:
        if isinstance(exc, ValidationError):
            return [storable_text(line, max_chars=2000) for line in describe_validation_error(exc)]
    except (RecursionError, ValueError):  # printing a pathological input (too deep, an int of
        pass  # 5,000 digits) must not fail the batch either
    try:
        detail = str(exc)[:2000]
    except (RecursionError, ValueError):
        detail = "(cannot be printed)"
    return [storable_text(f"(event): could not be validated: {type(exc).__name__}: {detail}")]


def _raw_id(item: Any) -> str | None:
    """The item's event id as far as it has one, in a form the dead-letter table can hold."""
    value = item.get("event_id") if isinstance(item, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int) and value.bit_length() > 400:  # str() of a huge int is slow or fails
        return None
    text = str(value)[:128]
    if text_problem(text, controls=True):
        text = storable_text(text.encode("unicode_escape").decode("ascii"), max_chars=127)
    return text


def _as_text(item: Any) -> str:
    """The item as text for its dead letter: JSON where possible, always storable."""
    if isinstance(item, str | bytes):
        text = item if isinstance(item, str) else item.decode("utf-8", "replace")
    else:
        try:
            # ensure_ascii: a NUL or lone surrogate is kept as its \u escape, storable anywhere
            text = json.dumps(item, default=str)
        except (TypeError, ValueError, RecursionError):
            try:
                text = repr(item)
            except (RecursionError, ValueError):
                text = f"<{type(item).__name__} that cannot be printed>"
    return storable_text(text, max_chars=MAX_DEAD_PAYLOAD)
