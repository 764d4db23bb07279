"""The direct SQLite online read against Feast's own: every encoding, odd rows, the switch."""

from __future__ import annotations

import logging
import shutil
import sqlite3

import numpy as np
import pytest

from features.schema import MODEL_NAMES


def plan_of(features, models):
    """The online read's plan of defined models (no model's own layout)."""
    return features._plan(tuple((m, ()) for m in models), {})


def test_every_scalar_encoding_decodes_as_feast_reads_it():
    from feast.protos.feast.types.Value_pb2 import Null, Value
    from feast.type_map import feast_value_type_to_python_type

    from serving.online_sqlite import decode_values

    protos = [
        Value(double_val=1.5), Value(double_val=-0.0), Value(double_val=float("inf")),
        Value(double_val=-1e-300), Value(double_val=0.0), Value(int64_val=0),
        Value(int64_val=127), Value(int64_val=128), Value(int64_val=300_000),
        Value(int64_val=-1), Value(int64_val=2**53), Value(int64_val=-(2**40)),
        Value(int32_val=-5), Value(int32_val=70_000), Value(bool_val=True), Value(bool_val=False),
        Value(float_val=0.25), Value(), Value(null_val=Null.NULL), Value(double_val=float("nan")),
    ]  # fmt: skip
    values, null = decode_values([p.SerializeToString().hex().upper() for p in protos])
    for proto, value, is_null in zip(protos, values.tolist(), null.tolist(), strict=True):
        expected = feast_value_type_to_python_type(proto)
        if expected is None:
            assert is_null and np.isnan(value), proto
        else:
            assert not is_null and np.array_equal(value, float(expected), equal_nan=True), proto


def test_a_malformed_varint_goes_through_feasts_parser():
    from google.protobuf.message import DecodeError

    from serving.online_sqlite import decode_values

    with pytest.raises(DecodeError):
        decode_values(["2080"])  # int64_val whose only byte says more follow


def test_the_services_reads_are_the_direct_ones_and_equal_feasts(service, prepared):
    from serving.online import _same_rows

    features = service.features
    ids = [*prepared.known_ids[:400], *prepared.unknown_ids[:5], "nobody", prepared.known_ids[0]]
    service.score(ids[:3], None, explain=False)  # the first read checks, then switches
    assert features._checked[tuple((m, ()) for m in service.champions.models)] is True
    assert all(features._checked.values())
    for models in (tuple(MODEL_NAMES), ("ltv",), ("engagement", "churn")):
        plan = plan_of(features, models)
        unique = list(dict.fromkeys(ids))
        with features._lock:
            ours = features._read_direct(plan, unique)
        theirs = features._read_feast(plan, unique)
        for model in models:
            assert len(ours[model]) > 300 and _same_rows(ours[model], theirs[model]), model


@pytest.fixture
def own_store(prepared, tmp_path):
    """A private copy of the prepared online store, to change rows in."""
    from features.store import open_store
    from serving.online import OnlineFeatures

    home = tmp_path / "home"
    shutil.copytree(prepared.home / "feast", home / "feast")
    features = OnlineFeatures(open_store(home, production=False))
    yield features, home / "feast" / "online_store.db"
    features.close()


def test_rows_in_another_order_partial_rows_and_nulls_read_as_feast_reads_them(own_store, prepared):
    from serving.online import _same_rows

    features, path = own_store
    reader = features._direct
    shuffled, partial, nulled, other = prepared.known_ids[:4]
    table = reader._tables["churn_features"]
    with sqlite3.connect(path) as db:
        [key] = reader._keys.encode([shuffled])
        rows = db.execute(f'SELECT * FROM "{table}" WHERE entity_key = ?', (key,)).fetchall()
        db.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,))
        marks = ",".join("?" * len(rows[0]))
        db.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows[::-1])
        [key] = reader._keys.encode([partial])
        db.execute(
            f"DELETE FROM \"{table}\" WHERE entity_key = ? AND feature_name = 'spend_30d'", (key,)
        )
        [key] = reader._keys.encode([nulled])
        db.execute(
            f"UPDATE \"{table}\" SET value = X'' WHERE entity_key = ? "
            "AND feature_name = 'recency_days'",
            (key,),
        )
    ids = [shuffled, partial, nulled, other, "nobody"]
    plan = plan_of(features, MODEL_NAMES)
    with features._lock:
        ours = features._read_direct(plan, ids)
    theirs = features._read_feast(plan, ids)
    for model in MODEL_NAMES:
        assert _same_rows(ours[model], theirs[model]), model
    # As in Feast: the row's time stands for all its features, a feature missing from it is null.
    churn = ours["churn"]
    for customer, feature in ((partial, "spend_30d"), (nulled, "recency_days")):
        value = churn.matrix[churn.customer_ids.index(customer), churn.features.index(feature)]
        assert np.isnan(value), (customer, feature)


def test_an_integer_feature_without_a_value_fails_both_ways(own_store, prepared):
    features, path = own_store
    reader = features._direct
    customer = prepared.known_ids[5]
    [key] = reader._keys.encode([customer])
    with sqlite3.connect(path) as db:
        db.execute(
            f"UPDATE \"{reader._tables['churn_features']}\" SET value = X'' "
            "WHERE entity_key = ? AND feature_name = 'purchases_7d'",
            (key,),
        )
    plan = plan_of(features, ["churn"])
    with pytest.raises(ValueError, match="purchases_7d"), features._lock:
        features._read_direct(plan, [customer])
    with pytest.raises(TypeError):
        features._read_feast(plan, [customer])


def test_a_direct_read_that_disagrees_is_never_used(own_store, prepared, caplog, monkeypatch):
    features, _ = own_store
    reader = features._direct
    honest = reader.read

    def off_by_one(view, names, ids):
        block = honest(view, names, ids)
        block.values[:] += 1
        return block

    monkeypatch.setattr(reader, "read", off_by_one)
    ids = prepared.known_ids[:20]
    with caplog.at_level(logging.WARNING, logger="serving"):
        first = features.read(["churn"], ids)
    assert features._checked == {(("churn", ()),): False} and "differs" in caplog.text
    plan = plan_of(features, ["churn"])
    from serving.online import _same_rows

    assert _same_rows(first["churn"], features._read_feast(plan, ids)["churn"])
    assert _same_rows(features.read(["churn"], ids)["churn"], first["churn"])


def test_the_key_encoding_is_feasts(own_store):
    features, _ = own_store
    keys = features._direct._keys
    assert keys.prefix is not None
    for customer in ("c0000001", "ü-ñ@example.com", "x" * 128, "中文"):
        assert keys.encode([customer]) == [keys._feast(customer)]


# -- the in-memory snapshot ------------------------------------------------------------------------


@pytest.fixture
def snapshot_store(prepared, tmp_path):
    """A private copy of the online store, read with views held in memory."""
    from features.store import open_store
    from serving.online import OnlineFeatures

    home = tmp_path / "home"
    shutil.copytree(prepared.home / "feast", home / "feast")
    features = OnlineFeatures(open_store(home, production=False), snapshot_max_customers=100_000)
    yield features, home / "feast" / "online_store.db"
    features.close()


def _warm(features, ids) -> None:
    """Read once (that starts the load), wait for it: the next reads come from memory."""
    features.read(list(MODEL_NAMES), ids)
    features._direct._snapshots.wait()


def _erase(path, reader, customer) -> None:
    [key] = reader._keys.encode([customer])
    with sqlite3.connect(path) as db:
        for table in reader._tables.values():
            db.execute(f'DELETE FROM "{table}" WHERE entity_key = ?', (key,))


def test_the_snapshot_answers_what_sqlite_and_feast_answer(snapshot_store, prepared):
    from serving.online import _same_rows

    features, path = snapshot_store
    reader = features._direct
    partial, nulled = prepared.known_ids[1:3]
    table = reader._tables["churn_features"]
    with sqlite3.connect(path) as db:
        [key] = reader._keys.encode([partial])
        db.execute(f"DELETE FROM \"{table}\" WHERE entity_key = ? AND feature_name = 'spend_30d'", (key,))  # fmt: skip
        [key] = reader._keys.encode([nulled])
        db.execute(f"UPDATE \"{table}\" SET value = X'' WHERE entity_key = ? AND feature_name = 'recency_days'", (key,))  # fmt: skip
    ids = [*prepared.known_ids[:300], *prepared.unknown_ids[:5], "nobody"]
    _warm(features, ids[:3])
    snapshots = reader._snapshots
    assert snapshots.loads == 1
    with features._lock:
        assert snapshots.current("churn_features", reader.connection()) is not None
    plan = plan_of(features, MODEL_NAMES)
    with features._lock:
        ours = features._read_direct(plan, ids)
    theirs = features._read_feast(plan, ids)
    for model in MODEL_NAMES:
        assert len(ours[model]) >= 299 and _same_rows(ours[model], theirs[model]), model
    assert snapshots.loads == 1  # nothing changed: no second load


def test_an_erasure_by_another_process_is_never_answered_from_memory(snapshot_store, prepared):
    features, path = snapshot_store
    reader = features._direct
    gone, kept = prepared.known_ids[:2]
    _warm(features, [gone, kept])
    assert gone in features.read(["churn"], [gone])["churn"].customer_ids
    _erase(path, reader, gone)
    # The very next read sees the change: SQLite answers while the views load again.
    after = features.read(["churn"], [gone, kept])["churn"]
    assert after.customer_ids == [kept]
    reader._snapshots.wait()
    assert reader._snapshots.loads == 2
    assert features.read(["churn"], [gone, kept])["churn"].customer_ids == [kept]
    with features._lock:
        assert reader._snapshots.current("churn_features", reader.connection()) is not None


def test_a_write_through_feasts_own_connection_is_seen_too(snapshot_store, prepared):
    features, _ = snapshot_store
    reader = features._direct
    gone = prepared.known_ids[3]
    _warm(features, [gone])
    [key] = reader._keys.encode([gone])
    connection = reader.connection()  # data_version does not move for its own writes
    with connection:
        connection.execute(f'DELETE FROM "{reader._tables["churn_features"]}" WHERE entity_key = ?', (key,))  # fmt: skip
    assert features.read(["churn"], [gone])["churn"].customer_ids == []


def test_a_view_bigger_than_the_limit_stays_on_sqlite(prepared, tmp_path, caplog):
    from features.store import open_store
    from serving.online import OnlineFeatures

    home = tmp_path / "home"
    shutil.copytree(prepared.home / "feast", home / "feast")
    features = OnlineFeatures(open_store(home, production=False), snapshot_max_customers=10)
    try:
        ids = prepared.known_ids[:20]
        with caplog.at_level(logging.WARNING, logger="serving"):
            _warm(features, ids)
        snapshots = features._direct._snapshots
        assert snapshots.loads == 0 and "churn_features" in snapshots.too_big
        assert "held in memory" in caplog.text
        assert len(features.read(["churn"], ids)["churn"]) == 20
    finally:
        features.close()
