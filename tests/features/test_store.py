"""The Feast store in-process: apply, point-in-time training frames, materialize, online reads."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import pandas as pd
import pytest

from features.compute import churn_labels, complete_label_snapshots
from features.schema import CHURN_VIEW, MODEL_NAMES, VIEW_FEATURES
from tests.features.conftest import SIMULATION_END, SNAPSHOTS

pytestmark = [
    pytest.mark.slow,
    # ibis (inside Feast's DuckDB offline store) calls a DuckDB method DuckDB deprecated.
    pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning"),
]
KEYS = ["customer_id", "event_timestamp"]
LATEST = SNAPSHOTS[-1]


@pytest.fixture(scope="module")
def materialized(feast_store, feature_tables):
    from features.store import materialize_snapshot

    started = time.perf_counter()
    materialize_snapshot(feast_store, LATEST)
    print(
        f"materialized {len(_at(feature_tables[CHURN_VIEW], LATEST))} customers × 3 views "
        f"in {time.perf_counter() - started:.2f} s"
    )
    return feast_store


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_a_training_frame_has_one_row_per_entity_row_with_that_snapshots_values(
    feast_store, feature_tables, events, model
):
    from features.store import training_frame

    snapshots = complete_label_snapshots(SNAPSHOTS, SIMULATION_END, timedelta(days=90))
    labels = churn_labels(events, snapshots).sample(frac=1, random_state=0)  # any row order
    frame = training_frame(feast_store, model, labels)

    assert len(frame) == len(labels) > 1_500
    assert frame["event_timestamp"].nunique() == len(snapshots) == 4
    assert frame[KEYS].values.tolist() == labels[KEYS].values.tolist()
    assert (frame["churned"].to_numpy() == labels["churned"].to_numpy()).all()
    _assert_values_are_the_tables(frame, feature_tables)


def test_an_entity_row_between_snapshots_gets_the_snapshot_before_it(feast_store, feature_tables):
    from features.store import training_frame

    rows = _at(feature_tables[CHURN_VIEW], SNAPSHOTS[2])[KEYS].head(200)
    later = rows.assign(event_timestamp=SNAPSHOTS[2] + timedelta(days=3))
    frame = training_frame(feast_store, "churn", later)
    assert len(frame) == len(later)
    _assert_values_are_the_tables(frame.assign(event_timestamp=SNAPSHOTS[2]), feature_tables)


def test_an_entity_row_no_snapshot_covers_is_refused(feast_store, feature_tables):
    from features.store import training_frame

    rows = _at(feature_tables[CHURN_VIEW], SNAPSHOTS[0])[KEYS].head(3)
    before_any = rows.assign(event_timestamp=SNAPSHOTS[0] - timedelta(days=1))
    with pytest.raises(ValueError, match="3 entity row"):
        training_frame(feast_store, "churn", before_any)
    with pytest.raises(ValueError, match="unknown model"):
        training_frame(feast_store, "upsell", rows)


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_online_values_and_dtypes_equal_the_offline_ones_of_the_latest_snapshot(
    materialized, feature_tables, model
):
    from features.store import online_features, training_frame

    latest = _at(feature_tables[CHURN_VIEW], LATEST)
    ids = latest["customer_id"].sample(40, random_state=1).tolist()
    started = time.perf_counter()
    online = online_features(materialized, model, [*ids, "nobody"])
    elapsed = time.perf_counter() - started
    offline = training_frame(
        materialized, model, pd.DataFrame({"customer_id": ids, "event_timestamp": LATEST})
    )

    assert elapsed < 5, "an online read of 41 customers should take well under a second"
    assert online["customer_id"].tolist() == ids  # the unknown customer is left out
    pd.testing.assert_frame_equal(online, offline[online.columns], check_exact=True)
    assert list(online.columns) == list(offline.columns)


def test_one_online_customer_with_null_floats_keeps_float_dtypes(materialized, feature_tables):
    from features.store import online_features

    latest = _at(feature_tables[CHURN_VIEW], LATEST)
    never_bought = latest.loc[latest["recency_days"].isna(), "customer_id"].iloc[0]
    online = online_features(materialized, "ltv", [never_bought])
    assert online["gg_monetary"].isna().all() and online["gg_monetary"].dtype == "float64"
    assert online["bgnbd_x"].dtype == "int64"


@pytest.mark.postgres
@pytest.mark.redis
def test_the_production_config_serves_the_same_values(
    materialized, feast_home, feature_tables, monkeypatch
):
    from features.store import apply_definitions, materialize_snapshot, online_features, open_store

    monkeypatch.setenv(
        "NUDGE_FEAST_REGISTRY_URL",
        os.environ.get(
            "NUDGE_FEAST_REGISTRY_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    monkeypatch.setenv("NUDGE_FEAST_CONFIG", "production")
    # A project of its own keeps this run apart from anyone else's on the shared servers.
    store = open_store(feast_home, project=f"nudge_test_{uuid.uuid4().hex[:10]}")
    try:
        assert store.config.online_store.type == "redis"
        assert store.config.registry.registry_type == "sql"
        apply_definitions(store, feast_home)
        materialize_snapshot(store, LATEST, views=[CHURN_VIEW])
        ids = _at(feature_tables[CHURN_VIEW], LATEST)["customer_id"].head(25).tolist()
        columns = ["customer_id", "event_timestamp", *VIEW_FEATURES[CHURN_VIEW]]
        from_redis = store.get_online_features(
            features=[f"{CHURN_VIEW}:{name}" for name in VIEW_FEATURES[CHURN_VIEW]],
            entity_rows={"customer_id": ids},
        ).to_df()
        from_sqlite = online_features(materialized, "churn", ids)[columns]
        pd.testing.assert_frame_equal(
            from_redis[columns[2:]].astype(from_sqlite[columns[2:]].dtypes),
            from_sqlite[columns[2:]],
        )
    finally:
        store.teardown()


def _at(table: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    return table[table["event_timestamp"] == t]


def _assert_values_are_the_tables(frame: pd.DataFrame, tables: dict[str, pd.DataFrame]) -> None:
    """Each feature column equals the feature table's value at the row's snapshot."""
    for view, features in VIEW_FEATURES.items():
        present = [name for name in features if name in frame.columns]
        if not present:
            continue
        expected = frame[KEYS].merge(tables[view][[*KEYS, *present]], on=KEYS, how="left")
        pd.testing.assert_frame_equal(frame[present].reset_index(drop=True), expected[present])
