"""The store's former API as one class, while its callers move to the modules (removed after)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from engine.store import batch, customers, dead_letters, execution_log, inbox, outbox
from engine.store.db import EngineDB
from engine.store.inbox import InboxEvent
from engine.store.schema import metadata
from engine.store.sql import count_rows


class EngineStore(EngineDB):
    @classmethod
    def connect(cls, url: str, *, schema: str | None = None) -> EngineStore:  # type: ignore[override]
        store = cls.open(url, schema=schema)
        assert isinstance(store, EngineStore)
        return store

    def add_events(self, rows: Sequence[Mapping[str, Any]], now: float) -> set[str]:
        return self.write(inbox.add_events, rows, now)

    def claim_pending(self, limit: int, worker: tuple[int, int] = (0, 1)) -> list[InboxEvent]:
        return self.read(inbox.pending_events, limit, worker)

    def pending_count(self) -> int:
        return self.read(inbox.pending_count)

    def commit_batch(self, **kwargs: Any) -> None:
        self.write(batch.commit_batch, **kwargs)

    def load_states(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.read(customers.load_states, ids)

    def save_states(self, states: Mapping[str, Mapping[str, Any]], now: float) -> None:
        self.write(customers.save_states, states, now)

    def load_profiles(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.read(customers.load_profiles, ids)

    def upsert_profiles(self, rows: Mapping[str, Mapping[str, Any]], now: float) -> None:
        self.write(customers.upsert_profiles, rows, now)

    def merge_profiles(self, rows: Mapping[str, tuple[Mapping[str, Any], float]]) -> int:
        return self.write(customers.merge_profiles, rows)

    def add_dead_letters(self, rows: Sequence[Mapping[str, Any]], now: float) -> None:
        self.write(dead_letters.add_dead_letters, rows, now)

    def list_dead_letters(
        self, *, include_redriven: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        rows = self.read(
            dead_letters.list_dead_letters, include_redriven=include_redriven, limit=limit
        )
        return [asdict(r) for r in rows]

    def mark_redriven(self, ids: Sequence[int], now: float) -> None:
        self.write(dead_letters.mark_redriven, ids, now)

    def claim_due_actions(self, now: float, limit: int, worker_id: str) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.write(outbox.claim_due, now, limit, worker_id)]

    def release_stale_claims(self, older_than: float) -> int:
        return self.write(outbox.release_claims, older_than=older_than)

    def mark_action(
        self, action_id: int, status: str, now: float, result: str | None = None, **effects: Any
    ) -> None:
        self.write(outbox.mark_action, action_id, status, now, result, **effects)

    def retry_action(
        self, action_id: int, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        self.write(outbox.retry_action, action_id, attempts, next_attempt_at, error)

    def actions_finished_since(
        self, since: float, *, kind: str, status: str
    ) -> list[dict[str, Any]]:
        rows = self.read(outbox.list_actions, kind=kind, status=status, finished_since=since)
        return [asdict(r) for r in rows]

    def event_times(self, event_ids: Iterable[str]) -> dict[str, float]:
        return self.read(inbox.event_times, event_ids)

    def action_counts(self) -> dict[tuple[str, str], int]:
        return self.read(outbox.action_counts)

    def customer_events(self, customer_id: str, after: float, until: float) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.read(inbox.customer_events, customer_id, after, until)]

    def event_payloads(self, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        return self.read(inbox.event_payloads, event_ids)

    def decision_scores_of(
        self, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        return self.read(execution_log.scores_of, keys)

    def list_tasks(self, status: str | None = "open", limit: int = 100) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.read(outbox.list_tasks, status, limit)]

    def segment_members(self, segment: str) -> list[str]:
        return self.read(customers.segment_members, segment)

    def decisions(self, **kwargs: Any) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.read(execution_log.list_decisions, **kwargs)]

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        return self.read(execution_log.outcome_counts)

    def planned_actions(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.read(outbox.list_actions)]

    def count(self, table: str) -> int:
        return self.read(count_rows, metadata.tables[table])


def load_exposures(store: EngineDB, trigger_id: str, **options: Any) -> Any:
    """Former `engine.optimizer.exposures.load_exposures(store, …)`."""
    from engine.store import exposures

    return store.read(exposures.load_exposures, trigger_id, **options)


def experiment_triggers(store: EngineDB) -> list[str]:
    """Former `engine.optimizer.exposures.experiment_triggers(store)`."""
    from engine.store import exposures

    return store.read(exposures.experiment_triggers)
