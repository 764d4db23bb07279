"""Terminal output of the CLI: progress lines, summary tables, and one-line errors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from engine.lake import LakeInfo
    from pipelines.ingest import ImportReport
    from pipelines.simulate import SimulationRun

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` to stderr and exit with `code`."""
    errors.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


class StepPrinter:
    """A progress callback: a spinner on the running step, a tick and its time when it ends."""

    def __init__(self, title: str) -> None:
        console.print(f"[bold]{title}[/]")
        self._started = self._last = time.perf_counter()
        self._current: str | None = None
        self._status = console.status("")

    def __call__(self, message: str) -> None:
        self._close_step()
        self._current = message
        self._status.update(f"{message} …")
        self._status.start()

    def finish(self) -> None:
        """Close the last step and print the total time."""
        self._close_step()
        self._status.stop()
        console.print(f"  [dim]done in {time.perf_counter() - self._started:.1f} s[/]")

    def _close_step(self) -> None:
        now = time.perf_counter()
        if self._current is not None:
            console.print(f"  [green]✓[/] {self._current} [dim]({now - self._last:.1f} s)[/]")
        self._current, self._last = None, now


def print_simulation(run: SimulationRun) -> None:
    """The data set in brief, the planted truth in brief, and where the files are."""
    summary = run.summary
    sim = run.simulation
    console.print(
        f"\n[bold]Simulated[/] {summary['customers']:,} customers, {summary['events']:,} events, "
        f"{sim.params.start:%Y-%m-%d} → {sim.params.end:%Y-%m-%d} (seed {summary['seed']})"
    )
    table = Table(title="Planted truth per segment", title_justify="left", show_edge=False)
    for column in (
        "segment",
        "customers",
        "orders each",
        "active at end",
        "open chance",
        "best delay",
    ):
        text = column in {"segment", "best delay"}
        table.add_column(column, justify="left" if text else "right", no_wrap=text)
    for segment, row in summary["segments"].items():
        table.add_row(
            segment,
            f"{row['customers']:,}",
            f"{row['purchases_per_customer']:.2f}",
            f"{row['active_at_end']:.0%}",
            f"{row['email_engagement']:.0%}",
            summary["best_delay"].get(segment) or "none",
        )
    console.print(table)
    console.print(f"data set and truth: [cyan]{run.paths['events'].parent}[/]")
    if run.appended is not None:
        a = run.appended
        console.print(
            f"lake: {a.added:,} events added, {a.duplicates:,} already there; {run.profiles:,} profiles"
        )


def print_import(path: Path, report: ImportReport, seconds: float) -> None:
    """Counts of an import and where the rejects went."""
    console.print(f"[bold]Imported[/] {path} in {seconds:.1f} s")
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(justify="left")
    table.add_column(justify="right")
    for label, value in (
        ("read", report.read),
        ("accepted", report.accepted),
        ("rejected", report.rejected),
        ("duplicate (already in the lake)", report.duplicates),
        ("added to the lake", report.added),
    ):
        table.add_row(label, f"{value:,}")
    console.print(table)
    if report.rejects_path:
        console.print(f"[yellow]rejected rows and reasons:[/] {report.rejects_path}")
        for reason, count in report.reasons.items():
            console.print(f"  {count:,} × {reason}")


def print_lake_info(info: LakeInfo) -> None:
    """The lake in one table."""
    console.print(f"\n[bold]Event lake[/] [cyan]{info.root}[/]")
    if not info.events:
        console.print("  empty — load data with [bold]nudge simulate[/] or [bold]nudge import[/]")
        return
    console.print(
        f"  {info.events:,} events of {info.customers:,} customers ({info.profiles:,} profiles), "
        f"{info.first_event:%Y-%m-%d %H:%M} → {info.last_event:%Y-%m-%d %H:%M} UTC"
    )
    console.print(
        f"  {info.partitions:,} daily partitions, {info.files:,} files, {info.bytes_on_disk / 1e6:,.1f} MB"
    )
    table = Table(title="Events per type", title_justify="left", show_edge=False)
    table.add_column("event type")
    table.add_column("events", justify="right")
    table.add_column("share", justify="right")
    for event_type, count in info.events_per_type.items():
        table.add_row(event_type, f"{count:,}", f"{count / info.events:.1%}")
    console.print(table)


def print_closed_loop(report: Any, start: Any, end: Any) -> None:
    """What the engine did in the loop: decisions, suppressions, cancellations, the email funnel."""
    console.print(
        f"\n[bold]Engine[/] {start:%Y-%m-%d} → {end:%Y-%m-%d}: {report.events:,} events "
        f"({report.feedback_events:,} of them customers answering emails)"
    )
    decisions = Table(title="Decisions", title_justify="left", show_edge=False)
    decisions.add_column("outcome")
    decisions.add_column("count", justify="right")
    for outcome in ("fired", "suppressed", "skipped", "held_out", "failed"):
        decisions.add_row(outcome, f"{report.decisions.get(outcome, 0):,}")
    console.print(decisions)
    if report.suppressed_by_reason:
        reasons = ", ".join(f"{r} {n:,}" for r, n in report.suppressed_by_reason.most_common())
        console.print(f"suppressed by reason: {reasons}")
    cancelled = sum(n for (_, status), n in report.actions.items() if status == "cancelled")
    console.print(f"cancelled before sending (cancel_if or consent withdrawn): {cancelled:,}")
    funnel = Table(title="Email funnel", title_justify="left", show_edge=False)
    funnel.add_column("stage")
    funnel.add_column("count", justify="right")
    funnel.add_column("of previous", justify="right")
    previous = None
    sent = report.funnel.get("sent") or None
    for stage, count in report.funnel.items():
        # A purchase needs no click: conversions are counted against the emails sent.
        base = sent if stage == "converted" else previous
        share = f"{count / base:.1%}" + (" of sent" if stage == "converted" else "") if base else ""
        funnel.add_row(stage, f"{count:,}", share)
        previous = count or None
    console.print(funnel)
