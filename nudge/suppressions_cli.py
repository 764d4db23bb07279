"""`nudge suppressions …`: the address-level suppression list, and the deliverability guard's pause.

``list`` (optionally ``--reason``, ``--json``), ``add ADDRESS`` (reason ``manual``), ``remove
ADDRESS``, ``import FILE.csv`` (a column ``address`` or ``email``, optionally ``reason``
manual/bounced/complained and ``detail``) and ``export FILE.csv`` (every entry with its address;
erased customers' entries are hashes only and are counted, not exported).
``resume-marketing`` ends the guard's pause of marketing sends (engine.runtime.deliverability);
``status`` shows it and the day's figures behind it.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nudge.console import console, fail
from nudge.errors import Commands

if TYPE_CHECKING:
    from engine.store import EngineDB
    from nudge.settings import Settings

__all__ = ["suppressions_app"]

suppressions_app = typer.Typer(
    cls=Commands,
    help="The suppression list (bounced, complained, soft-bounce suspensions, manual entries) "
    "and the deliverability guard's marketing pause.",
    no_args_is_help=True,
)

IMPORT_REASONS = ("manual", "bounced", "complained")
MAX_ADDRESS = 320


def _open() -> tuple[Settings, EngineDB]:
    from nudge.engine_cli import open_store, settings

    s = settings()
    return s, open_store(s)


def _checked(address: str, where: str = "address") -> str:
    """The address, trimmed and lower-cased; UserError naming `where` when it is not one."""
    from engine.store.suppressions import normalise_email

    text = normalise_email(address)
    local, at, domain = text.partition("@")
    if not at or not local or "." not in domain or len(text) > MAX_ADDRESS or " " in text:
        fail(f"{where}: expected an email address like ada@example.com (got {address[:80]!r})")
    return text


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


@suppressions_app.command("list")
def list_command(
    reason: Annotated[
        str | None,
        typer.Option(help="Only this reason: bounced, complained, soft, manual, erased."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Every address on the list, oldest first (erased ones as their hash)."""
    from engine.store.suppressions import REASONS, list_suppressions

    if reason is not None and reason not in REASONS:
        fail(f"--reason: expected one of {', '.join(REASONS)} (got {reason!r})")
    _, store = _open()
    try:
        entries = store.read(list_suppressions, reason)
    finally:
        store.dispose()
    now = time.time()
    if as_json:
        for e in entries:
            row = {"address": e.address, "address_hash": None if e.address else e.address_hash,
                   "reason": e.reason, "active": e.active(now), "added_at": e.added_at,
                   "until": e.until, "soft_bounces": e.soft_bounces, "detail": e.detail}  # fmt: skip
            sys.stdout.write(json.dumps(row) + "\n")
        return
    if not entries:
        console.print("the suppression list is empty")
        return
    for e in entries:
        state = "" if e.active(now) else " (not held: counting soft bounces)"
        until = f" until {_when(e.until)}" if e.until and e.active(now) else ""
        who = e.address or f"erased:{e.address_hash[:16]}…"
        console.print(f"{who}  {e.reason}{until}{state}  added {_when(e.added_at)}"
                      f"{'  ' + e.detail if e.detail else ''}", soft_wrap=True)  # fmt: skip


@suppressions_app.command("add")
def add_command(
    address: Annotated[str, typer.Argument(help="The email address never to mail.")],
    detail: Annotated[str | None, typer.Option(help="Why (kept with the entry).")] = None,
) -> None:
    """Put an address on the list (reason manual)."""
    from engine.runtime.erasure import address_hash
    from engine.store.suppressions import add_suppression

    text = _checked(address)
    s, store = _open()
    try:
        added = store.write(add_suppression, address_hash(text, s.erasure_key()), text, "manual",
                            time.time(), detail=detail or "nudge suppressions add")  # fmt: skip
    finally:
        store.dispose()
    console.print(f"{text}: suppressed (manual)" if added else f"{text}: already suppressed")


@suppressions_app.command("remove")
def remove_command(
    address: Annotated[str, typer.Argument(help="The address to mail again.")],
) -> None:
    """Take an address off the list (not an erased customer's)."""
    from engine.errors import UserError
    from engine.runtime.erasure import address_hash
    from engine.store.suppressions import remove_suppression

    text = _checked(address)
    s, store = _open()
    try:
        try:
            reason = store.write(remove_suppression, address_hash(text, s.erasure_key()))
        except ValueError as exc:
            raise UserError(f"{text}: {exc}") from None
    finally:
        store.dispose()
    if reason is None:
        fail(f"{text}: not on the suppression list")
    console.print(f"{text}: removed (was {reason})")


@suppressions_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with a header.")],
) -> None:
    """Add the addresses of a CSV (column address or email; optional reason, detail). The whole
    file is checked first: one bad row and nothing is added (the error names its line)."""
    from engine.runtime.erasure import address_hash
    from engine.store.suppressions import add_suppression

    rows = _read_csv(file)
    s, store = _open()
    salt, now = s.erasure_key(), time.time()

    def add_all(conn: Any) -> int:
        return sum(
            add_suppression(conn, address_hash(a, salt), a, reason, now, detail=detail)
            for a, reason, detail in rows
        )

    try:
        added = store.write(add_all)
    finally:
        store.dispose()
    console.print(f"{file.name}: {added:,} added, {len(rows) - added:,} already suppressed")


def _read_csv(file: Path) -> list[tuple[str, str, str | None]]:
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in reader.fieldnames or []]
            column = "address" if "address" in header else "email" if "email" in header else None
            if column is None:
                fail(f"{file.name}: expected a header with a column address (or email), "
                     f"got {', '.join(header) or 'none'}")  # fmt: skip
            rows = []
            for line, raw in enumerate(reader, start=2):
                record = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
                where = f"{file.name}:{line}: {column}"
                address = _checked(record.get(column, ""), where)
                reason = record.get("reason") or "manual"
                if reason not in IMPORT_REASONS:
                    fail(f"{file.name}:{line}: reason: expected one of {', '.join(IMPORT_REASONS)} "
                         f"(got {reason[:40]!r})")  # fmt: skip
                rows.append((address, reason, record.get("detail") or f"imported from {file.name}"))
    except UnicodeDecodeError as exc:
        fail(f"{file.name}: expected UTF-8 text ({exc.reason} at byte {exc.start})")
    except csv.Error as exc:
        fail(f"{file.name}: not a readable CSV ({exc})")
    return rows


@suppressions_app.command("export")
def export_command(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write the CSV.")],
) -> None:
    """Write every entry with an address to a CSV (address, reason, added_at, until,
    soft_bounces, detail); erased customers' entries are hashes and stay out."""
    from engine.store.suppressions import list_suppressions

    _, store = _open()
    try:
        entries = store.read(list_suppressions)
    finally:
        store.dispose()
    listed = [e for e in entries if e.address]
    try:
        with file.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["address", "reason", "added_at", "until", "soft_bounces", "detail"])
            for e in listed:
                writer.writerow([e.address, e.reason, _iso(e.added_at), _iso(e.until),
                                 e.soft_bounces, e.detail or ""])  # fmt: skip
    except OSError as exc:
        fail(f"{file}: cannot write ({exc.strerror})")
    erased = len(entries) - len(listed)
    console.print(f"{file}: {len(listed):,} entries" + (
        f" ({erased:,} erased customers' hashes not exported)" if erased else ""))  # fmt: skip


def _iso(epoch: float | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


@suppressions_app.command("status")
def status_command(
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of figures to show.")] = 7,
    by_trigger: Annotated[
        bool, typer.Option("--by-trigger", help="One line per day and trigger.")
    ] = False,
) -> None:
    """The marketing pause (if any) and bounce, complaint and unsubscribe rates per day."""
    from engine.runtime.deliverability import WARNING_FLAG, marketing_pause
    from engine.store.reporting import deliverability_rates
    from engine.store.suppressions import get_flag

    _, store = _open()
    try:
        pause = store.read(marketing_pause)
        warning = store.read(get_flag, WARNING_FLAG)
        frame = store.read(deliverability_rates, since=time.time() - days * 86_400)
    finally:
        store.dispose()
    if pause:
        console.print(f"[bold red]marketing paused[/] since {_when(pause['set_at'])}: complaints "
                      f"{pause['rate']:.2%} of delivered on {pause['day']} "
                      f"({pause['complained']} of {pause['delivered']}); "
                      "`nudge suppressions resume-marketing` resumes", soft_wrap=True)  # fmt: skip
    elif warning:
        console.print(f"[yellow]warning[/]: complaints {warning['rate']:.2%} of delivered on "
                      f"{warning['day']}", soft_wrap=True)  # fmt: skip
    else:
        console.print("marketing sends: running")
    if frame.empty:
        console.print(f"no deliveries, bounces, complaints or unsubscribes in {days} days")
        return
    columns = ["delivered", "bounced", "complained", "unsubscribed"]
    if by_trigger:
        frame = frame.assign(trigger=frame["trigger"].fillna("(no message)"))
        daily = frame.groupby(["day", "trigger"])[columns].sum()
    else:
        daily = frame.groupby("day")[columns].sum()
    for day, row in daily.iterrows():
        day = " ".join(day) if isinstance(day, tuple) else day
        delivered = int(row["delivered"])

        def rate(n: Any, total: int = delivered) -> str:
            return f"{int(n) / total:.2%}" if total else "n/a"

        console.print(f"{day}: delivered {delivered:,}, bounced {int(row['bounced']):,} "
                      f"({rate(row['bounced'])}), complained {int(row['complained']):,} "
                      f"({rate(row['complained'])}), unsubscribed {int(row['unsubscribed']):,} "
                      f"({rate(row['unsubscribed'])})", soft_wrap=True)  # fmt: skip


@suppressions_app.command("resume-marketing")
def resume_command() -> None:
    """End the deliverability guard's pause: paused marketing sends go out at their next try."""
    from engine.runtime.deliverability import resume_marketing

    _, store = _open()
    try:
        resumed = store.write(resume_marketing)
    finally:
        store.dispose()
    console.print("marketing sends resumed" if resumed else "marketing sends were not paused")
