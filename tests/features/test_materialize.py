"""The direct materializer writes what Feast's own materialize writes, on SQLite and Redis.

Two stores over the same feature tables: one materialized by Feast (`direct=False`), one by
`features.materialize`, through the same sequence of snapshots (an older one, the latest, the
older one again: upserts over stored rows, and Redis's skipping of older rows). Then the raw rows
or hashes, the registry's records, Feast's `get_online_features` and the scoring service's reads
must be equal.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.compute import write_feature_tables
from features.schema import CHURN_VIEW, MODEL_NAMES, VIEW_FEATURES
from tests.conftest import require_service
from tests.features.conftest import SNAPSHOTS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning"),
]
SEQUENCE = [SNAPSHOTS[-2], SNAPSHOTS[-1], SNAPSHOTS[-2]]
BATCH = 317  # customers per batch: several batches, the last one short


# -- encoding, against Feast's own conversion ---------------------------------------------------


def test_doubles_and_integers_are_encoded_as_feast_encodes_them():
    from feast.value_type import ValueType

    from features.materialize import _by_feast, encode_column

    rng = np.random.default_rng(7)
    ints = np.concatenate(
        [
            rng.integers(-(2**63), 2**63 - 1, 3_000),
            rng.integers(-300, 300, 3_000),
            [0, 1, 127, 128, 16_383, 16_384, -1, 2**63 - 1, -(2**63)],
        ]
    ).astype(np.int64)
    floats = [
        *(rng.normal(size=3_000) * 10.0 ** rng.integers(-300, 300, 3_000)).tolist(),
        0.0, -0.0, np.inf, -np.inf, np.nan, None, 1e16, 0.1, 5e-324,
    ]  # fmt: skip
    for column, kind in [
        (pa.array(ints), ValueType.INT64),
        (pa.array(floats, type=pa.float64()), ValueType.DOUBLE),
        (pa.array([3, None, -5], type=pa.int64()), ValueType.INT64),  # nulls: Feast's path
        (pa.array([1.5, None, 2.0], type=pa.float32()), ValueType.FLOAT),
        (pa.array([True, False, None]), ValueType.BOOL),
        (pa.array(["a", None, "é"]), ValueType.STRING),
    ]:
        assert encode_column(column, kind) == _by_feast(column, kind), kind


def test_a_snapshot_is_read_in_batches_with_the_latest_row_per_customer(tmp_path):
    from features.materialize import snapshot_batches

    at = pd.Timestamp("2025-03-01", tz="UTC")
    tick = pd.Timedelta(microseconds=1)
    rows = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "b", "d", "a", "e"],
            "event_timestamp": [at - tick, at, at, at + tick, at, at, at + 2 * tick],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    path = tmp_path / "view.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=2)
    batches = list(
        snapshot_batches(str(path), "customer_id", "event_timestamp", ["x"], at, at + tick, 2)
    )
    got = {
        c: x for b in batches for c, x in zip(b.ids, b.table.column("x").to_pylist(), strict=True)
    }
    # a: only the row at t (the one before is outside); b: the later one; e: after the window.
    assert got == {"a": 6.0, "b": 4.0, "c": 3.0, "d": 5.0}
    assert [len(b.ids) for b in batches] == [2, 2]


def test_only_views_over_local_parquet_with_one_string_key_go_direct(tmp_path):
    from feast import Entity, FeatureView, Field, FileSource
    from feast.data_format import DeltaFormat
    from feast.types import Float64, Int64, String

    from features.materialize import supports_view

    def view(entity: Entity, **source: Any) -> FeatureView:
        options = {"path": str(tmp_path / "v.parquet"), "timestamp_field": "event_timestamp"}
        key = entity.join_key
        key_type = Int64 if key == "n" else String
        return FeatureView(
            name="v",
            entities=[entity],
            schema=[Field(name=key, dtype=key_type), Field(name="x", dtype=Float64)],
            source=FileSource(**{**options, **source}),
        )

    customer = Entity(name="customer", join_keys=["customer_id"])
    assert supports_view(view(customer))
    assert not supports_view(view(customer, created_timestamp_column="created"))
    assert not supports_view(view(customer, field_mapping={"a": "x"}))
    assert not supports_view(view(customer, file_format=DeltaFormat()))
    assert not supports_view(view(customer, path="s3://bucket/v.parquet"))
    assert not supports_view(view(Entity(name="number", join_keys=["n"])))


# -- whole stores --------------------------------------------------------------------------------


def _home(tmp_path_factory: pytest.TempPathFactory, tables: dict[str, pd.DataFrame]) -> Path:
    home = tmp_path_factory.mktemp("materialize_home")
    write_feature_tables(tables, home)
    return home


def _store(home: Path, online: dict[str, Any] | None = None, project: str | None = None) -> Any:
    """The embedded store of `home` (file registry), its online store replaced by `online`."""
    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from features.paths import REPO_DIR, feast_dir, feast_environment, feature_store_yaml
    from features.store import apply_definitions, open_store

    if online is None:
        store = open_store(home, production=False, project=project)
    else:
        text = Template(feature_store_yaml(False).read_text()).safe_substitute(
            feast_environment(home, False)
        )
        raw = yaml.safe_load(text)
        raw["online_store"], raw["project"] = online, project or raw["project"]
        config = RepoConfig(**raw)
        config.repo_path = REPO_DIR
        feast_dir(home).mkdir(parents=True, exist_ok=True)
        store = FeatureStore(repo_path=str(REPO_DIR), config=config)
    apply_definitions(store, home)
    return store


def _materialize(store: Any, direct: bool) -> None:
    from features.store import materialize_snapshot

    lines: list[str] = []
    for snapshot in SEQUENCE:
        materialize_snapshot(
            store, snapshot, direct=direct, batch_size=BATCH, progress=lines.append
        )
    assert bool(lines) == direct  # a progress line per batch on the direct path


@pytest.fixture(scope="module")
def sqlite_pair(tmp_path_factory, feature_tables):
    feast_made = _store(_home(tmp_path_factory, feature_tables))
    direct_made = _store(_home(tmp_path_factory, feature_tables))
    _materialize(feast_made, direct=False)
    _materialize(direct_made, direct=True)
    return feast_made, direct_made


def test_sqlite_rows_are_feasts_byte_for_byte(sqlite_pair):
    from serving.online_sqlite import db_path

    tables = 0
    dumps = []
    for store in sqlite_pair:
        connection = sqlite3.connect(db_path(store))
        names = [
            n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        dumps.append(
            {
                name: connection.execute(
                    f"SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, "
                    f'created_ts FROM "{name}" ORDER BY entity_key, feature_name'
                ).fetchall()
                for name in names
            }
        )
        connection.close()
        tables = len(names)
    assert tables >= 3
    assert dumps[0].keys() == dumps[1].keys()
    for name in dumps[0]:
        assert len(dumps[0][name]) > 0
        assert dumps[0][name] == dumps[1][name], name
    churn = dumps[1][f"nudge_{CHURN_VIEW}"]
    assert any(row[2] == b"" and row[3] is None for row in churn)  # nulls, as Feast writes them


def test_sqlite_registry_records_the_same_materializations(sqlite_pair):
    _assert_same_registry(*sqlite_pair)


def test_sqlite_online_features_are_feasts(sqlite_pair, feature_tables):
    _assert_same_online_features(*sqlite_pair, feature_tables)


def test_the_scoring_services_readers_read_the_direct_rows(sqlite_pair, feature_tables):
    from serving.online import OnlineFeatures
    from serving.online_sqlite import SqliteBatchReader

    feast_made, direct_made = sqlite_pair
    ids = _ids(feature_tables)
    by_feast = OnlineFeatures(feast_made, direct=False).read(MODEL_NAMES, ids)
    served = OnlineFeatures(direct_made, direct=True)
    by_direct = served.read(MODEL_NAMES, ids)
    assert served._checked and all(served._checked.values())  # the direct reader agreed
    _assert_same_rows(by_feast, by_direct)
    features = list(VIEW_FEATURES[CHURN_VIEW])
    left = SqliteBatchReader(feast_made).read(CHURN_VIEW, features, ids)
    right = SqliteBatchReader(direct_made).read(CHURN_VIEW, features, ids)
    assert left.present.sum() == len(ids) - 1
    for field in ("present", "values", "nulls", "stamps"):
        np.testing.assert_array_equal(getattr(left, field), getattr(right, field))


# -- Redis ---------------------------------------------------------------------------------------

REDIS_DB = int(os.environ.get("NUDGE_TEST_REDIS_DB", "0"))


def _redis() -> Any:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # any failure to connect means: not available
        require_service("Redis at 127.0.0.1:6379", False, str(exc).splitlines()[0])
    return client


@pytest.fixture(scope="module")
def redis_pair(tmp_path_factory, feature_tables):
    client = _redis()
    online = {"type": "redis", "connection_string": f"127.0.0.1:6379,db={REDIS_DB}"}
    # Projects of their own (the key's suffix) keep this run apart on the shared server.
    projects = [f"nudge_mat_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    stores = [_store(_home(tmp_path_factory, feature_tables), online, p) for p in projects]
    try:
        _materialize(stores[0], direct=False)
        _materialize(stores[1], direct=True)
        yield client, projects, stores
    finally:
        for project in projects:
            for key in client.scan_iter(match=f"*{project}", count=10_000):
                client.delete(key)


def test_redis_hashes_are_feasts_byte_for_byte(redis_pair):
    client, projects, _ = redis_pair
    hashes = []
    for project in projects:
        suffix = project.encode()
        keys = sorted(client.scan_iter(match=f"*{project}", count=10_000))
        assert keys and all(key.endswith(suffix) for key in keys)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
            pipe.ttl(key)
        answers = pipe.execute()
        hashes.append(
            {
                key[: -len(suffix)]: (answers[2 * i], answers[2 * i + 1])
                for i, key in enumerate(keys)
            }
        )
    assert len(hashes[0]) > 1_000
    assert hashes[0] == hashes[1]
    assert any(b"" in fields.values() for fields, _ in hashes[1].values())  # nulls


def test_redis_registry_records_the_same_materializations(redis_pair):
    _assert_same_registry(*redis_pair[2])


def test_redis_online_features_and_the_service_are_feasts(redis_pair, feature_tables):
    from serving.online import OnlineFeatures

    feast_made, direct_made = redis_pair[2]
    _assert_same_online_features(feast_made, direct_made, feature_tables)
    ids = _ids(feature_tables)
    _assert_same_rows(
        OnlineFeatures(feast_made).read(MODEL_NAMES, ids),
        OnlineFeatures(direct_made).read(MODEL_NAMES, ids),
    )


# -- helpers -------------------------------------------------------------------------------------


def _ids(feature_tables: dict[str, pd.DataFrame]) -> list[str]:
    """Customers of the latest snapshot, some with null floats, and one nobody knows."""
    churn = feature_tables[CHURN_VIEW]
    latest = churn[churn["event_timestamp"] == SNAPSHOTS[-1]]
    rest = latest.iloc[60:]
    nulls = rest.loc[rest["recency_days"].isna(), "customer_id"].head(10).tolist()
    assert nulls
    return [*latest["customer_id"].head(60).tolist(), *nulls, "nobody"]


def _assert_same_online_features(
    feast_made: Any, direct_made: Any, feature_tables: dict[str, pd.DataFrame]
) -> None:
    refs = [f"{view}:{name}" for view, names in VIEW_FEATURES.items() for name in names]
    ids = _ids(feature_tables)
    answers = [
        store.get_online_features(features=refs, entity_rows={"customer_id": ids}).to_dict(
            include_event_timestamps=True
        )
        for store in (feast_made, direct_made)
    ]
    assert answers[0] == answers[1]
    assert None in answers[1]["recency_days"]  # nulls come back as nulls


def _assert_same_registry(feast_made: Any, direct_made: Any) -> None:
    for view in VIEW_FEATURES:
        made = [
            store.registry.get_feature_view(view, store.project, allow_cache=False)
            for store in (feast_made, direct_made)
        ]
        intervals = [v.materialization_intervals for v in made]
        assert intervals[0] == intervals[1] and len(intervals[1]) == len(SEQUENCE)
        assert made[0].state == made[1].state


def _assert_same_rows(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert left.keys() == right.keys()
    for model in left:
        a, b = left[model], right[model]
        assert a.customer_ids == b.customer_ids and len(a) > 60
        np.testing.assert_array_equal(a.snapshots, b.snapshots)
        np.testing.assert_array_equal(a.matrix, b.matrix)
