"""Feeding recorded events to the engine: from JSON-lines / JSON / Parquet files, or the lake."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.errors import UserError

__all__ = [
    "EVENT_FILE_SUFFIXES",
    "EventFileError",
    "events_from_rows",
    "lake_events",
    "read_event_file",
]


class EventFileError(UserError):
    """An event file that cannot be read as a whole (wrong kind, not JSON, not Parquet)."""


EVENT_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")


def read_event_file(path: Path) -> Iterator[Any]:
    """Raw event items of a file: ``.jsonl``/``.ndjson`` (one per line), ``.json`` (list), ``.parquet``.

    Items are yielded unvalidated — validation happens on acceptance, where a bad item is
    dead-lettered with its reason instead of stopping the replay. An unreadable line (not JSON,
    not UTF-8, nested too deep to parse) is passed on as its text, so it reaches the dead letters
    too. A file that cannot be read at all raises EventFileError here, before anything is
    accepted.
    """
    suffix = path.suffix.lower()
    if suffix not in EVENT_FILE_SUFFIXES:
        raise EventFileError(
            f"{path}: expected a .jsonl, .ndjson, .json or .parquet file (got {suffix or 'no extension'!r})"
        )
    if suffix in {".jsonl", ".ndjson"}:
        return _json_lines(path)
    if suffix == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EventFileError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        except json.JSONDecodeError as exc:
            raise EventFileError(
                f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:
            raise EventFileError(f"{path}: JSON nested too deep to read") from None
        return iter(data if isinstance(data, list) else [data])
    return _parquet_rows(path)


def _json_lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line.strip():
                continue
            try:
                yield json.loads(raw)
            except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
                yield line


def _parquet_rows(path: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise EventFileError(f"{path}: not a readable Parquet file ({exc})") from None

    def rows() -> Iterator[Any]:
        for batch in parquet.iter_batches(batch_size=50_000):
            yield from events_from_rows(batch.to_pylist())

    return rows()


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
        for key in ("properties", "location"):
            if isinstance(event.get(key), str):
                # Unparseable text stays text: validation then dead-letters the event with why.
                with contextlib.suppress(ValueError, RecursionError):
                    event[key] = json.loads(event[key])
        if isinstance(event.get("timestamp"), datetime):
            event["timestamp"] = event["timestamp"].isoformat()
        yield event
