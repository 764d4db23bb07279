"""One small simulation loaded into an event lake, and its feature tables, per test session."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pytest

from engine.lake import EventLake
from features.compute import compute_features, write_feature_tables
from pipelines.simulator import Simulation, simulate

if TYPE_CHECKING:
    from feast import FeatureStore

# Monthly snapshots over the simulated 240 days (2025-01-01 → 2025-08-29).
SNAPSHOTS = [pd.Timestamp(f"2025-{month:02d}-01", tz="UTC") for month in range(2, 9)]
SIMULATION_END = pd.Timestamp("2025-08-29", tz="UTC")


@pytest.fixture(scope="session")
def simulation() -> Simulation:
    """1,500 simulated customers over 240 days, with their planted truth."""
    return simulate(1_500, 240, seed=3)


@pytest.fixture(scope="session")
def lake(simulation: Simulation, tmp_path_factory: pytest.TempPathFactory) -> EventLake:
    """The simulation in an event lake of its own."""
    lake = EventLake(tmp_path_factory.mktemp("features") / "lake")
    lake.append(simulation.events)
    lake.upsert_customers(simulation.customers)
    return lake


@pytest.fixture(scope="session")
def events(lake: EventLake) -> pa.Table:
    return lake.read()


@pytest.fixture(scope="session")
def events_frame(events: pa.Table) -> pd.DataFrame:
    return events.select(["customer_id", "event_type", "timestamp", "amount"]).to_pandas()


@pytest.fixture(scope="session")
def customers(lake: EventLake) -> pd.DataFrame:
    return lake.read_customers()


@pytest.fixture(scope="session")
def feature_tables(events: pa.Table, customers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return compute_features(events, SNAPSHOTS, customers)


@pytest.fixture(scope="session")
def feast_home(
    feature_tables: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A $NUDGE_HOME holding the session's feature tables."""
    home = tmp_path_factory.mktemp("feast_home")
    write_feature_tables(feature_tables, home)
    return home


@pytest.fixture(scope="session")
def feast_store(feast_home: Path) -> FeatureStore:
    """The embedded store with every definition applied: pays `import feast` once a session."""
    from features.store import apply_definitions, open_store

    store = open_store(feast_home, production=False)
    apply_definitions(store, feast_home)
    return store
