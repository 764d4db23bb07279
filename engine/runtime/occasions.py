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

import json
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.decisions.cron import next_cron_time, previous_cron_time
from engine.decisions.decide import decide_trigger
from engine.decisions.predictive import absence_spoiler, absence_view, schedule_view
from engine.decisions.timezones import customer_zone, zone_named
from engine.dsl.conditions import ScoreValue
from engine.dsl.triggers import Trigger
from engine.store.customer_view import segments_of
from engine.store.customers import load_profiles
from engine.store.inbox import BUCKETS, customers_with_pending
from engine.store.schema import profiles as profiles_table
from engine.store.timers import (
    ScheduleRun,
    audience_page,
    due_timers,
    next_timer_due,
    schedule_runs_of,
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
        self._zones: set[str] | None = None

    # -- the loop's entry points ----------------------------------------------------------------

    def run(self, now: float) -> OccasionStats:
        """Fire the timers due by `now`, then run (a bounded part of) the schedules due."""
        stats = self.run_timers(now)
        if self.processor.index.schedules:
            stats.audience, fired = self.run_schedules(now)
            stats.fired += fired
        return stats

    def next_wake(self, now: float) -> float | None:
        """The next time something is due after `now`: a timer or a cron time (replay clock)."""
        store, worker = self.processor.store, self.processor.worker
        candidates = [t for t in (store.read(next_timer_due, worker),) if t is not None]
        if self.processor.index.schedules:
            runs = self._load_runs()
            for trigger in self.processor.index.schedules:
                for zone in self._zones_of(trigger):
                    key = (trigger.id, zone)
                    run = runs.get(key)
                    if run is not None and run.status == "running":
                        return now  # an audience is half way: finish it first
                    last = run.occurrence if run is not None else self._starts.get(key)
                    if last is None:
                        continue  # not seen yet: starts when first seen
                    candidates.append(_next_time(trigger, zone, last))
        return min(candidates) if candidates else None

    def note_profiles(self, changed: Iterable[Mapping[str, Any]]) -> None:
        """Keep the set of customers' zones current as profiles change (schedules run per zone)."""
        if self._zones is not None:
            default = self.processor.default_zone
            self._zones.update(str(customer_zone(p, default).key) for p in changed)

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
            trigger = triggers[timer.trigger_id]
            if trigger is None or trigger.kind != "absence":
                outcomes[timer.id] = "dropped: the trigger is no longer an absence trigger"
                continue
            state = states[timer.customer_id]
            spoiler = absence_spoiler(state, timer.absent_event, timer.started_at, timer.due_at)
            if spoiler is not None:
                outcomes[timer.id] = f"cancelled: {timer.absent_event} at {_iso(spoiler)}"
                continue
            profile = _seen(profiles, member_of, timer.customer_id)
            view = absence_view(
                timer.event_id, timer.customer_id, timer.event_type, timer.due_at, timer.payload
            )
            decision = decide_trigger(trigger, view, profile, state, scores.get(timer.customer_id, {}),
                                      p.policy, p.limits, p.default_zone)  # fmt: skip
            if decision is None:
                outcomes[timer.id] = "not matched: if did not hold at the deadline"
                continue
            decision_rows.append(p.decision_row(decision))
            action_rows.extend(p.action_rows(decision, view.at))
            outcomes[timer.id] = decision.outcome.value + (
                f": {decision.reason}" if decision.reason else ""
            )
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
        occurrence = _next_time(trigger, zone, after)
        if occurrence > now:
            return None
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
        ids = p.store.read(audience_page, run.cursor, self.page_size)
        done = len(ids) < self.page_size
        index, count = p.worker
        mine = [c for c in ids if count == 1 or zlib.crc32(c.encode()) % BUCKETS % count == index]
        profiles = p.store.read(load_profiles, mine) if mine else {}
        fixed_zone = trigger.spec.when.schedule.timezone if trigger.spec.when.schedule else None
        if fixed_zone is None:
            mine = [c for c in mine if _zone_key(profiles.get(c), p.default_zone) == run.zone]
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
                decision_rows.append(p.decision_row(decision))
                action_rows.extend(p.action_rows(decision, view.at))
                if decision.outcome.value == "fired":
                    fired += 1
                    changed[customer] = state.to_json()
        run = replace(
            run,
            cursor=ids[-1] if ids else run.cursor,
            customers=run.customers + len(mine),
            fired=run.fired + fired,
            status="done" if done else "running",
        )
        p.commit(
            decision_rows=decision_rows, action_rows=action_rows, states=changed, schedule_run=run
        )
        if done:
            log.info("schedule %s (%s) at %s: %d customers, %d fired", trigger.id, run.zone,
                     _iso(run.occurrence), run.customers, run.fired)  # fmt: skip
        return run, len(mine), fired

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
        if self._zones is None:
            self._zones = {str(zone_named(self.processor.default_zone).key)}
            self._zones.update(
                self.processor.store.read(_profile_zones, self.processor.default_zone)
            )
        return self._zones

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


def _profile_zones(conn: Any, default_zone: str) -> set[str]:
    """Every zone the stored profiles resolve to (read once; then kept current per batch)."""
    zones = set()
    for (data,) in conn.execute(profiles_table.select().with_only_columns(profiles_table.c.data)):
        try:
            profile = json.loads(data)
        except ValueError:
            continue
        if isinstance(profile, dict):
            zones.add(str(customer_zone(profile, default_zone).key))
    return zones


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
