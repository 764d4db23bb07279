import pytest

from features.schema import MODEL_NAMES, VIEW_FEATURES, feature_refs, model_features, table_columns


def test_feature_names_are_unique_across_views():
    # Services combine views without prefixes, so a name may live in one view only.
    names = [name for features in VIEW_FEATURES.values() for name in features]
    assert len(names) == len(set(names))


def test_every_feature_is_float64_or_int64():
    dtypes = {dtype for features in VIEW_FEATURES.values() for dtype in features.values()}
    assert dtypes == {"float64", "int64"}


def test_a_table_starts_with_the_entity_key_and_the_snapshot_time():
    assert table_columns("ltv_features")[:3] == [
        "customer_id",
        "event_timestamp",
        "purchases_total",
    ]
    assert MODEL_NAMES == ("churn", "ltv", "engagement")


def test_every_model_reads_features_that_exist_and_in_a_fixed_order():
    for model in MODEL_NAMES:
        features = model_features(model)
        assert list(features) == [ref.split(":")[1] for ref in feature_refs(model)]
        assert len(features) == len(set(features))
    assert list(model_features("ltv"))[:2] == ["purchases_total", "spend_total"]
    with pytest.raises(ValueError, match="unknown model"):
        feature_refs("upsell")
