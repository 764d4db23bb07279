"""Batch reads of Feast's SQLite online store: one grouped query per feature view, decoded in NumPy.

Feast's `get_online_features` costs ~1 ms per customer on a 1,000-customer batch here: it parses a
`ValueProto` per value, converts each to Python, builds entity-key protos and a response proto.
This reader asks SQLite for one row per customer and view — the row's feature names and values
concatenated in the same aggregate pass, so the two lists are aligned whatever order SQLite visits
the rows in — and decodes every value of the batch at once: a `ValueProto` holding one double is
its tag byte and 8 little-endian bytes, an integer is its tag and a varint. Anything else (a type
Feast might write that this module does not know) is parsed by Feast's own proto code, value by
value, so the answer is always Feast's.

The tables, entity keys and timestamps are Feast's (`compute_table_id`, `serialize_entity_key`,
the `event_ts` epoch seconds read back as Feast's `convert_timestamp` does); `serving.online`
checks the reader against `get_online_features` when it opens (`agrees_with_feast`) and uses it
only then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from features.entity_keys import EntityKeyEncoder

if TYPE_CHECKING:
    import sqlite3

    from feast import FeatureStore

__all__ = ["Snapshots", "SqliteBatchReader", "ViewBlock", "ViewSnapshot", "decode_values"]

log = logging.getLogger("serving")

# ValueProto tags (field number << 3 | wire type) of the scalar types features are stored as.
_INT32, _INT64, _BOOL = 0x18, 0x20, 0x38  # varints
_DOUBLE, _FLOAT = 0x29, 0x35  # fixed 8 and 4 bytes
_VARINTS = (_INT32, _INT64, _BOOL)
_MAX_VARINT = 10


@dataclass(frozen=True)
class ViewBlock:
    """One view's requested features for a batch: one row per requested id, in request order."""

    present: NDArray[np.bool_]  # (ids,): the view has a row for the id
    values: NDArray[np.float64]  # (ids, features): NaN where the value is null or absent
    nulls: NDArray[np.bool_]  # (ids, features): null, or no value in the id's row (as Feast)
    stamps: NDArray[np.int64]  # (ids,): epoch seconds of the row (0: the id has none)


class SqliteBatchReader:
    """Reads feature views of one Feast store's SQLite online store, many customers at a time."""

    def __init__(self, store: FeatureStore, *, snapshot_max_customers: int = 0) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        self.store = store
        config = store.config
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
        self._tables = {
            view.name: compute_table_id(config.project, view, versioning)
            for view in store.list_feature_views()
        }
        self._keys = EntityKeyEncoder(config.entity_key_serialization_version)
        self._stamps: dict[int, int] = {}  # stored event_ts → Feast's epoch seconds
        self._snapshots: Snapshots | None = None
        if snapshot_max_customers > 0:
            self._snapshots = Snapshots(self, db_path(store), snapshot_max_customers)

    def has_view(self, view: str) -> bool:
        return view in self._tables

    def connection(self) -> sqlite3.Connection:
        """Feast's own connection (the caller serialises its use: see `serving.online`)."""
        online: Any = self.store._get_provider().online_store  # Feast's SqliteOnlineStore
        connection: sqlite3.Connection = online._get_conn(self.store.config)
        return connection

    def sample_ids(self, view: str, count: int) -> list[str]:
        """Up to `count` customers the view has rows for (to check this reader against Feast's)."""
        prefix = self._keys.prefix
        if prefix is None:
            return []
        rows = (
            self.connection()
            .execute(f'SELECT DISTINCT entity_key FROM "{self._tables[view]}" LIMIT ?', (count,))
            .fetchall()
        )
        return [
            bytes(key)[len(prefix) + 4 :].decode()
            for (key,) in rows
            if bytes(key).startswith(prefix)
        ]

    def read(self, view: str, features: Sequence[str], ids: Sequence[str]) -> ViewBlock:
        """`features` of `view` for `ids` (distinct): from the view's snapshot when one is
        current (module docstring), else one query, values decoded together."""
        n, width = len(ids), len(features)
        if not n or not width:
            return _empty_block(n, width)
        keys = self._keys.encode(ids)
        snapshot = self._snapshots.current(view, self.connection()) if self._snapshots else None
        if snapshot is not None:
            return snapshot.pick(keys, features)
        query = (
            f'SELECT entity_key, min(event_ts), group_concat(feature_name, ","), '
            f'group_concat(hex(value), ",") FROM "{self._tables[view]}" '
            f"WHERE entity_key IN ({','.join('?' * n)}) GROUP BY entity_key"
        )
        rows = self.connection().execute(query, keys).fetchall()
        return self._decode(rows, features, {key: i for i, key in enumerate(keys)})

    def read_all(
        self, view: str, features: Sequence[str], connection: sqlite3.Connection
    ) -> tuple[list[bytes], ViewBlock]:
        """Every row of `view` (the stored entity keys, in the order read, and their block),
        through `connection` (the snapshot loader's own, not Feast's)."""
        query = (
            f'SELECT entity_key, min(event_ts), group_concat(feature_name, ","), '
            f'group_concat(hex(value), ",") FROM "{self._tables[view]}" GROUP BY entity_key'
        )
        rows = connection.execute(query).fetchall()
        keys = [bytes(row[0]) for row in rows]
        where = {key: i for i, key in enumerate(keys)}
        return keys, self._decode(rows, features, where)

    def view_features(self, view: str) -> list[str]:
        """Every feature of a registered view, in the registry's order."""
        found = self.store.get_feature_view(view)
        return [feature.name for feature in found.features]

    def _decode(
        self, rows: list[Any], features: Sequence[str], where: dict[bytes, int]
    ) -> ViewBlock:
        """The grouped rows' `features`, each row at `where[its key]`."""
        block = _empty_block(len(where), len(features))
        present, values, nulls, stamps = block.present, block.values, block.nulls, block.stamps
        column = {name: j for j, name in enumerate(features)}
        # Rows by the order of their names (SQLite's, usually one for the whole batch).
        groups: dict[str, tuple[list[int], list[str]]] = {}
        for key, stamp, names, hexed in rows:
            i = where[bytes(key)]
            stamps[i] = self._epoch(stamp)
            group = groups.setdefault(names, ([], []))
            group[0].append(i)
            group[1].append(hexed)
        odd: list[tuple[int, int, str]] = []  # (row, column, hex) of rows without them all
        for names, (at, hexes) in groups.items():
            order = names.split(",")
            if len(set(order)) != len(order) or not column.keys() <= set(order):
                present[at] = True  # a feature without a value in the row is null, as in Feast
                for i, hexed in zip(at, hexes, strict=True):
                    odd.extend(
                        (i, column[name], part)
                        for name, part in zip(order, hexed.split(","), strict=True)
                        if name in column
                    )
                continue
            decoded, null = decode_values(",".join(hexes).split(","))
            picked = [order.index(name) for name in features]  # the requested, in their order
            rows_at = np.asarray(at)
            present[rows_at] = True
            values[rows_at] = decoded.reshape(len(at), len(order))[:, picked]
            nulls[rows_at] = null.reshape(len(at), len(order))[:, picked]
        if odd:
            decoded, null = decode_values([part for _, _, part in odd])
            rows_odd = np.asarray([r for r, _, _ in odd])
            cols_odd = np.asarray([c for _, c, _ in odd])
            present[rows_odd] = True
            values[rows_odd, cols_odd] = decoded
            nulls[rows_odd, cols_odd] = null
        return block

    def _epoch(self, stored: Any) -> int:
        """Feast stores `event_ts` as epoch seconds of a naive UTC time and reads it back with
        `datetime.fromtimestamp` (local time) then tags it UTC: the same here, so the snapshot
        time is Feast's on any machine."""
        if stored is None:
            return 0
        raw = int(stored)
        epoch = self._stamps.get(raw)
        if epoch is None:
            if len(self._stamps) > 4096:  # a few snapshots a day; bounded anyway
                self._stamps.clear()
            epoch = self._stamps[raw] = int(
                datetime.fromtimestamp(raw).replace(tzinfo=UTC).timestamp()
            )
        return epoch


def _empty_block(n: int, width: int) -> ViewBlock:
    """No row for any of `n` ids: absent, NaN, null, no timestamp."""
    return ViewBlock(
        np.zeros(n, dtype=bool),
        np.full((n, width), np.nan),
        np.ones((n, width), dtype=bool),
        np.zeros(n, dtype=np.int64),
    )


def db_path(store: FeatureStore) -> str:
    """The SQLite file of a store's online store, as Feast resolves it."""
    config = store.config
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        return str(Path(config.repo_path) / path)
    return str(path)


@dataclass(frozen=True)
class ViewSnapshot:
    """Every stored row of one view, decoded: a batch read becomes a lookup and a gather."""

    index: dict[bytes, int]  # entity key → row
    features: dict[str, int]  # feature → column
    block: ViewBlock

    def pick(self, keys: Sequence[bytes], features: Sequence[str]) -> ViewBlock:
        """`read`'s answer for `keys`: the same block a query would decode."""
        get = self.index.get
        rows = np.fromiter((get(key, -1) for key in keys), dtype=np.int64, count=len(keys))
        present = rows >= 0
        at = np.where(present, rows, 0)
        columns = np.fromiter((self.features[name] for name in features), dtype=np.int64)
        block = self.block
        values = block.values[np.ix_(at, columns)]
        nulls = block.nulls[np.ix_(at, columns)]
        values[~present] = np.nan
        nulls[~present] = True
        stamps = np.where(present, block.stamps[at], 0)
        return ViewBlock(present & block.present[at], values, nulls, stamps)


class Snapshots:
    """The views of one SQLite online store held in memory, valid while the file is unchanged.

    Validity is SQLite's own change counter: ``PRAGMA data_version`` of Feast's connection moves
    when any other connection commits (materialization, an erasure), and the connection's
    ``total_changes`` when it writes itself. A snapshot is used only while both are what they
    were when it was taken; after a change every read goes to SQLite again at once — an erased
    customer is never served from memory — while a thread loads fresh snapshots through a
    connection of its own (Feast's stays free for requests). A store with more than
    `max_customers` rows in a view is not held (memory: 8 bytes per feature and customer).
    """

    def __init__(self, reader: SqliteBatchReader, path: str, max_customers: int) -> None:
        self.reader, self.path, self.max_customers = reader, path, max_customers
        self._taken: tuple[int, int, int] | None = None  # the version the views were taken at
        self._views: dict[str, ViewSnapshot] = {}
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()
        self.loads = 0  # snapshots published (tests and logs)
        self.too_big: set[str] = set()

    def current(self, view: str, connection: sqlite3.Connection) -> ViewSnapshot | None:
        """The view's snapshot if the store is unchanged since it was taken; else None (and a
        fresh load started). Called with Feast's connection, under the reader's lock."""
        version = _version(connection)
        with self._lock:
            if self._taken == version and view in self._views:
                return self._views[view]
            if self._taken != version:
                self._views = {}
                self._taken = None
            if self._loading is None and view not in self.too_big:
                self._loading = threading.Thread(
                    target=self._load, args=(version,), name="online-snapshot", daemon=True
                )
                self._loading.start()
        return None

    def wait(self, timeout: float = 60.0) -> None:
        """Until the load in progress (if any) is done (tests)."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)

    def _load(self, version: tuple[int, int, int]) -> None:
        import sqlite3

        views: dict[str, ViewSnapshot] = {}
        try:
            connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                for view in self.reader._tables:
                    table = self.reader._tables[view]
                    (count,) = connection.execute(
                        f'SELECT count(DISTINCT entity_key) FROM "{table}"'
                    ).fetchone()
                    if count > self.max_customers:
                        log.warning(
                            "online view %s has %d customers, more than the %d held in "
                            "memory: read from SQLite per batch", view, count, self.max_customers,
                        )  # fmt: skip
                        self.too_big.add(view)
                        continue
                    features = self.reader.view_features(view)
                    keys, block = self.reader.read_all(view, features, connection)
                    index = {key: i for i, key in enumerate(keys)}
                    columns = {name: j for j, name in enumerate(features)}
                    views[view] = ViewSnapshot(index, columns, block)
            finally:
                connection.close()
        except Exception:  # a failed load only leaves reads on SQLite
            log.warning("could not load the online store into memory", exc_info=True)
            views = {}
        with self._lock:
            self._loading = None
            # Published for the version the load began at: if the store changed meanwhile,
            # the next read sees another version, drops these and loads again.
            if views:
                self._views, self._taken = views, version
                self.loads += 1


def _version(connection: sqlite3.Connection) -> tuple[int, int, int]:
    (data_version,) = connection.execute("PRAGMA data_version").fetchone()
    return id(connection), int(data_version), connection.total_changes


def decode_values(parts: Sequence[str]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Hex-encoded serialized `ValueProto`s → (value as float64, is null); NaN for nulls.

    Doubles, floats, integers and booleans are decoded in bulk; any other encoding through
    Feast's proto parsing, one by one.
    """
    count = len(parts)
    lengths = np.fromiter(map(len, parts), dtype=np.int64, count=count) // 2
    buffer = np.frombuffer(bytes.fromhex("".join(parts)) + bytes(_MAX_VARINT + 1), dtype=np.uint8)
    starts = np.zeros(count, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    tags = np.where(lengths > 0, buffer[starts], 0)
    values = np.full(count, np.nan)
    null = lengths == 0
    done = null.copy()

    doubles = (tags == _DOUBLE) & (lengths == 9)
    if doubles.any():
        picked = buffer[starts[doubles, None] + np.arange(1, 9)]
        values[doubles] = np.ascontiguousarray(picked).view("<f8").ravel()
        done |= doubles
    floats = (tags == _FLOAT) & (lengths == 5)
    if floats.any():
        picked = buffer[starts[floats, None] + np.arange(1, 5)]
        values[floats] = np.ascontiguousarray(picked).view("<f4").ravel()
        done |= floats
    varints = np.isin(tags, _VARINTS) & (lengths >= 2) & (lengths <= _MAX_VARINT + 1)
    if varints.any():
        decoded, valid = _varints(buffer, starts[varints] + 1, lengths[varints] - 1)
        where = np.flatnonzero(varints)[valid]
        values[where] = decoded[valid]
        done[where] = True
    for i in np.flatnonzero(~done).tolist():
        values[i], null[i] = _by_proto(parts[i])
    return values, null


def _varints(
    buffer: NDArray[np.uint8], starts: NDArray[np.int64], sizes: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Little-endian base-128 varints (two's complement int64, as protobuf writes int32, int64
    and bool) of `sizes` bytes at `starts`; and whether each one is well formed."""
    k = np.arange(_MAX_VARINT)
    raw = buffer[starts[:, None] + k].astype(np.uint64)
    inside = k < sizes[:, None]
    continued = (raw & 0x80) != 0
    # Every byte but the last has its continuation bit, the last has not.
    valid = ((continued == (k < sizes[:, None] - 1)) | ~inside).all(axis=1)
    shifted = np.left_shift(raw & np.uint64(0x7F), (7 * k).astype(np.uint64))
    combined = np.bitwise_or.reduce(np.where(inside, shifted, np.uint64(0)), axis=1)
    return combined.view(np.int64).astype(np.float64), valid


def _by_proto(hexed: str) -> tuple[float, bool]:
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    proto = Value()
    proto.ParseFromString(bytes.fromhex(hexed))
    value = feast_value_type_to_python_type(proto)
    if value is None:
        return np.nan, True
    return float(value), False
