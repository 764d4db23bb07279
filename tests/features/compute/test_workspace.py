"""The population and window boundaries every view and label shares."""

from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from features.compute import as_snapshots, churn_features, churn_labels, compute_features
from features.schema import VIEW_NAMES
from tests.features.conftest import SNAPSHOTS

T = datetime(2025, 6, 1, tzinfo=UTC)


def test_the_population_is_everyone_with_an_event_at_or_before_the_snapshot(
    feature_tables, events_frame
):
    first_seen = events_frame.groupby("customer_id")["timestamp"].min()
    for view in VIEW_NAMES:
        table = feature_tables[view]
        for t in SNAPSHOTS:
            expected = sorted(first_seen[first_seen <= t].index)
            assert table.loc[table["event_timestamp"] == t, "customer_id"].tolist() == expected


def test_an_event_exactly_at_the_snapshot_is_a_feature_and_one_at_t_plus_h_is_a_label():
    events = _purchases(
        ("c1", T - timedelta(days=30)),  # 30 d before: outside the 30-day window (t − 30 d, t]
        ("c1", T),  # at t: a feature, not a label
        ("c1", T + timedelta(days=90)),  # at t + H: inside the label window (t, t + H]
        ("c1", T + timedelta(days=90, microseconds=1)),  # just past it
    )
    features = churn_features(events, [T]).iloc[0]
    labels = churn_labels(events, [T], timedelta(days=90)).iloc[0]
    assert (features["purchases_30d"], features["purchases_90d"]) == (1, 2)
    assert features["recency_days"] == 0
    assert (labels["churned"], labels["future_purchases"]) == (0, 1)


def test_a_customer_first_seen_after_the_snapshot_is_not_in_its_rows():
    events = _purchases(("early", T - timedelta(days=1)), ("late", T + timedelta(seconds=1)))
    assert churn_features(events, [T])["customer_id"].tolist() == ["early"]


def test_events_can_be_arrow_pandas_or_a_duckdb_relation(events):
    sample = events.slice(0, 20_000)
    expected = compute_features(sample, SNAPSHOTS[:2])
    con = duckdb.connect()
    con.register("lake", sample)
    for source in (sample.to_pandas(), con.sql("SELECT * FROM lake")):
        got = compute_features(source, SNAPSHOTS[:2])
        for view in VIEW_NAMES:
            pd.testing.assert_frame_equal(got[view], expected[view])


def test_snapshots_are_sorted_distinct_utc_and_naive_ones_are_utc():
    stamps = as_snapshots(["2025-02-01T01:00:00+01:00", "2025-01-31", datetime(2025, 1, 31)])
    assert list(stamps) == [
        pd.Timestamp("2025-01-31", tz="UTC"),
        pd.Timestamp("2025-02-01", tz="UTC"),
    ]
    with pytest.raises(ValueError, match="at least one"):
        as_snapshots([])


def test_events_without_the_lake_columns_are_refused():
    with pytest.raises(ValueError, match="amount"):
        churn_features(pd.DataFrame({"customer_id": [], "event_type": [], "timestamp": []}), [T])


def _purchases(*rows: tuple[str, datetime]) -> pa.Table:
    return pa.table(
        {
            "customer_id": [c for c, _ in rows],
            "event_type": ["purchase_completed"] * len(rows),
            "timestamp": pa.array([t for _, t in rows], pa.timestamp("us", tz="UTC")),
            "amount": [10.0] * len(rows),
        }
    )
