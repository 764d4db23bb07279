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
