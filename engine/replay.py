"""Feeding recorded events to the engine: from JSON-lines / JSON / Parquet files, or the lake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["events_from_rows", "lake_events", "read_event_file"]


def read_event_file(path: Path) -> Iterator[Any]:
    """Raw event items of a file: ``.jsonl``/``.ndjson`` (one per line), ``.json`` (list), ``.parquet``.

    Items are yielded unvalidated — validation happens on acceptance, where a bad item is
    dead-lettered with its reason instead of stopping the replay. An unreadable line is passed on
    as its text, so it reaches the dead letters too.
    """
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        with path.open() as handle:
            for line in handle:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        yield line.rstrip("\n")
    elif suffix == ".json":
        data = json.loads(path.read_text())
        yield from data if isinstance(data, list) else [data]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
            yield from events_from_rows(batch.to_pylist())
    else:
        raise ValueError(f"{path}: expected a .jsonl, .ndjson, .json or .parquet file")


def lake_events(
    lake_root: Path, start: datetime | str, end: datetime | str
) -> Iterator[dict[str, Any]]:
    """The lake's events with ``start <= timestamp < end``, oldest first, as event dicts."""
    from engine.lake import EventLake

    table = EventLake(lake_root).read(start, end)
    for batch in table.to_batches(max_chunksize=50_000):
        yield from events_from_rows(batch.to_pylist())


def events_from_rows(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        event = {k: v for k, v in row.items() if v is not None and k not in {"amount", "date"}}
        if isinstance(event.get("properties"), str):
            event["properties"] = json.loads(event["properties"])
        if isinstance(event.get("location"), str):
            event["location"] = json.loads(event["location"])
        if isinstance(event.get("timestamp"), datetime):
            event["timestamp"] = event["timestamp"].isoformat()
        yield event
