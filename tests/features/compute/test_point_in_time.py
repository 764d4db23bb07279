"""A planted future event must not leak into the features or labels of earlier snapshots."""

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest

from features.compute import churn_labels, compute_features, engagement_labels, ltv_labels
from features.schema import VIEW_NAMES

# s1's 90-day label window ends before the planted event; s2's covers it (and so does its
# 14-day engagement window); s3 comes after it.
S1 = pd.Timestamp("2025-02-01", tz="UTC")
S2 = pd.Timestamp("2025-05-01", tz="UTC")
S3 = pd.Timestamp("2025-06-01", tz="UTC")
PLANTED_AT = S2 + timedelta(days=10)
SNAPSHOTS = [S1, S2, S3]


@pytest.fixture(scope="module")
def planted(events: pa.Table) -> tuple[pa.Table, str]:
    """The lake's events plus a purchase and an email open by a customer who, as simulated,
    neither buys in s2's 90 days nor opens in its 14 days."""
    churn = churn_labels(events, [S1, S2])
    engagement = engagement_labels(events, [S2])
    quiet = set(churn.loc[churn["churned"] == 1, "customer_id"]) & set(
        engagement.loc[engagement["engaged"] == 0, "customer_id"]
    )
    seen_at_s1 = set(churn.loc[churn["event_timestamp"] == S1, "customer_id"])
    customer = sorted(quiet & seen_at_s1)[0]
    extra = pa.table(
        {
            "event_id": ["planted-purchase", "planted-open"],
            "customer_id": [customer, customer],
            "event_type": ["purchase_completed", "email_opened"],
            "timestamp": pa.array([PLANTED_AT, PLANTED_AT], events.schema.field("timestamp").type),
            "amount": [500.0, None],
        }
    )
    with_future = pa.concat_tables([events, extra], promote_options="default")
    return with_future, customer


def test_a_future_event_changes_no_earlier_feature(events, planted):
    with_future, customer = planted
    before = compute_features(events, SNAPSHOTS)
    after = compute_features(with_future, SNAPSHOTS)
    for view in VIEW_NAMES:
        early = after[view]["event_timestamp"] < PLANTED_AT
        pd.testing.assert_frame_equal(
            after[view][early].reset_index(drop=True),
            before[view][before[view]["event_timestamp"] < PLANTED_AT].reset_index(drop=True),
        )
    # ...while the snapshot after it does see it, so the comparison above could have failed.
    late = (after["churn_features"]["event_timestamp"] == S3) & (
        after["churn_features"]["customer_id"] == customer
    )
    assert after["churn_features"].loc[late, "recency_days"].iloc[0] == pytest.approx(21)


def test_a_future_event_changes_only_the_labels_whose_horizon_covers_it(events, planted):
    with_future, customer = planted
    for labels in (churn_labels, ltv_labels, engagement_labels):
        before, after = labels(events, SNAPSHOTS), labels(with_future, SNAPSHOTS)
        changed = after.ne(before).any(axis=1)
        changed_rows = after.loc[changed, ["customer_id", "event_timestamp"]]
        assert changed_rows.values.tolist() == [[customer, S2]], labels.__name__
    assert _at(churn_labels(with_future, SNAPSHOTS), customer, S2)["churned"] == 0
    assert _at(ltv_labels(with_future, SNAPSHOTS), customer, S2)["future_spend"] == pytest.approx(
        _at(ltv_labels(events, SNAPSHOTS), customer, S2)["future_spend"] + 500
    )
    assert _at(engagement_labels(with_future, SNAPSHOTS), customer, S2)["engaged"] == 1


def _at(table: pd.DataFrame, customer: str, t: pd.Timestamp) -> pd.Series:
    return table.set_index(["customer_id", "event_timestamp"]).loc[(customer, t)]
