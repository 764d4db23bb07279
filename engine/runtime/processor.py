"""The processor: takes accepted events from the inbox in arrival order and records decisions.

Per batch: load the customers' state and profiles once, fetch every score the batch needs in one
call, run `decide` per event, then commit decisions, planned actions, state and the events'
status in one transaction — so a crash before the commit leaves the events pending (processed
again, same outcome), and a crash after it leaves them done: each event is processed once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from engine.decisions.decide import Decision, EventView, decide, decide_trigger, scores_needed
from engine.decisions.predictive import (
    SCORE_REFRESH_EVENT,
    AbsenceTimer,
    absence_timers,
    apply_refresh,
    refreshed_scores,
)
from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy
from engine.decisions.timezones import customer_zone
from engine.dsl.conditions import EvaluationContext, ScoreValue
from engine.dsl.triggers import TriggerIndex
from engine.events import InvalidProfileChange, event_amount
from engine.events import profile_changes as validated_profile_changes
from engine.runtime.identity import LINK_EVENT_TYPES, MERGE_KEY, merge_states
from engine.runtime.occasions import Occasions, OccasionStats, close_window
from engine.store import EngineDB, InboxEvent, jsontext
from engine.store.batch import commit_batch
from engine.store.customer_view import segments_of
from engine.store.customers import load_profile_texts, load_states
from engine.store.identity import find_links
from engine.store.inbox import StaleBatch, pending_events
from engine.store.timers import DueTimer, due_timers

__all__ = ["ProcessStats", "Processor", "profile_changes"]

log = logging.getLogger(__name__)


class ScoreSource(Protocol):
    """What the processor needs of a scoring client (see engine.runtime.scoring.ScoreClient)."""

    def fetch(
        self, customer_ids: Iterable[str], models: Iterable[str]
    ) -> dict[str, dict[str, ScoreValue | None]]: ...


@dataclass
class ProcessStats:
    events: int = 0
    dead: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    latest_event_at: float = 0.0

    def add(self, other: ProcessStats) -> None:
        self.events += other.events
        self.dead += other.dead
        self.outcomes.update(other.outcomes)
        self.seconds += other.seconds
        self.latest_event_at = max(self.latest_event_at, other.latest_event_at)


class Processor:
    """Processes pending inbox events with a trigger index and a suppression policy."""

    def __init__(
        self,
        store: EngineDB,
        index: TriggerIndex,
        *,
        policy: SuppressionPolicy | None = None,
        limits: StateLimits | None = None,
        scores: ScoreSource | None = None,
        default_zone: str = "UTC",
        batch_size: int = 1000,
        state_cache_size: int = 200_000,
        worker: tuple[int, int] = (0, 1),
    ) -> None:
        self.store = store
        self.index = index
        self.policy = policy or SuppressionPolicy()
        retention = max(index.longest_window(), 90 * 86400.0)
        self.limits = limits or StateLimits(retention=retention)
        self.scores = scores
        self.default_zone = default_zone
        self.batch_size = batch_size
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        self._state_cache_size = state_cache_size
        # customer → (profile text as stored, its value): a profile read again unchanged is not
        # parsed again (2-3 µs an event). Values are never changed in place: a batch's changes
        # make new dicts.
        self._profiles: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self.worker = worker
        # Absence timers and scheduled audiences run in the processor that owns the customers.
        self.occasions = Occasions(self)

    def run_occasions(self, now: float) -> OccasionStats:
        """Fire the absence timers due by `now` and run the scheduled audiences due."""
        return self.occasions.run(now)

    def next_wake(self, now: float) -> float | None:
        """When the next timer or cron time is due (the replay clock stops there)."""
        return self.occasions.next_wake(now)

    def run_until_empty(
        self, progress: Callable[[ProcessStats], None] | None = None
    ) -> ProcessStats:
        """Process batches until the inbox has no pending event."""
        total = ProcessStats()
        while True:
            stats = self.run_once()
            if stats.events == 0 and stats.dead == 0:
                return total
            total.add(stats)
            if progress:
                progress(total)

    def run_once(self, until: float | None = None) -> ProcessStats:
        """Process one batch of pending events (with `until`: only events that happened by then).

        If another worker's identity merge moved some of the batch's events to a customer it
        owns while this batch was being decided, the batch is rolled back and read again (the
        moved events are the other worker's now).
        """
        for attempt in range(3):
            try:
                return self._run_once(until)
            except StaleBatch as exc:
                log.info("batch read again (attempt %d): %s", attempt + 1, exc)
        return self._run_once(until)

    def _run_once(self, until: float | None) -> ProcessStats:
        started = time.perf_counter()
        batch = self.store.read(pending_events, self.batch_size, self.worker)
        if until is not None:  # in arrival order, up to the first event past `until`
            batch = batch[: next((i for i, e in enumerate(batch) if e.occurred_at > until), None)]
        stats = ProcessStats()
        if not batch:
            return stats
        merging = self._verified_merges(batch)
        # Absence windows that close by the batch's latest event are decided between its events,
        # in time order (replaying history fires each at its deadline, whatever the batch size).
        horizon = max(e.occurred_at for e in batch)
        closing = (
            self.store.read(due_timers, horizon, 100_000, self.worker)
            if self.index.absences_by_event_type
            else []
        )
        customers = {e.customer_id for e in batch} | set(merging.values())
        customers |= {t.customer_id for t in closing}
        # States not cached, profiles and segments (for `segment:` conditions): one read.
        missing = [c for c in customers if c not in self._states]
        stored, profile_texts, member_of = self.store.read(_customer_reads, missing, customers)
        profiles = self._parsed_profiles(profile_texts)
        states = self._load_states(customers, stored)
        scores = self._fetch_scores(batch, closing)
        decision_rows, action_rows, dead, processed = [], [], [], []
        owners: dict[int, str] = {}  # inbox seq → the customer it was processed for
        timers: list[AbsenceTimer] = []
        windows = _Windows(closing)
        changed_profiles: dict[str, dict[str, Any]] = {}
        merges: list[tuple[str, str]] = []
        renamed: dict[str, str] = {}  # merged away in this batch → the customer it is now

        def close_windows(until: float) -> None:
            for window in windows.due(until):
                customer = renamed.get(window.customer_id, window.customer_id)
                memberships = member_of.get(customer)
                profile = profiles.get(customer) or {"customer_id": customer}
                seen = {**profile, "segments": memberships} if memberships else profile
                decision, outcome = close_window(
                    self, window, self.index.by_id.get(window.trigger_id), states[customer],
                    seen, scores.get(customer, {}),
                )  # fmt: skip
                windows.outcomes[window] = outcome
                if decision is not None:
                    decision_rows.append(_decision_row(decision))
                    action_rows.extend(_action_rows(decision, window.due_at))
                    stats.outcomes[decision.outcome.value] += 1

        for item in batch:
            if windows:
                close_windows(item.occurred_at)
            if item.customer_id in renamed:
                item = replace(item, customer_id=renamed[item.customer_id])
            source = merging.get(item.event_id)
            if source is not None and source != item.customer_id:
                self._merge(source, item.customer_id, states, profiles)
                merges.append((source, item.customer_id))
                renamed[source] = item.customer_id
                renamed.update({s: item.customer_id for s, t in renamed.items() if t == source})
                customers.discard(source)
                changed_profiles.pop(source, None)
            try:
                fields = jsontext.loads(item.payload)
                view = _view(item, fields)
                changes = profile_changes(view)
            except InvalidProfileChange as exc:
                dead.append(_dead_letter(item, f"invalid profile change: {exc}"))
                continue
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                dead.append(_dead_letter(item, f"unreadable payload: {exc}"))
                continue
            stored = profiles.get(item.customer_id) or {"customer_id": item.customer_id}
            # The event's own profile changes apply before its triggers decide: a signup that
            # carries its email and consent gets its welcome.
            profile = {**stored, **changes} if changes else stored
            state = states[item.customer_id]
            memberships = member_of.get(item.customer_id)
            seen = {**profile, "segments": memberships} if memberships else profile  # not stored
            opened_before = len(timers)
            try:
                fresh = item.event_id not in state.seen_event_ids
                customer_scores = scores.get(item.customer_id, {})
                made = decide(view, seen, state, self.index, customer_scores,
                              self.policy, self.limits, self.default_zone)  # fmt: skip
                if fresh:
                    made += self._predictive(view, seen, state, customer_scores, timers)
            except ValueError as exc:  # a score refresh that does not say its scores right
                del timers[opened_before:]
                dead.append(_dead_letter(item, f"invalid score refresh: {exc}"))
                continue
            except Exception as exc:  # one event that breaks a trigger must not stop the others
                del timers[opened_before:]
                log.exception("event %s: deciding failed", item.event_id)
                dead.append(_dead_letter(item, f"processing failed: {type(exc).__name__}: {exc}"))
                continue
            for decision in made:
                decision_rows.append(_decision_row(decision))
                action_rows.extend(_action_rows(decision, view.at))
                stats.outcomes[decision.outcome.value] += 1
            if changes:
                profiles[item.customer_id] = profile
                changed_profiles[item.customer_id] = profile
            processed.append(item.event_id)
            owners[item.seq] = item.customer_id
            windows.add(timers, len(windows.opened))
        if windows:
            close_windows(horizon)
        try:
            self.store.write(
                commit_batch,
                processed=processed,
                dead=dead,
                decision_rows=decision_rows,
                action_rows=action_rows,
                states={c: states[c].to_json() for c in customers},
                profile_updates=changed_profiles,
                now=time.time(),
                merges=merges,
                timers_opened=windows.opened_rows(timers, time.time()),
                timers_finished=windows.finished(),
                # merged in this batch: the rows are moved to the target before they are checked
                processed_as={s: renamed.get(c, c) for s, c in owners.items()},
            )
        except StaleBatch:
            for customer in customers | set(renamed):  # their cached states are this batch's
                self._states.pop(customer, None)
            raise
        if changed_profiles:
            self.occasions.note_profiles(changed_profiles)
        stats.events, stats.dead = len(processed), len(dead)
        stats.latest_event_at = max(e.occurred_at for e in batch)
        stats.seconds = time.perf_counter() - started
        return stats

    def _predictive(
        self,
        view: EventView,
        profile: dict[str, Any],
        state: CustomerState,
        scores: dict[str, ScoreValue | None],
        timers: list[AbsenceTimer],
    ) -> list[Decision]:
        """What an event starts besides its own triggers: the absence windows it opens (added to
        `timers`) and, for a score refresh, the `score_crosses` triggers it fires."""
        if view.event_type in self.index.absences_by_event_type:
            zone = customer_zone(profile, self.default_zone)
            ctx = EvaluationContext(
                view.event_type, view.fields, profile, state, scores, view.at, zone
            )
            timers.extend(absence_timers(view, ctx, self.index))
        if view.event_type != SCORE_REFRESH_EVENT:
            return []
        refreshed = refreshed_scores(view.fields, view.at)  # ValueError: dead-lettered
        made = []
        for crossing in apply_refresh(self.index, state, refreshed, view.at):
            decision = decide_trigger(crossing.trigger, view, profile, state,
                                      {**scores, **refreshed}, self.policy, self.limits,
                                      self.default_zone)  # fmt: skip
            if decision is not None:
                made.append(decision)
        return made

    # -- used by the occasions (timers, schedules) of this processor -----------------------------

    def load_states(self, customers: set[str]) -> dict[str, CustomerState]:
        """The customers' states, through this processor's cache (the one copy it owns)."""
        return self._load_states(customers)

    def decision_row(self, decision: Decision) -> dict[str, Any]:
        return _decision_row(decision)

    def action_rows(self, decision: Decision, trigger_at: float) -> list[dict[str, Any]]:
        return _action_rows(decision, trigger_at)

    def commit(
        self,
        *,
        decision_rows: list[dict[str, Any]] | None = None,
        action_rows: list[dict[str, Any]] | None = None,
        states: dict[str, Any] | None = None,
        timers_finished: dict[int, str] | None = None,
        schedule_run: Any = None,
    ) -> None:
        """Commit what an occasion decided, in one transaction (see commit_batch)."""
        self.store.write(
            commit_batch, processed=[], dead=[], decision_rows=decision_rows or [],
            action_rows=action_rows or [], states=states or {}, profile_updates={},
            now=time.time(), timers_finished=timers_finished, schedule_run=schedule_run,
        )  # fmt: skip

    def forget(self, customer_id: str) -> dict[str, int]:
        """Drop a customer's state and profile from the in-memory caches (after an erasure), so
        that a later event of the same id starts from nothing instead of the erased history."""
        cached = self._states.pop(customer_id, None) is not None
        self._profiles.pop(customer_id, None)  # the erased profile must not stay in memory either
        return {"cached_states": int(cached)}

    def _verified_merges(self, batch: list[InboxEvent]) -> dict[str, str]:
        """Linking events of the batch whose link the identity table holds: event id → source.

        Only a link made by that very message counts (engine.runtime.identity), so an event that
        merely carries the property merges nothing.
        """
        claims: dict[str, str] = {}
        for item in batch:
            if item.event_type in LINK_EVENT_TYPES and MERGE_KEY in item.payload:
                try:
                    source = (jsontext.loads(item.payload).get("properties") or {}).get(MERGE_KEY)
                except (ValueError, AttributeError):
                    continue
                if isinstance(source, str):
                    claims[item.event_id] = source
        if not claims:
            return {}
        links = self.store.read(find_links, claims.values())
        return {
            event_id: source
            for event_id, source in claims.items()
            if source in links and links[source].message_id == event_id
        }

    def _merge(
        self,
        source: str,
        target: str,
        states: dict[str, CustomerState],
        profiles: dict[str, dict[str, Any]],
    ) -> None:
        """Merge `source`'s state into `target`'s in memory (the rows move at the commit)."""
        merged = merge_states(states[target], states.pop(source), self.limits)
        states[target] = self._states[target] = merged
        self._states.pop(source, None)
        mine = profiles.get(target) or {"customer_id": target}
        theirs = profiles.pop(source, None) or {}
        profiles[target] = {**theirs, **mine, "customer_id": target}

    def _load_states(
        self, customers: set[str], stored: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, CustomerState]:
        """The customers' states from the cache, else from `stored` (read if not given)."""
        missing = [c for c in customers if c not in self._states]
        if stored is None:
            stored = self.store.read(load_states, missing) if missing else {}
        for customer in missing:
            self._states[customer] = CustomerState.from_json(customer, stored.get(customer))
        out = {}
        for customer in customers:
            self._states.move_to_end(customer)
            out[customer] = self._states[customer]
        while len(self._states) > self._state_cache_size:
            self._states.popitem(last=False)
        return out

    def _parsed_profiles(self, texts: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The profiles' values, parsed only where the text differs from the one cached."""
        cache, out = self._profiles, {}
        for customer, text in texts.items():
            hit = cache.get(customer)
            if hit is not None and hit[0] == text:
                cache.move_to_end(customer)
                out[customer] = hit[1]
                continue
            value = jsontext.loads(text)
            cache[customer] = (text, value)
            out[customer] = value
        while len(cache) > self._state_cache_size:
            cache.popitem(last=False)
        return out

    def _fetch_scores(
        self, batch: list[InboxEvent], closing: Iterable[DueTimer] = ()
    ) -> dict[str, dict[str, ScoreValue | None]]:
        if self.scores is None:
            return {}
        wanted: dict[str, set[str]] = {}
        for timer in closing:  # windows closing in this batch decide with their triggers' scores
            trigger = self.index.by_id.get(timer.trigger_id)
            if trigger is not None and trigger.score_models():
                wanted.setdefault(timer.customer_id, set()).update(trigger.score_models())
        crossing_models: set[str] = set()
        for triggers in self.index.crossings_by_model.values():
            for trigger in triggers:
                crossing_models |= trigger.score_models()
        for item in batch:
            models = scores_needed(item.event_type, self.index)
            if item.event_type == SCORE_REFRESH_EVENT:
                models = models | crossing_models
            for trigger in self.index.absences_by_event_type.get(item.event_type, ()):
                models = models | trigger.score_models()  # its window may close in the batch
            if models:
                wanted.setdefault(item.customer_id, set()).update(models)
        if not wanted:
            return {}
        models = set().union(*wanted.values())
        return self.scores.fetch(wanted.keys(), models)


def _customer_reads(
    conn: Connection, missing_states: list[str], customers: set[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, list[str]]]:
    """What a batch reads of its customers, in one connection: the states the cache lacks,
    the profiles (as text) and the segments."""
    stored = load_states(conn, missing_states) if missing_states else {}
    return stored, load_profile_texts(conn, customers), segments_of(conn, list(customers))


def profile_changes(event: EventView) -> dict[str, Any]:
    """What an event says about the customer's profile (consent, signup details), validated.

    Raises InvalidProfileChange for a value the profile contract refuses.
    """
    props = event.fields.get("properties") or {}
    if not isinstance(props, dict):
        return {}
    return validated_profile_changes(event.customer_id, event.event_type, props)


def _dead_letter(item: InboxEvent, reason: str) -> dict[str, Any]:
    return {"event_id": item.event_id, "payload": item.payload, "reason": reason[:2000],
            "source": "processor"}  # fmt: skip


def _view(item: InboxEvent, fields: dict[str, Any]) -> EventView:
    # The amount the lake stores for the event too, so warm-up and live state sum the same.
    amount = event_amount(fields.get("properties") or {})
    return EventView(
        item.event_id, item.customer_id, item.event_type, item.occurred_at, amount, fields
    )


def _dumps(value: Any) -> str:
    return jsontext.dumps(value, default=str)


def _decision_row(d: Decision) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "customer_id": d.customer_id,
        "trigger_id": d.trigger_id,
        "trigger_version": d.trigger_version,
        "outcome": d.outcome.value,
        "reason": d.reason,
        "trace": _dumps(d.trace) if d.trace is not None else None,
        "scores": _dumps(d.scores) if d.scores else "{}",
        "variant": d.variant,
        "decided_at": d.decided_at,
    }


def _action_rows(d: Decision, trigger_at: float) -> list[dict[str, Any]]:
    return [
        {
            "idempotency_key": f"{d.trigger_id}:{d.customer_id}:{d.event_id}:{a.index}",
            "event_id": d.event_id,
            "customer_id": d.customer_id,
            "trigger_id": d.trigger_id,
            "action_index": a.index,
            "kind": a.kind,
            "params": _dumps(a.params),
            "channel": a.channel,
            "due_at": a.due_at,
            "cancel_if": _dumps(a.cancel_if) if a.cancel_if is not None else None,
            "variant": d.variant,
            "trigger_at": trigger_at,
        }
        for a in d.actions
    ]


def event_time(value: str | datetime) -> float:
    """Epoch seconds of an ISO timestamp or datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


class _Windows:
    """The absence windows of one batch: stored timers closing by its end and those its events
    open, closed in deadline order between the batch's events."""

    def __init__(self, closing: Iterable[DueTimer]) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        for timer in closing:
            heapq.heappush(self._heap, (timer.due_at, next(self._order), timer))
        self.opened: list[AbsenceTimer] = []
        self.outcomes: dict[Any, str] = {}

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, timers: list[AbsenceTimer], known: int) -> None:
        """Windows the last event opened (`timers` past `known` are new)."""
        for timer in timers[known:]:
            self.opened.append(timer)
            heapq.heappush(self._heap, (timer.due_at, next(self._order), timer))

    def due(self, until: float) -> Iterator[Any]:
        while self._heap and self._heap[0][0] <= until:
            yield heapq.heappop(self._heap)[2]

    def opened_rows(self, timers: list[AbsenceTimer], now: float) -> list[dict[str, Any]]:
        """Rows of the windows opened; those already closed in the batch are stored done."""
        rows = []
        for timer in timers:
            row = timer.row()
            if timer in self.outcomes:
                row.update(status="done", outcome=self.outcomes[timer][:500], finished_at=now)
            rows.append(row)
        return rows

    def finished(self) -> dict[int, str]:
        """Stored timers closed in the batch: id → outcome."""
        return {w.id: o for w, o in self.outcomes.items() if isinstance(w, DueTimer)}
