"""Direct materialization of one snapshot into Feast's SQLite or Redis online store.

Feast's `materialize` of one instant reads the whole window through its offline store, builds a
`ValueProto` per value and an `EntityKey` proto per row, and writes each view in one batch —
60.4 s for 100k customers × ~50 features into SQLite (BENCHMARKS.md, "Pipeline"), and memory
that grows with the snapshot. This module writes the same rows itself, `batch_size` customers at a
time read from the view's Parquet table (filtered on its timestamp field, so only the snapshot's
row groups are read):

- values: a double `ValueProto` is its tag byte (0x29) and 8 little-endian bytes, an int64 one its
  tag (0x20) and a varint; both are built for a whole column in NumPy. A null (NaN) is an empty
  proto, as Feast writes it. Any other type, and an integer column holding nulls, goes through
  Feast's own `python_values_to_proto_values`, so the bytes are Feast's by construction there.
- entity keys: `features.entity_keys.EntityKeyEncoder` (Feast's `serialize_entity_key`).
- SQLite: Feast's table (`compute_table_id`), its upsert statement and columns (entity_key,
  feature_name, value, value_text, event_ts, created_ts), `event_ts` as Feast's sqlite adapter
  stores a naive UTC datetime, through Feast's own connection, one transaction per batch.
- Redis: Feast's hash key (serialized key + project), mmh3 field names of ``view:feature``, the
  ``_ts:<view>`` Timestamp proto; like Feast, a customer whose stored timestamp is at or after
  the snapshot's is left alone (unless `skip_dedup`), and `key_ttl_seconds` sets an EXPIRE.
  Pipelined: one HMGET round per batch first (only the rows to write are encoded), then one
  HSET round.
- the registry: each view's state and materialization interval, as `FeatureStore.materialize`
  records them (`apply_materialization`), so `feast` and `get_online_features` see a
  materialized view.

Rows are Feast's selection: the window [t, t + 1 µs] inclusive, the latest row per customer.
The tests compare the stored bytes and `get_online_features` with Feast's own materialize.
Measured (BENCHMARKS.md "Materialization (issue 20)", 100k customers × 50 features, load ≈ 2.5
on 2 shared cores): SQLite 67.8 s → 28.6 s (2.4×), Redis 41.5 s → 16.8 s (2.5×), peak RSS
1.8–2.1 GiB → ~650 MiB. SQLite's own upsert is ~80 % of the direct SQLite run.

One module of ~500 lines on purpose: the reader, the encoders and both writers are one contract
(Feast's bytes), checked together by tests/features/test_materialize.py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from numpy.typing import NDArray

from features.entity_keys import EntityKeyEncoder

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

__all__ = [
    "DEFAULT_BATCH",
    "EncodedRows",
    "SnapshotBatch",
    "direct_backend",
    "direct_views",
    "encode_column",
    "materialize_direct",
    "snapshot_batches",
    "supports_view",
]

DEFAULT_BATCH = 50_000  # customers per batch: ~50 features × 50k rows stays well under 1 GiB
Progress = Callable[[str], None]

# ValueProto tags (field number << 3 | wire type): double_val = 5 (fixed64), int64_val = 4.
_DOUBLE_TAG, _INT64_TAG = 0x29, 0x20
_MAX_VARINT = 10


def direct_views(store: FeatureStore, names: Sequence[str]) -> list[str]:
    """Those of `names` this module can write into the store (none on another online store)."""
    from feast.errors import FeatureViewNotFoundException

    if direct_backend(store) is None:
        return []
    found = []
    for name in names:
        try:
            view = store.registry.get_feature_view(name, store.project)
        except FeatureViewNotFoundException:  # a stream or on-demand view: Feast's
            continue
        if supports_view(view):
            found.append(name)
    return found


def direct_backend(store: FeatureStore) -> str | None:
    """``"sqlite"`` or ``"redis"`` when this module can write the store's online store, else None.

    SQLite's optional vector and OpenAI-compatible columns are left to Feast.
    """
    online = store.config.online_store
    kind = str(online.type)
    if kind == "sqlite" or kind.endswith("SqliteOnlineStore"):
        extras = getattr(online, "vector_enabled", False) or getattr(
            online, "enable_openai_compatible_store", False
        )
        return None if extras else "sqlite"
    if kind == "redis" or kind.endswith("RedisOnlineStore"):
        return "redis"
    return None


def supports_view(view: FeatureView) -> bool:
    """Whether `view` is one this module materializes: an enabled online view over a local
    Parquet FileSource without a field mapping or created-timestamp column, with one string join key
    (the customer). Feast's materialize keeps the others, and its errors for them."""
    from feast import FileSource
    from feast.data_format import ParquetFormat
    from feast.value_type import ValueType

    source = view.batch_source
    columns = view.entity_columns
    return (
        view.online
        and getattr(view, "enabled", True)
        and isinstance(source, FileSource)
        and isinstance(source.file_format, ParquetFormat | None)  # None: Parquet, Feast's default
        and "://" not in source.path  # a local file (pyarrow reads it without a filesystem)
        and not source.field_mapping
        and not source.created_timestamp_column
        and len(columns) == 1
        and columns[0].dtype.to_value_type() == ValueType.STRING
        and type(view).__name__ == "FeatureView"  # not a stream or on-demand view
    )


@dataclass(frozen=True)
class SnapshotBatch:
    """Some customers' rows of one view at one snapshot."""

    ids: list[str]
    stamps: NDArray[np.int64]  # each row's event timestamp, epoch microseconds (UTC)
    table: pa.Table  # the view's feature columns, one row per id


def snapshot_batches(
    path: str,
    key: str,
    timestamp_field: str,
    features: Sequence[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[SnapshotBatch]:
    """The table's rows with `start` <= timestamp <= `end`, the latest per customer (Feast's
    selection), `batch_size` rows at a time; memory is bounded by a batch and a row group.

    A first pass reads only the keys and timestamps to find duplicate customers; the usual
    snapshot has none and is then streamed as stored.
    """
    dataset = ds.dataset(path, format="parquet")
    column = ds.field(timestamp_field)
    ts_type = dataset.schema.field(timestamp_field).type
    lo, hi = pa.scalar(start.to_pydatetime(), ts_type), pa.scalar(end.to_pydatetime(), ts_type)
    window = (column >= lo) & (column <= hi)
    keys = dataset.to_table(columns=[key, timestamp_field], filter=window)
    keep = _latest_rows(keys, key, timestamp_field)
    del keys
    position = 0
    scanner = dataset.scanner(
        columns=[key, timestamp_field, *features], filter=window, batch_size=batch_size
    )
    pending: list[pa.RecordBatch] = []
    size = 0
    for record in scanner.to_batches():
        if keep is not None:
            mask = keep[position : position + record.num_rows]
            position += record.num_rows
            record = record.filter(pa.array(mask))
        if record.num_rows:
            pending.append(record)
            size += record.num_rows
        while size >= batch_size:
            table = pa.Table.from_batches(pending)
            yield _batch(table.slice(0, batch_size), key, timestamp_field, features)
            rest = table.slice(batch_size)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield _batch(pa.Table.from_batches(pending), key, timestamp_field, features)


def _latest_rows(keys: pa.Table, key: str, timestamp_field: str) -> NDArray[np.bool_] | None:
    """None when every customer has one row; else which rows to keep (the latest per customer,
    the last read among equal timestamps)."""
    if pc.count_distinct(keys.column(key)).as_py() == keys.num_rows:
        return None
    frame = pd.DataFrame(
        {
            "key": keys.column(key).to_numpy(zero_copy_only=False),
            "ts": _micros(keys.column(timestamp_field)),
            "row": np.arange(keys.num_rows),
        }
    )
    latest = frame.sort_values(["ts", "row"], kind="stable").drop_duplicates("key", keep="last")
    keep = np.zeros(keys.num_rows, dtype=bool)
    keep[latest["row"].to_numpy()] = True
    return keep


def _micros(column: pa.ChunkedArray | pa.Array) -> NDArray[np.int64]:
    """Epoch microseconds (UTC) of a timestamp column, whatever its unit and zone."""
    naive = pc.cast(column, pa.timestamp("us", tz="UTC"))
    return np.asarray(naive.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _batch(
    table: pa.Table, key: str, timestamp_field: str, features: Sequence[str]
) -> SnapshotBatch:
    ids = [str(c) for c in table.column(key).to_pylist()]
    return SnapshotBatch(ids, _micros(table.column(timestamp_field)), table.select(list(features)))


# -- values ------------------------------------------------------------------------------------


def encode_column(
    column: pa.ChunkedArray | pa.Array, value_type: Any
) -> tuple[list[bytes], list[str | None]]:
    """Each value's serialized `ValueProto` and the ``value_text`` Feast's SQLite store keeps
    beside it, exactly as Feast's materialize writes them (`value_type`: Feast's ValueType)."""
    from feast.value_type import ValueType

    if value_type == ValueType.DOUBLE and pa.types.is_float64(column.type):
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        return _doubles(values)
    if value_type == ValueType.INT64 and pa.types.is_int64(column.type) and not column.null_count:
        ints = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
        return _int64s(ints), [str(v) for v in ints.tolist()]
    return _by_feast(column, value_type)


def _doubles(values: NDArray[np.float64]) -> tuple[list[bytes], list[str | None]]:
    """Tag + 8 LE bytes; NaN (Feast's null) an empty proto with no text."""
    n = len(values)
    block = np.empty((n, 9), dtype=np.uint8)
    block[:, 0] = _DOUBLE_TAG
    block[:, 1:] = values.astype("<f8").view(np.uint8).reshape(n, 8)
    raw = block.tobytes()
    encoded = [raw[i : i + 9] for i in range(0, 9 * n, 9)]
    texts: list[str | None] = [str(v) for v in values.tolist()]
    for i in np.flatnonzero(np.isnan(values)).tolist():
        encoded[i], texts[i] = b"", None
    return encoded, texts


def _int64s(values: NDArray[np.int64]) -> list[bytes]:
    """Tag + base-128 varint of the two's complement (10 bytes for a negative), per value."""
    n = len(values)
    unsigned = values.view(np.uint64)[:, None]
    shifts = (7 * np.arange(_MAX_VARINT)).astype(np.uint64)
    groups = (unsigned >> shifts) & np.uint64(0x7F)
    sizes = np.maximum(1, ((unsigned >> shifts) != 0).sum(axis=1))  # 7-bit groups needed
    block = np.empty((n, _MAX_VARINT + 1), dtype=np.uint8)
    block[:, 0] = _INT64_TAG
    more = np.arange(_MAX_VARINT) < (sizes[:, None] - 1)  # continuation bit on all but the last
    block[:, 1:] = (groups | np.where(more, np.uint64(0x80), np.uint64(0))).astype(np.uint8)
    used = np.arange(_MAX_VARINT + 1) <= sizes[:, None]
    raw = block[used].tobytes()
    ends = np.cumsum(sizes + 1).tolist()
    return [raw[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _by_feast(
    column: pa.ChunkedArray | pa.Array, value_type: Any
) -> tuple[list[bytes], list[str | None]]:
    """Feast's own conversion, value by value (types the fast paths do not cover)."""
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos], [
        extract_text_and_num(p, False)[0] for p in protos
    ]


@dataclass(frozen=True)
class EncodedRows:
    """A batch ready to store: entity keys, timestamps and each feature's encoded column."""

    keys: list[bytes]  # serialized entity keys
    stamps: NDArray[np.int64]  # epoch microseconds (UTC)
    names: list[str]  # the view's features, in its order
    values: list[list[bytes]]  # per feature, each customer's serialized ValueProto
    texts: list[list[str | None]]  # per feature, Feast's value_text


# -- writers -----------------------------------------------------------------------------------


class _SqliteWriter:
    """Feast's SQLite online store rows, through Feast's own connection."""

    def __init__(self, store: FeatureStore) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        self.store = store
        self._table_id = compute_table_id
        online: Any = store._get_provider().online_store  # Feast's SqliteOnlineStore
        self.connection = online._get_conn(store.config)
        self._event_ts: dict[int, int] = {}

    def write(self, view: FeatureView, rows: EncodedRows) -> int:
        """Store `rows` of `view`; returns how many customers were written."""
        config = self.store.config
        table = self._table_id(
            config.project, view, config.registry.enable_online_feature_view_versioning
        )
        # Feast's statement (sqlite.py online_write_batch), without the optional columns.
        sql = (
            f'INSERT INTO "{table.replace(chr(34), chr(34) * 2)}" '
            "(entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts;"
        )
        width = len(rows.names)
        stamps = [self._stored_ts(int(us)) for us in rows.stamps.tolist()]
        # Row-major as Feast writes them: each customer's features in the view's order.
        params = zip(
            itertools.chain.from_iterable(itertools.repeat(k, width) for k in rows.keys),
            itertools.cycle(rows.names),
            itertools.chain.from_iterable(zip(*rows.values, strict=True)),
            itertools.chain.from_iterable(zip(*rows.texts, strict=True)),
            itertools.chain.from_iterable(itertools.repeat(s, width) for s in stamps),
            itertools.repeat(None),
        )
        with self.connection:
            self.connection.executemany(sql, params)
        return len(rows.keys)

    def fresh(self, view: FeatureView, keys: list[bytes], stamps: NDArray[np.int64]) -> None:
        """Every row is written (Feast's SQLite store upserts without comparing timestamps)."""
        return None

    def _stored_ts(self, micros: int) -> int:
        """`event_ts` as Feast stores it: its sqlite adapter's ``int(dt.timestamp())`` of the
        naive UTC datetime (so read as local time, as Feast's converter reads it back)."""
        stored = self._event_ts.get(micros)
        if stored is None:
            naive = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
                microsecond=micros % 1_000_000, tzinfo=None
            )
            stored = self._event_ts[micros] = int(naive.timestamp())
        return stored


class _RedisWriter:
    """Feast's Redis hashes, pipelined a batch at a time."""

    def __init__(self, store: FeatureStore) -> None:
        online: Any = store._get_provider().online_store  # Feast's RedisOnlineStore
        self.config = store.config.online_store
        self.client = online._get_client(self.config)
        self.project = store.config.project.encode("utf-8")
        self.versioning = store.config.registry.enable_online_feature_view_versioning

    def fresh(self, view: FeatureView, keys: list[bytes], stamps: NDArray[np.int64]) -> list[int]:
        """The rows Feast would write: those whose stored ``_ts`` is older (or absent) — Feast
        skips a customer stored at the same instant or later — all with `skip_dedup`."""
        if self.config.skip_dedup:
            return list(range(len(keys)))
        ts_key = f"_ts:{self._name(view)}"
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key + self.project, ts_key)
            previous = [found[0] for found in pipe.execute()]
        nanos = (stamps * 1_000).tolist()
        return [i for i, before in enumerate(previous) if not before or _nanos(before) < nanos[i]]

    def write(self, view: FeatureView, rows: EncodedRows) -> int:
        """Store `rows` of `view` (one HSET each, as Feast's mapping); returns their count."""
        from feast.infra.online_stores.helpers import _mmh3

        name = self._name(view)
        ts_key = f"_ts:{name}".encode()
        fields = [_mmh3(f"{name}:{feature}") for feature in rows.names]
        stamps = _timestamps(rows.stamps)
        ttl = self.config.key_ttl_seconds
        chain = itertools.chain.from_iterable
        with self.client.pipeline(transaction=False) as pipe:
            for key, stamp, values in zip(
                rows.keys, stamps, zip(*rows.values, strict=True), strict=True
            ):
                hashed = key + self.project
                pipe.execute_command(
                    "HSET", hashed, ts_key, stamp, *chain(zip(fields, values, strict=True))
                )
                if ttl:
                    pipe.expire(name=hashed, time=ttl)
            pipe.execute()
        return len(rows.keys)

    def _name(self, view: FeatureView) -> str:
        from feast.infra.online_stores.helpers import compute_versioned_name

        return str(compute_versioned_name(view, self.versioning))


def _timestamps(micros: NDArray[np.int64]) -> list[bytes]:
    """Each row's serialized Timestamp proto, as Feast's `FromDatetime` makes it."""
    from google.protobuf.timestamp_pb2 import Timestamp

    made: dict[int, bytes] = {}
    out = []
    for us in micros.tolist():
        found = made.get(us)
        if found is None:
            stamp = Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1_000)
            found = made[us] = stamp.SerializeToString()
        out.append(found)
    return out


def _nanos(serialized: bytes) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.ParseFromString(serialized)
    return int(stamp.seconds) * 1_000_000_000 + int(stamp.nanos)


# -- the whole snapshot ------------------------------------------------------------------------


def materialize_direct(
    store: FeatureStore,
    snapshot: pd.Timestamp,
    views: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write `views` at `snapshot` (UTC) into the store's SQLite or Redis online store and record
    the materialization in the registry; returns the customers written per view.

    Every view must pass `supports_view` and the store `direct_backend` (the caller falls back
    to Feast's materialize otherwise).
    """
    from feast.feature_view import FeatureViewState

    backend = direct_backend(store)
    if backend is None:
        raise ValueError(f"no direct writer for the {store.config.online_store.type} online store")
    writer = _SqliteWriter(store) if backend == "sqlite" else _RedisWriter(store)
    keys = EntityKeyEncoder(store.config.entity_key_serialization_version)
    start = snapshot
    end = snapshot + pd.Timedelta(microseconds=1)
    say = progress or (lambda _message: None)
    written: dict[str, int] = {}
    for name in views:
        view = store.registry.get_feature_view(name, store.project)
        if not supports_view(view):
            raise ValueError(f"feature view {name} cannot be materialized directly")
        # As FeatureStore.materialize: a view with a state goes MATERIALIZING, then
        # apply_materialization makes it AVAILABLE_ONLINE.
        state = getattr(view, "state", FeatureViewState.STATE_UNSPECIFIED)
        if state not in (FeatureViewState.STATE_UNSPECIFIED, FeatureViewState.MATERIALIZING):
            if not state.can_transition_to(FeatureViewState.MATERIALIZING):
                raise ValueError(
                    f"FeatureView {name} cannot transition from {state.name} to MATERIALIZING."
                )
            view.state = FeatureViewState.MATERIALIZING
            store.registry.apply_feature_view(view, store.project, commit=True)
        types = [(f.name, f.dtype.to_value_type()) for f in view.features]
        names = [feature for feature, _ in types]
        source: Any = view.batch_source
        started = time.perf_counter()
        done = customers = 0
        for batch in snapshot_batches(
            source.path,
            view.entity_columns[0].name,
            source.timestamp_field,
            names,
            start,
            end,
            batch_size,
        ):
            encoded_keys, stamps, table = keys.encode(batch.ids), batch.stamps, batch.table
            keep = writer.fresh(view, encoded_keys, stamps)
            if keep is not None and len(keep) < len(encoded_keys):  # encode only what is written
                encoded_keys = [encoded_keys[i] for i in keep]
                stamps, table = stamps[keep], table.take(pa.array(keep, type=pa.int64()))
            done += len(batch.ids)
            if encoded_keys:
                encoded = [encode_column(table.column(f), t) for f, t in types]
                rows = EncodedRows(
                    encoded_keys,
                    stamps,
                    names,
                    [values for values, _ in encoded],
                    [texts for _, texts in encoded],
                )
                customers += writer.write(view, rows)
            say(
                f"materialize {name}: {done:,} customers "
                f"({done / max(time.perf_counter() - started, 1e-9):,.0f}/s)"
            )
        store.registry.apply_materialization(
            view, store.project, start.to_pydatetime(), end.to_pydatetime()
        )
        written[name] = customers
    return written
