"""The event types the engine knows of: what `engine.dsl.event_refs.check_event_types` compares a
trigger's event types with.

Known means: a standard type (`engine.events.STANDARD_EVENT_TYPES`), a type the engine itself
records (email feedback, identity links), or a type some input has had — in the lake
(`EventLake.event_types`) or in the inbox (`engine.store.inbox.event_types`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import duckdb
import sqlalchemy as sa

from engine.dsl.event_refs import check_event_types
from engine.dsl.triggers import Trigger, TriggerIssue
from engine.errors import UserError
from engine.events import STANDARD_EVENT_TYPES
from engine.lake import EventLake
from engine.runtime.email_webhooks import EVENT_TYPES as FEEDBACK_EVENT_TYPES
from engine.runtime.identity import LINK_EVENT_TYPES
from engine.store import EngineDB
from engine.store.inbox import event_types as inbox_event_types

__all__ = [
    "ENGINE_EVENT_TYPES",
    "event_type_warnings",
    "event_type_warnings_at",
    "known_event_types",
]

log = logging.getLogger(__name__)

ENGINE_EVENT_TYPES: frozenset[str] = frozenset(
    STANDARD_EVENT_TYPES | set(FEEDBACK_EVENT_TYPES.values()) | LINK_EVENT_TYPES
)
"""Types known without looking at any data: the standard ones and those the engine records."""


def known_event_types(store: EngineDB | None, lake: EventLake | None) -> frozenset[str] | None:
    """`ENGINE_EVENT_TYPES` and every type in the lake and the inbox; None when the lake cannot
    be read (a warning then would name types that may well be there, so none is given)."""
    known = set(ENGINE_EVENT_TYPES)
    if lake is not None:
        try:
            known |= lake.event_types()
        except (duckdb.Error, OSError) as exc:
            log.warning("event types: cannot read the lake at %s (%s)", lake.root, exc)
            return None
    if store is not None:
        known |= store.read(inbox_event_types)
    return frozenset(known)


def event_type_warnings(
    triggers: Iterable[Trigger], store: EngineDB | None, lake: EventLake | None
) -> list[TriggerIssue]:
    """The unknown event types of `triggers` (see `check_event_types`), [] when the known types
    cannot be read."""
    known = known_event_types(store, lake)
    return [] if known is None else check_event_types(triggers, known)


def event_type_warnings_at(
    triggers: Iterable[Trigger], engine_url: str, lake_dir: Path
) -> list[TriggerIssue]:
    """`event_type_warnings` for a command that has no store open (``nudge triggers validate``):
    the database at `engine_url` is read only if it exists and is current — validating creates
    or migrates nothing — and the lake at `lake_dir` only if it is there."""
    store = None
    sqlite_file = (
        engine_url.removeprefix("sqlite:///") if engine_url.startswith("sqlite:///") else None
    )
    if sqlite_file is None or Path(sqlite_file).is_file():
        try:
            store = EngineDB.open(engine_url)
        except (UserError, sa.exc.SQLAlchemyError) as exc:
            log.warning("event types: the engine database is not readable (%s)", exc)
    try:
        return event_type_warnings(triggers, store, EventLake(lake_dir))
    finally:
        if store is not None:
            store.dispose()
