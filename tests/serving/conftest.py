"""One prepared $NUDGE_HOME per test session (features online in Feast, three champions in a
SQLite MLflow registry) and one scoring service on a real loopback port in front of it.

Feast's import, MLflow's migrations and the model fits are paid once per session; tests that
move aliases work on a copy of the MLflow file so that they never disturb the shared service.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.support import LocalServer, free_port

API_KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """1,000 simulated customers; the 2025-08-01 snapshot online; champions registered."""
    from pipelines.sample_home import prepare_home

    with pytest.MonkeyPatch.context() as patch:
        # The service must read the registry its settings name, not one from the environment.
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("NUDGE_FEAST_CONFIG", raising=False)
        started = time.perf_counter()
        home = prepare_home(tmp_path_factory.mktemp("serving") / "home", customers=1_000)
        print(f"prepared the serving home in {time.perf_counter() - started:.1f} s")
        yield home


def make_settings(prepared: Any, **overrides: Any):
    """Service settings on the prepared home (the registry can be overridden)."""
    from serving.settings import ServingSettings

    values: dict[str, Any] = {
        "home": prepared.home,
        "api_key": API_KEY,
        "mlflow_tracking_uri": prepared.tracking_uri,
        "model_poll_seconds": 3600,
        **overrides,
    }
    return ServingSettings(**values)


def registry_copy(prepared: Any, folder: Path) -> str:
    """A private copy of the prepared MLflow store (artifacts stay shared, read-only)."""
    source = Path(prepared.tracking_uri.removeprefix("sqlite:///"))
    target = folder / "mlflow.db"
    shutil.copyfile(source, target)
    return f"sqlite:///{target.as_posix()}"


@pytest.fixture(scope="session")
def service(prepared) -> Iterator[Any]:
    """The shared, started scoring service (no alias polling: nothing moves its aliases)."""
    from serving.service import ScoringService

    svc = ScoringService(make_settings(prepared)).start()
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def base_url(service) -> Iterator[str]:
    """The shared service's app on a real loopback port."""
    from serving.app import create_app

    with LocalServer(create_app(service=service)) as server:
        yield server.url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    """An HTTP client that sends the API key."""
    with httpx.Client(base_url=base_url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        yield http


@contextmanager
def serve_with_lifespan(app: Any) -> Iterator[str]:
    """Serve `app` with its lifespan (start-up loads, shutdown stops) on a loopback port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the scoring app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
