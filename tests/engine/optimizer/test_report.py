"""The pure report: feedback per distinct message (people apart from machines), conversions
attributed within the window (a purchase counted once per trigger), incrementality's edges."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.optimizer.report import (
    attributed_conversions,
    feedback_counts,
    incrementality,
    trigger_performance,
)

HOUR = 3600.0


def events(*rows: tuple[str, str, bool]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["event_type", "message_id", "machine"])


def test_a_message_counts_once_as_human_if_a_person_did_it_else_as_machine():
    counted = feedback_counts(
        events(
            ("email_opened", "m1", True), ("email_opened", "m1", False), ("email_opened", "m1", False),
            ("email_opened", "m2", True), ("email_opened", "m2", True),
            ("email_clicked", "m3", False), ("email_delivered", "m1", False),
            ("email_opened", "someone-elses", False), ("page_view", "m1", False),
        ),
        {"m1": "a", "m2": "a", "m3": "b"},
    )  # fmt: skip
    assert counted == {
        "a": {"opened": {"human": 1, "machine": 1}, "delivered": {"human": 1, "machine": 0}},
        "b": {"clicked": {"human": 1, "machine": 0}},
    }
    assert feedback_counts(events(), {"m1": "a"}) == {}


def test_conversions_inside_the_window_and_a_purchase_counted_once_per_trigger():
    fires = pd.DataFrame(
        [("a", "c1", 0.0), ("a", "c1", 10 * HOUR), ("a", "c2", 0.0), ("b", "c1", 0.0)],
        columns=["trigger_id", "customer_id", "occurred_at"],
    )
    purchases = pd.DataFrame(
        [("c1", 12 * HOUR, 30.0), ("c2", 0.0, 99.0), ("c2", 73 * HOUR, 5.0), ("c3", HOUR, 7.0)],
        columns=["customer_id", "occurred_at", "amount"],
    )
    converted, revenue = attributed_conversions(fires, purchases, 72 * HOUR)
    # c1's purchase follows both of trigger a's fires: two fires converted, 30.0 once.
    # c2 bought at the very moment of the fire (not after) and after the window: no conversion.
    assert converted == {"a": 2, "b": 1}
    assert revenue == {"a": 30.0, "b": 30.0}
    assert attributed_conversions(fires.iloc[:0], purchases, HOUR) == ({}, {})


def test_incrementality_needs_a_holdout_and_a_send_arm():
    def frame(variants):
        n = len(variants)
        return pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "trigger_id": "t",
                             "variant": variants, "segment": "(all)",
                             "sent": [v != "holdout" for v in variants],
                             "delivered": [v != "holdout" for v in variants], "opened": False, "clicked": False,
                             "converted": [i % 3 == 0 for i in range(n)],
                             "revenue": [float(i % 3 == 0) * 10 for i in range(n)]})  # fmt: skip

    assert incrementality(pd.DataFrame()) == ()
    assert incrementality(frame(["a"] * 10)) == ()
    assert incrementality(frame(["holdout"] * 10)) == ()
    found = incrementality(frame(["a", "holdout"] * 30))
    assert [i.outcome for i in found] == ["conversion", "revenue"]
    conversion = found[0]
    assert (conversion.users_sent, conversion.users_holdout) == (30, 30)
    assert conversion.abs_lift == pytest.approx(conversion.rate_sent - conversion.rate_holdout)
    assert conversion.incremental == pytest.approx(conversion.abs_lift * 30)


def test_rows_for_every_trigger_with_channels_and_statuses():
    rows = trigger_performance(
        decisions={("a", "fired"): 3, ("a", "suppressed"): 2},
        suppressions={("a", "no_consent"): 2},
        actions={("a", "send_email", "email", "sent"): 2, ("a", "send_email", "email", "failed"): 1,
                 ("a", "add_to_segment", None, "sent"): 3, ("b", "webhook", "webhook", "claimed"): 1},
        messages={}, feedback=events(), fires=pd.DataFrame(columns=["trigger_id", "customer_id", "occurred_at"]),
        purchases=pd.DataFrame(columns=["customer_id", "occurred_at", "amount"]),
        window=HOUR, triggers=("c",),
    )  # fmt: skip
    by_id = {r.trigger_id: r for r in rows}
    assert list(by_id) == ["a", "b", "c"]
    a = by_id["a"].to_dict()
    assert (a["fired"], a["sent"], a["sent_by_channel"], a["failed_by_channel"]) == (
        3,
        2,
        {"email": 2},
        {"email": 1},
    )
    assert a["opened"] == {"human": 0, "machine": 0} and a["incrementality"] is None
    assert by_id["b"].pending == {"webhook": 1} and by_id["c"].decisions == {}
