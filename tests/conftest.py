"""Shared fixtures: one small simulation per test session, isolated NUDGE_HOME per test."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

# The servers refuse the built-in development secret (NUDGE_ENV=dev aside); the tests, like a
# deployment, bring their own. Set before any test so that child processes inherit it.
os.environ.setdefault("NUDGE_SIGNING_SECRET", "tests-signing-secret-0123456789abcdef")


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


POSTGRES_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def require_service(name: str, reachable: bool, why: str) -> None:
    """Skip with the reason when a server is unreachable — but under CI=true it must be there."""
    if reachable:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required under CI=true but unreachable: {why}")
    pytest.skip(f"{name} unreachable ({why}); start it to run the production-path tests")


def postgres_available() -> tuple[bool, str]:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True, ""
    except Exception as exc:  # any failure to connect means: not available
        return False, str(exc).splitlines()[0]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_store(request, tmp_path):
    """The engine database (an `engine.store.EngineDB`, created at head) on SQLite (a temp file)
    and on the real PostgreSQL (a temp schema)."""
    from engine.store import EngineDB

    if request.param == "sqlite":
        db = EngineDB.open(f"sqlite:///{tmp_path / 'engine.db'}")
        yield db
        db.dispose()
        return
    ok, why = postgres_available()
    require_service("PostgreSQL at 127.0.0.1:5432", ok, why)
    import uuid

    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = EngineDB.open(POSTGRES_URL, schema=schema)
    yield db
    db.dispose()
    cleanup = sa.create_engine(POSTGRES_URL)
    with cleanup.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    cleanup.dispose()
