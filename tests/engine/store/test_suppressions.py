"""The suppression list by address, on SQLite and PostgreSQL: reasons and their order, soft
bounces in a row, the dispatcher's check before every email (surviving a profile replacement),
a complaint stopping marketing only, erasure turning an entry into a hash, and the
deliverability guard's pause (deferred, then resumed)."""

from __future__ import annotations

import pytest

from engine.runtime.deliverability import (
    GuardSettings,
    check_guard,
    judge,
    marketing_pause,
    resume_marketing,
)
from engine.runtime.erasure import address_hash
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store.customers import upsert_profiles
from engine.store.erasure import suppress, suppressed_hashes
from engine.store.outbox import list_actions
from engine.store.reporting import deliverability_rates
from engine.store.suppressions import (
    active_suppressions,
    add_suppression,
    list_suppressions,
    record_delivery,
    record_soft_bounce,
    remove_suppression,
)
from tests.engine.runtime.test_dispatcher import at, dispatcher, ev, setup
from tests.support import SmtpSink

SALT = b"salt"
ADA = "ada@example.com"
KEY = address_hash(ADA, SALT)


def test_reasons_never_weaken_and_soft_bounces_count_in_a_row(engine_store):
    store = engine_store
    assert store.write(add_suppression, KEY, " Ada@Example.com ", "complained", 10.0)
    assert store.write(add_suppression, KEY, ADA, "bounced", 11.0), "a bounce outranks it"
    assert not store.write(add_suppression, KEY, ADA, "complained", 12.0)
    [entry] = store.read(list_suppressions)
    assert (entry.address, entry.reason) == (ADA, "bounced")
    assert not store.write(record_soft_bounce, KEY, ADA, 13.0, threshold=1, suspend_seconds=60)
    with pytest.raises(ValueError, match="reason: expected one of"):
        store.write(add_suppression, KEY, ADA, "tired", 14.0)

    other = address_hash("bob@example.com", SALT)
    for n in (1, 2):
        assert not store.write(record_soft_bounce, other, "bob@example.com", float(n),
                               threshold=3, suspend_seconds=100.0)  # fmt: skip
    store.write(record_delivery, other, 3.0)  # a delivery ends the run
    assert store.read(active_suppressions, ["bob@example.com"], 3.0) == {}
    suspended = [store.write(record_soft_bounce, other, "bob@example.com", 10.0 + n,
                             threshold=3, suspend_seconds=100.0) for n in range(3)]  # fmt: skip
    assert suspended == [False, False, True]
    assert store.read(active_suppressions, ["BOB@example.com"], 50.0) == {"bob@example.com": "soft"}
    assert store.read(active_suppressions, ["bob@example.com"], 113.0) == {}, "it ends"
    assert store.write(remove_suppression, other) == "soft"
    assert store.write(remove_suppression, other) is None


def test_erasure_makes_a_listed_address_a_hash_and_only_erased_hashes_leave_profiles(engine_store):
    store = engine_store
    store.write(add_suppression, KEY, ADA, "bounced", 1.0, detail="550 no such user")
    assert store.read(suppressed_hashes) == set(), "a bounced address stays on its profile"
    store.write(suppress, {KEY: "email"}, "erased", 2.0)
    [entry] = store.read(list_suppressions)
    assert (entry.reason, entry.address, entry.detail) == ("erased", None, None)
    assert store.read(suppressed_hashes) == {KEY}
    with pytest.raises(ValueError, match="erased customer"):
        store.write(remove_suppression, KEY)


def sent_outcomes(store, index, minutes: float) -> dict[str, int]:
    with SmtpSink() as smtp:
        outcomes = dict(dispatcher(store, index, smtp_port=smtp.port).run_due(at(minutes)).outcomes)
        outcomes["delivered"] = len(smtp.messages)
    return outcomes


def test_the_dispatcher_checks_the_list_before_every_email_whatever_the_profile_says(engine_store):
    store = engine_store
    index = setup(store)
    store.write(add_suppression, KEY, ADA, "bounced", 0.0)
    # The profile is replaced afterwards (PUT /v1/customers, an import): the list is by address.
    store.write(upsert_profiles, {"c1": {"customer_id": "c1", "email": "ADA@example.com",
                                         "consent_email": True, "first_name": "Ada"}}, 1.0)  # fmt: skip
    accept_events(store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=5)], source="t")
    Processor(store, index).run_until_empty()
    assert sent_outcomes(store, index, 61) == {"cancelled": 1, "delivered": 0}
    [action] = store.read(list_actions)
    assert (action.status, action.result) == ("cancelled", "suppressed: bounced")


def test_a_complaint_stops_marketing_but_not_transactional_email(engine_store):
    store = engine_store
    index = setup(store)
    store.write(add_suppression, KEY, ADA, "complained", 0.0)
    accept_events(store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=5),
                          ev("e2", "c1", "payment_failed", 0)], source="t")  # fmt: skip
    Processor(store, index).run_until_empty()
    sent_outcomes(store, index, 61)
    emails = {a.trigger_id: a for a in store.read(list_actions) if a.kind == "send_email"}
    assert emails["cart_recovery"].result == "suppressed: complained"
    assert emails["payment_failure"].status == "sent"


def test_the_guard_pauses_marketing_sends_which_wait_and_go_after_resuming(engine_store):
    store = engine_store
    index = setup(store)
    day = at(0)
    feedback = [ev(f"d{n}", "c1", "email_delivered", n, trigger="cart_recovery") for n in range(4)]
    feedback.append(ev("x1", "c1", "email_complained", 5, trigger="cart_recovery"))
    accept_events(store, feedback, source="t", now=day)
    frame = store.read(deliverability_rates)
    [row] = frame.to_dict("records")
    assert (row["trigger"], row["delivered"], row["complained"]) == ("cart_recovery", 4, 1)
    assert row["complaint_rate"] == pytest.approx(0.25)
    assert check_guard(store, day, GuardSettings(min_delivered=10)).action == "ok", "too few"
    assert store.read(marketing_pause) is None
    verdict = check_guard(store, day, GuardSettings(min_delivered=4))
    assert verdict.action == "pause" and store.read(marketing_pause)["delivered"] == 4

    accept_events(store, [ev("e1", "c1", "cart_abandoned", 10, cart_value=5)], source="t")
    Processor(store, index).run_until_empty()
    assert sent_outcomes(store, index, 71) == {"paused": 1, "delivered": 0}
    [action] = store.read(list_actions)
    assert action.status == "pending" and action.result.startswith("paused: ")
    assert action.attempts == 0, "a pause is not a failed attempt"
    assert store.write(resume_marketing) and not store.write(resume_marketing)
    assert sent_outcomes(store, index, 80) == {"sent": 1, "delivered": 1}


def test_judge_thresholds():
    settings = GuardSettings(warn_rate=0.001, pause_rate=0.003, min_delivered=1000)
    assert judge("d", 10_000, 9, settings).action == "ok"
    assert judge("d", 10_000, 10, settings).action == "warn"
    assert judge("d", 10_000, 30, settings).action == "pause"
    assert judge("d", 999, 500, settings).action == "ok"


def test_an_erased_customers_address_put_back_on_a_profile_is_never_mailed(engine_store):
    """The erasure keeps only a hash of the address; whatever path puts the address on a profile
    again (PUT /v1/customers, a signup event), the dispatcher with the salt holds the email back."""
    store, salt = engine_store, b"test-salt"
    index = setup(store)
    store.write(suppress, {address_hash("Ada@Example.com ", salt): "email"}, "erased", 0.0)
    accept_events(store, [ev("e1", "c1", "cart_abandoned", 0, cart_value=5)], source="t")
    Processor(store, index).run_until_empty()
    with SmtpSink() as smtp:
        run = dispatcher(store, index, smtp_port=smtp.port, erasure_salt=salt).run_due(at(61))
        assert dict(run.outcomes) == {"cancelled": 1} and smtp.messages == []
    [action] = store.read(list_actions)
    assert (action.status, action.result) == ("cancelled", "suppressed: erased")
    # Without the salt the dispatcher cannot tell (the list holds no address), so it is wired in
    # by nudge.engine_cli.build_dispatcher from NUDGE_ERASURE_SALT / the signing secret.
