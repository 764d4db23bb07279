from datetime import timedelta

import pandas as pd
import pytest

from features.compute import (
    churn_labels,
    complete_label_snapshots,
    compute_labels,
    engagement_labels,
    ltv_labels,
)
from features.schema import CHURN_VIEW
from tests.features.conftest import SIMULATION_END, SNAPSHOTS
from tests.features.reference import assert_row_matches, label_row

H90, H14 = timedelta(days=90), timedelta(days=14)


@pytest.fixture(scope="module")
def labels(events):
    return compute_labels(events, SNAPSHOTS)


def test_labels_match_a_plain_pandas_computation(labels, events_frame):
    rows = labels["churn"].merge(labels["ltv"]).merge(labels["engagement"])
    busiest = rows.nlargest(3, "future_purchases")
    for _, row in pd.concat([busiest, rows.sample(12, random_state=1)]).iterrows():
        customer, t = row["customer_id"], row["event_timestamp"]
        expected = label_row(events_frame, customer, t, H90)
        del expected["engaged"], expected["future_sends"]
        engagement = label_row(events_frame, customer, t, H14)
        expected |= {"engaged": engagement["engaged"], "future_sends": engagement["future_sends"]}
        assert_row_matches(row, expected)


def test_label_rows_are_the_feature_rows(labels, feature_tables):
    keys = ["customer_id", "event_timestamp"]
    features = feature_tables[CHURN_VIEW][keys]
    for table in labels.values():
        pd.testing.assert_frame_equal(table[keys], features)


def test_each_label_function_equals_its_part_of_compute_labels(labels, events):
    pd.testing.assert_frame_equal(churn_labels(events, SNAPSHOTS), labels["churn"])
    pd.testing.assert_frame_equal(ltv_labels(events, SNAPSHOTS), labels["ltv"])
    pd.testing.assert_frame_equal(engagement_labels(events, SNAPSHOTS), labels["engagement"])
    longer = compute_labels(events, SNAPSHOTS[:1], engagement_horizon=timedelta(days=90))
    first = labels["churn"]["event_timestamp"] == SNAPSHOTS[0]
    assert (
        longer["engagement"]["engaged"] >= labels["engagement"][first]["engaged"].to_numpy()
    ).all()
    assert longer["engagement"]["engaged"].sum() > labels["engagement"][first]["engaged"].sum()


def test_churn_and_engagement_labels_are_neither_all_zero_nor_all_one(labels):
    assert 0.2 < labels["churn"]["churned"].mean() < 0.8
    assert 0.01 < labels["engagement"]["engaged"].mean() < 0.5


def test_only_snapshots_whose_horizon_the_data_covers_have_complete_labels():
    complete = complete_label_snapshots(SNAPSHOTS, SIMULATION_END, H90)
    assert complete == [t for t in SNAPSHOTS if t <= pd.Timestamp("2025-05-31", tz="UTC")]
    assert complete_label_snapshots(SNAPSHOTS, SIMULATION_END, H14) == SNAPSHOTS
    # A naive coverage time is read as UTC; the horizon may end exactly at the coverage.
    end_of_may = pd.Timestamp("2025-05-01") + H90
    assert complete_label_snapshots(["2025-05-01"], end_of_may, H90) == [SNAPSHOTS[3]]
