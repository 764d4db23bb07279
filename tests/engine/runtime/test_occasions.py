"""Predictive triggers on the replay clock, on SQLite and the real PostgreSQL: absence timers,
scheduled audiences in each customer's zone, score crossings, and `at: best_send_hour`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.conditions import ScoreValue
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.inbox import accept_events
from engine.runtime.loop import EngineLoop, EventClock
from engine.runtime.metrics import EngineMetrics
from engine.runtime.processor import Processor
from engine.store import schema
from engine.store.customers import upsert_profiles
from engine.store.dead_letters import list_dead_letters
from engine.store.execution_log import list_decisions
from engine.store.outbox import list_actions

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # a Monday, winter time in Europe and America
H = 3600.0


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def ev(event_id: str, customer: str, event_type: str, hours: float, **props):
    return {"event_id": event_id, "customer_id": customer, "event_type": event_type,
            "timestamp": at(hours), "properties": props}  # fmt: skip


def index_of(text: str) -> TriggerIndex:
    result = load_trigger_text(text)
    assert not result.issues, [str(i) for i in result.issues]
    return TriggerIndex(result.triggers)


def profiles(store, **zones: str | None) -> None:
    store.write(
        upsert_profiles,
        {
            c: {
                "customer_id": c,
                "email": f"{c}@example.com",
                "consent_email": True,
                **({"timezone": z} if z else {}),
            }
            for c, z in zones.items()
        },
        0.0,
    )


class Scores:
    """A scoring service in memory: fixed scores, and the batches it was asked for."""

    def __init__(self, values: dict[str, dict[str, ScoreValue]]) -> None:
        self.values = values
        self.calls: list[tuple[list[str], set[str]]] = []

    def fetch(
        self, customer_ids: Iterable[str], models: Iterable[str]
    ) -> dict[str, dict[str, ScoreValue | None]]:
        ids, wanted = list(customer_ids), set(models)
        self.calls.append((ids, wanted))
        return {c: {m: self.values.get(c, {}).get(m) for m in wanted} for c in ids}


def replay(store, index, scores=None, **options) -> Processor:
    processor = Processor(store, index, policy=SuppressionPolicy(quiet_start=_t(23), quiet_end=_t(5)),
                          scores=scores, **options)  # fmt: skip
    EngineLoop(processor, None, clock=EventClock()).run(until_idle=True)
    return processor


def _t(hour: int):
    from datetime import time

    return time(hour, 0)


def decisions_of(store, trigger: str):
    return [d for d in store.read(list_decisions) if d.trigger_id == trigger]


ABSENCE = """
id: cart_no_checkout
when:
  event: cart_add
  where: {properties.value: {gte: 10}}
  then_absent: {event: checkout_started, within: 1h}
actions:
  - send_email: {template: cart_reminder}
"""


def test_absence_fires_when_the_window_closes_without_the_event_never_when_it_comes(engine_store):
    profiles(engine_store, a="UTC", b="UTC", c="UTC", d="UTC", z="UTC")
    accept_events(engine_store, [
        ev("a1", "a", "cart_add", 0, value=30),             # nothing follows: fires at +1h
        ev("b1", "b", "cart_add", 0, value=30),
        ev("b2", "b", "checkout_started", 0.5),             # inside the window: never fires
        ev("c1", "c", "cart_add", 0, value=30),
        ev("c2", "c", "checkout_started", 1.5),             # after the window: fires anyway
        ev("d1", "d", "cart_add", 0, value=5),              # `where` does not hold: no timer
        ev("z1", "z", "page_view", 3),                      # replay time goes on past the deadline
    ], source="test")  # fmt: skip
    replay(engine_store, index_of(ABSENCE))

    fired = decisions_of(engine_store, "cart_no_checkout")
    assert {(d.customer_id, d.event_id, d.outcome) for d in fired} == {
        ("a", "a1", "fired"),
        ("c", "c1", "fired"),
    }
    [action] = [a for a in engine_store.read(list_actions) if a.customer_id == "a"]
    assert action.due_at == pytest.approx((T0 + timedelta(hours=1)).timestamp())
    timers = {
        row.customer_id: (row.status, row.outcome)
        for row in engine_store.read(lambda conn: list(conn.execute(sa.select(schema.timers))))
    }
    assert timers["a"] == ("done", "fired")
    assert timers["b"][0] == "done" and timers["b"][1].startswith("cancelled: checkout_started at")
    assert "d" not in timers


def test_an_absence_is_not_decided_before_its_deadline(engine_store):
    profiles(engine_store, a="UTC", z="UTC")
    accept_events(engine_store, [ev("a1", "a", "cart_add", 0, value=30), ev("z1", "z", "page_view", 0.5)],
                  source="test")  # fmt: skip
    processor = replay(engine_store, index_of(ABSENCE))
    assert decisions_of(engine_store, "cart_no_checkout") == []  # replay time is +30 min
    assert "nudge_engine_absence_timers 1.0" in EngineMetrics(engine_store).render().decode()
    # Wall time past the deadline: the timer fires once, and again changes nothing.
    late = (T0 + timedelta(hours=2)).timestamp()
    assert processor.run_occasions(late).fired == 1
    assert processor.run_occasions(late).timers == 0
    assert len(decisions_of(engine_store, "cart_no_checkout")) == 1


def test_a_timer_waits_for_the_customers_events_still_in_the_inbox(engine_store):
    profiles(engine_store, a="UTC")
    index = index_of(ABSENCE)
    accept_events(engine_store, [ev("a1", "a", "cart_add", 0, value=30)], source="test")
    processor = Processor(engine_store, index)
    processor.run_once()
    # The checkout happened inside the window but is still queued when the deadline passes.
    accept_events(engine_store, [ev("a2", "a", "checkout_started", 0.5)], source="test")
    late = (T0 + timedelta(hours=2)).timestamp()
    assert processor.run_occasions(late).timers == 0
    processor.run_once()
    processor.run_occasions(late)
    assert decisions_of(engine_store, "cart_no_checkout") == []


SCHEDULE = """
id: winback
when: {schedule: {cron: "0 10 * * *"}}
if: {score: {model: churn, gte: 0.7, max_age: 7d, on_missing: skip}}
actions:
  - send_email: {template: winback_offer}
"""


def test_a_schedule_runs_for_every_known_customer_at_the_cron_time_in_their_own_zone(engine_store):
    profiles(engine_store, paris="Europe/Paris", ny="America/New_York", low="Europe/Paris",
             unscored="Europe/Paris")  # fmt: skip
    scores = Scores({
        c: {"churn": ScoreValue(v, "3", T0.timestamp())} for c, v in (("paris", 0.9), ("ny", 0.8), ("low", 0.2))
    })  # fmt: skip
    # Events span two days; the schedule's customers send none at its time.
    accept_events(engine_store, [ev("x1", "paris", "page_view", 0), ev("x2", "ny", "page_view", 40)],
                  source="test")  # fmt: skip
    replay(engine_store, index_of(SCHEDULE), scores)

    runs = {(d.customer_id, d.outcome): d for d in decisions_of(engine_store, "winback")}
    fired = sorted(c for c, outcome in runs if outcome == "fired")
    assert fired == ["ny", "paris"]
    sends = sorted(
        (a.customer_id, datetime.fromtimestamp(a.due_at, ZoneInfo("UTC")))
        for a in engine_store.read(list_actions)
    )
    # 10:00 in Paris is 09:00 UTC, in New York 15:00 UTC; each day the replay covers.
    assert ("paris", datetime(2026, 1, 5, 9, 0, tzinfo=UTC)) in sends
    assert ("paris", datetime(2026, 1, 6, 9, 0, tzinfo=UTC)) in sends
    assert ("ny", datetime(2026, 1, 5, 15, 0, tzinfo=UTC)) in sends
    assert {c for c, _ in sends} == {"paris", "ny"}
    skipped = [d for d in decisions_of(engine_store, "winback") if d.customer_id == "unscored"]
    assert skipped and all(d.outcome == "skipped" and "churn" in d.reason for d in skipped)
    assert all(len(ids) <= 1000 for ids, _ in scores.calls)


def test_a_schedule_in_a_fixed_zone_pages_through_the_audience_and_resumes(engine_store):
    customers = {f"c{i:03d}": None for i in range(7)}
    profiles(engine_store, **customers)
    scores = Scores({c: {"churn": ScoreValue(0.9, "3", T0.timestamp())} for c in customers})
    index = index_of(SCHEDULE.replace('"0 10 * * *"}', '"30 8 * * *", timezone: UTC}'))
    accept_events(engine_store, [ev("x1", "c000", "page_view", 0), ev("x2", "c001", "page_view", 2)],
                  source="test")  # fmt: skip
    processor = Processor(engine_store, index, scores=scores)
    processor.occasions.page_size, processor.occasions.pages_per_run = 3, 1
    clock = EventClock()
    loop = EngineLoop(processor, None, clock=clock)
    processor.run_once(until=(T0 + timedelta(minutes=1)).timestamp())
    processor.run_occasions((T0 + timedelta(minutes=1)).timestamp())  # first sight: 08:01
    processor.run_occasions((T0 + timedelta(minutes=31)).timestamp())  # one page of three
    assert len(decisions_of(engine_store, "winback")) == 3
    # A restart (a new processor, nothing in memory) resumes after the committed page.
    again = Processor(engine_store, index, scores=scores)
    again.occasions.page_size = 3
    again.run_occasions((T0 + timedelta(minutes=32)).timestamp())
    decided = decisions_of(engine_store, "winback")
    assert sorted(d.customer_id for d in decided) == sorted(customers)
    assert max(len(ids) for ids, _ in scores.calls) <= 3
    [run] = engine_store.read(lambda conn: list(conn.execute(sa.select(schema.schedule_runs))))
    assert (run.status, run.customers, run.fired) == ("done", 7, 7)
    del loop


CROSSING = """
id: vip_by_prediction
when: {score_crosses: {model: ltv, above: 500}}
actions:
  - add_to_segment: {segment: vip}
"""


def refresh(event_id: str, customer: str, hours: float, value, model: str = "ltv"):
    return ev(event_id, customer, "score_refreshed", hours,
              scores={model: {"value": value, "model_version": "7"}})  # fmt: skip


def test_a_score_crossing_fires_when_a_refreshed_score_crosses_the_line(engine_store):
    profiles(engine_store, a="UTC", b="UTC")
    accept_events(engine_store, [
        refresh("r1", "a", 0, 320.0),    # below: nothing
        refresh("r2", "a", 24, 640.0),   # crosses: fires
        refresh("r3", "a", 48, 700.0),   # still above: nothing
        refresh("r4", "a", 72, 410.0),   # back below
        refresh("r5", "a", 96, 505.0),   # crosses again: fires
        refresh("r6", "b", 0, 900.0),    # first score already above: fires
        refresh("bad", "b", 24, "high"), # not a number: dead-lettered with the reason
    ], source="test")  # fmt: skip
    replay(engine_store, index_of(CROSSING))
    fired = [(d.customer_id, d.event_id) for d in decisions_of(engine_store, "vip_by_prediction")]
    assert sorted(fired) == [("a", "r2"), ("a", "r5"), ("b", "r6")]
    [dead] = engine_store.read(list_dead_letters)
    assert (
        dead.event_id == "bad" and "properties.scores.ltv.value: expected a number" in dead.reason
    )


BEST_HOUR = """
id: tips
when: {event: signup}
actions:
  - send_email: {template: welcome}
    at: best_send_hour
  - send_email: {template: welcome_tips}
    delay: 1d
    at: {best_send_hour: true, fallback_hour: 18}
"""


def test_best_send_hour_times_the_action_from_the_engagement_model(engine_store):
    profiles(engine_store, a="Europe/Paris", b="Europe/Paris")
    scores = Scores({"a": {"engagement": ScoreValue(0.4, "2", T0.timestamp(), best_send_hour=19)}})
    accept_events(engine_store, [ev("s1", "a", "signup", 0), ev("s2", "b", "signup", 0)],
                  source="test")  # fmt: skip
    replay(engine_store, index_of(BEST_HOUR), scores)
    paris = ZoneInfo("Europe/Paris")
    due = {
        (a.customer_id, a.action_index): datetime.fromtimestamp(a.due_at, paris)
        for a in engine_store.read(list_actions)
    }
    assert due[("a", 0)] == datetime(2026, 1, 5, 19, 0, tzinfo=paris)  # today at their hour
    assert due[("a", 1)] == datetime(2026, 1, 6, 19, 0, tzinfo=paris)
    assert due[("b", 0)] == datetime(2026, 1, 5, 10, 0, tzinfo=paris)  # no score: the default
    assert due[("b", 1)] == datetime(2026, 1, 6, 18, 0, tzinfo=paris)  # the action's fallback
    assert {"engagement"} <= {m for _, models in scores.calls for m in models}


def test_trigger_files_refuse_broken_predictive_forms_with_their_lines():
    text = """
id: broken
when:
  schedule: {cron: "0 25 * * *", timezone: Mars/Base}
actions:
  - send_email: {template: welcome}
    at: {best_send_hour: true, fallback_hour: 24}
---
id: two_starts
when: {event: signup, score_crosses: {model: churn, above: 0.5}}
actions: [{send_email: {template: welcome}}]
---
id: both_sides
when: {score_crosses: {model: churn, above: 0.5, below: 0.2}}
actions: [{send_email: {template: welcome}}]
---
id: open_window
when: {event: cart_add, then_absent: {event: checkout_started, within: 0s}}
actions: [{send_email: {template: welcome}}]
"""
    issues = [str(i) for i in load_trigger_text(text, "t.yaml").issues]
    joined = "\n".join(issues)
    assert "t.yaml:4: when.schedule.cron: not a cron expression: Bad hour" in joined
    assert "when.schedule.timezone: expected an IANA time zone" in joined
    assert "t.yaml:7: actions[0].at:" in joined
    assert (
        "when needs exactly one of event, schedule or score_crosses (got event, score_crosses)"
        in joined
    )
    assert "score_crosses needs exactly one of above or below" in joined
    assert "when.then_absent.within: expected a duration above 0" in joined


def test_erasure_and_merges_take_the_timers_along(engine_store):
    from engine.store.erasure import erase_rows
    from engine.store.identity import merge_customer

    profiles(engine_store, a="UTC", anon="UTC")
    accept_events(engine_store, [ev("a1", "a", "cart_add", 0, value=30),
                                 ev("n1", "anon", "cart_add", 0, value=30)], source="test")  # fmt: skip
    Processor(engine_store, index_of(ABSENCE)).run_once()
    engine_store.write(merge_customer, "anon", "a", merged_state=None, now=0.0)
    rows = engine_store.read(lambda conn: list(conn.execute(sa.select(schema.timers))))
    assert {r.customer_id for r in rows} == {"a"}
    erased = engine_store.write(erase_rows, "a", "hash", 0.0)
    assert erased.counts["timers"] == 2
    assert engine_store.read(lambda conn: list(conn.execute(sa.select(schema.timers)))) == []
    assert json.dumps(erased.counts)
