"""Live data in and out: ``nudge import-profiles``, ``nudge customers erase``, ``nudge lake sync``.

Composition only: pipelines.profiles_import, engine.runtime.erasure (with the Feast online rows
of pipelines.online_erasure) and engine.runtime.lake_sync do the work. Registered in ``nudge.cli``
one line each. `build_eraser` is also what ``engine serve`` gives its API for
``DELETE /v1/customers/{id}``, so both ways of erasing remove the same things.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nudge.console import console, fail
from nudge.errors import Commands

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.runtime.erasure import Eraser, ErasureHook
    from engine.store import EngineDB
    from nudge.settings import Settings

__all__ = ["build_eraser", "customers_app", "import_profiles", "lake_sync"]

customers_app = typer.Typer(
    cls=Commands, help="Customers in the engine: erase one (GDPR Art. 17).", no_args_is_help=True
)


def build_eraser(
    s: Settings, store: EngineDB, *, also: Sequence[tuple[str, ErasureHook]] = ()
) -> Eraser:
    """The eraser of the settings: the engine database, the lake, the outbox and Feast online
    (and `also`: further steps, e.g. the running processor's cache in ``engine serve``)."""
    from engine.runtime.erasure import Eraser

    home = s.home_dir

    def feast_rows(customer_id: str) -> dict[str, Any]:
        from pipelines.online_erasure import erase_online_rows

        return erase_online_rows(customer_id, home)

    return Eraser(store, s.erasure_key(), lake_dir=s.lake_dir, outbox_dir=s.outbox_dir,
                  hooks=[("feast_online", feast_rows), *also])  # fmt: skip


def import_profiles(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet, one row per customer.")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet (default: from the file name).")
    ] = None,
    id_column: Annotated[
        str, typer.Option(help="The column holding the customer id.")
    ] = "customer_id",
) -> None:
    """Import customer profiles into the engine (validated like PUT /v1/customers).

    Rows that fail go to a rejects file with their row number and the reason; the others are
    merged into the stored profiles (the file's values win, other attributes are kept).
    """
    from nudge.engine_cli import open_store, settings
    from pipelines.profiles_import import import_profiles as run

    s = settings()
    store = open_store(s)
    started = time.perf_counter()
    try:
        report = run(store, file, rejects_dir=s.rejects_dir, salt=s.erasure_key(),
                     file_format=file_format, id_column=id_column)  # fmt: skip
    finally:
        store.dispose()
    console.print(
        f"[bold]Imported profiles[/] {file} in {time.perf_counter() - started:.1f} s: "
        f"{report.read:,} read, {report.imported:,} imported ({report.created:,} new), "
        f"{report.rejected:,} rejected",
        soft_wrap=True,
    )
    if report.rejects_path:
        console.print(
            f"[yellow]rejected rows and reasons:[/] {report.rejects_path}", soft_wrap=True
        )
        for reason, count in report.reasons.items():
            console.print(f"  {count:,} × {reason}", soft_wrap=True)


@customers_app.command("erase")
def erase(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Erase a customer everywhere nudge keeps them; decisions stay under a salted hash."""
    from nudge.engine_cli import open_store, settings

    if not customer_id.strip():
        fail("customer id: must not be empty")
    if not yes and not typer.confirm(f"Erase customer {customer_id!r} everywhere?"):
        fail("not erased", code=1)
    s = settings()
    store = open_store(s)
    try:
        result = build_eraser(s, store)(customer_id, requested_by="cli")
    finally:
        store.dispose()
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    removed = ", ".join(f"{k} {v}" for k, v in result["removed"].items() if v)
    console.print(
        f"erased {customer_id!r} (now {result['customer']}; audit entry {result['audit_id']}): "
        f"{removed or 'nothing was left'}",
        soft_wrap=True,
    )


def lake_sync(
    batch: Annotated[int, typer.Option(min=1, help="Events per lake file.")] = 50_000,
    settle: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Copy only events received this many seconds ago (default: 5 on PostgreSQL, "
            "where a transaction in flight can commit an earlier seq later; 0 on SQLite).",
        ),
    ] = None,
) -> None:
    """Copy the engine's accepted events and profile changes to the lake now (exactly once)."""
    from engine.lake import EventLake
    from engine.runtime.lake_sync import sync_once
    from nudge.engine_cli import open_store, settings

    s = settings()
    store = open_store(s)
    try:
        report = sync_once(store, EventLake(s.lake_dir), batch=batch, settle=settle)
    finally:
        store.dispose()
    console.print(
        f"lake sync: {report.events:,} events ({report.added:,} new to the lake, "
        f"{report.duplicates:,} already there), {report.profiles:,} profiles, "
        f"{report.seconds:.1f} s",
        soft_wrap=True,
    )
