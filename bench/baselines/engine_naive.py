"""BASELINE — not nudge code: the trigger loop of the original design sketch.

For every event it walks every trigger, and for each condition it reads what it needs from the
database (a COUNT query per behavior condition, a profile lookup per attribute condition), as the
sketch's asyncpg/redis-per-condition code does. Events are stored as they arrive. It exists so that
bench/engine_throughput.py can quote nudge's engine as a ratio against it, measured in the same
run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from engine.dsl.conditions import AllOf, Behavior, FieldTests, Not, lookup
from engine.dsl.triggers import Trigger


class NaiveEngine:
    """Evaluate every trigger on every event, reading state from SQLite per condition."""

    def __init__(
        self, path: str, triggers: list[Trigger], profiles: dict[str, dict[str, Any]]
    ) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE events (customer_id TEXT, event_type TEXT, at REAL, amount REAL)"
        )
        self.db.execute("CREATE INDEX events_by_customer ON events (customer_id, event_type, at)")
        self.db.execute("CREATE TABLE profiles (customer_id TEXT PRIMARY KEY, data TEXT)")
        self.db.executemany(
            "INSERT INTO profiles VALUES (?, ?)",
            [(c, json.dumps(p, default=str)) for c, p in profiles.items()],
        )
        self.db.commit()
        self.triggers = triggers
        self.fired = 0

    def handle(
        self,
        customer_id: str,
        event_type: str,
        at: float,
        amount: float | None,
        fields: Mapping[str, Any],
    ) -> None:
        self.db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?)", (customer_id, event_type, at, amount)
        )
        for trigger in self.triggers:  # no index: every trigger, every event
            if trigger.event_type != event_type:
                continue
            if trigger.where is not None and not all(
                p.holds(lookup(fields, path)) for path, p in trigger.where.tests
            ):
                continue
            if trigger.condition is None or self._holds(trigger.condition, customer_id, at):
                self.fired += 1
                self.db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?)",
                    (customer_id, f"fired:{trigger.id}", at, None),
                )
        self.db.commit()

    def _holds(self, condition: Any, customer_id: str, at: float) -> bool:
        if isinstance(condition, Not):
            return not self._holds(condition.child, customer_id, at)
        if isinstance(condition, AllOf):
            results: Iterable[bool] = (self._holds(c, customer_id, at) for c in condition.children)
            return any(results) if condition.kind == "any" else all(results)
        if isinstance(condition, Behavior):
            (count,) = self.db.execute(
                "SELECT COUNT(*) FROM events WHERE customer_id = ? AND event_type = ? AND at > ? AND at <= ?",
                (
                    customer_id,
                    condition.event_type,
                    at - condition.window_start,
                    at - condition.window_end,
                ),
            ).fetchone()
            return condition.predicate.holds(count)
        if isinstance(condition, FieldTests) and condition.source == "attribute":
            row = self.db.execute(
                "SELECT data FROM profiles WHERE customer_id = ?", (customer_id,)
            ).fetchone()
            profile = json.loads(row[0]) if row else {}
            return all(p.holds(lookup(profile, path)) for path, p in condition.tests)
        raise NotImplementedError(type(condition).__name__)
