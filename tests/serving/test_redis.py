"""The production online store: the same service reading Redis (registry on PostgreSQL) gives
the same answers as the embedded SQLite store."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from tests.conftest import POSTGRES_URL, postgres_available, require_service
from tests.serving.conftest import API_KEY, make_settings
from tests.support import LocalServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def redis_available() -> tuple[bool, str]:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
        return True, ""
    except Exception as exc:  # any failure to connect means: not available
        return False, str(exc).splitlines()[0]


def test_scores_served_from_redis_equal_those_from_sqlite(prepared, client, monkeypatch):
    require_service("Redis at 127.0.0.1:6379", *redis_available())
    require_service("PostgreSQL at 127.0.0.1:5432", *postgres_available())
    from features.store import apply_definitions, materialize_snapshot, open_store
    from serving.app import create_app
    from serving.service import ScoringService

    monkeypatch.setenv(
        "NUDGE_FEAST_REGISTRY_URL", os.environ.get("NUDGE_FEAST_REGISTRY_URL", POSTGRES_URL)
    )
    monkeypatch.delenv("NUDGE_REDIS_URL", raising=False)
    # A project of its own keeps this run apart from anyone else's on the shared servers.
    project = f"nudge_serving_{uuid.uuid4().hex[:10]}"
    store = open_store(prepared.home, production=True, project=project)
    try:
        apply_definitions(store, prepared.home)
        materialize_snapshot(store, prepared.snapshot)
        settings = make_settings(prepared, feast_production=True, feast_project=project)
        service = ScoringService(settings).start()
        try:
            assert service.features.backend == "redis"
            ids = [*prepared.known_ids[:50], *prepared.unknown_ids[:2], "nobody"]
            body = {"customer_ids": ids, "explain": True}
            with (
                LocalServer(create_app(service=service)) as server,
                httpx.Client(base_url=server.url, headers={"X-API-Key": API_KEY}) as redis_http,
            ):
                from_redis = redis_http.post("/v1/scores", json=body)
            from_sqlite = client.post("/v1/scores", json=body)
        finally:
            service.close()
    finally:
        store.teardown()

    assert from_redis.status_code == from_sqlite.status_code == 200
    assert from_redis.json() == from_sqlite.json()
    assert sum(r["known"] for r in from_redis.json()["results"]) == 50
