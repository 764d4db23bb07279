import numpy as np

from features.compute import DEFAULT_HALF_LIFE_DAYS, engagement_features
from features.schema import ENGAGEMENT_FEATURES, ENGAGEMENT_VIEW, UNKNOWN_HOUR
from tests.features.conftest import SNAPSHOTS
from tests.features.reference import assert_row_matches, engagement_row, sample_rows


def test_engagement_features_match_a_plain_pandas_computation(
    feature_tables, events_frame, customers
):
    table = feature_tables[ENGAGEMENT_VIEW]
    for _, row in sample_rows(table, busiest_by="emails_opened_90d").iterrows():
        expected = engagement_row(
            events_frame,
            customers,
            row["customer_id"],
            row["event_timestamp"],
            DEFAULT_HALF_LIFE_DAYS,
        )
        assert_row_matches(row, expected)


def test_the_half_life_is_a_parameter(events_frame, customers):
    busy = events_frame.loc[events_frame["event_type"] == "email_opened", "customer_id"].mode()[0]
    mine = events_frame[events_frame["customer_id"] == busy]
    short = engagement_features(mine, SNAPSHOTS[-1:], customers, half_life_days=7).iloc[0]
    expected = engagement_row(events_frame, customers, busy, SNAPSHOTS[-1], 7)
    assert short["emails_sent_decayed"] == expected["emails_sent_decayed"]
    assert short["emails_sent_decayed"] < expected["emails_sent_30d"]


def test_the_preferred_hour_is_local_and_unknown_without_opens(feature_tables, customers):
    table = feature_tables[ENGAGEMENT_VIEW]
    no_opens = table["preferred_send_hour_opens"] == 0
    assert (table.loc[no_opens, "preferred_send_hour"] == UNKNOWN_HOUR).all()
    assert table.loc[~no_opens, "preferred_send_hour"].between(0, 23).all()
    # The simulator sends campaigns between 07:00 and 21:00 local time, so local open hours
    # cluster in the day; UTC hours of customers spread over many zones would not.
    hours = table.loc[~no_opens, "preferred_send_hour"]
    assert hours.between(7, 23).mean() > 0.95


def test_the_preferred_hour_follows_the_planted_preference(feature_tables, simulation):
    planted = simulation.truth.set_index("customer_id")["preferred_hour"]
    table = feature_tables[ENGAGEMENT_VIEW]
    opened = table[
        (table["event_timestamp"] == SNAPSHOTS[-1]) & (table["preferred_send_hour"] >= 0)
    ]
    preferred = planted[opened["customer_id"]].to_numpy()
    distance = _hours_apart(opened["preferred_send_hour"].to_numpy(), preferred)
    # Campaigns go out at a random local hour 07–21; opens lean towards the planted hour. An
    # hour drawn from the send hours alone would be this far from it on average:
    by_chance = np.mean([_hours_apart(hour, preferred).mean() for hour in range(7, 22)])
    assert len(opened) > 300
    assert distance.mean() < by_chance - 0.5


def _hours_apart(a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
    distance = np.abs(a - b)
    return np.minimum(distance, 24 - distance)


def test_the_engagement_table_has_the_contract_dtypes(feature_tables):
    table = feature_tables[ENGAGEMENT_VIEW]
    assert {name: str(table[name].dtype) for name in ENGAGEMENT_FEATURES} == ENGAGEMENT_FEATURES
