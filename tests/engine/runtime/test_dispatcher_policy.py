"""The suppression policy at the send moment: every action of a plan passes consent, quiet hours
and the channel's caps when it really goes, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.decisions.suppression import ChannelCap, SuppressionPolicy
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import update_profile, upsert_profiles
from engine.store.outbox import list_actions
from engine.store.sends import sends_in_windows

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # 11:00 in Berlin
PROFILE = {"customer_id": "c1", "email": "ada@example.com", "first_name": "Ada",
           "consent_email": True, "timezone": "Europe/Berlin"}  # fmt: skip


def at(hours: float) -> float:
    return (T0 + timedelta(hours=hours)).timestamp()


def engine(store, tmp_path, triggers: str, policy: SuppressionPolicy | None = None):
    result = load_trigger_text(triggers)
    assert not result.issues, [str(i) for i in result.issues]
    index = TriggerIndex(result.triggers)
    store.write(upsert_profiles, {"c1": PROFILE}, 0.0)
    email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=tmp_path / "outbox")
    dispatcher = Dispatcher(
        store, index, email=email, webhooks=WebhookSender("s" * 32), policy=policy,
        default_zone="UTC",
    )  # fmt: skip
    return Processor(store, index, policy=policy), dispatcher


def fire(store, processor, event_type="cart_abandoned", hours=0.0, event_id="e1"):
    event = {"event_id": event_id, "customer_id": "c1", "event_type": event_type,
             "timestamp": (T0 + timedelta(hours=hours)).isoformat(), "properties": {}}  # fmt: skip
    accept_events(store, [event], source="t")
    processor.run_until_empty()


def actions(store):
    return [(a.action_index, a.status, a.result) for a in store.read(list_actions)]


SERIES = """
id: series
when: {event: cart_abandoned}
actions:
  - send_email: {template: cart_reminder}
  - send_email: {template: cart_reminder}
    delay: 6h
"""


def test_email_2_of_a_plan_on_a_capped_day_is_suppressed_at_its_due_time(engine_store, tmp_path):
    processor, dispatcher = engine(engine_store, tmp_path, SERIES)
    fire(engine_store, processor)
    assert dispatcher.run_due(at(0.01)).outcomes == {"sent": 1}
    # 17:00 in Berlin, the same local day as email #1: the daily cap of 1 holds it.
    assert dispatcher.run_due(at(6.01)).outcomes == {"cancelled": 1}
    assert actions(engine_store)[1] == (
        1, "cancelled",
        "frequency_cap: 1 email already sent on 2026-03-04 (local; cap 1 a day)",
    )  # fmt: skip


def test_email_2_in_quiet_hours_in_the_zone_of_its_send_moment_waits_for_their_end(
    engine_store, tmp_path
):
    processor, dispatcher = engine(engine_store, tmp_path, SERIES)
    fire(engine_store, processor)
    assert dispatcher.run_due(at(0.01)).outcomes == {"sent": 1}  # 19:00 in Tokyo
    # The customer moved: 16:00 UTC is 01:00 in Tokyo, inside quiet hours; it goes at 08:00
    # Tokyo (23:00 UTC), a new local day there, so the daily cap lets it through.
    engine_store.write(update_profile, "c1", {"timezone": "Asia/Tokyo"}, at(1))
    assert dispatcher.run_due(at(6.01)).outcomes == {"deferred": 1}
    [second] = [a for a in engine_store.read(list_actions) if a.action_index == 1]
    assert (second.status, second.next_attempt_at) == ("pending", at(13))
    assert second.result == (
        "quiet_hours: 01:00 (local) is inside quiet hours 21:00-08:00; "
        "deferred to 2026-03-05T08:00:00+09:00"
    )
    assert dispatcher.run_due(at(12.9)).handled == 0
    assert dispatcher.run_due(at(13)).outcomes == {"sent": 1}
    assert [status for _, status, _ in actions(engine_store)] == ["sent", "sent"]


def test_a_trigger_that_drops_in_quiet_hours_cancels_a_late_send(engine_store, tmp_path):
    processor, dispatcher = engine(engine_store, tmp_path, SERIES.replace(
        "id: series", "id: series\nquiet_hours: drop"))  # fmt: skip
    fire(engine_store, processor)
    # The dispatcher was down: both emails (due 11:00 and 17:00) run at 22:30 in Berlin.
    assert dispatcher.run_due(at(11.5)).outcomes == {"cancelled": 2}
    reason = "quiet_hours: 22:30 (local) is inside quiet hours 21:00-08:00; this trigger drops"
    assert actions(engine_store) == [(0, "cancelled", reason), (1, "cancelled", reason)]


def test_quiet_hours_ignore_and_transactional_triggers_skip_the_rules(engine_store, tmp_path):
    triggers = """
- id: receipt
  category: transactional
  when: {event: payment_failed}
  actions:
    - send_email: {template: payment_failed}
    - send_email: {template: payment_failed}
      delay: 1h
- id: loud
  quiet_hours: ignore
  policy: {caps: {email: {per_local_day: 5}}}
  when: {event: cart_abandoned}
  actions: [{send_email: {template: cart_reminder}, delay: 11h}]
"""
    processor, dispatcher = engine(engine_store, tmp_path, triggers)
    fire(engine_store, processor, "payment_failed")
    fire(engine_store, processor, "cart_abandoned", event_id="e2")
    assert dispatcher.run_due(at(0.01)).outcomes == {"sent": 1}
    assert dispatcher.run_due(at(1.01)).outcomes == {"sent": 1}, "transactional: no cap"
    # 22:00 in Berlin, two emails already today: `ignore` skips quiet hours, its own cap is 5.
    assert dispatcher.run_due(at(11.01)).outcomes == {"sent": 1}


def test_rolling_windows_count_what_was_really_sent(engine_store, tmp_path):
    policy = SuppressionPolicy(
        caps={"email": ChannelCap(per_local_day=None, rolling=((7 * 86400.0, 2),))}
    )
    triggers = """
id: weekly
when: {event: cart_abandoned}
actions:
  - send_email: {template: cart_reminder}
  - send_email: {template: cart_reminder}
    delay: 1d
  - send_email: {template: cart_reminder}
    delay: 2d
  - send_email: {template: cart_reminder}
    delay: 8d
"""
    processor, dispatcher = engine(engine_store, tmp_path, triggers, policy)
    fire(engine_store, processor)
    for day in (0, 1, 2, 8):
        dispatcher.run_due(at(24 * day + 0.01))
    assert [(i, s) for i, s, _ in actions(engine_store)] == [
        (0, "sent"), (1, "sent"), (2, "cancelled"), (3, "sent"),
    ]  # fmt: skip
    assert actions(engine_store)[2][2] == "frequency_cap: 2 email sent in the last 1w (cap 2)"
    # sent (and in-doubt) actions count from when they went, in [start, end) windows.
    assert engine_store.read(
        sends_in_windows, "c1", "email", [(at(0), at(24.02)), (at(47), at(49))]
    ) == [2, 0]
    assert engine_store.read(sends_in_windows, "c1", "sms", [(at(0), at(999))]) == [0]


def test_the_consent_flag_is_the_one_the_policy_names(engine_store, tmp_path):
    decided = SuppressionPolicy(consent_fields={"email": "consent_email"})
    processor, _ = engine(engine_store, tmp_path, SERIES, decided)
    fire(engine_store, processor)
    renamed = SuppressionPolicy(consent_fields={"email": "newsletter_optin"}, quiet_start=time(0),
                                quiet_end=time(0))  # fmt: skip
    _, dispatcher = engine(engine_store, tmp_path, SERIES, renamed)
    assert dispatcher.run_due(at(0.01)).outcomes == {"cancelled": 1}
    assert actions(engine_store)[0][2] == "no_consent: newsletter_optin withdrawn before sending"


def test_a_backlog_sent_late_counts_each_send_on_the_day_it_was_due(engine_store, tmp_path):
    triggers = SERIES.replace("delay: 6h", "delay: 1d")
    processor, dispatcher = engine(engine_store, tmp_path, triggers)
    fire(engine_store, processor)
    # The dispatcher was down for two days: both go in one run, each within its own day's cap.
    assert dispatcher.run_due(at(48)).outcomes == {"sent": 2}


@pytest.mark.parametrize("prefetch", ["batch", "failed"])
def test_sends_of_the_same_run_count_against_each_other(
    engine_store, tmp_path, monkeypatch, prefetch
):
    processor, dispatcher = engine(engine_store, tmp_path, SERIES)
    fire(engine_store, processor)
    if prefetch == "failed":  # the prefetch of sends fails: each send asks the store itself

        def broken(*_args):
            raise RuntimeError("prefetch down")

        monkeypatch.setattr("engine.runtime.dispatcher.send_times", broken)
    # Both emails due by 17:00 Berlin, in one run: the first counts against the second.
    assert dispatcher.run_due(at(6.01)).outcomes == {"sent": 1, "cancelled": 1}
    assert actions(engine_store)[1][1:] == (
        "cancelled", "frequency_cap: 1 email already sent on 2026-03-04 (local; cap 1 a day)",
    )  # fmt: skip
