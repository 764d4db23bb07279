"""Running what starts without an event: absence timers that fall due and scheduled audiences.

The processor owns each customer's state (one worker per customer bucket, state cached in its
memory), so these run inside it, on its clock: `Occasions.run(now)` after each batch of events.
Both commit what they decide in the transaction that ends the timer or moves the audience's
cursor (`engine.store.batch.commit_batch`), so a crash re-runs at most the uncommitted page, to
the same idempotent decisions.

- **Timers** (`when: {event, then_absent}`): a timer due by `now` fires unless the awaited event
  happened inside its window. It waits while the customer still has an inbox event from before
  the deadline that is not processed yet (a backlog must not fire a window that was closed by
  an event still in the queue). An event that reaches the engine after the deadline, stamped
  before it, comes too late: the window fired.
- **Schedules** (`when: {schedule: {cron}}`): at each cron time, in each known customer's zone
  (or the schedule's own `timezone`), every known customer of this worker's buckets and zone is
  decided, 1,000 per page (`page_size`): their scores fetched in one call per page, `if`,
  suppression and limits as for an event. A cron time missed by more than `schedule_grace`
  (the engine was down) is recorded as skipped rather than run late; the engine's first sight
  of a schedule starts it from then (no back-fill of history).
- **Replay**: with the replay clock, `next_wake` is the next timer or cron time; the loop
  processes events only up to it, moves the clock to it and runs it, so replaying history fires
  timers and schedules at their times, whatever the batch size.

Measured (bench/audience.py): see BENCHMARKS.md, "Scheduled audiences".
"""

from __future__ import annotations

import bisect
import logging
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from engine.decisions.cron import next_cron_time, previous_cron_time
from engine.decisions.decide import Decision, decide_trigger
from engine.decisions.predictive import absence_spoiler, absence_view, schedule_view
from engine.decisions.state import CustomerState
from engine.decisions.timezones import customer_zone, zone_named
from engine.dsl.conditions import ScoreValue
from engine.dsl.triggers import Trigger
from engine.store.customer_view import segments_of
from engine.store.customers import load_profiles
from engine.store.inbox import BUCKETS, customers_with_pending
from engine.store.timers import (
    ScheduleRun,
    due_timers,
    known_customers,
    profile_zones_since,
    schedule_runs_of,
    states_since,
)

if TYPE_CHECKING:
    from engine.runtime.processor import Processor

__all__ = ["OccasionStats", "Occasions"]

log = logging.getLogger(__name__)


@dataclass
class OccasionStats:
    timers: int = 0
    audience: int = 0  # customers decided by schedules
    fired: int = 0

    @property
    def handled(self) -> int:
        return self.timers + self.audience


class Occasions:
    """Timers and schedules of one processor (its store, index, state cache and worker share)."""

    def __init__(
        self,
        processor: Processor,
        *,
        page_size: int = 1000,
        pages_per_run: int = 20,
        schedule_grace: float = 6 * 3600.0,
    ) -> None:
        self.processor = processor
        self.page_size = page_size
        self.pages_per_run = pages_per_run  # then back to events: an audience never starves them
        self.schedule_grace = schedule_grace
        self._worker_key = "{}/{}".format(*processor.worker)
        self._runs: dict[tuple[str, str], ScheduleRun] | None = None
        self._starts: dict[tuple[str, str], float] = {}  # first sight of a (trigger, zone)
        # customer → zone of every known customer (read once, then refreshed from the rows
        # changed since: profiles and states by their updated_at), and the cron times computed.
        self._zone_of: dict[str, str] | None = None
        self._zones_read_at = 0.0
        self._next_times: dict[tuple[str, str, float], float] = {}
        self._audience: dict[tuple[str, str, float], list[str]] = {}

    # -- the loop's entry points ----------------------------------------------------------------

    def run(self, now: float) -> OccasionStats:
        """Fire the timers due by `now`, then run (a bounded part of) the schedules due."""
        stats = self.run_timers(now)
        if self.processor.index.schedules:
            stats.audience, fired = self.run_schedules(now)
            stats.fired += fired
        return stats

    def next_wake(self, now: float) -> float | None:
        """The next cron time due after the last run (the replay clock stops there). Timers
        need no wake: the processor closes windows in time order between a batch's events."""
        if not self.processor.index.schedules:
            return None
        runs = self._load_runs()
        candidates = []
        for trigger in self.processor.index.schedules:
            for zone in self._zones_of(trigger):
                key = (trigger.id, zone)
                run = runs.get(key)
                if run is not None and run.status == "running":
                    return now  # an audience is half way: finish it first
                last = run.occurrence if run is not None else self._starts.get(key)
                if last is not None:  # else not seen yet: starts when first seen
                    candidates.append(self._next_time(trigger, zone, last))
        return min(candidates) if candidates else None

    def note_profiles(self, changed: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep the customers' zones current as the processor changes profiles."""
        if self._zone_of is not None:
            default = self.processor.default_zone
            for customer, profile in changed.items():
                self._zone_of[customer] = _zone_key(profile, default)

    # -- timers ---------------------------------------------------------------------------------

    def run_timers(self, now: float) -> OccasionStats:
        """Decide the timers due by `now` (of this worker's customers), in one transaction."""
        p = self.processor
        stats = OccasionStats()
        due = p.store.read(due_timers, now, p.batch_size, p.worker)
        if not due:
            return stats
        waiting = p.store.read(
            customers_with_pending, [t.customer_id for t in due], max(t.due_at for t in due)
        )
        due = [t for t in due if t.customer_id not in waiting]
        if not due:
            return stats
        customers = {t.customer_id for t in due}
        states = p.load_states(customers)
        profiles = p.store.read(load_profiles, customers)
        member_of = p.store.read(segments_of, list(customers))
        triggers = {t.trigger_id: p.index.by_id.get(t.trigger_id) for t in due}
        scores = self._scores(customers, [t for t in triggers.values() if t is not None])
        decision_rows: list[dict[str, Any]] = []
        action_rows: list[dict[str, Any]] = []
        outcomes: dict[int, str] = {}
        for timer in due:
            decision, outcomes[timer.id] = close_window(
                p, timer, triggers[timer.trigger_id], states[timer.customer_id],
                _seen(profiles, member_of, timer.customer_id), scores.get(timer.customer_id, {}),
            )  # fmt: skip
            if decision is not None:
                decision_rows.append(p.decision_row(decision))
                action_rows.extend(p.action_rows(decision, timer.due_at))
                stats.fired += decision.outcome.value == "fired"
        p.commit(
            decision_rows=decision_rows,
            action_rows=action_rows,
            states={c: states[c].to_json() for c in customers},
            timers_finished=outcomes,
        )
        stats.timers = len(due)
        return stats

    # -- schedules ------------------------------------------------------------------------------

    def run_schedules(self, now: float) -> tuple[int, int]:
        """Run the schedules' audiences due by `now`, at most `pages_per_run` pages in all."""
        runs = self._load_runs()
        budget = self.pages_per_run
        audience = fired = 0
        for trigger in self.processor.index.schedules:
            for zone in sorted(self._zones_of(trigger)):
                key = (trigger.id, zone)
                run = runs.get(key)
                if run is None or run.status != "running":
                    run = self._next_run(trigger, zone, run, now)
                    if run is None:
                        continue
                while budget > 0 and run.status == "running":
                    run, decided, page_fired = self._run_page(trigger, run)
                    budget -= 1
                    audience += decided
                    fired += page_fired
                runs[key] = run
                if budget <= 0:
                    return audience, fired
        return audience, fired

    def _next_run(
        self, trigger: Trigger, zone: str, last: ScheduleRun | None, now: float
    ) -> ScheduleRun | None:
        """The run of the cron time due by `now` after `last`, if any (a stale one is skipped)."""
        key = (trigger.id, zone)
        after = last.occurrence if last is not None else self._starts.setdefault(key, now)
        occurrence = self._next_time(trigger, zone, after)
        if occurrence > now:
            return None
        self._refresh_zones()  # a run starts: customers added since (API, imports) are in it
        latest = _previous_time(trigger, zone, now) or occurrence
        run = ScheduleRun(trigger.id, zone, latest, self._worker_key, "running", "", 0, 0)
        if now - latest > self.schedule_grace:
            log.warning(
                "schedule %s (%s): cron time %s missed by more than %.0f s; skipped",
                trigger.id, zone, _iso(latest), self.schedule_grace,
            )  # fmt: skip
            run = replace(run, status="skipped")
            self.processor.commit(schedule_run=run)
        elif latest > occurrence:
            log.warning(
                "schedule %s (%s): %s to %s missed; running the latest only",
                trigger.id, zone, _iso(occurrence), _iso(latest),
            )  # fmt: skip
        return run

    def _run_page(self, trigger: Trigger, run: ScheduleRun) -> tuple[ScheduleRun, int, int]:
        """Decide one page of the audience and commit it with the run's new cursor."""
        p = self.processor
        members = self._members(trigger, run)
        start = bisect.bisect_right(members, run.cursor) if run.cursor else 0
        ids = members[start : start + self.page_size]
        done = start + self.page_size >= len(members)
        # Still known (an erased customer is gone from the database, not from this map yet).
        mine = sorted(p.store.read(known_customers, ids)) if ids else []
        profiles = p.store.read(load_profiles, mine) if mine else {}
        decision_rows: list[dict[str, Any]] = []
        action_rows: list[dict[str, Any]] = []
        changed: dict[str, dict[str, Any]] = {}
        fired = 0
        if mine:
            states = p.load_states(set(mine))
            member_of = p.store.read(segments_of, mine)
            scores = self._scores(mine, [trigger])
            for customer in mine:
                state = states[customer]
                view = schedule_view(trigger, customer, run.occurrence)
                decision = decide_trigger(trigger, view, _seen(profiles, member_of, customer), state,
                                          scores.get(customer, {}), p.policy, p.limits,
                                          p.default_zone)  # fmt: skip
                if decision is None:
                    continue
                # No inbox event says when a schedule's occasion was: the reports (which read a
                # decision's time from its event, else decided_at) take the cron time from here.
                decision = replace(decision, decided_at=run.occurrence)
                decision_rows.append(p.decision_row(decision))
                action_rows.extend(p.action_rows(decision, view.at))
                if decision.outcome.value == "fired":
                    fired += 1
                    changed[customer] = state.to_json()
        run = replace(
            run,
            cursor=ids[-1] if ids else run.cursor,  # ids, not `mine`: the erased are passed too
            customers=run.customers + len(mine),
            fired=run.fired + fired,
            status="done" if done else "running",
        )
        p.commit(
            decision_rows=decision_rows, action_rows=action_rows, states=changed, schedule_run=run
        )
        if done:
            self._audience.pop((trigger.id, run.zone, run.occurrence), None)
            log.info("schedule %s (%s) at %s: %d customers, %d fired", trigger.id, run.zone,
                     _iso(run.occurrence), run.customers, run.fired)  # fmt: skip
        return run, len(mine), fired

    def _members(self, trigger: Trigger, run: ScheduleRun) -> list[str]:
        """The run's audience, sorted by id: this worker's customers of the run's zone (all
        zones for a schedule with its own `timezone`), taken when the run starts."""
        key = (trigger.id, run.zone, run.occurrence)
        members = self._audience.get(key)
        if members is None:
            zone_of = self._refresh_zones()
            index, count = self.processor.worker
            fixed = trigger.spec.when.schedule is not None and trigger.spec.when.schedule.timezone
            members = sorted(
                c for c, zone in zone_of.items()
                if (fixed or zone == run.zone)
                and (count == 1 or zlib.crc32(c.encode()) % BUCKETS % count == index)
            )  # fmt: skip
            self._audience = {key: members}  # one run at a time is in memory
        return members

    def _refresh_zones(self) -> dict[str, str]:
        """Every known customer's zone, with the rows changed since the last read."""
        started = time.time()
        default = self.processor.default_zone
        changed = self.processor.store.read(profile_zones_since, self._zones_read_at - 1.0)
        if self._zone_of is None:
            self._zone_of = {}
        for customer, profile in changed.items():
            self._zone_of[customer] = _zone_key(profile, default)
        for customer in self.processor.store.read(states_since, self._zones_read_at - 1.0):
            self._zone_of.setdefault(customer, _zone_key(None, default))
        self._zones_read_at = started
        return self._zone_of

    def _next_time(self, trigger: Trigger, zone: str, after: float) -> float:
        key = (trigger.id, zone, after)
        cached = self._next_times.get(key)
        if cached is None:
            if len(self._next_times) > 10_000:
                self._next_times.clear()
            cached = self._next_times[key] = _next_time(trigger, zone, after)
        return cached

    def _load_runs(self) -> dict[tuple[str, str], ScheduleRun]:
        if self._runs is None:
            self._runs = {}
            for run in self.processor.store.read(schedule_runs_of, self._worker_key):
                key = (run.trigger_id, run.zone)
                kept = self._runs.get(key)
                if (
                    kept is None
                    or run.status == "running"
                    or (kept.status != "running" and run.occurrence > kept.occurrence)
                ):
                    self._runs[key] = run
        return self._runs

    def _zones_of(self, trigger: Trigger) -> set[str]:
        schedule = trigger.spec.when.schedule
        if schedule is not None and schedule.timezone is not None:
            return {schedule.timezone}
        zone_of = self._zone_of if self._zone_of is not None else self._refresh_zones()
        return {*zone_of.values(), _zone_key(None, self.processor.default_zone)}

    def _scores(
        self, customers: Iterable[str], triggers: Iterable[Trigger]
    ) -> dict[str, dict[str, ScoreValue | None]]:
        source = self.processor.scores
        models: set[str] = set()
        for trigger in triggers:
            models |= trigger.score_models()
        if source is None or not models:
            return {}
        return source.fetch(list(customers), models)


class Window(Protocol):
    """An absence window: a stored timer (`DueTimer`) or one opened in the current batch."""

    @property
    def trigger_id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def due_at(self) -> float: ...
    @property
    def absent_event(self) -> str: ...
    @property
    def payload(self) -> str: ...


def close_window(
    processor: Processor,
    window: Window,
    trigger: Trigger | None,
    state: CustomerState,
    profile: Mapping[str, Any],
    scores: Mapping[str, ScoreValue | None],
) -> tuple[Decision | None, str]:
    """Decide a window at its deadline: the decision (None if none), and the timer's outcome."""
    if trigger is None or trigger.kind != "absence":
        return None, "dropped: the trigger is no longer an absence trigger"
    spoiler = absence_spoiler(state, window.absent_event, window.started_at, window.due_at)
    if spoiler is not None:
        return None, f"cancelled: {window.absent_event} at {_iso(spoiler)}"
    view = absence_view(
        window.event_id, window.customer_id, window.event_type, window.due_at, window.payload
    )
    p = processor
    decision = decide_trigger(trigger, view, profile, state, scores, p.policy, p.limits,
                              p.default_zone)  # fmt: skip
    if decision is None:
        return None, "not matched: if did not hold at the deadline"
    return decision, decision.outcome.value + (f": {decision.reason}" if decision.reason else "")


def _zone_key(profile: Mapping[str, Any] | None, default_zone: str) -> str:
    return str(customer_zone(profile or {}, default_zone).key)


def _seen(
    profiles: Mapping[str, dict[str, Any]], member_of: Mapping[str, Any], customer: str
) -> dict[str, Any]:
    profile = profiles.get(customer) or {"customer_id": customer}
    memberships = member_of.get(customer)
    return {**profile, "segments": memberships} if memberships else profile


def _next_time(trigger: Trigger, zone: str, after: float) -> float:
    schedule = trigger.spec.when.schedule
    assert schedule is not None
    return next_cron_time(schedule.cron, zone_named(zone), after)


def _previous_time(trigger: Trigger, zone: str, at: float) -> float | None:
    schedule = trigger.spec.when.schedule
    assert schedule is not None
    return previous_cron_time(schedule.cron, zone_named(zone), at)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
