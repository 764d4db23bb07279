"""Known event types: the standard ones, the engine's own, the lake's and the inbox's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from engine.dsl.triggers import load_trigger_dir
from engine.events import validate_event
from engine.lake import EventLake, events_to_table
from engine.runtime.event_vocabulary import (
    event_type_warnings,
    event_type_warnings_at,
    known_event_types,
)
from engine.runtime.inbox import accept_events

NOW = datetime(2026, 3, 1, tzinfo=UTC)
TRIGGER = (
    "id: custom\nwhen: {event: webinar_joined}\n"
    "if: {behavior: {event: demo_booked, within: 7d, count: {gte: 1}}}\n"
    "actions: [{add_to_segment: {segment: s}}]\n"
)


def lake_with(root: Path, event_type: str) -> EventLake:
    lake = EventLake(root)
    event = {"event_id": "l1", "customer_id": "c1", "event_type": event_type,
             "timestamp": NOW.isoformat()}  # fmt: skip
    lake.append(events_to_table([validate_event(event)]))
    return lake


def test_types_from_the_lake_and_the_inbox_are_known(engine_store, tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "custom.yaml").write_text(TRIGGER)
    triggers = load_trigger_dir(tmp_path / "t").triggers
    empty = EventLake(tmp_path / "none")
    assert [w.message.split("'")[1] for w in event_type_warnings(triggers, engine_store, empty)] \
        == ["webinar_joined", "demo_booked"]  # fmt: skip
    lake = lake_with(tmp_path / "lake", "webinar_joined")
    event = {"event_id": "i1", "customer_id": "c1", "event_type": "demo_booked",
             "timestamp": NOW.isoformat()}  # fmt: skip
    [accepted] = accept_events(engine_store, [event], source="t", now=NOW.timestamp())
    assert accepted.status == "accepted"
    known = known_event_types(engine_store, lake)
    assert known is not None
    assert {"webinar_joined", "demo_booked", "signup", "email_complained", "identify"} <= known
    assert event_type_warnings(triggers, engine_store, lake) == []


def test_validate_reads_an_existing_database_and_creates_none(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "custom.yaml").write_text(TRIGGER)
    triggers = load_trigger_dir(tmp_path / "t").triggers
    url = f"sqlite:///{tmp_path / 'missing' / 'engine.db'}"
    lake = lake_with(tmp_path / "lake", "demo_booked")
    [warning] = event_type_warnings_at(triggers, url, lake.root)
    assert "'webinar_joined'" in warning.message
    assert not (tmp_path / "missing").exists(), "validating must not create a database"
