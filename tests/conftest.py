"""Shared fixtures: one small simulation per test session, isolated NUDGE_HOME per test."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest


@pytest.fixture
def nudge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh $NUDGE_HOME for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("NUDGE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def small_simulation():
    """3,000 customers over a year: enough to see the planted truth, fast to draw."""
    from pipelines.simulator import simulate

    return simulate(3_000, 365, seed=11)


@pytest.fixture(scope="session")
def cdnow_sample() -> Path:
    """The real CDNOW sample shipped inside the `lifetimes` wheel (never downloaded)."""
    path = Path(
        metadata.distribution("lifetimes").locate_file("lifetimes/datasets/CDNOW_sample.txt")
    )
    assert path.exists(), "the lifetimes wheel should ship CDNOW_sample.txt"
    return path
