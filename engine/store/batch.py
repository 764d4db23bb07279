"""One processed batch, committed as a whole: the unit of exactly-once processing.

Decisions, planned actions, customer state and profiles, dead letters and the events' status go
into the caller's transaction together — a crash before its commit leaves the events pending (they
are processed again, to the same outcome), a crash after it leaves them done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from engine.store import customers, dead_letters, execution_log, identity, inbox, outbox, timers
from engine.store.timers import ScheduleRun

__all__ = ["commit_batch"]


def commit_batch(
    conn: Connection,
    *,
    processed: Sequence[str],
    dead: Sequence[Mapping[str, Any]],
    decision_rows: Sequence[Mapping[str, Any]],
    action_rows: Sequence[Mapping[str, Any]],
    states: Mapping[str, Mapping[str, Any]],
    profile_updates: Mapping[str, Mapping[str, Any]],
    now: float,
    merges: Sequence[tuple[str, str]] = (),
    timers_opened: Sequence[Mapping[str, Any]] = (),
    timers_finished: Mapping[int, str] | None = None,
    schedule_run: ScheduleRun | None = None,
    processed_as: Mapping[int, str] | None = None,
) -> None:
    """Record what processing a batch of inbox events gave, in `conn`'s transaction.

    `dead` are dead-letter rows of events that could not be processed (event_id, payload, reason,
    source); `processed` the ids of the others. `merges` are (source, target) customers merged
    by identify / alias in this batch, in order: the source's rows become the target's
    (engine.store.identity.merge_customer) before the states are saved. `timers_opened` are the
    absence windows the batch's events open, `timers_finished` the timers it ended (id →
    outcome), `schedule_run` the progress of the scheduled audience it decided a page of;
    `processed_as` (inbox seq → customer, in place of `processed`) marks them by the inbox's
    integer key and checks that no event changed hands meanwhile.
    """
    execution_log.record_decisions(conn, decision_rows)
    outbox.plan_actions(conn, action_rows)
    for source, target in merges:
        identity.merge_customer(conn, source, target, merged_state=None, now=now)
    customers.save_states(conn, states, now)
    customers.upsert_profiles(conn, profile_updates, now)
    if dead:
        dead_letters.add_dead_letters(conn, dead, now)
        inbox.mark_dead(conn, [d["event_id"] for d in dead], now)
    if processed_as is not None:
        inbox.mark_processed_as(conn, processed_as, now)  # StaleBatch: rolled back, read again
    else:
        inbox.mark_processed(conn, processed, now)
    timers.add_timers(conn, timers_opened)
    if timers_finished:
        timers.finish_timers(conn, timers_finished, now)
    if schedule_run is not None:
        timers.save_schedule_run(conn, schedule_run, now)
