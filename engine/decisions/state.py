"""Per-customer state the conditions read: recent events by type, fires and sends, in bounded form.

Loaded once per event (not queried per condition) and small by construction: each event type keeps
at most `max_events` records no older than `retention` seconds. Times are epoch seconds (floats)
because that is what the hot path compares.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CustomerState", "History", "StateLimits"]


@dataclass(frozen=True)
class StateLimits:
    """How much history a customer's state keeps."""

    retention: float = 90 * 86400.0
    max_events: int = 200
    max_fires: int = 50


@dataclass
class History:
    """Times (sorted) and amounts of one event type, as parallel lists for binary search."""

    times: list[float]
    amounts: list[float | None]

    def add(self, at: float, amount: float | None) -> None:
        if not self.times or self.times[-1] <= at:
            self.times.append(at)
            self.amounts.append(amount)
        else:
            i = bisect.bisect_right(self.times, at)
            self.times.insert(i, at)
            self.amounts.insert(i, amount)

    def trim(self, limits: StateLimits) -> None:
        """Keep at most `max_events`, and nothing older than `retention` before the latest event.

        One event far ahead of all the others (a client's broken clock) does not count as the
        latest: retention is then measured from the event before it, so it cannot age out the
        whole history.
        """
        times = self.times
        if not times:
            return
        latest = times[-1]
        if len(times) > 1 and latest - times[-2] > limits.retention:
            latest = times[-2]
        cut = max(
            len(times) - limits.max_events,
            bisect.bisect_left(times, latest - limits.retention),
        )
        if cut > 0:
            del self.times[:cut]
            del self.amounts[:cut]

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class CustomerState:
    """What the engine remembers about one customer between events."""

    customer_id: str
    # event type → its recent history, oldest first
    events: dict[str, History] = field(default_factory=dict)
    # trigger id → fire times (bounded) and the total count since the first fire
    fires: dict[str, deque[float]] = field(default_factory=dict)
    fire_counts: dict[str, int] = field(default_factory=dict)
    # channel → send times (bounded by retention), for frequency caps
    sends: dict[str, deque[float]] = field(default_factory=dict)
    seen_event_ids: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    # model → (score, model version, when it was refreshed): the last score the engine was told
    # (score refreshes), which `score_crosses` triggers compare a new score with.
    last_scores: dict[str, tuple[float, str, float]] = field(default_factory=dict)

    # -- reading ------------------------------------------------------------------------------

    def count(self, event_type: str, since: float, until: float) -> int:
        """Events of a type with ``since < t <= until``."""
        history = self.events.get(event_type)
        if history is None:
            return 0
        times = history.times
        return bisect.bisect_right(times, until) - bisect.bisect_right(times, since)

    def total(self, event_type: str, since: float, until: float) -> float:
        """Sum of amounts of a type's events with ``since < t <= until``."""
        history = self.events.get(event_type)
        if history is None:
            return 0.0
        lo = bisect.bisect_right(history.times, since)
        hi = bisect.bisect_right(history.times, until)
        return sum(a for a in history.amounts[lo:hi] if a is not None)

    def last(self, event_type: str, before: float) -> float | None:
        """Time of the latest event of a type at or before `before`."""
        history = self.events.get(event_type)
        if history is None:
            return None
        i = bisect.bisect_right(history.times, before)
        return history.times[i - 1] if i else None

    def times(self, event_type: str) -> list[float]:
        history = self.events.get(event_type)
        return history.times if history is not None else []

    def sends_between(self, channel: str, since: float, until: float) -> int:
        return sum(1 for t in self.sends.get(channel, ()) if since <= t < until)

    def last_fire(self, trigger_id: str) -> float | None:
        fires = self.fires.get(trigger_id)
        return fires[-1] if fires else None

    # -- writing ------------------------------------------------------------------------------

    def record_event(
        self, event_type: str, at: float, amount: float | None, limits: StateLimits
    ) -> None:
        """Add an event (kept in time order even when events arrive slightly out of order)."""
        history = self.events.get(event_type)
        if history is None:
            history = self.events[event_type] = History([], [])
        history.add(at, amount)
        history.trim(limits)

    def record_fire(self, trigger_id: str, at: float, limits: StateLimits) -> None:
        fires = self.fires.setdefault(trigger_id, deque())
        fires.append(at)
        while len(fires) > limits.max_fires:
            fires.popleft()
        self.fire_counts[trigger_id] = self.fire_counts.get(trigger_id, 0) + 1

    def record_send(self, channel: str, at: float, limits: StateLimits) -> None:
        """Add a send; sends older than `retention` before it are forgotten.

        As in `History.trim`, one send far ahead of all the others does not age out the sends
        that frequency caps count: retention is then measured from the latest send before it.
        """
        sends = self.sends.setdefault(channel, deque())
        latest = at
        if sends:
            before = max(sends)
            if at - before > limits.retention:
                latest = before
        sends.append(at)
        while sends and sends[0] < latest - limits.retention:
            sends.popleft()

    # -- persistence --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The state as JSON-able data; empty parts are left out (`from_json` reads them as
        empty): most customers have no fires, sends or scores, and writing every part of every
        state took a third of the batch's state encoding."""
        data: dict[str, Any] = {"seen": list(self.seen_event_ids)}
        if self.events:
            data["events"] = {k: [v.times, v.amounts] for k, v in self.events.items() if v.times}
        if self.fires:
            data["fires"] = {k: list(v) for k, v in self.fires.items()}
        if self.fire_counts:
            data["fire_counts"] = self.fire_counts
        if self.sends:
            data["sends"] = {k: list(v) for k, v in self.sends.items()}
        if self.last_scores:
            data["scores"] = {k: list(v) for k, v in self.last_scores.items()}
        return data

    @classmethod
    def from_json(cls, customer_id: str, data: dict[str, Any] | None) -> CustomerState:
        state = cls(customer_id)
        if not data:
            return state
        if "events" in data:
            state.events = {k: History(list(v[0]), list(v[1])) for k, v in data["events"].items()}
        if "fires" in data:
            state.fires = {k: deque(v) for k, v in data["fires"].items()}
        if "fire_counts" in data:
            state.fire_counts = dict(data["fire_counts"])
        if "sends" in data:
            state.sends = {k: deque(v) for k, v in data["sends"].items()}
        if "seen" in data:
            state.seen_event_ids.extend(data["seen"])
        if "scores" in data:
            state.last_scores = {
                k: (float(v[0]), str(v[1]), float(v[2])) for k, v in data["scores"].items()
            }
        return state

    @classmethod
    def from_events(
        cls,
        customer_id: str,
        events: Iterable[tuple[str, float, float | None]],
        limits: StateLimits,
    ) -> CustomerState:
        """Rebuild state from (event type, time, amount) history, e.g. from the lake."""
        state = cls(customer_id)
        for event_type, at, amount in sorted(events, key=lambda e: e[1]):
            state.record_event(event_type, at, amount, limits)
        return state
