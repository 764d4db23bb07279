"""Trigger reviews in MLflow: every trigger's daily performance as metrics with a step per day, and
a one-page HTML report per trigger, for the optimize flow.

One MLflow run per trigger in experiment ``nudge-triggers`` (tagged as model development) keeps
the trigger's history: each review appends the days not logged yet, at step = days since
1970-01-01, so the run's charts are trend lines (fired, sent, delivered, opened, clicked,
converted, revenue, …) and the runs table compares triggers. A day is logged once it is over —
before the day of the latest event in the log — so a step is never written twice. The figures
are those of ``nudge triggers report`` (``engine.store.reporting.trigger_report``).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from engine.optimizer.report import TriggerPerformance

__all__ = [
    "TRIGGERS_EXPERIMENT",
    "TRIGGER_TAG",
    "DayReview",
    "days_to_review",
    "log_trigger_review",
    "metric_key",
    "performance_metrics",
    "trigger_html",
]

TRIGGERS_EXPERIMENT = "nudge-triggers"
TRIGGER_TAG = "nudge.trigger"
EPOCH = date(1970, 1, 1)
FIGURES = ("delivered", "bounced", "complained", "unsubscribed", "opened", "clicked")


@dataclass(frozen=True)
class DayReview:
    """One day's performance of every trigger (`rows`, by trigger id)."""

    day: date
    rows: Mapping[str, TriggerPerformance]

    @property
    def step(self) -> int:
        """Days since 1970-01-01: MLflow's step of this day."""
        return (self.day - EPOCH).days


def days_to_review(first: float, last: float, *, after_step: int | None, days: int) -> list[date]:
    """The full days between the log's first and latest event (the latest event's day is not
    over), after `after_step` (the last day logged), at most the last `days` of them."""
    start = datetime.fromtimestamp(first, UTC).date()
    end = datetime.fromtimestamp(last, UTC).date()  # exclusive: not over yet
    if after_step is not None:
        start = max(start, EPOCH + timedelta(days=after_step + 1))
    start = max(start, end - timedelta(days=days))
    return [start + timedelta(days=n) for n in range((end - start).days)]


def day_bounds(day: date) -> tuple[float, float]:
    """The day's [start, end) in epoch seconds, UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return start, start + 86400.0


def metric_key(*parts: str) -> str:
    """An MLflow metric name from labels (only letters, digits, ``_ - . /`` and spaces are
    allowed: ``(all sends)`` becomes ``all_sends``)."""
    cleaned = [re.sub(r"[^\w\-./ ]", "", str(p)).strip().replace(" ", "_") for p in parts]
    return ".".join(p for p in cleaned if p)


def performance_metrics(row: TriggerPerformance) -> dict[str, float]:
    """The figures of one trigger (over a day or a period) as MLflow metrics."""
    metrics: dict[str, float] = {
        "fired": row.fired,
        "suppressed": sum(row.suppressed.values()),
        "held_out": row.decisions.get("held_out", 0),
        "sent": row.messages,
        "failed": sum(row.failed.values()),
        "converted": row.converted,
        "revenue": row.revenue,
    }
    for figure in FIGURES:
        counts = row.feedback.get(figure, {})
        metrics[figure] = counts.get("human", 0)
        metrics[f"machine_{figure}"] = counts.get("machine", 0)
    for reason, n in row.suppressed.items():
        metrics[metric_key("suppressed", reason)] = n
    if row.fired:
        metrics["conversion_rate"] = row.converted / row.fired
    return {k: float(v) for k, v in metrics.items()}


def incrementality_metrics(row: TriggerPerformance) -> dict[str, float]:
    """The holdout's figures (whole log) as metrics: lift, incremental total, CI, p, users."""
    out: dict[str, float] = {}
    for item in row.incrementality:
        prefix = f"holdout.{item.outcome}"
        values = {
            "lift": item.abs_lift, "lift_ci_low": item.abs_ci_low, "lift_ci_high": item.abs_ci_high,
            "incremental": item.incremental, "incremental_ci_low": item.incremental_ci_low,
            "incremental_ci_high": item.incremental_ci_high, "p_value": item.p_value,
            "users_sent": item.users_sent, "users_holdout": item.users_holdout,
        }  # fmt: skip
        out.update({f"{prefix}.{k}": float(v) for k, v in values.items() if math.isfinite(v)})
    return out


def trigger_run(client: MlflowClient, experiment_id: str, trigger_id: str) -> str:
    """The trigger's run in the review experiment (created, readable name and description, the
    first time)."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TRIGGER_TAG}` = '{trigger_id}'", max_results=1
    )
    if found:
        return str(found[0].info.run_id)
    run = client.create_run(
        experiment_id,
        run_name=f"trigger {trigger_id}",
        tags={
            TRIGGER_TAG: trigger_id,
            "mlflow.note.content": f"Daily performance of trigger {trigger_id} (one step per day: "
            "days since 1970-01-01) and its one-page report (report.html).",
        },
    )
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def last_step(client: MlflowClient, run_id: str) -> int | None:
    """The latest day logged in the trigger's run (None before the first review)."""
    history = client.get_metric_history(run_id, "fired")
    return max((m.step for m in history), default=None)


def log_trigger_review(
    client: MlflowClient,
    run_id: str,
    days: Sequence[DayReview],
    total: TriggerPerformance,
    *,
    reviewed_at: float,
    recommendations: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Append the days' metrics (step per day), the whole log's holdout figures at the latest
    step, and the HTML report (``report.html``, and ``reports/<day>.html`` kept)."""
    from mlflow.entities import Metric

    trigger_id = total.trigger_id
    metrics = []
    for review in days:
        row = review.rows.get(trigger_id)
        if row is None:
            continue
        at = int(day_bounds(review.day)[0] * 1000)
        metrics += [Metric(k, v, at, review.step) for k, v in performance_metrics(row).items()]
    step = days[-1].step if days else int(reviewed_at // 86400)
    metrics += [
        Metric(k, v, int(reviewed_at * 1000), step)
        for k, v in incrementality_metrics(total).items()
    ]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    page = trigger_html(total, days, reviewed_at=reviewed_at, recommendations=recommendations)
    client.log_text(run_id, page, "report.html")
    client.log_text(
        run_id, page, f"reports/{datetime.fromtimestamp(reviewed_at, UTC):%Y-%m-%d}.html"
    )


def trigger_html(
    total: TriggerPerformance,
    days: Sequence[DayReview],
    *,
    reviewed_at: float,
    recommendations: Sequence[Mapping[str, Any]] = (),
) -> str:
    """One page: the trigger's figures over the whole log, its holdout, the reviewed days as a
    table and a chart, and the experiment's recommendations."""
    e = html.escape
    t = total.trigger_id
    summary = performance_metrics(total)
    rows = "".join(
        f"<tr><th>{e(k.replace('_', ' '))}</th><td>{_fmt(v)}</td></tr>" for k, v in summary.items()
    )
    holdout = ""
    if total.incrementality:
        cells = "".join(
            f"<tr><th>{e(i.outcome)}</th><td>{i.users_sent:,} / {i.users_holdout:,}</td>"
            f"<td>{_fmt(i.incremental)}</td><td>[{_fmt(i.incremental_ci_low)}, "
            f"{_fmt(i.incremental_ci_high)}]</td><td>{_fmt(i.p_value, 4)}</td></tr>"
            for i in total.incrementality
        )
        holdout = (
            "<h2>Incrementality over the holdout (every send arm pooled)</h2><table><tr><th></th>"
            "<th>sent / held out</th><th>incremental</th><th>95 % CI</th><th>p</th></tr>"
            f"{cells}</table>"
        )
    daily = [(d.day, d.rows[t]) for d in days if t in d.rows]
    day_rows = "".join(
        f"<tr><td>{day:%Y-%m-%d}</td><td>{r.fired:,}</td><td>{r.messages:,}</td>"
        f"<td>{r.feedback.get('delivered', {}).get('human', 0):,}</td>"
        f"<td>{r.feedback.get('opened', {}).get('human', 0):,}</td>"
        f"<td>{r.feedback.get('clicked', {}).get('human', 0):,}</td><td>{r.converted:,}</td>"
        f"<td>{r.revenue:,.2f}</td></tr>"
        for day, r in daily
    )
    chart = _chart(daily)
    advice = "".join(
        f"<li><b>{e(str(r.get('segment')))}</b>: "
        f"{e(str(r.get('variant') or 'no recommendation'))} — {e(str(r.get('detail', '')))}</li>"
        for r in recommendations
    )
    when = datetime.fromtimestamp(reviewed_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nudge — {e(t)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{padding:.25em .8em;border-bottom:1px solid #ddd;
text-align:right}}th:first-child,td:first-child{{text-align:left}}</style></head>
<body><h1>Trigger {e(t)}</h1><p>Reviewed {e(when)}. Whole log; feedback counts distinct
messages opened, clicked, … by people (machines apart); conversions within the attribution
window.</p>
<h2>Performance</h2><table>{rows}</table>{holdout}
<h2>Reviewed days</h2>{chart}
<table><tr><th>day</th><th>fired</th><th>sent</th><th>delivered</th><th>opened</th><th>clicked</th>
<th>converted</th><th>revenue</th></tr>{day_rows}</table>
{f"<h2>Experiment recommendations</h2><ul>{advice}</ul>" if advice else ""}
</body></html>
"""


def _chart(daily: Sequence[tuple[date, TriggerPerformance]]) -> str:
    """Fired, sent and converted per day as an embedded PNG ("" with fewer than two days)."""
    if len(daily) < 2:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.dates import date2num

    fig, ax = plt.subplots(figsize=(7, 2.8))
    days = date2num([d for d, _ in daily])
    for label, values in (("fired", [r.fired for _, r in daily]),
                          ("sent", [r.messages for _, r in daily]),
                          ("converted", [r.converted for _, r in daily])):  # fmt: skip
        ax.plot(days, values, marker=".", label=label)
    ax.xaxis_date()
    ax.legend(fontsize=8)
    ax.set_ylabel("per day")
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="fired, sent and converted per day" src="data:image/png;base64,{encoded}">'


def _fmt(value: float, digits: int = 2) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.{digits}f}"
