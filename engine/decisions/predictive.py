"""Triggers that start without an incoming event: closed absence windows, scheduled audiences,
score crossings — the pure part (what to open, whether a window was spoiled, what crossed).

Each of them ends in `engine.decisions.decide.decide_trigger` with an *occasion*: an `EventView`
whose id makes the decision and its actions idempotent, so the runtime can run an occasion again
after a crash and change nothing:

- an absence window: the first event itself (its id, its fields), at the window's end;
- a schedule: ``schedule:<trigger>:<cron time>:<hash of the customer>``, at the cron time;
- a score crossing: the score-refresh event that carried the new score.

A score refresh is an inbox event of type ``score_refreshed`` (the `score_batch` flow writes one
per customer and refresh): it goes through acceptance, per-customer order, identity merges and
erasure like any other event, and the processor compares its scores with the last ones kept in
the customer's state.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.decisions.decide import EventView
from engine.decisions.state import CustomerState
from engine.dsl.conditions import EvaluationContext, Outcome, ScoreValue
from engine.dsl.triggers import Trigger, TriggerIndex

__all__ = [
    "SCHEDULE_EVENT_TYPE",
    "SCORE_REFRESH_EVENT",
    "AbsenceTimer",
    "Crossing",
    "absence_spoiler",
    "absence_timers",
    "absence_view",
    "apply_refresh",
    "refreshed_scores",
    "schedule_view",
]

SCORE_REFRESH_EVENT = "score_refreshed"
SCHEDULE_EVENT_TYPE = "schedule"


@dataclass(frozen=True)
class AbsenceTimer:
    """A window opened by a first event: decide `trigger_id` at `due_at` unless `absent_event`
    happens first."""

    trigger_id: str
    customer_id: str
    event_id: str
    event_type: str
    started_at: float
    due_at: float
    absent_event: str
    payload: str  # the first event's fields, as JSON

    def row(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class Crossing:
    """A refreshed score that crossed a `score_crosses` trigger's line."""

    trigger: Trigger
    model: str
    previous: float | None
    current: float


def absence_timers(
    event: EventView, ctx: EvaluationContext, index: TriggerIndex
) -> list[AbsenceTimer]:
    """The windows `event` opens: one per absence trigger on its type whose `where` holds."""
    opened = []
    for trigger in index.absences_by_event_type.get(event.event_type, ()):
        if trigger.where is not None and trigger.where.check(ctx) is not Outcome.PASSED:
            continue
        absent = trigger.spec.when.then_absent
        assert absent is not None
        opened.append(
            AbsenceTimer(
                trigger.id,
                event.customer_id,
                event.event_id,
                event.event_type,
                event.at,
                event.at + absent.within.total_seconds(),
                absent.event,
                json.dumps(dict(event.fields), default=str),
            )
        )
    return opened


def absence_spoiler(
    state: CustomerState, absent_event: str, started_at: float, due_at: float
) -> float | None:
    """When the awaited event happened inside the window (started_at, due_at], or None."""
    return next((t for t in state.times(absent_event) if started_at < t <= due_at), None)


def absence_view(
    event_id: str, customer_id: str, event_type: str, due_at: float, payload: str
) -> EventView:
    """The occasion of a closed window: the first event, seen at the window's end."""
    fields = json.loads(payload)
    return EventView(event_id, customer_id, event_type, due_at, None, fields)


def schedule_view(trigger: Trigger, customer_id: str, occurrence: float) -> EventView:
    """The occasion of one customer in a scheduled audience at one cron time."""
    digest = hashlib.sha256(customer_id.encode()).hexdigest()[:16]
    event_id = f"schedule:{trigger.id}:{int(occurrence)}:{digest}"
    schedule = trigger.spec.when.schedule
    assert schedule is not None
    fields = {"properties": {"cron": schedule.cron, "occurrence": occurrence}}
    return EventView(event_id, customer_id, SCHEDULE_EVENT_TYPE, occurrence, None, fields)


def refreshed_scores(fields: Mapping[str, Any], at: float) -> dict[str, ScoreValue]:
    """The scores a ``score_refreshed`` event carries: ``properties.scores`` =
    ``{model: {"value": float, "model_version": str, "features_at": epoch?}}``.

    Raises ValueError naming the model and the field for anything else, so the event goes to
    the dead letters with the reason.
    """
    scores = (fields.get("properties") or {}).get("scores")
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("properties.scores: expected {model: {value, model_version}}")
    out = {}
    for model, body in scores.items():
        if not isinstance(body, Mapping):
            raise ValueError(f"properties.scores.{model}: expected {{value, model_version}}")
        value = body.get("value")
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"properties.scores.{model}.value: expected a number (got {value!r})")
        features_at = body.get("features_at")
        if features_at is not None and not isinstance(features_at, int | float):
            raise ValueError(f"properties.scores.{model}.features_at: expected epoch seconds")
        out[str(model)] = ScoreValue(
            float(value), str(body.get("model_version") or ""), at,
            features_at=None if features_at is None else float(features_at),
        )  # fmt: skip
    return out


def apply_refresh(
    index: TriggerIndex, state: CustomerState, scores: Mapping[str, ScoreValue], at: float
) -> list[Crossing]:
    """Compare refreshed scores with the last ones in `state`, keep them, and return the
    crossings of `score_crosses` triggers (highest priority first). A refresh older than the
    kept score (a late batch) is ignored: scores only move forward in time."""
    crossings = []
    for model, score in scores.items():
        kept = state.last_scores.get(model)
        if kept is not None and kept[2] > at:
            continue
        previous = kept[0] if kept is not None else None
        state.last_scores[model] = (score.value, score.model_version, at)
        for trigger in index.crossings_by_model.get(model, ()):
            crosses = trigger.spec.when.score_crosses
            assert crosses is not None
            if crosses.crossed(previous, score.value):
                crossings.append(Crossing(trigger, model, previous, score.value))
    crossings.sort(key=lambda c: (-c.trigger.rank, c.trigger.id))
    return crossings
