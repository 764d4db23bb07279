"""The simulator: deterministic, vectorised, and its planted truth visible in the data."""

import numpy as np
import pandas as pd
import pytest
import yaml

from engine.events import STANDARD_EVENT_TYPES
from pipelines.simulator import PlantedConfig, load_planted, simulate
from pipelines.simulator.output import read_truth, write_simulation


@pytest.fixture(scope="module")
def events(small_simulation) -> pd.DataFrame:
    return small_simulation.events.to_pandas()


@pytest.fixture(scope="module")
def truth(small_simulation) -> pd.DataFrame:
    return small_simulation.truth.set_index("customer_id")


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = simulate(400, 90, seed=3), simulate(400, 90, seed=3), simulate(400, 90, seed=4)
    assert a.events.equals(b.events)
    assert a.truth.equals(b.truth) and a.customers.equals(b.customers)
    assert not a.events.equals(c.events)
    assert set(a.events["event_id"].to_pylist()).isdisjoint(c.events["event_id"].to_pylist())


def test_events_fit_the_contract_and_the_window(small_simulation, events):
    params = small_simulation.params
    assert events["event_id"].is_unique
    assert set(events["event_type"]) <= STANDARD_EVENT_TYPES
    assert events["timestamp"].min() >= params.start and events["timestamp"].max() < params.end
    assert events["timestamp"].is_monotonic_increasing
    assert set(events["customer_id"]) <= set(small_simulation.customers["customer_id"])
    signup = small_simulation.customers.set_index("customer_id")["signup_at"]
    assert (events["timestamp"] >= events["customer_id"].map(signup)).all(), (
        "no event before signup"
    )


def test_customers_past_their_planted_dropout_stop_purchasing(events, truth):
    purchases = events[events["event_type"] == "purchase_completed"]
    last_purchase = purchases.groupby("customer_id")["timestamp"].max()
    dropped = truth[truth["dropout_at"].notna()]
    assert len(dropped) > 300
    # In the planted model a customer leaves right after a purchase: the last one.
    assert (last_purchase.reindex(dropped.index) == dropped["dropout_at"]).all()
    assert (
        purchases.groupby("customer_id").size().reindex(truth.index, fill_value=0)
        == truth["n_purchases"]
    ).all()


def test_dropped_customers_rarely_visit_again(events, truth):
    sessions = events[events["event_type"] == "session_start"].join(
        truth[["dropout_at"]], on="customer_id"
    )
    known = sessions[sessions["dropout_at"].notna()]
    after = (known["timestamp"] > known["dropout_at"]).mean()
    assert after < 0.15


def test_segments_differ_in_the_planted_way(small_simulation, events, truth):
    active_days = (
        truth["dropout_at"].fillna(small_simulation.params.end) - truth["signup_at"]
    ).dt.total_seconds() / 86400
    per_day = (truth["n_purchases"] / active_days.clip(lower=1)).groupby(truth["segment"]).mean()
    assert per_day["loyal"] > per_day["bargain_hunter"] > per_day["browser"]
    assert per_day["at_risk"] > per_day["browser"]
    assert truth.groupby("segment")["dropout_prob"].mean().idxmax() == "at_risk"

    counts = events.groupby(["customer_id", "event_type"]).size().unstack(fill_value=0)
    counts = counts.join(truth["segment"])
    per_segment = counts.groupby("segment")[["session_start", "purchase_completed"]].sum()
    sessions_per_order = per_segment["session_start"] / per_segment["purchase_completed"]
    assert sessions_per_order.idxmax() == "browser"

    opens = (
        counts.groupby("segment")["email_opened"].sum()
        / counts.groupby("segment")["email_delivered"].sum()
    )
    assert list(opens.sort_values(ascending=False).index) == [
        "loyal",
        "bargain_hunter",
        "browser",
        "at_risk",
    ]
    aov = events[events["event_type"] == "purchase_completed"].join(
        truth["segment"], on="customer_id"
    )
    aov = aov.groupby("segment")["amount"].mean()
    assert aov.idxmax() == "loyal" and aov.idxmin() == "bargain_hunter"


def test_purchase_rates_follow_the_planted_rates(events, truth):
    long_lived = truth[
        truth["alive_at_end"]
        & (truth["signup_at"] < truth["signup_at"].min() + pd.Timedelta(days=120))
    ]
    observed = long_lived["n_purchases"]
    assert observed.corr(long_lived["purchase_rate_per_day"], method="spearman") > 0.6


def test_event_mix_is_plausible(small_simulation, events):
    n = events["event_type"].value_counts()
    assert n["page_view"] > n["product_view"] > n["cart_add"] > n["purchase_completed"]
    assert n["checkout_started"] == n["purchase_completed"]
    assert n["email_sent"] == n["email_delivered"] + n["email_bounced"]
    assert n["email_delivered"] > n["email_opened"] > n["email_clicked"]
    assert 0.05 < n["email_opened"] / n["email_delivered"] < 0.45
    assert 0.02 < n["refund"] / n["purchase_completed"] < 0.06
    assert n["signup"] == small_simulation.params.n_customers
    assert 0 < n["unsubscribed"] < 0.05 * small_simulation.params.n_customers * 2
    assert n["cart_abandoned"] > 0.2 * n["purchase_completed"]


def test_no_marketing_email_after_unsubscribing_or_without_consent(events, truth):
    sent = events[events["event_type"] == "email_sent"].join(
        truth[["unsubscribed_at", "consent_email"]], on="customer_id"
    )
    assert sent["consent_email"].all()
    unsubscribed = sent[sent["unsubscribed_at"].notna()]
    assert (unsubscribed["timestamp"] <= unsubscribed["unsubscribed_at"]).all()


def _local_hours(frame: pd.DataFrame, zones: pd.Series) -> np.ndarray:
    hours = np.empty(len(frame), dtype=int)
    zone_of = frame["customer_id"].map(zones).to_numpy()
    for zone in np.unique(zone_of):
        mask = zone_of == zone
        hours[mask] = frame["timestamp"][mask].dt.tz_convert(zone).dt.hour.to_numpy()
    return hours


def test_opens_are_likelier_at_the_preferred_local_hour_and_drop_with_fatigue(events, truth):
    delivered = events[events["event_type"] == "email_delivered"].copy()
    opened = events[events["event_type"] == "email_opened"]
    message = delivered["properties"].str.extract(r'"message_id":"(m\d+)"')[0]
    opened_ids = set(opened["properties"].str.extract(r'"message_id":"(m\d+)"')[0])
    delivered["opened"] = message.isin(opened_ids).to_numpy()
    hour = _local_hours(delivered, truth["timezone"])
    distance = np.abs(hour - delivered["customer_id"].map(truth["preferred_hour"]).to_numpy())
    distance = np.minimum(distance, 24 - distance)
    near, far = delivered["opened"][distance <= 1].mean(), delivered["opened"][distance >= 6].mean()
    assert near > 1.5 * far

    delivered = delivered.sort_values(["customer_id", "timestamp"])
    previous = delivered.groupby("customer_id")["timestamp"].shift(1)
    spaced = delivered["opened"][(delivered["timestamp"] - previous) > pd.Timedelta(days=14)].mean()
    crowded = delivered["opened"][(delivered["timestamp"] - previous) < pd.Timedelta(days=2)].mean()
    assert spaced > crowded


def test_planted_truth_is_written_beside_the_data(tmp_path, small_simulation):
    paths = write_simulation(small_simulation, tmp_path / "sim")
    truth, planted, summary = read_truth(tmp_path / "sim")
    assert len(truth) == 3_000 and planted == small_simulation.planted
    assert summary["seed"] == 11 and summary["events"] == small_simulation.events.num_rows
    assert summary["best_delay"] == {
        "loyal": "24h",
        "bargain_hunter": "1h",
        "browser": None,
        "at_risk": "4h",
    }
    effects = pd.read_csv(paths["effects"])
    assert set(effects.columns) >= {"segment", "delay", "uplift", "is_best"}
    assert effects.groupby("segment")["is_best"].sum().to_dict() == {
        "at_risk": 1,
        "bargain_hunter": 1,
        "browser": 0,
        "loyal": 1,
    }


def test_planted_yaml_overrides_the_defaults(tmp_path):
    data = PlantedConfig().model_dump(mode="json")
    data["uplift"]["browser"] = {"1h": 0.0, "4h": 0.0, "24h": 0.08}
    data.pop("attribution_window")
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(data))
    planted = load_planted(path)
    assert planted.best_delay("browser") == "24h"


def test_planted_yaml_mistakes_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"uplift": {"vip": {"1h": 0.1}}}))
    # One line that names the file and the field (the CLI prints it as it is).
    with pytest.raises(ValueError, match=r"bad\.yaml: .*unknown segment"):
        load_planted(bad)
    bad.write_text(yaml.safe_dump({"attribution_window": "three days"}))
    with pytest.raises(ValueError, match=r"bad\.yaml: attribution_window: .*expected a duration"):
        load_planted(bad)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_customers"):
        simulate(0, 10, seed=1)
    with pytest.raises(ValueError, match="days"):
        simulate(10, 0, seed=1)
