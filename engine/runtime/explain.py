"""Dry-run one event for a customer: every trigger's decision trace and verdict; nothing is stored.

The use case behind ``nudge engine explain``. The event is validated like an accepted one (its
customer is the one asked about), its own profile changes apply first — as the processor applies
them before deciding, so that a signup carrying its consent shows the welcome it would get — and
the customer's state and profile are the engine's. The scores are fetched only for the models the
event's triggers read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from engine.decisions.decide import EventView, explain_event
from engine.decisions.state import CustomerState, StateLimits
from engine.decisions.suppression import SuppressionPolicy
from engine.errors import UserError
from engine.events import (
    Event,
    InvalidProfileChange,
    describe_validation_error,
    event_amount,
    profile_changes,
    validate_event,
)
from engine.store.customers import load_profiles, load_states

if TYPE_CHECKING:
    from engine.dsl.triggers import TriggerIndex
    from engine.runtime.processor import ScoreSource
    from engine.store import EngineDB

__all__ = ["Explanation", "InvalidEvent", "explain", "read_event_json"]


class InvalidEvent(UserError):
    """An event to explain that is not valid: ``source: not a valid event:`` and one line each."""

    def __init__(self, source: str, lines: list[str]) -> None:
        super().__init__(f"{source}: not a valid event:\n  " + "\n  ".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Explanation:
    """The validated event, and per trigger on its type the trace and verdict (``explain_event``)."""

    event: Event
    traces: list[dict[str, Any]]


def read_event_json(path: Path) -> Any:
    """The JSON of a file holding one event; InvalidEvent when it is not readable JSON."""
    try:
        return json.loads(path.read_bytes())
    except RecursionError:
        raise InvalidEvent(str(path), ["JSON nested too deep to read"]) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: the file's own mistakes
        raise InvalidEvent(str(path), [str(exc)]) from None


def explain(
    store: EngineDB,
    index: TriggerIndex,
    customer_id: str,
    raw_event: Any,
    *,
    scores: ScoreSource | None = None,
    policy: SuppressionPolicy | None = None,
    limits: StateLimits | None = None,
    zone: str = "UTC",
    source: str = "event",
) -> Explanation:
    """What every trigger on ``raw_event``'s type would decide for ``customer_id`` now.

    ``raw_event`` is the event as JSON data (its ``customer_id``, if any, is replaced);
    ``source`` names it in errors. ``policy`` and ``limits`` default to the processor's. Raises
    InvalidEvent when the event or its profile changes are not valid.
    """
    data = {**raw_event, "customer_id": customer_id} if isinstance(raw_event, dict) else raw_event
    try:
        event = validate_event(data)
        changes = profile_changes(customer_id, event.event_type, event.properties)
    except ValidationError as exc:
        raise InvalidEvent(source, describe_validation_error(exc)) from None
    except InvalidProfileChange as exc:
        raise InvalidEvent(source, exc.lines) from None
    except RecursionError:
        raise InvalidEvent(source, ["JSON nested too deep to read"]) from None
    state = CustomerState.from_json(
        customer_id, store.read(load_states, [customer_id]).get(customer_id)
    )
    stored = store.read(load_profiles, [customer_id]).get(customer_id, {"customer_id": customer_id})
    profile = {**stored, **changes}
    models = {m for t in index.for_event(event.event_type) for m in t.score_models()}
    fetched = scores.fetch([customer_id], models).get(customer_id, {}) if scores and models else {}
    view = EventView(event.event_id, customer_id, event.event_type, event.timestamp.timestamp(),
                     event_amount(event.properties), event.model_dump(mode="json"))  # fmt: skip
    if limits is None:  # the processor's: the longest window the triggers read, at least 90 days
        limits = StateLimits(retention=max(index.longest_window(), 90 * 86400.0))
    traces = explain_event(
        view, profile, state, index, fetched, policy or SuppressionPolicy(), limits, zone
    )
    return Explanation(event, traces)
