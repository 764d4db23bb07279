"""Flow `build-features`: compute the feature tables from the lake at a grid of snapshots, write
them where the Feast sources read, register the definitions, and materialize the latest snapshot.

Materialization runs in bounded windows: one snapshot instant at a time, written in batches of
customers (`features.materialize`), so memory is bounded by a batch however much history the
tables hold. Only the latest snapshot goes online — the
scoring service reads the latest values, training reads the offline tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from nudge.settings import home_dir
from pipelines.datasets import covered_range, feature_snapshots

__all__ = ["apply_feature_store", "build_features", "compute_feature_tables", "materialize"]


@task(cache_policy=NO_CACHE)
def compute_feature_tables(
    home: str,
    step_days: int = 30,
    count: int = 12,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compute every view at the snapshot grid and write the tables; returns what was written.

    A large lake is built one part of its customers at a time; each part is reported to
    `progress` (default: the flow run's log, `_progress`)."""
    from engine.lake import EventLake
    from features.compute import build_feature_tables
    from models.definitions import load_definitions

    lake = EventLake(Path(home) / "lake")
    data = covered_range(lake)
    snapshots = feature_snapshots(data, step_days=step_days, count=count)
    paths = build_feature_tables(lake, snapshots, home, progress=progress or _progress())
    # A definition whose events the lake lacks gets empty features; say so now, not at training.
    present = set(lake.info().events_per_type)
    lacking = {
        d.name: f"the lake has no {', '.join(sorted(d.event_types() - present))} events"
        for d in load_definitions()
        if d.event_types() - present
    }
    return {
        "snapshots": [t.isoformat() for t in snapshots],
        "tables": {view: str(path) for view, path in paths.items()},
        "data_range": data.describe(),
        "models_without_data": lacking,
    }


@task(cache_policy=NO_CACHE)
def apply_feature_store(home: str) -> list[str]:
    """Register the Feast definitions (in-process `feast apply`); returns the view names."""
    from features.store import apply_definitions, open_store

    applied = apply_definitions(open_store(home), home)
    return sorted(view.name for view in applied.views)


@task(cache_policy=NO_CACHE)
def materialize(
    home: str, snapshots: list[str], progress: Callable[[str], None] | None = None
) -> int:
    """Load each given snapshot, one bounded window at a time, into the online store (SQLite and
    Redis directly, in batches, a progress line each to `progress`, default `_progress`:
    `features.materialize`)."""
    from features.store import materialize_snapshot, open_store

    store = open_store(home)
    for snapshot in snapshots:
        materialize_snapshot(store, snapshot, progress=progress or _progress())
    return len(snapshots)


def _progress() -> Callable[[str], None]:
    """The run's logger inside a Prefect run; the module's logger when a task is called as a
    plain function (`task.fn`, as the benches do)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger().info
    except MissingContextError:
        return logging.getLogger("pipelines").info


@flow(name="build-features")
def build_features(
    home: str | None = None, step_days: int = 30, count: int = 12, online: bool = True
) -> dict[str, Any]:
    """compute → write sources → apply → materialize the latest snapshot (when `online`)."""
    root = str(home_dir(home))
    built = compute_feature_tables(root, step_days, count)
    built["views"] = apply_feature_store(root)
    built["materialized"] = materialize(root, built["snapshots"][-1:]) if online else 0
    return built
