"""Definitions checked against the data: every event type and property a model definition
reads must occur in the lake, else the definition is refused at its file and line.

A typo in ``label.event`` would otherwise train on a label that is always 0 (and the message
would be about positives, not the typo). One DuckDB query over the events read for training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from models.definitions import EventGroup, PropertyFeature

if TYPE_CHECKING:
    from features.compute.workspace import EventsInput
    from models.definitions import DefinitionError, Definitions

__all__ = ["check_definitions", "definition_problems", "usable_definitions"]


def check_definitions(definitions: Definitions, events: EventsInput) -> None:
    """Raise `DefinitionError` (file:line) for the first event type or property a definition
    reads that no event in `events` has."""
    for problem in definition_problems(definitions, events).values():
        raise problem


def usable_definitions(
    definitions: Definitions, events: EventsInput, *, explicit: bool
) -> tuple[Definitions, dict[str, str]]:
    """The definitions the data can train, and why the others cannot. Models named explicitly
    (`explicit`) must all be usable: the first problem is raised; otherwise a model whose
    events the lake lacks (engagement on purchase-only data) is left out with its reason."""
    problems = definition_problems(definitions, events)
    if explicit and problems:
        raise next(iter(problems.values()))
    kept = [name for name in definitions.names if name not in problems]
    if not kept:
        raise next(iter(problems.values()))
    return definitions.subset(kept), {name: str(p) for name, p in problems.items()}


def definition_problems(
    definitions: Definitions, events: EventsInput
) -> dict[str, DefinitionError]:
    """Per definition, its first event type or property that no event in `events` has."""
    problems: dict[str, DefinitionError] = {}
    con = duckdb.connect()
    try:
        con.register("events", events)
        present = {
            row[0] for row in con.execute("SELECT DISTINCT event_type FROM events").fetchall()
        }
        names = con.execute("SELECT * FROM events LIMIT 0").description or []
        has_properties = "properties" in {column[0] for column in names}
        for definition in definitions:
            located = definitions.where(definition.name)
            for path, event in _event_paths(definition):
                if event not in present:
                    known = ", ".join(sorted(present)[:12])
                    problems[definition.name] = located.error(
                        path,
                        f"unknown event {event!r}: the lake has no such event (it has {known})",
                    )
                    break
            if definition.name in problems:
                continue
            for event, keys in definition.properties().items():
                for key in sorted(keys):
                    row = (
                        con.execute(
                            "SELECT count(*) FROM events WHERE event_type = ? "
                            "AND json_extract(properties, ?) IS NOT NULL",
                            [event, f'$."{key}"'],
                        ).fetchone()
                        if has_properties
                        else None
                    )
                    found = bool(row and row[0])
                    if not found and definition.name not in problems:
                        problems[definition.name] = located.error(
                            _property_path(definition, key),
                            f"unknown property {key!r}: no {event} event in the lake has it",
                        )
    finally:
        con.close()
    return problems


def _event_paths(definition: object) -> list[tuple[str, str]]:
    from models.definitions import ModelDefinition

    assert isinstance(definition, ModelDefinition)
    paths = [(f"label.event.{i}" if len(definition.label.event) > 1 else "label.event", e)
             for i, e in enumerate(definition.label.event)]  # fmt: skip
    for index, entry in enumerate(definition.feature_entries):
        if isinstance(entry, EventGroup):
            paths += [(f"features.{index}.events.{i}", e) for i, e in enumerate(entry.events)]
        elif isinstance(entry, PropertyFeature):
            paths.append((f"features.{index}.event", entry.event))
    return paths


def _property_path(definition: object, key: str) -> str:
    from models.definitions import ModelDefinition

    assert isinstance(definition, ModelDefinition)
    for ref in definition.label.where or {}:
        if ref.removeprefix("properties.").split(".")[0] == key:
            return f"label.where.{ref}"
    if definition.label.value and definition.label.value.endswith(key):
        return "label.value"
    for index, entry in enumerate(definition.feature_entries):
        if isinstance(entry, PropertyFeature) and entry.property.split(".")[0] == key:
            return f"features.{index}.property"
    return "label"
