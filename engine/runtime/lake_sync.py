"""Engine → lake: every accepted event and profile change reaches the lake exactly once.

`sync_once` copies the inbox events not yet in the lake (``inbox.lake_synced`` false, seq order)
to the lake in batches, marking them copied in the engine database after each batch is in the
lake, then the profiles changed after the ``profiles`` watermark to the lake's customer table.
Identity follows into the lake: an event sent under an anonymous id that is linked to a customer
is written as the customer's, and events already in the lake under an id linked since the last
sync are rewritten as the customer's (the ``identities`` watermark over the links' time). Exactly
once, by two halves: the marker means nothing is copied twice in normal operation, and the lake's
append is idempotent by event_id (a crash between the append and the marking copies the batch
again, and the lake skips it). Profiles are upserted by customer_id, so the same holds.

Why a marker per event rather than a watermark over seq (migration 0006): PostgreSQL gives a seq
at insert but shows the row only at commit, so a transaction that commits after a later one (a
slow client, a lock wait) leaves a gap that a seq watermark passes for ever; a time window
("only events received over 5 s ago") only narrows that race. A PostgreSQL snapshot-xmin
watermark would be exact too, but needs an xid column, is PostgreSQL-only and is harder to
reason about; the marker is one indexed boolean, the same on SQLite and PostgreSQL, at the cost
of one UPDATE per copied event (batched). The profile and link streams still use their time
watermarks, held back by `settle` seconds on PostgreSQL (5 by default; 0 on SQLite, which
commits one writer at a time); upserts and renames are idempotent, so only a change committed
more than `settle` seconds after its timestamp could be missed. `engine serve` runs the sync in
a background thread (`start_lake_sync`, every NUDGE_LAKE_SYNC_SECONDS); ``nudge lake sync`` runs
it now. Erased customers' events are removed from the inbox before the lake is rewritten
(engine.runtime.erasure), so a sync cannot copy them back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from engine.events import Event, event_context
from engine.lake import EventLake, events_to_table
from engine.store import EngineDB
from engine.store.lake_sync import (
    advance,
    final_customers,
    links_after,
    mark_synced,
    profiles_after,
    read_watermark,
    unsynced_events,
)

__all__ = ["SyncReport", "start_lake_sync", "sync_once"]

log = logging.getLogger(__name__)

_FAR = "36500d"  # accepted events were checked against the clock when they arrived


@dataclass(frozen=True)
class SyncReport:
    """What one sync copied: events read, added to the lake, already there; profiles upserted."""

    events: int
    added: int
    duplicates: int
    profiles: int
    seconds: float
    renamed: int = 0  # lake events moved to the customer their anonymous id was linked to


def sync_once(
    store: EngineDB,
    lake: EventLake,
    *,
    batch: int = 50_000,
    settle: float | None = None,
    clock: Callable[[], float] = time.time,
) -> SyncReport:
    """Copy what the lake lacks, batch by batch, until the inbox and profiles are caught up;
    `settle`: how far behind the clock the profile and link streams stay (see the module)."""
    started = time.perf_counter()
    wait = (5.0 if store.dialect == "postgresql" else 0.0) if settle is None else settle
    events = added = duplicates = 0
    context = event_context(now=clock(), max_future=_FAR)
    while True:
        rows = store.read(unsynced_events, batch)
        if not rows:
            break
        parsed = [Event.model_validate_json(payload, context=context) for _, payload in rows]
        # Events sent under an id linked since (identify / alias) are the customer's in the lake.
        owners = store.read(final_customers, sorted({e.customer_id for e in parsed}))
        if owners:
            parsed = [e.model_copy(update={"customer_id": owners[e.customer_id]})
                      if e.customer_id in owners else e for e in parsed]  # fmt: skip
        result = lake.append(events_to_table(parsed))
        with store.begin() as conn:
            mark_synced(conn, [seq for seq, _ in rows])
            highest = max(read_watermark(conn, "events").position, float(rows[-1][0]))
            advance(conn, "events", highest, len(rows), clock())
        events, added, duplicates = (
            events + len(rows),
            added + result.added,
            duplicates + result.duplicates,
        )
        if len(rows) < batch:
            break
    profiles = _sync_profiles(store, lake, clock() - wait, clock)
    renamed = _sync_links(store, lake, clock() - wait, clock)
    return SyncReport(events, added, duplicates, profiles, time.perf_counter() - started, renamed)


def _sync_links(store: EngineDB, lake: EventLake, until: float, clock: Callable[[], float]) -> int:
    """Events the lake holds under an id linked since the last sync move to its customer."""
    mark = store.read(read_watermark, "identities")
    links = store.read(links_after, mark.position, until)
    if not links:
        return 0
    owners = store.read(final_customers, [a for a, _ in links])
    renamed = lake.rename_customers(owners)
    store.write(advance, "identities", max(at for _, at in links), len(links), clock())
    return renamed


def _sync_profiles(
    store: EngineDB, lake: EventLake, until: float, clock: Callable[[], float]
) -> int:
    mark = store.read(read_watermark, "profiles")
    rows = store.read(profiles_after, mark.position, until)
    if not rows:
        return 0
    lake.upsert_customers(_profile_frame([json.loads(data) for _, data, _ in rows]))
    store.write(advance, "profiles", max(at for _, _, at in rows), len(rows), clock())
    return len(rows)


def _profile_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Profiles in the lake's customer-table types: flags as booleans, signup_at a UTC time,
    nested attributes as JSON text, the rest as text."""
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:
        values = frame[column]
        if column.startswith("consent_"):
            frame[column] = values.map(lambda v: bool(v) if v is not None and v == v else False)
        elif column == "signup_at":
            frame[column] = pd.to_datetime(values, utc=True, errors="coerce")
        else:
            frame[column] = values.map(_text)
    return frame


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def start_lake_sync(
    store: EngineDB,
    lake_dir: Path,
    stop: threading.Event,
    *,
    every: float = 60.0,
    batch: int = 50_000,
    on_error: Callable[[Exception], None] | None = None,
) -> threading.Thread:
    """Run `sync_once` every `every` seconds in a daemon thread until `stop` is set; a failure
    is reported (`on_error`, else logged) and the next round tries again."""
    lake = EventLake(lake_dir)

    def run() -> None:
        while not stop.is_set():
            try:
                report = sync_once(store, lake, batch=batch)
                if report.events or report.profiles:
                    log.info("lake sync: %d events (%d new), %d profiles", report.events,
                             report.added, report.profiles)  # fmt: skip
            except Exception as exc:  # the API must keep running; the next round retries
                (on_error or (lambda e: log.exception("lake sync failed: %s", e)))(exc)
            stop.wait(every)

    thread = threading.Thread(target=run, name="lake-sync", daemon=True)
    thread.start()
    return thread
