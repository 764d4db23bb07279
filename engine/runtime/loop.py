"""The engine's work loop: process pending events and dispatch due actions until stopped or idle.

One loop can run both parts (the embedded default) or one of them (a worker among N against
PostgreSQL). The clock is a parameter: wall time in production; when replaying history, the time
of the latest processed event, so that delayed actions fall due as the replay advances.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from engine.runtime.dispatcher import Dispatcher, DispatchStats
from engine.runtime.processor import Processor, ProcessStats
from engine.store.inbox import earliest_pending
from engine.store.outbox import next_throttled_at

__all__ = ["EngineLoop", "EventClock", "LoopObserver", "LoopStats"]

T = TypeVar("T")
# `until_idle` waits for throttled sends whose slot is this near (seconds); later ones (a
# provider's long Retry-After) are left to the next run.
MAX_IDLE_WAIT = 60.0


class LoopObserver(Protocol):
    """Told of each step of the loop (``engine.runtime.metrics.EngineMetrics`` is one)."""

    def processed(self, stats: ProcessStats, seconds: float) -> None: ...

    def dispatched(self, stats: DispatchStats, seconds: float) -> None: ...

    def failed(self, step: str, error: Exception) -> None: ...


@dataclass
class LoopStats:
    events: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)


class EventClock:
    """Replay time: the latest event time the processor has seen (or a start value)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, to: float) -> None:
        self.now = max(self.now, to)


class EngineLoop:
    """Alternates processing and dispatching; each step commits its own work."""

    def __init__(
        self,
        processor: Processor | None,
        dispatcher: Dispatcher | None,
        *,
        clock: Callable[[], float] = time.time,
        poll: float = 0.5,
        observer: LoopObserver | None = None,
        guard: AbstractContextManager[object] | None = None,
    ) -> None:
        self.processor = processor
        self.dispatcher = dispatcher
        self.clock = clock
        self.poll = poll
        self.observer = observer
        # Held for each step (one batch): `LiveConfig.guard`, so a reload swaps between batches.
        self.guard: AbstractContextManager[object] = guard if guard is not None else nullcontext()

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        until_idle: bool = False,
        progress: Callable[[LoopStats], None] | None = None,
    ) -> LoopStats:
        """Loop until `stop` is set, or — with `until_idle` — until nothing is pending or due."""
        stop = stop or threading.Event()
        stats = LoopStats()
        if self.dispatcher is not None:
            self.dispatcher.recover()
        while not stop.is_set():
            worked = 0
            if self.processor is not None:
                worked += self._process(self.processor, stats)
            if self.dispatcher is not None:
                dispatched = self._step(
                    "dispatcher", partial(self.dispatcher.run_due, self.clock())
                )
                stats.actions.update(dispatched.outcomes)
                worked += dispatched.handled
            if progress and worked:
                progress(stats)
            if not worked:
                if until_idle:
                    # Throttled sends are due, only waiting for their slot: idle means after them.
                    wake = self._throttled_wake()
                    if wake is None:
                        return stats
                    if isinstance(self.clock, EventClock):
                        self.clock.advance(wake)  # replay time moves on to the slot
                    else:
                        stop.wait(max(0.0, wake - self.clock()))
                    continue
                stop.wait(self.poll)
        return stats

    def _process(self, processor: Processor, stats: LoopStats) -> int:
        """Timers and schedules due now, then a batch of events; what was done, counted.

        On the replay clock, events are taken only up to the next timer or cron time; when the
        events before it are done, the clock moves to it, so it runs at its own time.
        """
        replay = self.clock if isinstance(self.clock, EventClock) else None
        if replay is not None and replay.now == 0.0:
            first = processor.store.read(earliest_pending, processor.worker)
            if first is not None:
                replay.advance(first)  # replay time starts at the first event
        # Timers and schedules are the processor's work too (its errors count as the processor's).
        occasions = self._step("processor", partial(processor.run_occasions, self.clock()))
        stats.decisions.update({"fired": occasions.fired} if occasions.fired else {})
        worked = occasions.handled
        wake = processor.next_wake(self.clock()) if replay is not None else None
        batch = self._step("processor", partial(processor.run_once, wake))
        stats.events += batch.events
        stats.decisions.update(batch.outcomes)
        worked += batch.events + batch.dead
        if replay is not None:
            if batch.latest_event_at:
                replay.advance(batch.latest_event_at)
            if not batch.events and not batch.dead and wake is not None and wake > replay.now:
                waiting = processor.store.read(earliest_pending, processor.worker)
                if waiting is not None and waiting > wake:
                    replay.advance(wake)  # nothing before the timer / cron time: go to it
                    worked += 1
        return worked

    def _throttled_wake(self) -> float | None:
        """The next slot of a throttled send, when it is near enough to wait for."""
        if self.dispatcher is None:
            return None
        wake = self.dispatcher.store.read(next_throttled_at)
        if wake is None or wake - self.clock() > MAX_IDLE_WAIT:
            return None  # a provider's long Retry-After: the next run sends it
        return wake

    def _step(self, name: str, run: Callable[[], T]) -> T:
        """One step, timed and told to the observer (an error too, then raised again)."""
        started = time.perf_counter()
        try:
            with self.guard:
                result = run()
        except Exception as exc:
            if self.observer is not None:
                self.observer.failed(name, exc)
            raise
        if self.observer is not None:
            seconds = time.perf_counter() - started
            if isinstance(result, ProcessStats):
                self.observer.processed(result, seconds)
            elif isinstance(result, DispatchStats):
                self.observer.dispatched(result, seconds)
        return result
