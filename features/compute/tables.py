"""All feature tables at once, and their Parquet files under ``$NUDGE_HOME/features/``.

`compute_features` is pure (tables in, DataFrames out); `write_feature_tables` and
`build_feature_tables` are the edges that touch disk.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from engine.lake import CustomerSlice
from features.catalog import catalog
from features.compute.churn import churn_from
from features.compute.custom import (
    custom_view_table,
    definition_event_types,
    definition_labels,
)
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
    VIEW_NAMES,
    view_features,
)

if TYPE_CHECKING:
    from engine.lake import EventLake
    from models.definitions import Definitions

__all__ = [
    "build_feature_tables",
    "compute_definition_labels",
    "compute_features",
    "feature_table_snapshots",
    "lake_columns",
    "property_event_types",
    "read_feature_table",
    "write_feature_tables",
]

# Customers per part of a partitioned feature build: the 100k-customer build (10.8 M events,
# 12 snapshots) peaked at ~5 GiB with everything else of the pipeline in the same process.
PART_CUSTOMERS = 100_000


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
    views: Iterable[str] | None = None,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    definitions: Definitions | None = None,
) -> dict[str, pd.DataFrame]:
    """Each view's table at every snapshot, sharing one pass over the events.

    `views` defaults to every view of the definitions' catalog (the standard three and each
    definition's own); `definitions` to NUDGE_MODELS_DIR's.
    """
    found = catalog(definitions) if views is None or set(views) - set(VIEW_NAMES) else None
    wanted = list(views) if views is not None else list(found.views) if found else []
    known = set(_BUILDERS) | (set(found.custom) if found else set())
    unknown = [v for v in wanted if v not in known]
    if unknown:
        raise ValueError(f"unknown feature view(s) {unknown}; known: {sorted(known)}")
    with open_workspace(events, snapshots, customers, half_life_days=half_life_days) as ws:
        return {
            view: _BUILDERS[view](ws)
            if view in _BUILDERS
            else custom_view_table(ws, view, _definitions(definitions))
            for view in wanted
        }


def compute_definition_labels(
    events: EventsInput,
    snapshots: SnapshotsInput,
    definitions: Definitions,
    *,
    horizons: Mapping[str, timedelta] | None = None,
) -> dict[str, pd.DataFrame]:
    """Each definition's label rows (keys, its label column, ``label_events``) at `snapshots`,
    its horizon replaced where `horizons` names the model; one workspace for all."""
    types = definition_event_types(definitions)
    with open_workspace(events, snapshots) as ws:
        return {
            d.name: definition_labels(ws, d, types, (horizons or {}).get(d.name))
            for d in definitions
        }


def lake_columns(definitions: Definitions | None = None) -> list[str]:
    """The lake columns features and labels read: `EVENT_COLUMNS` and ``properties`` — which
    definitions' property features read, and which say that an open or click was a machine's
    (``properties.machine``: left out of engagement, `features.compute.workspace`). Reading them
    costs 0.5 → 0.6 s and 13 → 23 MB for 306,651 events (5,000 simulated customers, 180 days);
    the engagement features took the same time (0.6 s). `definitions` is accepted for callers
    that pass theirs; every definition gets the properties."""
    del definitions  # the same columns for every set of definitions
    return [*EVENT_COLUMNS, "properties"]


def property_event_types(definitions: Definitions | None = None) -> set[str]:
    """The event types whose ``properties`` features and labels read: opens and clicks (a
    machine's are not engagement) and what the definitions' property features and labels name;
    a lake read can leave the others' out (`EventLake.read(properties_of=...)`)."""
    from features.compute.workspace import EMAIL_CLICKED, EMAIL_OPENED

    wanted = {EMAIL_OPENED, EMAIL_CLICKED}
    for definition in _definitions(definitions):
        wanted.update(definition.properties())
    return wanted


def _definitions(definitions: Definitions | None) -> Definitions:
    from models.definitions import load_definitions

    return definitions if definitions is not None else load_definitions()


def write_feature_tables(
    tables: Mapping[str, pd.DataFrame],
    home: Path | str | None = None,
    *,
    merge: bool = False,
    definitions: Definitions | None = None,
) -> dict[str, Path]:
    """Write each view's table to ``$NUDGE_HOME/features/<view>.parquet``; returns the paths.

    With `merge`, rows already on disk for other snapshots are kept (a daily build adds its
    snapshot); otherwise the file is replaced. Files appear atomically (written aside, renamed).
    """
    written = {}
    for view, table in tables.items():
        columns = view_features(view, definitions)
        table = conform(table, columns)
        path = feature_table_path(view, home)
        if merge and path.exists():
            kept = read_feature_table(view, home, definitions)
            kept = kept[~kept[TIMESTAMP_COLUMN].isin(set(table[TIMESTAMP_COLUMN]))]
            table = conform(pd.concat([kept, table], ignore_index=True), columns)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        table.to_parquet(staging, index=False)
        os.replace(staging, path)
        written[view] = path
    return written


def read_feature_table(
    view: str, home: Path | str | None = None, definitions: Definitions | None = None
) -> pd.DataFrame:
    """A view's table as written by `write_feature_tables`."""
    columns = view_features(view, definitions)
    return conform(pd.read_parquet(feature_table_path(view, home)), columns)


def feature_table_snapshots(view: str, home: Path | str | None = None) -> list[pd.Timestamp]:
    """The snapshot times a view's table holds, sorted (its timestamp column only: reading the
    whole table of a million customers × 12 snapshots for them took 27 s)."""
    stamps = pq.read_table(feature_table_path(view, home), columns=[TIMESTAMP_COLUMN])
    unique = pc.unique(stamps[TIMESTAMP_COLUMN].cast(pa.timestamp("us", tz="UTC")))
    return sorted(pd.Timestamp(t) for t in unique.to_pylist())


def build_feature_tables(
    lake: EventLake,
    snapshots: SnapshotsInput,
    home: Path | str | None = None,
    *,
    merge: bool = False,
    definitions: Definitions | None = None,
    part_customers: int = PART_CUSTOMERS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Read the lake (needed columns only), compute every view of the definitions' catalog at
    `snapshots`, write them.

    A lake of more than `part_customers` customers is worked through one part of its customers
    at a time (`CustomerSlice.part`: every feature is per customer, so the parts' rows are the
    whole's), each part's rows streamed to the files before the next is read: memory is bounded
    by a part whatever the lake's size."""
    # Features never look past the last snapshot; the lake's `end` is exclusive.
    until = (as_snapshots(snapshots)[-1] + pd.Timedelta(microseconds=1)).to_pydatetime()
    columns = lake_columns(definitions)
    with_properties = property_event_types(definitions)
    profiles = lake.read_customers()
    parts = max(1, -(-lake.customer_count() // max(1, part_customers)))
    if parts == 1:
        events = lake.read(end=until, columns=columns, properties_of=with_properties)
        tables = compute_features(events, snapshots, profiles, definitions=definitions)
        return write_feature_tables(tables, home, merge=merge, definitions=definitions)
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    # Each profile's part, hashed once for all the parts (1M ids: ~3 s a hashing).
    profile_parts = CustomerSlice.part(0, parts).buckets_of(profiles["customer_id"])
    with _StreamedTables(home, snapshots, merge, definitions) as out:
        for index in range(parts):
            part = CustomerSlice.part(index, parts)
            events = lake.read(
                end=until,
                columns=columns,
                customers=part,
                ordered=False,
                properties_of=with_properties,
            )
            kept = profiles[profile_parts == index]
            out.write(compute_features(events, snapshots, kept, definitions=definitions))
            say(
                f"features: part {index + 1}/{parts} ({events.num_rows:,} events, "
                f"{time.perf_counter() - started:.0f} s)"
            )
            del events
        return out.paths


class _StreamedTables:
    """Each view's Parquet file written part by part (aside, renamed at the end); with `merge`,
    the rows of other snapshots already on disk are copied over, batch by batch."""

    def __init__(
        self,
        home: Path | str | None,
        snapshots: SnapshotsInput,
        merge: bool,
        definitions: Definitions | None,
    ) -> None:
        self.home = home
        self.merge = merge
        self.definitions = definitions
        self.snapshots = as_snapshots(snapshots)
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.staging: dict[str, Path] = {}
        self.paths: dict[str, Path] = {}

    def __enter__(self) -> _StreamedTables:
        return self

    def write(self, tables: Mapping[str, pd.DataFrame]) -> None:
        for view, table in tables.items():
            rows = conform(table, view_features(view, self.definitions))
            writer = self.writers.get(view)
            if writer is None:
                schema = pa.Schema.from_pandas(rows, preserve_index=False)
                path = feature_table_path(view, self.home)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.paths[view] = path
                self.staging[view] = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
                writer = self.writers[view] = pq.ParquetWriter(self.staging[view], schema)
            writer.write_table(
                pa.Table.from_pandas(rows, schema=writer.schema, preserve_index=False)
            )

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            for view, writer in self.writers.items():
                if kind is None and self.merge and self.paths[view].exists():
                    self._copy_other_snapshots(view, writer)
                writer.close()
            if kind is None:
                for view, staging in self.staging.items():
                    os.replace(staging, self.paths[view])
        finally:
            for staging in self.staging.values():
                staging.unlink(missing_ok=True)

    def _copy_other_snapshots(self, view: str, writer: pq.ParquetWriter) -> None:
        written = pa.array(self.snapshots.to_pydatetime(), pa.timestamp("us", tz="UTC"))
        stamps = pc.field(TIMESTAMP_COLUMN)
        for batch in ds.dataset(self.paths[view]).to_batches(
            filter=~pc.is_in(stamps.cast(pa.timestamp("us", tz="UTC")), value_set=written)
        ):
            table = pa.Table.from_batches([batch])
            writer.write_table(table.select(writer.schema.names).cast(writer.schema))
