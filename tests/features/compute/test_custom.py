"""A definition's own features and labels, computed in DuckDB: point in time, the trigger
operators' meaning in a label's where, and the built-in labels unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.catalog import catalog, describe
from features.compute import compute_definition_labels, compute_features, compute_labels
from models.definitions import DEFAULT_DIR, load_definition_text, load_definitions

BIG = """\
name: big
task: classification
label:
  event: purchase_completed
  where: {amount: {gte: 50}, properties.channel: {in: [web, app]}}
  horizon: 10d
features:
  - {events: [refund], windows: [5, 30]}
  - {property: items, event: purchase_completed, last: true}
  - {property: channel, event: purchase_completed, share: web, window: 30}
  - {property: channel, event: purchase_completed, distinct: true, window: 30}
"""
SPEND = """\
name: spend
task: regression
label: {event: purchase_completed, horizon: 10d, value: properties.items}
"""


def _event(customer, kind, day, amount=None, **props):
    return {
        "customer_id": customer,
        "event_type": kind,
        "timestamp": pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=day),
        "amount": amount,
        "properties": json.dumps(props),
    }


EVENTS = pd.DataFrame(
    [
        _event("a", "session_start", 0),
        _event("a", "purchase_completed", 1, 80.0, channel="web", items=3),
        _event("a", "refund", 3, 80.0),
        _event("a", "purchase_completed", 9, 20.0, channel="app", items=1),
        _event("a", "purchase_completed", 12, 60.0, channel="web", items=2),  # after t: label
        _event("a", "purchase_completed", 14, 70.0, channel="store", items=5),  # filtered out
        _event("b", "session_start", 2),
        _event("b", "purchase_completed", 11, 10.0, channel="web", items=4),
    ]
)
T = pd.Timestamp("2025-01-10 12:00", tz="UTC")


@pytest.fixture
def definitions(tmp_path: Path):
    (tmp_path / "big.yaml").write_text(BIG)
    (tmp_path / "spend.yaml").write_text(SPEND)
    return load_definitions(tmp_path)


def test_own_view_columns_are_point_in_time(definitions):
    tables = compute_features(EVENTS, [T], definitions=definitions)
    big = tables["big_features"].set_index("customer_id")
    a, b = big.loc["a"], big.loc["b"]
    assert a["big_label_count_30d"] == 1  # the $80 web order; the $20 one fails amount >= 50
    assert a["big_refund_count_5d"] == 0 and a["big_refund_count_30d"] == 1
    assert a["big_refund_amount_30d"] == 80.0 and a["big_refund_amount_max_30d"] == 80.0
    assert a["big_refund_days_since"] == pytest.approx(6.5)
    assert a["big_purchase_completed_items_last"] == 1.0  # the order of day 9, not of day 12
    assert a["big_purchase_completed_channel_share_web_30d"] == 0.5
    assert a["big_purchase_completed_channel_distinct_30d"] == 2
    assert b["big_label_count_30d"] == 0 and pd.isna(b["big_label_days_since"])
    assert b["big_refund_amount_30d"] == 0.0 and pd.isna(b["big_purchase_completed_items_last"])
    assert tables["spend_features"].set_index("customer_id").loc["a", "spend_label_value_365d"] == 4


def test_labels_follow_the_where_and_the_value(definitions):
    labels = compute_definition_labels(EVENTS, [T], definitions)
    big = labels["big"].set_index("customer_id")["label"]
    assert big.to_dict() == {"a": 1, "b": 0}  # a: $60 web on day 12; day 14 is the store
    spend = labels["spend"].set_index("customer_id")["label"]
    assert spend.to_dict() == {"a": 7.0, "b": 4.0}  # items of the orders in (t, t + 10 d]


def test_the_built_in_labels_equal_the_former_queries(small_simulation):
    snapshots = ["2025-06-01", "2025-09-01"]
    old = compute_labels(small_simulation.events, snapshots)
    new = compute_definition_labels(
        small_simulation.events, snapshots, load_definitions(DEFAULT_DIR)
    )
    for name, column in (("churn", "churned"), ("ltv", "future_spend"), ("engagement", "engaged")):
        assert new[name][column].tolist() == old[name][column].tolist(), name


def test_every_feature_reads_as_words():
    found = catalog(load_definitions(DEFAULT_DIR))
    for model in found.models:
        for column in found.model_features(model):
            assert found.meaning(column) is not None, column
    assert describe("recency_days", 42.0, found.meaning("recency_days")) == (
        "42 days since the last purchase"
    )
    assert describe("recency_days", float("nan"), found.meaning("recency_days")) == (
        "no purchase yet"
    )


def test_a_group_column_that_does_not_exist_is_refused_at_its_line(tmp_path: Path):
    from models.definitions import DefinitionError

    text = BIG.replace("features:\n", "features:\n  - {group: activity, only: [recency]}\n")
    (tmp_path / "big.yaml").write_text(text)
    with pytest.raises(DefinitionError, match=r"big\.yaml:8: features\.0\.only: group activity"):
        catalog(load_definitions(tmp_path))
    assert load_definition_text(BIG).definition.name == "big"
