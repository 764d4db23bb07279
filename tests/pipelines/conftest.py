"""Pipelines under test: one Prefect test harness, one simulated lake, one feature build and one
training run per session, shared by the flow tests (copy the MLflow store to mutate it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Small on purpose: the flows, not the statistics, are under test here (tests/models has those).
CUSTOMERS, DAYS, SEED = 1_200, 365, 7


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One Prefect test harness (temporary database, ephemeral API) for the whole session."""
    from pipelines.prefect_env import configure_prefect

    configure_prefect(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def pipeline_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A $NUDGE_HOME whose lake holds a simulated year (truth beside it)."""
    from engine.lake import EventLake
    from pipelines.simulate import run_simulation

    home = tmp_path_factory.mktemp("pipeline_home")
    run_simulation(
        customers=CUSTOMERS,
        days=DAYS,
        seed=SEED,
        start="2025-01-01",
        out=home / "simulation",
        lake=EventLake(home / "lake"),
    )
    return home


@pytest.fixture(scope="session")
def built(pipeline_home: Path, prefect_harness: None) -> dict[str, Any]:
    """The build-features flow run once on the session's lake."""
    from pipelines.flows.features import build_features

    return build_features(home=str(pipeline_home), step_days=30, count=12)


@pytest.fixture(scope="session")
def tracking_uri(pipeline_home: Path) -> str:
    return f"sqlite:///{pipeline_home / 'mlflow.db'}"


@pytest.fixture(scope="session")
def trained(built: dict[str, Any], pipeline_home: Path, tracking_uri: str) -> dict[str, Any]:
    """The train flow run once: three models registered, each the first champion."""
    from pipelines.flows.train import train

    return train(home=str(pipeline_home), tracking_uri=tracking_uri, max_rounds=300)
