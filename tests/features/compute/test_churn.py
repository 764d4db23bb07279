import pandas as pd

from features.compute import churn_features
from features.schema import CHURN_FEATURES, CHURN_VIEW, table_columns
from tests.features.conftest import SNAPSHOTS
from tests.features.reference import assert_row_matches, churn_row, sample_rows


def test_churn_features_match_a_plain_pandas_computation(feature_tables, events_frame, customers):
    table = feature_tables[CHURN_VIEW]
    for _, row in sample_rows(table, busiest_by="purchases_365d").iterrows():
        expected = churn_row(events_frame, customers, row["customer_id"], row["event_timestamp"])
        assert_row_matches(row, expected)


def test_the_churn_table_has_the_contract_columns_and_dtypes(feature_tables):
    table = feature_tables[CHURN_VIEW]
    assert list(table.columns) == table_columns(CHURN_VIEW)
    assert {name: str(table[name].dtype) for name in CHURN_FEATURES} == CHURN_FEATURES
    assert str(table["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert not table.duplicated(["customer_id", "event_timestamp"]).any()


def test_tenure_counts_from_a_signup_before_the_first_event(events_frame, customers):
    customer = customers["customer_id"].iloc[0]
    first_event = events_frame.loc[events_frame["customer_id"] == customer, "timestamp"].min()
    earlier = customers.assign(
        signup_at=lambda df: df["signup_at"].where(
            df["customer_id"] != customer, first_event - pd.Timedelta(days=10)
        )
    )
    t = SNAPSHOTS[-1]
    mine = events_frame[events_frame["customer_id"] == customer]
    with_signup = churn_features(mine, [t], earlier)
    without = churn_features(mine, [t], None)
    assert with_signup["tenure_days"].iloc[0] - without["tenure_days"].iloc[0] == 10
