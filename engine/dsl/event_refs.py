"""The event types a trigger names, with their lines, and a warning for those no input has had.

A typo such as ``cart_abandonedd`` loads fine (any well-formed type is allowed, since customers
send their own), and the trigger then never fires. `check_event_types` compares every type a
trigger names with the types that are known — the standard ones and those the lake and the
inbox have seen, which the caller gathers (`engine.runtime.event_vocabulary`) — and returns one
warning per unknown type at its file and line, with a "did you mean" when one is close.

Where a trigger names event types (`event_refs`): ``when.event``, ``when.then_absent.event``, and
in ``if`` and every action's ``cancel_if`` the conditions ``event`` (a type, or ``{type: …}``),
``behavior.event``, ``sequence.steps`` and ``sequence.then_absent.event``, and
``time.since_last``. Any other shape (a ``when`` without ``event``, such as a schedule or a
score crossing, or a condition kind this module does not know) is skipped: the loader, not this
module, says what is valid.

The positions come from the node the loader composed the trigger from (`Trigger.event_refs`,
collected while loading: the file is not parsed a second time).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import yaml

from engine.dsl.bounded_yaml import node_line as _line_of
from engine.dsl.bounded_yaml import yaml_path as _dotted
from engine.dsl.triggers import TemplateRef, Trigger, TriggerIssue

__all__ = ["check_event_types", "event_refs", "unknown_event_message"]

Loc = tuple[str | int, ...]
# Condition kinds that hold other conditions: walked into.
_CONTAINERS = ("all", "any")


def event_refs(raw: Any, node: yaml.Node) -> tuple[TemplateRef, ...]:
    """Every event type that the trigger `raw` (composed as `node`) names, where it names it
    (a `TemplateRef` whose ``name`` is the event type)."""
    found: list[TemplateRef] = []

    def add(name: Any, where: Loc) -> None:
        if isinstance(name, str) and name:
            found.append(TemplateRef(name, _dotted(where), _line_of(node, where)))

    def condition(value: Any, loc: Loc) -> None:
        if isinstance(value, list):  # a list of conditions is an implicit all
            for index, child in enumerate(value):
                condition(child, (*loc, index))
            return
        if not isinstance(value, Mapping):
            return
        for kind, body in value.items():
            where = (*loc, kind)
            if kind in _CONTAINERS and isinstance(body, list):
                for index, child in enumerate(body):
                    condition(child, (*where, index))
            elif kind == "not":
                condition(body, where)
            elif kind == "event":
                if isinstance(body, Mapping):
                    add(body.get("type"), (*where, "type"))
                else:
                    add(body, where)
            elif kind == "behavior" and isinstance(body, Mapping):
                add(body.get("event"), (*where, "event"))
            elif kind == "sequence" and isinstance(body, Mapping):
                steps = body.get("steps")
                for index, step in enumerate(steps if isinstance(steps, list) else []):
                    add(step, (*where, "steps", index))
                absent = body.get("then_absent")
                if isinstance(absent, Mapping):
                    add(absent.get("event"), (*where, "then_absent", "event"))
            elif kind == "time" and isinstance(body, Mapping):
                add(body.get("since_last"), (*where, "since_last"))

    if not isinstance(raw, Mapping):
        return ()
    when = raw.get("when")
    if isinstance(when, Mapping):
        add(when.get("event"), ("when", "event"))
        absent = when.get("then_absent")
        if isinstance(absent, Mapping):
            add(absent.get("event"), ("when", "then_absent", "event"))
    condition(raw.get("if"), ("if",))
    actions = raw.get("actions")
    for index, action in enumerate(actions if isinstance(actions, list) else []):
        if isinstance(action, Mapping):
            condition(action.get("cancel_if"), ("actions", index, "cancel_if"))
    return tuple(found)


def unknown_event_message(name: str, known: Collection[str]) -> str:
    """The warning's text for an event type `name` that is not in `known`."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown event type {name!r}: not a standard type and no event of it in the lake or "
        f"the inbox{hint}"
    )


def check_event_types(triggers: Iterable[Trigger], known: Collection[str]) -> list[TriggerIssue]:
    """One warning (a `TriggerIssue`) per event type a trigger names that is not in `known`,
    at the file and line that names it, in file and line order."""
    warnings = [
        TriggerIssue(trigger.source, ref.path, ref.line, unknown_event_message(ref.name, known))
        for trigger in triggers
        for ref in trigger.event_refs
        if ref.name not in known
    ]
    warnings.sort(key=lambda issue: (issue.file, issue.line or 0))
    return warnings
