"""Erasing a customer's Feast online rows on the production online store, the real Redis (SQL
registry on PostgreSQL): written by Feast's materialization, erased, read back through Feast as
absent, other customers untouched. A project of its own; its keys and registry rows are removed
by Feast's teardown at the end. (The embedded SQLite store: tests/pipelines/test_live_lake.py.)"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import POSTGRES_URL, postgres_available, require_service
from tests.serving.conftest import prepared  # noqa: F401  (the session's prepared home)
from tests.serving.test_redis import redis_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def test_erasure_removes_the_customers_rows_from_the_redis_online_store(
    prepared,  # noqa: F811
    monkeypatch,
):
    require_service("Redis at 127.0.0.1:6379", *redis_available())
    require_service("PostgreSQL at 127.0.0.1:5432", *postgres_available())
    from features.store import apply_definitions, materialize_snapshot, online_features, open_store
    from pipelines.online_erasure import erase_online_rows

    monkeypatch.setenv(
        "NUDGE_FEAST_REGISTRY_URL", os.environ.get("NUDGE_FEAST_REGISTRY_URL", POSTGRES_URL)
    )
    monkeypatch.delenv("NUDGE_REDIS_URL", raising=False)
    project = f"nudge_erasure_{uuid.uuid4().hex[:10]}"
    store = open_store(prepared.home, production=True, project=project)
    try:
        apply_definitions(store, prepared.home)
        materialize_snapshot(store, prepared.snapshot)
        victim, other = prepared.known_ids[:2]
        assert set(online_features(store, "churn", [victim, other])["customer_id"]) == {
            victim,
            other,
        }
        removed = erase_online_rows(victim, prepared.home, production=True, project=project)
        assert removed == {"store": "redis", "keys": 1}
        reopened = open_store(prepared.home, production=True, project=project)
        assert online_features(reopened, "churn", [victim]).empty
        assert set(online_features(reopened, "churn", [other])["customer_id"]) == {other}
        again = erase_online_rows(victim, prepared.home, production=True, project=project)
        assert again == {"store": "redis", "keys": 0}
    finally:
        store.teardown()
