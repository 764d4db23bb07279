"""`nudge triggers report`: what every trigger has done, and what it has brought.

Composition only: read the engine database with ``engine.store.reporting``, compute with
``engine.optimizer.report``, print rich tables for people or one JSON object for machines.
It is registered on ``triggers_app`` (``nudge/engine_cli.py``). The engine, pandas and scipy
are imported inside the command, so ``nudge --help`` stays instant.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nudge.console import console, fail

if TYPE_CHECKING:
    from engine.optimizer.report import Incrementality, TriggerPerformance

__all__ = ["build_report", "print_report", "triggers_report"]

FIGURES = ("delivered", "bounced", "complained", "unsubscribed", "opened", "clicked")


def triggers_report(
    since: Annotated[
        str | None,
        typer.Option(help="Only events that occurred on or after this day (YYYY-MM-DD, UTC)."),
    ] = None,
    trigger: Annotated[str | None, typer.Option(help="Only this trigger.")] = None,
    window: Annotated[
        str, typer.Option(help="Attribution window for conversions and revenue, e.g. 72h.")
    ] = "72h",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (shape in the help above).")
    ] = False,
) -> None:
    """Every trigger's performance: fired, suppressed by reason, sent, what became of the
    messages, conversions and revenue within the window, and incrementality over a holdout.

    ``--json`` prints ``{"since": ISO day or null, "window_hours": h, "generated_at": ISO,
    "triggers": [{"trigger_id", "fired", "decisions": {outcome: n}, "suppressed": {reason: n},
    "sent", "sent_by_channel", "failed_by_channel", "pending_by_channel": {channel: n},
    "delivered", "bounced", "complained", "unsubscribed", "opened", "clicked": {"human": n,
    "machine": n}, "converted", "revenue", "incrementality": null or [{"outcome":
    "conversion"|"revenue", "users_sent", "users_holdout", "rate_sent", "rate_holdout",
    "abs_lift", "abs_ci_low", "abs_ci_high", "incremental", "incremental_ci_low",
    "incremental_ci_high", "p_value"}]}]}``. Feedback figures count distinct sent messages;
    "machine" ones are those whose every event carried ``properties.machine: true``. CIs are
    95 %; a test that cannot be computed is null.
    """
    from engine.dsl.durations import parse_duration
    from nudge.engine_cli import parse_day, print_json

    try:
        seconds = parse_duration(window).total_seconds()
    except ValueError as exc:
        fail(f"--window: {exc}")
    start = parse_day(since, "--since").timestamp() if since else None
    rows = build_report(since=start, trigger_id=trigger, window=seconds)
    if trigger is not None and not any(r.trigger_id == trigger for r in rows):
        fail(f"--trigger: no trigger {trigger!r} in the trigger folder or the execution log")
    if as_json:
        print_json(
            {
                "since": since,
                "window_hours": seconds / 3600,
                "generated_at": _iso(time.time()),
                "triggers": [r.to_dict() for r in rows],
            }
        )
        return
    print_report(rows, since=since, window=window)


def build_report(
    *, since: float | None, trigger_id: str | None, window: float
) -> list[TriggerPerformance]:
    """The report of the engine database of the settings (every trigger of the trigger folder
    listed, with or without decisions)."""
    from engine.store.reporting import trigger_report
    from nudge.engine_cli import open_store, settings

    s = settings()
    store = open_store(s)
    try:
        return store.read(
            trigger_report, window=window, since=since, trigger_id=trigger_id,
            triggers=_trigger_ids(s.trigger_folder),
        )  # fmt: skip
    finally:
        store.dispose()


def print_report(rows: list[TriggerPerformance], *, since: str | None, window: str) -> None:
    """Tables that fit a terminal: decisions and sends, feedback, suppression reasons,
    conversions, and incrementality over the holdouts."""
    if not rows:
        console.print("no triggers and no decisions recorded")
        return
    period = f"since {since}" if since else "whole log"
    sends = _table(f"Decisions and sends — {period}", "fired", "suppressed", "held out", "sent",
                   "failed", "pending")  # fmt: skip
    for row in rows:
        sends.add_row(
            row.trigger_id, f"{row.fired:,}", f"{sum(row.suppressed.values()):,}",
            f"{row.decisions.get('held_out', 0):,}", f"{row.messages:,}",
            f"{sum(row.failed.values()):,}", f"{sum(row.pending.values()):,}",
        )  # fmt: skip
    console.print(sends)
    feedback = _table("Feedback — distinct messages by people (+ by machines)", *FIGURES)
    for row in rows:
        feedback.add_row(row.trigger_id, *(_feedback(row.feedback.get(f)) for f in FIGURES))
    console.print(feedback)
    reasons = sorted({reason for row in rows for reason in row.suppressed})
    if reasons:
        table = _table("Suppressed by reason", *reasons)
        for row in rows:
            if row.suppressed:
                table.add_row(row.trigger_id, *(f"{row.suppressed.get(r, 0):,}" for r in reasons))
        console.print(table)
    conversions = _table(f"Conversions within {window} of the triggering event",
                         "converted", "of fired", "revenue")  # fmt: skip
    for row in rows:
        rate = f"{100 * row.converted / row.fired:.1f} %" if row.fired else "–"
        conversions.add_row(row.trigger_id, f"{row.converted:,}", rate, f"{row.revenue:,.2f}")
    console.print(conversions)
    for row in rows:
        if row.incrementality:
            console.print(_incrementality_table(row))


def _feedback(counts: dict[str, int] | None) -> str:
    if not counts:
        return "0"
    human, machine = counts.get("human", 0), counts.get("machine", 0)
    return f"{human:,}" + (f" [dim](+{machine:,})[/]" if machine else "")


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("trigger", no_wrap=True)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _incrementality_table(row: TriggerPerformance) -> Table:
    """One trigger's incrementality: a column per outcome, n/a where a test cannot be computed."""
    table = Table(
        title=f"{row.trigger_id}: every send arm against the holdout",
        title_justify="left",
        show_edge=False,
    )
    table.add_column("", no_wrap=True)
    items = list(row.incrementality)
    for item in items:
        table.add_column(item.outcome, justify="right", no_wrap=True)

    def fmt(value: float, item: Incrementality, *, per_customer: bool = False) -> str:
        if not math.isfinite(value):
            return "n/a"
        if item.outcome != "revenue":
            return f"{100 * value:.2f} %" if per_customer else f"{value:+,.1f}"
        return f"{value:,.2f}" if per_customer else f"{value:+,.2f}"

    lines = [
        ("customers sent / held out", lambda i: f"{i.users_sent:,} / {i.users_holdout:,}"),
        ("per customer, sent", lambda i: fmt(i.rate_sent, i, per_customer=True)),
        ("per customer, held out", lambda i: fmt(i.rate_holdout, i, per_customer=True)),
        ("incremental", lambda i: fmt(i.incremental, i)),
        ("95 % CI", lambda i: f"{fmt(i.incremental_ci_low, i)} … {fmt(i.incremental_ci_high, i)}"),
        ("p-value", lambda i: "n/a" if not math.isfinite(i.p_value) else f"{i.p_value:.4f}"),
    ]
    for label, cell in lines:
        table.add_row(label, *(cell(item) for item in items))
    return table


def _trigger_ids(folder: Any) -> tuple[str, ...]:
    """The ids of the trigger folder's definitions (none if it cannot be read: the report
    then lists the triggers of the log)."""
    from engine.dsl.triggers import load_trigger_dir

    try:
        loaded = load_trigger_dir(folder)
    except Exception:  # a broken folder must not hide the log's figures
        return ()
    return tuple(t.id for t in loaded.triggers)


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()
