"""Import an external event or transaction log into the lake.

A column map says which columns are the customer id, the timestamp, the event type (or a constant
type) and the amount; every other column is kept in the event's properties, so nothing is lost.
Rows that fail the events contract go to a rejects file with the reason; rows without an id get a
deterministic one (a hash of their content and their occurrence number), so importing the same
file twice adds nothing — while identical rows within one file stay separate transactions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import UserError
from engine.events import EVENT_TYPE_PATTERN, InvalidProfileChange, profile_changes
from engine.lake import LAKE_SCHEMA, EventLake
from engine.limits import text_problem
from pipelines.sniff import parse_decimal, read_delimited

__all__ = [
    "PRESETS",
    "ColumnMap",
    "ImportReport",
    "IngestError",
    "Preset",
    "import_events",
    "normalise_events",
    "parse_column_map",
    "read_table",
]

# A time of day followed by an offset: "…T10:00:00Z", "… 10:00+01:00" (not a bare date's "-05").
_OFFSET_SUFFIX = r"[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_PLAIN_NUMBER = r"-?(0|[1-9]\d*)(\.\d+)?"
MAPPABLE = (
    "customer_id",
    "timestamp",
    "event_type",
    "amount",
    "event_id",
    "session_id",
    "source",
    "device",
)


class IngestError(UserError):
    """The import cannot start: bad mapping, unreadable file, unknown column or zone."""


class ColumnMap(BaseModel):
    """Which source column (or constant, for `event_type`) fills each contract field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_id: str
    timestamp: str
    event_type: str = Field(description="a column name, or a constant event type")
    amount: str | None = None
    event_id: str | None = None
    session_id: str | None = None
    source: str | None = None
    device: str | None = None


@dataclass(frozen=True)
class Preset:
    """A known external format: how to read it and how its columns map."""

    name: str
    description: str
    columns: tuple[str, ...]
    column_map: ColumnMap
    timestamp_format: str | None
    timezone: str
    source: str
    # Other published layouts of the same data (by their number of columns), read the same way.
    alternatives: tuple[tuple[str, ...], ...] = ()


PRESETS: dict[str, Preset] = {
    "cdnow": Preset(
        name="cdnow",
        description="CDNOW transactions: customer id, [sample id,] YYYYMMDD date, units, dollars "
        "(the sample's five columns or the master file's four; with or without a header line; "
        "whitespace, comma or any delimiter sniffing finds)",
        columns=("customer_id", "sample_id", "date", "units", "dollars"),
        alternatives=(("customer_id", "date", "units", "dollars"),),
        column_map=ColumnMap(
            customer_id="customer_id",
            timestamp="date",
            event_type="purchase_completed",
            amount="dollars",
        ),
        timestamp_format="%Y%m%d",
        timezone="UTC",
        source="cdnow",
    ),
}


@dataclass(frozen=True)
class ImportReport:
    """Counts of one import, and where the rejected rows went."""

    read: int
    accepted: int
    rejected: int
    duplicates: int
    added: int
    rejects_path: Path | None
    reasons: dict[str, int]


def parse_column_map(text: str) -> ColumnMap:
    """``customer_id=COL,timestamp=COL,event_type=COL_OR_CONST,amount=COL`` → `ColumnMap`."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise IngestError(
                f"--map: expected FIELD=COLUMN pairs separated by commas (got {part!r})"
            )
        if key not in MAPPABLE:
            raise IngestError(f"--map: unknown field {key!r}; fields are {', '.join(MAPPABLE)}")
        if key in pairs:
            raise IngestError(f"--map: field {key!r} is given twice")
        pairs[key] = value
    missing = [f for f in ("customer_id", "timestamp", "event_type") if f not in pairs]
    if missing:
        raise IngestError(f"--map: missing required field(s) {', '.join(missing)}")
    return ColumnMap(**pairs)


def read_table(
    path: Path,
    file_format: str | None = None,
    preset: Preset | None = None,
    *,
    decimal: str | None = None,
) -> pd.DataFrame:
    """Read a delimited text file (dialect sniffed: pipelines.sniff) or Parquet, or a preset's
    format, as strings, one row per source row."""
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if preset is not None:
        return _read_preset(path, preset, decimal)
    fmt = file_format or _format_of(path)
    if fmt == "csv":
        frame, _ = read_delimited(path, decimal=decimal)
        return frame
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise IngestError(f"{path}: not a readable Parquet file: {exc}") from None
    raise IngestError(f"{path}: cannot tell the format from the name; pass --format csv or parquet")


def _format_of(path: Path) -> str | None:
    """Parquet by its magic bytes, else delimited text by the name (.csv, .tsv, .txt, .gz …)."""
    with path.open("rb") as handle:
        if handle.read(4) == b"PAR1":
            return "parquet"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "parquet"
    if set(suffixes) & {".csv", ".tsv", ".txt", ".dat", ".gz"}:
        return "csv"
    return None


def _read_preset(path: Path, preset: Preset, decimal: str | None) -> pd.DataFrame:
    """A preset's file in any of its published layouts, told apart by the number of columns."""
    frame, dialect = read_delimited(path, decimal=decimal)
    layouts = {len(cols): cols for cols in (preset.columns, *preset.alternatives)}
    names = layouts.get(frame.shape[1])
    if names is None:
        counts = " or ".join(str(n) for n in sorted(layouts))
        raise IngestError(
            f"{path}: row 1: the {preset.name} preset expects {counts} columns "
            f"({preset.description}); this file has {frame.shape[1]} ({dialect.describe()})"
        )
    frame.columns = list(names)
    return frame


def normalise_events(
    frame: pd.DataFrame,
    column_map: ColumnMap,
    *,
    timezone: str | None = None,
    timestamp_format: str | None = None,
    source: str | None = None,
    decimal: str | None = None,
) -> tuple[pa.Table, pd.DataFrame]:
    """Split source rows into lake-shaped events and rejects (with `row` and `reason`);
    `decimal` is the amounts' decimal mark when it is not a point (``,``)."""
    _check_columns(frame, column_map)
    zone = _zone(timezone)
    n = len(frame)
    reason = pd.Series(pd.NA, index=frame.index, dtype="object")

    def reject(mask: pd.Series | np.ndarray, why: str | pd.Series) -> None:
        mask = pd.Series(mask, index=frame.index) & reason.isna()
        reason[mask] = why[mask] if isinstance(why, pd.Series) else why

    customer = _text(frame[column_map.customer_id])
    reject(
        customer.isna(), f"customer_id: is required (column {column_map.customer_id!r} is empty)"
    )

    stamps, stamp_problem = _parse_timestamps(frame[column_map.timestamp], zone, timestamp_format)
    reject(stamp_problem.notna(), stamp_problem)

    if column_map.event_type in frame.columns:
        event_type = _text(frame[column_map.event_type]).str.lower()
        bad_type = ~event_type.fillna("").str.fullmatch(EVENT_TYPE_PATTERN)
        reject(
            bad_type,
            "event_type: expected a name such as purchase_completed: a letter, then letters, digits or _ . : -",
        )
    else:
        if not re.fullmatch(EVENT_TYPE_PATTERN, column_map.event_type):
            raise IngestError(
                f"--map: event_type={column_map.event_type!r} is neither a column of the file nor a valid event type"
            )
        event_type = pd.Series(column_map.event_type, index=frame.index)

    amount = pd.Series(np.nan, index=frame.index)
    if column_map.amount:
        raw_amount = _text(frame[column_map.amount])
        amount = pd.to_numeric(parse_decimal(raw_amount, decimal), errors="coerce")
        bad = raw_amount.notna() & (amount.isna() | ~np.isfinite(amount.fillna(0)))
        reject(
            bad,
            "amount: expected a number (got "
            + raw_amount.fillna("").str.slice(0, 40).map(repr)
            + ")",
        )

    if column_map.event_id:
        event_id = _text(frame[column_map.event_id])
        reject(event_id.isna(), f"event_id: is required (column {column_map.event_id!r} is empty)")
    else:
        event_id = _content_ids(customer, stamps, event_type, amount)

    mapped = {c for c in column_map.model_dump().values() if c}
    for name, ids in (("customer_id", customer), ("event_id", event_id)):
        problems = ids.map(lambda v: text_problem(v, controls=True) if isinstance(v, str) else None)
        reject(problems.notna(), f"{name}: " + problems.fillna(""))
    _reject_bad_profile_changes(
        frame, customer, event_type, [c for c in frame.columns if c not in mapped], reason, reject
    )

    ok = reason.isna().to_numpy()
    properties = _properties(
        frame.loc[ok], [c for c in frame.columns if c not in mapped], amount[ok]
    )
    optional = {
        name: _text(frame[col])[ok].to_numpy(dtype=object) if col else np.full(ok.sum(), None)
        for name, col in (
            ("session_id", column_map.session_id),
            ("source", column_map.source),
            ("device", column_map.device),
        )
    }
    if source and not column_map.source:
        optional["source"] = np.full(ok.sum(), source, dtype=object)
    events = pa.Table.from_pydict(
        {
            "event_id": pa.array(event_id[ok].to_numpy(dtype=object), pa.string()),
            "customer_id": pa.array(customer[ok].to_numpy(dtype=object), pa.string()),
            "event_type": pa.array(event_type[ok].to_numpy(dtype=object), pa.string()),
            "timestamp": pa.array(stamps[ok], pa.timestamp("us", tz="UTC")),
            "properties": pa.array(properties, pa.string()),
            "amount": pa.array(amount[ok].to_numpy(), pa.float64(), from_pandas=True),
            "session_id": pa.array(optional["session_id"], pa.string()),
            "source": pa.array(optional["source"], pa.string()),
            "device": pa.array(optional["device"], pa.string()),
            "location": pa.nulls(int(ok.sum()), pa.string()),
        },
        schema=LAKE_SCHEMA,
    )
    rejects = frame.loc[~ok].copy()
    rejects.insert(0, "reason", reason[~ok])
    rejects.insert(0, "row", np.arange(1, n + 1)[~ok])
    return events, rejects


def import_events(
    lake: EventLake,
    path: Path,
    column_map: ColumnMap,
    *,
    file_format: str | None = None,
    timezone: str | None = None,
    timestamp_format: str | None = None,
    rejects_dir: Path,
    preset: Preset | None = None,
    decimal: str | None = None,
) -> ImportReport:
    """Read `path`, validate and normalise it, append the good rows to the lake, keep the rest."""
    frame = read_table(path, file_format, preset, decimal=decimal)
    events, rejects = normalise_events(
        frame,
        column_map,
        timezone=timezone,
        timestamp_format=timestamp_format,
        source=preset.source if preset else None,
        decimal=decimal,
    )
    rejects_path = None
    if len(rejects):
        rejects_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        rejects_path = rejects_dir / f"{path.stem}-{stamp}.rejects.csv"
        rejects.to_csv(rejects_path, index=False)
    result = lake.append(events)
    return ImportReport(
        read=len(frame),
        accepted=events.num_rows,
        rejected=len(rejects),
        duplicates=result.duplicates,
        added=result.added,
        rejects_path=rejects_path,
        reasons=rejects["reason"].str.split(" \\(").str[0].value_counts().to_dict()
        if len(rejects)
        else {},
    )


# -- helpers ---------------------------------------------------------------------------------------


def _check_columns(frame: pd.DataFrame, column_map: ColumnMap) -> None:
    for field, column in column_map.model_dump().items():
        if column and field != "event_type" and column not in frame.columns:
            raise IngestError(
                f"--map: {field}={column!r}, but the file has no column {column!r}; "
                f"its columns are {', '.join(map(str, frame.columns))}"
            )


def _zone(name: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise IngestError(
            f"--tz: {name!r} is not an IANA time zone name (e.g. UTC, Europe/Berlin)"
        ) from None


def _text(column: pd.Series) -> pd.Series:
    """Strings with surrounding blanks removed; empty strings become missing."""
    text = column.astype("string").str.strip()
    return text.mask(text == "").astype(object).where(lambda s: s.notna(), None)


def _parse_timestamps(
    column: pd.Series, zone: ZoneInfo | None, fmt: str | None
) -> tuple[pd.Series, pd.Series]:
    """UTC timestamps, and per row the reason it could not be read (None where fine).

    Rows with an offset (``Z``, ``+01:00``) keep it; rows without one are read in `zone`, and
    are rejected when no zone was given.
    """
    result = pd.Series(pd.NaT, index=column.index, dtype="datetime64[us, UTC]")
    problem = pd.Series(None, index=column.index, dtype=object)
    if pd.api.types.is_datetime64_any_dtype(column):
        if column.dt.tz is not None:
            return column.dt.tz_convert("UTC").astype(result.dtype), problem
        text = column.astype(str).where(column.notna(), None)
        aware = pd.Series(False, index=column.index)
        fmt = None
    else:
        text = _text(column)
        aware = text.fillna("").str.contains(_OFFSET_SUFFIX, regex=True)
    problem[text.isna()] = "timestamp: is required"
    form = f" as a date/time in the form {fmt}" if fmt else " as an ISO 8601 date/time"

    if aware.any():
        result[aware] = pd.to_datetime(text[aware], errors="coerce", format="ISO8601", utc=True)
    naive = text.notna() & ~aware
    if naive.any():
        parsed = pd.to_datetime(text[naive], errors="coerce", format=fmt or "ISO8601")
        if zone is None:
            problem[naive & parsed.reindex(column.index).notna()] = (
                "timestamp: has no time zone; pass --tz to say which zone it is in"
            )
        else:
            local = parsed.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT")
            gap = parsed.notna() & local.isna()
            problem[gap[gap].index] = (
                f"timestamp: does not exist or is ambiguous in {zone.key} (a DST change)"
            )
            result[naive] = local.dt.tz_convert("UTC")
    unreadable = text.notna() & result.isna() & problem.isna()
    problem[unreadable] = (
        "timestamp: could not read " + text[unreadable].str.slice(0, 40).map(repr) + form
    )
    return result, problem


def _content_ids(
    customer: pd.Series, stamps: pd.Series, event_type: pd.Series, amount: pd.Series
) -> pd.Series:
    """A stable id per row from its content and its occurrence among identical rows."""
    key = pd.DataFrame(
        {
            "customer": customer.fillna(""),
            "timestamp": stamps.astype("int64", errors="ignore").astype(str),
            "event_type": event_type.fillna(""),
            "amount": amount.round(6).astype(str),
        }
    )
    key["occurrence"] = key.groupby(list(key.columns), sort=False).cumcount()
    hashed = pd.util.hash_pandas_object(key, index=False).to_numpy()
    return pd.Series([f"imp-{h:016x}" for h in hashed], index=customer.index, dtype=object)


def _reject_bad_profile_changes(
    frame: pd.DataFrame,
    customer: pd.Series,
    event_type: pd.Series,
    extra_columns: list[str],
    reason: pd.Series,
    reject: Any,
) -> None:
    """Signup and consent rows carry profile fields: validated as ``PUT /v1/customers`` would."""
    rows = reason.isna() & event_type.isin(["signup", "subscription_changed", "unsubscribed"])
    if not rows.any():
        return
    nothing = pd.Series(np.nan, index=frame.index[rows])
    texts = _properties(frame.loc[rows], extra_columns, nothing)
    why = pd.Series(pd.NA, index=frame.index, dtype="object")
    for index, text in zip(frame.index[rows], texts, strict=True):
        try:
            profile_changes(customer[index], event_type[index], json.loads(text))
        except InvalidProfileChange as exc:
            why[index] = str(exc)
    reject(why.notna(), why)


def _properties(rows: pd.DataFrame, extra_columns: list[str], amount: pd.Series) -> list[str]:
    """JSON objects of the unmapped columns, plus `amount` when mapped.

    A text column whose every value is a plain number (no leading zeros, which would mark an
    identifier) is written as numbers; everything else is kept as given.
    """
    extra = pd.DataFrame(index=rows.index)
    for column in extra_columns:
        values = rows[column]
        if values.dtype == object:
            text = values.dropna().astype(str)
            if len(text) and text.str.fullmatch(_PLAIN_NUMBER).all():
                values = pd.to_numeric(values)
        extra[str(column)] = values.astype(object).where(values.notna(), None)
    if amount.notna().any():
        extra = extra.assign(amount=amount.where(amount.notna(), None).astype(object))
    if extra.shape[1] == 0:
        return ["{}"] * len(rows)
    return [
        json.dumps({k: v for k, v in rec.items() if v is not None}, default=str)
        for rec in extra.to_dict("records")
    ]
