"""The review's pure parts: which days a review logs, MLflow metric names, the metrics of a row,
the one-page HTML."""

from __future__ import annotations

from datetime import UTC, date, datetime

from engine.optimizer.report import Incrementality, TriggerPerformance
from pipelines.review import (
    DayReview,
    days_to_review,
    metric_key,
    performance_metrics,
    trigger_html,
)


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_full_days_only_after_the_last_logged_and_at_most_n():
    first, last = ts("2026-03-01T10:00"), ts("2026-03-05T08:00")
    assert days_to_review(first, last, after_step=None, days=30) == [
        date(2026, 3, d) for d in (1, 2, 3, 4)
    ], "the latest event's day is not over"
    step_of_march_2 = (date(2026, 3, 2) - date(1970, 1, 1)).days
    assert days_to_review(first, last, after_step=step_of_march_2, days=30) == [
        date(2026, 3, 3), date(2026, 3, 4)
    ]  # fmt: skip
    assert days_to_review(first, last, after_step=None, days=2) == [
        date(2026, 3, 3),
        date(2026, 3, 4),
    ]
    assert days_to_review(first, ts("2026-03-01T23:00"), after_step=None, days=30) == []
    assert DayReview(date(1970, 1, 3), {}).step == 2


def test_metric_names_mlflow_accepts():
    assert (
        metric_key("holdout", "conversion", "(all sends)", "lift")
        == "holdout.conversion.all_sends.lift"
    )
    assert metric_key("arm", "d1h", "", "users") == "arm.d1h.users"
    assert metric_key("suppressed", "quiet hours!") == "suppressed.quiet_hours"


def row() -> TriggerPerformance:
    lift = Incrementality("conversion", 200, 50, 0.3, 0.2, 0.1, 0.01, 0.19, 20.0, 2.0, 38.0, 0.03)
    return TriggerPerformance(
        trigger_id="cart<x>", decisions={"fired": 10, "held_out": 2}, suppressed={"no_consent": 3},
        sent={"email": 8}, failed={}, pending={}, converted=4, revenue=55.5,
        feedback={"opened": {"human": 5, "machine": 2}}, incrementality=(lift,),
    )  # fmt: skip


def test_the_metrics_of_a_row():
    metrics = performance_metrics(row())
    assert metrics["fired"] == 10 and metrics["sent"] == 8 and metrics["held_out"] == 2
    assert metrics["opened"] == 5 and metrics["machine_opened"] == 2 and metrics["clicked"] == 0
    assert metrics["suppressed.no_consent"] == 3 and metrics["conversion_rate"] == 0.4


def test_the_page_escapes_and_shows_the_holdout():
    page = trigger_html(row(), [], reviewed_at=ts("2026-03-05T08:00"))
    assert "<h1>Trigger cart&lt;x&gt;</h1>" in page and "Incrementality over the holdout" in page
    assert "200 / 50" in page and "[2, 38]" in page and "2026-03-05 08:00 UTC" in page
