"""All feature tables at once, and their Parquet files under ``$NUDGE_HOME/features/``.

`compute_features` is pure (tables in, DataFrames out); `write_feature_tables` and
`build_feature_tables` are the edges that touch disk.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.compute.churn import churn_from
from features.compute.engagement import engagement_from
from features.compute.ltv import ltv_from
from features.compute.workspace import (
    DEFAULT_HALF_LIFE_DAYS,
    EVENT_COLUMNS,
    EventsInput,
    SnapshotsInput,
    Workspace,
    as_snapshots,
    conform,
    open_workspace,
)
from features.paths import feature_table_path
from features.schema import (
    CHURN_VIEW,
    ENGAGEMENT_VIEW,
    LTV_VIEW,
    TIMESTAMP_COLUMN,
    VIEW_FEATURES,
    VIEW_NAMES,
)

if TYPE_CHECKING:
    from engine.lake import EventLake

__all__ = [
    "build_feature_tables",
    "compute_features",
    "read_feature_table",
    "write_feature_tables",
]

_BUILDERS: dict[str, Callable[[Workspace], pd.DataFrame]] = {
    CHURN_VIEW: churn_from,
    LTV_VIEW: ltv_from,
    ENGAGEMENT_VIEW: engagement_from,
}


def compute_features(
    events: EventsInput,
    snapshots: SnapshotsInput,
    customers: pd.DataFrame | None = None,
    *,
    views: Iterable[str] = VIEW_NAMES,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> dict[str, pd.DataFrame]:
    """Each view's table at every snapshot, sharing one pass over the events."""
    wanted = list(views)
    unknown = [v for v in wanted if v not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown feature view(s) {unknown}; known: {list(VIEW_NAMES)}")
    with open_workspace(events, snapshots, customers, half_life_days=half_life_days) as ws:
        return {view: _BUILDERS[view](ws) for view in wanted}


def write_feature_tables(
    tables: Mapping[str, pd.DataFrame],
    home: Path | str | None = None,
    *,
    merge: bool = False,
) -> dict[str, Path]:
    """Write each view's table to ``$NUDGE_HOME/features/<view>.parquet``; returns the paths.

    With `merge`, rows already on disk for other snapshots are kept (a daily build adds its
    snapshot); otherwise the file is replaced. Files appear atomically (written aside, renamed).
    """
    written = {}
    for view, table in tables.items():
        if view not in VIEW_FEATURES:
            raise ValueError(f"unknown feature view {view!r}; known: {list(VIEW_NAMES)}")
        table = conform(table, VIEW_FEATURES[view])
        path = feature_table_path(view, home)
        if merge and path.exists():
            kept = read_feature_table(view, home)
            kept = kept[~kept[TIMESTAMP_COLUMN].isin(set(table[TIMESTAMP_COLUMN]))]
            table = conform(pd.concat([kept, table], ignore_index=True), VIEW_FEATURES[view])
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        table.to_parquet(staging, index=False)
        os.replace(staging, path)
        written[view] = path
    return written


def read_feature_table(view: str, home: Path | str | None = None) -> pd.DataFrame:
    """A view's table as written by `write_feature_tables`."""
    return conform(pd.read_parquet(feature_table_path(view, home)), VIEW_FEATURES[view])


def build_feature_tables(
    lake: EventLake,
    snapshots: SnapshotsInput,
    home: Path | str | None = None,
    *,
    merge: bool = False,
) -> dict[str, Path]:
    """Read the lake (needed columns only), compute every view at `snapshots`, write them."""
    # Features never look past the last snapshot; the lake's `end` is exclusive.
    until = as_snapshots(snapshots)[-1] + pd.Timedelta(microseconds=1)
    events = lake.read(end=until.to_pydatetime(), columns=list(EVENT_COLUMNS))
    return write_feature_tables(
        compute_features(events, snapshots, lake.read_customers()), home, merge=merge
    )
