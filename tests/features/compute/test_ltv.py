from features.schema import LTV_FEATURES, LTV_VIEW
from tests.features.reference import assert_row_matches, ltv_row, sample_rows


def test_ltv_features_match_a_plain_pandas_computation(feature_tables, events_frame):
    table = feature_tables[LTV_VIEW]
    for _, row in sample_rows(table, busiest_by="bgnbd_x").iterrows():
        assert_row_matches(row, ltv_row(events_frame, row["customer_id"], row["event_timestamp"]))


def test_bgnbd_summaries_are_consistent(feature_tables):
    table = feature_tables[LTV_VIEW]
    buyers = table[table["purchases_total"] > 0]
    assert (buyers["bgnbd_t_x"] <= buyers["bgnbd_age"]).all()
    assert (buyers["bgnbd_x"] <= buyers["purchases_total"] - 1).all()
    assert (buyers.loc[buyers["bgnbd_x"] == 0, "bgnbd_t_x"] == 0).all()
    assert buyers.loc[buyers["bgnbd_x"] > 0, "gg_monetary"].notna().all()
    never = table[table["purchases_total"] == 0]
    assert len(never) and (never["bgnbd_x"] == 0).all()
    assert never[["bgnbd_t_x", "bgnbd_age", "gg_monetary", "avg_order_value"]].isna().all(None)


def test_the_ltv_table_has_the_contract_dtypes(feature_tables):
    table = feature_tables[LTV_VIEW]
    assert {name: str(table[name].dtype) for name in LTV_FEATURES} == LTV_FEATURES
