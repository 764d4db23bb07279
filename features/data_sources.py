"""The offline sources: one Parquet feature table per view under ``$NUDGE_HOME/features/``.

Paths are absolute because the DuckDB offline store resolves relative ones against the current
directory, not the repo. The tables are written by `features.compute.write_feature_tables`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat

from features.schema import TIMESTAMP_COLUMN, VIEW_NAMES

__all__ = ["feature_source", "feature_sources"]


def feature_sources(tables_dir: Path, views: Iterable[str] = VIEW_NAMES) -> dict[str, FileSource]:
    """Each view's source, by view name, reading ``<tables_dir>/<view>.parquet``."""
    return {view: feature_source(view, tables_dir) for view in views}


def feature_source(view: str, tables_dir: Path) -> FileSource:
    """The source of one view: its Parquet table, one row per (customer, snapshot)."""
    if not tables_dir.is_absolute():
        raise ValueError(f"feature table folder must be absolute (got {tables_dir})")
    return FileSource(
        name=f"{view}_source",
        path=str(tables_dir / f"{view}.parquet"),
        file_format=ParquetFormat(),
        timestamp_field=TIMESTAMP_COLUMN,
        description=f"Snapshots of {view} computed from the event lake.",
    )
