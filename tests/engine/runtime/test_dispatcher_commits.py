"""One commit per email: a delivery's *sent* rides in the next delivery's *sending* commit
(channels that never resend what is in doubt), and the batch's last is written at its end; and
group commit: `group_size` deliveries marked *sending* in one commit before any of their dots."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.channels.base import DeliveryError
from engine.channels.email import EmailSettings, RenderedEmail
from engine.channels.email_channel import EmailChannel
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_text
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import upsert_profiles
from engine.store.outbox import list_actions

TEMPLATES = Path(__file__).resolve().parents[3] / "engine" / "templates"
T0 = 1_780_000_000.0
TRIGGERS = """
- id: payment_failure
  category: transactional
  quiet_hours: ignore
  when: {event: payment_failed}
  actions:
    - send_email: {template: payment_failed}
"""


class Probe:
    """A transport that, at each point of no return, notes every action's status just before
    and just after the *sending* commit."""

    def __init__(self, store) -> None:
        self.store = store
        self.seen: list[tuple[dict[int, str], dict[int, str]]] = []

    def statuses(self) -> dict[int, str]:
        return {a.id: a.status for a in self.store.read(list_actions)}

    def send(self, email: RenderedEmail, before_commit: Callable[[], None]) -> str:
        before = self.statuses()
        before_commit()
        self.seen.append((before, self.statuses()))
        return f"probe {email.message_id}"


def fill(store, n: int) -> TriggerIndex:
    index = TriggerIndex(load_trigger_text(TRIGGERS).triggers)
    store.write(upsert_profiles, {f"c{i}": {"customer_id": f"c{i}", "email": f"c{i}@example.com",
                                            "first_name": f"C{i}"} for i in range(n)}, T0 - 60)  # fmt: skip
    events = [{"event_id": f"e{i}", "customer_id": f"c{i}", "event_type": "payment_failed",
               "timestamp": T0, "properties": {"order_id": f"o{i}"}} for i in range(n)]  # fmt: skip
    accept_events(store, events, source="t")
    Processor(store, index).run_until_empty()
    return index


def dispatcher(store, index: TriggerIndex, probe: Probe, settle: str, group: int = 1) -> Dispatcher:
    settings = EmailSettings(templates_dir=TEMPLATES, sender="shop <billing@shop.example>")
    channel = EmailChannel(settings, mailer=probe)  # type: ignore[arg-type]
    channel.settle_in_doubt = settle
    return Dispatcher(store, index, email=settings, webhooks=WebhookSender("s" * 32),
                      channels={"send_email": channel}, group_size=group)  # fmt: skip


def test_the_previous_sent_is_committed_with_the_next_sending(engine_store):
    index = fill(engine_store, 3)
    probe = Probe(engine_store)
    stats = dispatcher(engine_store, index, probe, "unconfirmed").run_due(T0 + 60)
    assert stats.outcomes["sent"] == 3
    ids = [a.id for a in engine_store.read(list_actions)]
    (b0, a0), (b1, a1), (b2, a2) = probe.seen
    assert b0[ids[0]] == "claimed" and a0[ids[0]] == "sending"
    # The first email's sent is not a commit of its own: it arrives with the second's sending.
    assert b1[ids[0]] == "sending" and a1[ids[0]] == "sent" and a1[ids[1]] == "sending"
    assert b2[ids[1]] == "sending" and a2[ids[1]] == "sent" and a2[ids[2]] == "sending"
    # The batch's last is written when the batch ends.
    assert {a.status for a in engine_store.read(list_actions)} == {"sent"}


def test_a_channel_that_resends_in_doubt_records_each_sent_at_once(engine_store):
    index = fill(engine_store, 2)
    probe = Probe(engine_store)
    dispatcher(engine_store, index, probe, "pending").run_due(T0 + 60)
    ids = [a.id for a in engine_store.read(list_actions)]
    (_, _), (b1, _) = probe.seen
    assert b1[ids[0]] == "sent"  # written on its own, before the next email starts


def test_a_crash_before_the_next_commit_leaves_the_email_unconfirmed_never_resent(engine_store):
    index = fill(engine_store, 1)
    probe = Probe(engine_store)
    first = dispatcher(engine_store, index, probe, "unconfirmed")
    first._record_sent = lambda: None  # type: ignore[method-assign]  # the process dies here
    first.run_due(T0 + 60)
    [action] = engine_store.read(list_actions)
    assert action.status == "sending"
    again = dispatcher(engine_store, index, probe, "unconfirmed")
    again.recover()
    again.run_due(T0 + 120)
    [action] = engine_store.read(list_actions)
    assert action.status == "unconfirmed" and len(probe.seen) == 1


# -- group commit -----------------------------------------------------------------------------


def test_a_group_is_marked_sending_in_one_commit_before_any_of_its_dots(engine_store):
    index = fill(engine_store, 5)
    probe = Probe(engine_store)
    stats = dispatcher(engine_store, index, probe, "unconfirmed", group=2).run_due(T0 + 60)
    assert stats.outcomes["sent"] == 5
    ids = [a.id for a in engine_store.read(list_actions)]
    seen = [before for before, _ in probe.seen]
    # Group 1 (emails 0, 1): both sending at the first dot, nothing of group 2 yet.
    assert [seen[0][i] for i in ids] == ["sending", "sending", "claimed", "claimed", "claimed"]
    assert [seen[1][i] for i in ids] == ["sending", "sending", "claimed", "claimed", "claimed"]
    # Group 2's commit carries group 1's sent.
    assert [seen[2][i] for i in ids] == ["sent", "sent", "sending", "sending", "claimed"]
    assert [seen[4][i] for i in ids] == ["sent", "sent", "sent", "sent", "sending"]
    assert {a.status for a in engine_store.read(list_actions)} == {"sent"}


def test_a_crash_inside_a_group_leaves_it_unconfirmed_and_nothing_is_resent(engine_store):
    index = fill(engine_store, 3)
    probe = Probe(engine_store)
    first = dispatcher(engine_store, index, probe, "unconfirmed", group=3)

    class Killed(BaseException):
        pass

    def dies_after_one(email, before_commit):
        if probe.seen:
            raise Killed  # the process dies after the first email of the group
        return Probe.send(probe, email, before_commit)

    probe.send = dies_after_one  # type: ignore[method-assign]
    first._record_sent = lambda: None  # type: ignore[method-assign]  # SIGKILL runs no finally
    with contextlib.suppress(Killed):
        first.run_due(T0 + 60)
    assert {a.status for a in engine_store.read(list_actions)} == {"sending"}
    again = dispatcher(engine_store, index, Probe(engine_store), "unconfirmed", group=3)
    again.recover()
    stats = again.run_due(T0 + 120)
    assert stats.handled == 0  # nothing resent
    assert [a.status for a in engine_store.read(list_actions)] == ["unconfirmed"] * 3
    assert len(probe.seen) == 1


def test_a_delivery_refused_inside_a_group_is_retried_the_others_are_sent(engine_store):
    index = fill(engine_store, 3)
    probe = Probe(engine_store)

    def refuses_c1(email, before_commit):
        if email.to == "c1@example.com":
            raise DeliveryError("SMTP RCPT TO refused: 450 busy", retryable=True)
        return Probe.send(probe, email, before_commit)

    probe.send = refuses_c1  # type: ignore[method-assign]
    stats = dispatcher(engine_store, index, probe, "unconfirmed", group=3).run_due(T0 + 60)
    assert stats.outcomes == {"sent": 2, "retried": 1}
    by_customer = {a.customer_id: a for a in engine_store.read(list_actions)}
    assert by_customer["c1"].status == "pending" and by_customer["c1"].attempts == 1
    assert "450 busy" in by_customer["c1"].result
    assert by_customer["c0"].status == by_customer["c2"].status == "sent"


def test_a_failed_group_commit_sends_nothing_and_retries_each(engine_store, monkeypatch):
    import engine.runtime.dispatcher as dispatcher_module

    index = fill(engine_store, 2)
    probe = Probe(engine_store)

    def commit_fails(*args, **kwargs):
        raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))

    monkeypatch.setattr(dispatcher_module, "_mark_group_sending", commit_fails)
    stats = dispatcher(engine_store, index, probe, "unconfirmed", group=2).run_due(T0 + 60)
    assert stats.outcomes == {"retried": 2} and probe.seen == []
    assert {a.status for a in engine_store.read(list_actions)} == {"pending"}


def test_group_size_must_be_positive(engine_store):
    index = fill(engine_store, 0)
    with pytest.raises(ValueError, match="group_size"):
        dispatcher(engine_store, index, Probe(engine_store), "unconfirmed", group=0)


def test_a_group_remembers_each_message_id_for_the_providers_webhooks(engine_store):
    from engine.store.suppressions import action_for_message

    index = fill(engine_store, 3)
    probe = Probe(engine_store)
    dispatcher(engine_store, index, probe, "unconfirmed", group=3).run_due(T0 + 60)
    for action in engine_store.read(list_actions):
        message_id = action.result.split()[-1]  # "probe <…@…>"
        found = engine_store.read(action_for_message, message_id)
        assert found is not None and found.action_id == action.id
