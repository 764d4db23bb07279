"""Champions move while the service runs: hot swap without a failed request, a broken version
that never replaces the serving one, and a model without any champion."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import API_KEY, make_settings, registry_copy, serve_with_lifespan

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def registry(prepared, tmp_path: Path) -> Any:
    """An MLflow client on a private copy of the prepared registry."""
    import mlflow

    uri = registry_copy(prepared, tmp_path)
    client = mlflow.MlflowClient(uri, uri)
    client.uri = uri  # type: ignore[attr-defined]
    return client


@pytest.fixture
def polling_service(prepared, registry) -> Iterator[str]:
    """The app built by `create_app(settings)` (its lifespan loads the models), polling the
    private registry every 0.25 s."""
    from serving.app import create_app

    settings = make_settings(prepared, mlflow_tracking_uri=registry.uri, model_poll_seconds=0.25)
    with serve_with_lifespan(create_app(settings)) as url:
        yield url


def new_version(registry: Any, model: str, source: str) -> str:
    """Register `source` (an artifact folder) as a new version of `model`."""
    return str(registry.create_model_version(model, source).version)


def served_source(registry: Any, model: str) -> Path:
    version = registry.get_model_version_by_alias(model, "champion").version
    return artifact_folder(registry, model, version)


def artifact_folder(registry: Any, model: str, version: str) -> Path:
    """The local folder of a version's model artifacts (the store keeps file:// URIs)."""
    from urllib.parse import unquote, urlsplit

    location = registry.get_model_version_download_uri(model, version)
    return Path(unquote(urlsplit(location).path)) if "://" in location else Path(location)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def model_info(url: str, name: str) -> dict[str, Any]:
    models = httpx.get(f"{url}/v1/models", headers={"X-API-Key": API_KEY}).json()["models"]
    return next(m for m in models if m["name"] == name)


def test_moving_the_alias_swaps_the_model_while_requests_run_and_none_fails(
    polling_service, registry, prepared
):
    url = polling_service
    first = prepared.versions["churn"]
    second = new_version(registry, "churn", served_source(registry, "churn").as_uri())
    seen: list[list[tuple[str, int]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def hammer(slot: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
            i = slot
            while not stop.is_set():
                ids = prepared.known_ids[i % 900 : i % 900 + 3]
                response = http.post("/v1/scores", json={"customer_ids": ids, "models": ["churn"]})
                version = (
                    response.json()["results"][0]["scores"]["churn"]["model_version"]
                    if response.status_code == 200
                    else "-"
                )
                seen[slot].append((version, response.status_code))
                i += 4

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(seen), "every client's first answer")
        registry.set_registered_model_alias("churn", "champion", second)
        wait_for(lambda: model_info(url, "churn")["version"] == second, "the swap")
        counts = [len(s) for s in seen]
        wait_for(lambda: all(len(s) > c for s, c in zip(seen, counts, strict=True)), "answers")
    finally:
        stop.set()
        for t in threads:
            t.join()

    answers = [a for per_thread in seen for a in per_thread]
    assert len(answers) >= 8
    assert all(code == 200 for _, code in answers), {c for _, c in answers}
    assert {v for v, _ in answers} == {first, second}
    for per_thread in seen:  # each client sees the old version, then only the new one
        versions = [v for v, _ in per_thread]
        assert versions == sorted(versions, key=lambda v: v == second)
    info = model_info(url, "churn")
    assert info["status"] == "serving" and info["alias_version"] == second
    metrics = httpx.get(f"{url}/metrics").text
    assert f'nudge_scoring_model_version{{model="churn"}} {float(second)}' in metrics


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    polling_service, registry, prepared, tmp_path, caplog
):
    url = polling_service
    good = prepared.versions["churn"]
    broken_dir = tmp_path / "broken"
    shutil.copytree(served_source(registry, "churn"), broken_dir)
    (broken_dir / "python_model.pkl").write_bytes(b"not a pickle")
    broken = new_version(registry, "churn", broken_dir.as_uri())

    with caplog.at_level("ERROR", logger="serving.models"):
        registry.set_registered_model_alias("churn", "champion", broken)
        wait_for(lambda: model_info(url, "churn")["load_failure"] is not None, "the failure")
    info = model_info(url, "churn")
    assert info["status"] == "serving_previous"
    assert info["version"] == good and info["alias_version"] == broken
    assert info["load_failure"]["version"] == broken and info["load_failure"]["error"]
    assert any(f"still serving version {good}" in r.getMessage() for r in caplog.records)
    response = httpx.post(
        f"{url}/v1/scores",
        json={"customer_ids": prepared.known_ids[:3]},
        headers={"X-API-Key": API_KEY},
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["scores"]["churn"]["model_version"] == good
    assert (
        'nudge_scoring_model_load_failures_total{model="churn"} 1.0'
        in httpx.get(f"{url}/metrics").text
    )

    # A loadable model that reads other features (ltv's) is refused too, with the reason.
    wrong = new_version(registry, "churn", served_source(registry, "ltv").as_uri())
    registry.set_registered_model_alias("churn", "champion", wrong)
    wait_for(lambda: model_info(url, "churn")["load_failure"]["version"] == wrong, "refusal")
    assert "features" in model_info(url, "churn")["load_failure"]["error"]
    assert model_info(url, "churn")["version"] == good

    # A good version next clears the failure.
    healthy = new_version(registry, "churn", artifact_folder(registry, "churn", good).as_uri())
    registry.set_registered_model_alias("churn", "champion", healthy)
    wait_for(lambda: model_info(url, "churn")["version"] == healthy, "the recovery")
    assert model_info(url, "churn")["load_failure"] is None


def test_a_model_without_champion_is_not_ready_until_one_is_set_and_reloaded(prepared, registry):
    from serving.app import create_app

    registry.delete_registered_model_alias("engagement", "champion")
    settings = make_settings(prepared, mlflow_tracking_uri=registry.uri)  # polls hourly
    with serve_with_lifespan(create_app(settings)) as url:
        http = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30)
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["models"]["engagement"] is None
        ids = prepared.known_ids[:2]
        assert http.post("/v1/scores", json={"customer_ids": ids}).status_code == 503
        ok = http.post("/v1/scores", json={"customer_ids": ids, "models": ["churn"]})
        assert ok.status_code == 200
        info = model_info(url, "engagement")
        assert (
            info["status"] == "not_loaded"
            and "no version has alias" in info["load_failure"]["error"]
        )

        registry.set_registered_model_alias(
            "engagement", "champion", prepared.versions["engagement"]
        )
        reloaded = http.post("/v1/models/reload").json()["models"]
        assert [m["status"] for m in reloaded] == ["serving"] * 3
        assert http.get("/readyz").status_code == 200
        http.close()
