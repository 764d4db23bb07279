import pandas as pd
import pytest

from features.compute import (
    build_feature_tables,
    compute_features,
    read_feature_table,
    write_feature_tables,
)
from features.paths import feature_table_path
from features.schema import CHURN_VIEW, VIEW_NAMES
from tests.features.conftest import SNAPSHOTS


def test_feature_tables_are_written_under_nudge_home_features(feature_tables, tmp_path):
    paths = write_feature_tables(feature_tables, tmp_path / "home")
    assert paths == {v: (tmp_path / "home" / "features" / f"{v}.parquet") for v in VIEW_NAMES}
    for view, path in paths.items():
        assert path.is_absolute()
        pd.testing.assert_frame_equal(
            read_feature_table(view, tmp_path / "home"), feature_tables[view]
        )


def test_merging_replaces_the_written_snapshots_and_keeps_the_others(feature_tables, tmp_path):
    table = feature_tables[CHURN_VIEW]
    old = table[table["event_timestamp"] < SNAPSHOTS[-1]]
    write_feature_tables({CHURN_VIEW: table.iloc[: len(old) + 5]}, tmp_path)
    write_feature_tables(
        {CHURN_VIEW: table[table["event_timestamp"] == SNAPSHOTS[-1]]}, tmp_path, merge=True
    )
    pd.testing.assert_frame_equal(read_feature_table(CHURN_VIEW, tmp_path), table)
    write_feature_tables({CHURN_VIEW: old}, tmp_path)
    pd.testing.assert_frame_equal(read_feature_table(CHURN_VIEW, tmp_path), old)


def test_a_table_off_the_contract_is_refused(feature_tables, tmp_path):
    with pytest.raises(KeyError, match="recency_days"):
        write_feature_tables(
            {CHURN_VIEW: feature_tables[CHURN_VIEW].drop(columns="recency_days")}, tmp_path
        )
    with pytest.raises(ValueError, match="unknown feature view"):
        write_feature_tables({"nope": feature_tables[CHURN_VIEW]}, tmp_path)
    assert not feature_table_path(CHURN_VIEW, tmp_path).exists()


def test_building_from_the_lake_equals_computing_from_its_events(lake, feature_tables, tmp_path):
    build_feature_tables(lake, SNAPSHOTS, tmp_path)
    for view in VIEW_NAMES:
        pd.testing.assert_frame_equal(read_feature_table(view, tmp_path), feature_tables[view])


def test_one_view_can_be_computed_alone(events, customers, feature_tables):
    only = compute_features(events, SNAPSHOTS, customers, views=[CHURN_VIEW])
    assert list(only) == [CHURN_VIEW]
    pd.testing.assert_frame_equal(only[CHURN_VIEW], feature_tables[CHURN_VIEW])


def test_a_build_in_parts_of_the_customers_writes_the_one_piece_tables(lake, tmp_path):
    whole = build_feature_tables(lake, SNAPSHOTS, tmp_path / "whole")
    said: list[str] = []
    parts = build_feature_tables(
        lake, SNAPSHOTS, tmp_path / "parts", part_customers=400, progress=said.append
    )
    assert parts.keys() == whole.keys()
    assert len(said) == -(-lake.customer_count() // 400) >= 3  # one message per part
    for view in whole:
        pd.testing.assert_frame_equal(
            read_feature_table(view, tmp_path / "parts"),
            read_feature_table(view, tmp_path / "whole"),
        )


def test_a_build_in_parts_merges_with_the_snapshots_on_disk(lake, tmp_path):
    build_feature_tables(lake, SNAPSHOTS[:-1], tmp_path / "parts", part_customers=500)
    build_feature_tables(lake, SNAPSHOTS[-1:], tmp_path / "parts", part_customers=500, merge=True)
    build_feature_tables(lake, SNAPSHOTS, tmp_path / "whole")
    for view in VIEW_NAMES:
        merged = read_feature_table(view, tmp_path / "parts")
        assert merged["event_timestamp"].nunique() == len(SNAPSHOTS)
        pd.testing.assert_frame_equal(merged, read_feature_table(view, tmp_path / "whole"))


def test_a_failed_build_in_parts_leaves_the_tables_on_disk_as_they_were(
    lake, tmp_path, monkeypatch
):
    import features.compute.tables as tables

    build_feature_tables(lake, SNAPSHOTS[:2], tmp_path)
    before = read_feature_table(CHURN_VIEW, tmp_path)
    calls = 0
    real = tables.compute_features

    def fail_on_the_second_part(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("out of disk")
        return real(*args, **kwargs)

    monkeypatch.setattr(tables, "compute_features", fail_on_the_second_part)
    with pytest.raises(RuntimeError, match="out of disk"):
        build_feature_tables(lake, SNAPSHOTS, tmp_path, part_customers=500)
    pd.testing.assert_frame_equal(read_feature_table(CHURN_VIEW, tmp_path), before)
    assert not list(feature_table_path(CHURN_VIEW, tmp_path).parent.glob(".*.tmp"))


def test_the_snapshots_of_a_table_are_read_from_its_timestamps(lake, tmp_path):
    from features.compute import feature_table_snapshots

    build_feature_tables(lake, SNAPSHOTS, tmp_path)
    assert feature_table_snapshots(CHURN_VIEW, tmp_path) == sorted(
        read_feature_table(CHURN_VIEW, tmp_path)["event_timestamp"].unique()
    )
    with pytest.raises(FileNotFoundError):
        feature_table_snapshots(CHURN_VIEW, tmp_path / "nowhere")
