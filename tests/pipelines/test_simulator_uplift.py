"""Planted customer-level treatment effects: persuadables, sure things, lost causes and sleeping
dogs, with the oracle uplift in the truth — and nothing else of the simulation changed."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from engine.dsl.durations import parse_duration
from pipelines.simulator import load_planted, simulate
from pipelines.simulator.planted import RESPONSE_TYPES, PlantedConfig, ResponseTypes
from pipelines.simulator.responder import Responder
from pipelines.simulator.uplift import FEATURES, uplift_experiment

SENT = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
TYPED = PlantedConfig(response_types=ResponseTypes())


@pytest.fixture(scope="module")
def typed_simulation():
    return simulate(3_000, 365, seed=11, planted=TYPED)


def test_off_by_default_and_the_planted_file_is_as_before(small_simulation):
    assert PlantedConfig().response_types is None
    assert "response_types" not in PlantedConfig().to_yaml()
    assert "response_type" not in small_simulation.truth.columns
    assert (
        Responder(small_simulation.truth, small_simulation.planted, 11)
        .respond(small_simulation.truth["customer_id"].iloc[0], SENT, "t", timedelta(hours=1))
        .unsubscribed
        is False
    )


def test_types_change_nothing_but_the_unsubscribes(small_simulation, typed_simulation):
    plain, typed = small_simulation.truth, typed_simulation.truth
    same = ["segment", "signup_at", "purchase_rate_per_day", "dropout_at", "order_value_mean",
            "email_engagement", "n_purchases"]  # fmt: skip
    pd.testing.assert_frame_equal(plain[same], typed[same])

    def kinds(sim):
        return sim.events["event_type"].value_counts().to_pylist()

    # The same events of every type but the unsubscribes (and the mail that no longer follows).
    plain_kinds = {d["values"]: d["counts"] for d in kinds(small_simulation)}
    typed_kinds = {d["values"]: d["counts"] for d in kinds(typed_simulation)}
    for kind in ("purchase_completed", "session_start", "cart_add", "signup", "refund"):
        assert plain_kinds[kind] == typed_kinds[kind]
    assert typed_kinds["unsubscribed"] > plain_kinds["unsubscribed"]


def test_types_follow_the_segment_shares_and_the_oracle_is_in_the_truth(typed_simulation):
    truth = typed_simulation.truth
    assert set(truth["response_type"]) == set(RESPONSE_TYPES)
    shares = truth.groupby("segment")["response_type"].value_counts(normalize=True)
    for segment, table in TYPED.response_types.shares.items():
        for kind, share in table.items():
            assert shares[segment].get(kind, 0.0) == pytest.approx(share, abs=0.05)
    spec = TYPED.response_types.types
    for kind in RESPONSE_TYPES:
        rows = truth[truth["response_type"] == kind]
        assert np.allclose(rows["oracle_uplift"], spec[kind].uplift)
        assert (rows["conversion_baseline"] == spec[kind].baseline).all()


@pytest.mark.slow
def test_sleeping_dogs_buy_less_and_unsubscribe_when_mailed(typed_simulation):
    truth = typed_simulation.truth
    responder = Responder(truth, TYPED, seed=11)
    segment_of = truth.set_index("customer_id")["segment"]

    def best(customer):  # each segment's planted best delay: the type's full effect
        return parse_duration(TYPED.best_delay(segment_of[customer]) or "24h")

    by_kind = {k: truth.loc[truth["response_type"] == k, "customer_id"].head(300).tolist()
               for k in RESPONSE_TYPES}  # fmt: skip
    rates = {}
    for kind, ids in by_kind.items():
        mailed = [responder.respond(c, SENT + timedelta(hours=h), "t", best(c))
                  for c in ids for h in range(4)]  # fmt: skip
        held = [responder.respond_without_email(c, SENT + timedelta(hours=h)) for c in ids for h in range(4)]  # fmt: skip
        rates[kind] = (
            np.mean([r.converted for r in mailed]) - np.mean([r.converted for r in held]),
            np.mean([r.unsubscribed for r in mailed]),
        )
    assert rates["persuadable"][0] == pytest.approx(0.15, abs=0.03)
    assert rates["sleeping_dog"][0] == pytest.approx(-0.08, abs=0.03)
    assert abs(rates["sure_thing"][0]) < 0.04 and abs(rates["lost_cause"][0]) < 0.02
    assert rates["sleeping_dog"][1] == pytest.approx(0.08 * 0.98, abs=0.025)  # delivered only
    assert all(rates[k][1] == 0 for k in ("persuadable", "sure_thing", "lost_cause"))
    # The oracle matches the responder's own probabilities at the best delay (24 h for loyal).
    loyal_dog = truth[(truth["segment"] == "loyal") & (truth["response_type"] == "sleeping_dog")]
    customer = loyal_dog["customer_id"].iloc[0]
    assert responder.uplift(customer, timedelta(hours=24)) == pytest.approx(-0.08)
    assert responder.uplift(customer, timedelta(hours=1)) == pytest.approx(-0.08 * 0.01 / 0.05)


def test_campaign_mail_unsubscribes_the_sleeping_dogs(typed_simulation):
    truth = typed_simulation.truth
    left = truth.groupby("response_type")["unsubscribed_at"].apply(lambda s: s.notna().mean())
    assert left["sleeping_dog"] > 5 * max(
        left[k] for k in ("persuadable", "sure_thing", "lost_cause")
    )


def test_planted_yaml_turns_them_on_and_names_mistakes(tmp_path):
    path = tmp_path / "planted.yaml"
    path.write_text("response_types: {}\n")
    assert load_planted(path).response_types == ResponseTypes()
    path.write_text("response_types:\n  shares:\n    loyal: {persuadable: 0.5}\n")
    with pytest.raises(ValueError, match=r"response_types.*shares.loyal.*add up to 1"):
        load_planted(path)


@pytest.mark.slow
def test_experiment_table_is_randomized_and_holds_observable_features(typed_simulation):
    table = uplift_experiment(typed_simulation, seed=2)
    assert set(FEATURES) <= set(table.columns)
    assert {"treatment", "converted", "oracle_uplift"} <= set(table.columns)
    assert table["treatment"].value_counts(normalize=True)["email"] == pytest.approx(0.5, abs=0.03)
    # Randomized: the arms look alike before the email …
    arms = table.groupby("treatment")[["purchases", "tenure_days"]].mean()
    assert arms.loc["email", "tenure_days"] == pytest.approx(
        arms.loc["holdout", "tenure_days"], rel=0.08
    )
    # … and the measured effect is the oracle's average (a sampling error of a few points).
    measured = table.groupby("treatment")["converted"].mean()
    ate = measured["email"] - measured["holdout"]
    assert ate == pytest.approx(table["oracle_uplift"].mean(), abs=0.025)
    with pytest.raises(ValueError, match="no planted response types"):
        uplift_experiment(simulate(200, 60, seed=1))


def test_behaviour_reveals_the_type(typed_simulation):
    """With the default signal, sure things buy most often, persuadables open the most email and
    sleeping dogs the least; with signal 0 the type is chance within a segment."""
    truth = typed_simulation.truth
    by_kind = truth.groupby("response_type")[["email_engagement", "purchase_rate_per_day"]].mean()
    assert (
        by_kind.loc["sure_thing", "purchase_rate_per_day"] == by_kind["purchase_rate_per_day"].max()
    )
    assert (
        by_kind.loc["persuadable", "email_engagement"]
        > 1.5 * by_kind.loc["sleeping_dog", "email_engagement"]
    )
    chance = PlantedConfig(response_types=ResponseTypes(signal=0.0))
    loyal = simulate(3_000, 60, seed=5, planted=chance).truth.query("segment == 'loyal'")
    engagement = loyal.groupby("response_type")["email_engagement"].mean()
    assert engagement["persuadable"] == pytest.approx(engagement["sleeping_dog"], rel=0.2)


@pytest.mark.slow
def test_uplift_targeting_recovers_most_of_the_oracle_and_holds_the_sleeping_dogs_back():
    """Closed loop on the planted truth: an X-learner (the backtest's usual choice, default
    settings) trained on 60 % of a simulated randomized email, then targeting half of the other
    customers, gains most of what the oracle's targeting of the same number gains — more than
    churn-score targeting (the customers least likely to buy without the email, from a
    classifier of the control arm) and response targeting — and mails fewer sleeping dogs than
    either; sending where its uplift is positive keeps most of the best achievable gain.
    Measured (seed 7, 12,000 customers): 58 % of the oracle at half, churn 52 %, response 40 %,
    random 43 %; sleeping dogs 5.6 % of the mailed against 9.5 % of everyone."""
    import lightgbm as lgb

    from models.uplift.backtest import prepare_experiment
    from models.uplift.learners import ResponseModel, XLearner
    from models.uplift.policy import top_share

    sim = simulate(12_000, 365, seed=7, planted=TYPED)
    table = uplift_experiment(sim, seed=7)
    exp = prepare_experiment(table, treatment_column="treatment", control="holdout",
                             treatment="email", outcome="converted", features=list(FEATURES))  # fmt: skip
    train = np.random.default_rng(0).random(len(exp.y)) < 0.6
    X, t, y = exp.X[train], exp.treatment[train], exp.y[train]
    rest = exp.X[~train]
    uplift = XLearner().fit(X, t, y).predict(rest)
    response = ResponseModel().fit(X, t, y).predict(rest)
    control = t == 0
    buys_anyway = lgb.LGBMClassifier(n_estimators=100, learning_rate=0.05, num_leaves=15,
                                     min_child_samples=50, random_state=0, verbose=-1)  # fmt: skip
    churn = 1 - buys_anyway.fit(X[control], y[control]).predict_proba(rest)[:, 1]
    oracle = table["oracle_uplift"].to_numpy()[~train]
    kinds = sim.truth.set_index("customer_id").loc[table["customer_id"][~train], "response_type"]
    dogs = (kinds == "sleeping_dog").to_numpy()

    def gain(score: np.ndarray) -> float:
        return float(oracle[top_share(score, 0.5)].sum())

    best_half = gain(oracle)
    assert gain(uplift) > 0.5 * best_half  # most of the oracle's incremental conversions
    assert gain(uplift) > gain(churn) and gain(uplift) > gain(response)
    assert gain(uplift) > 0.5 * oracle.sum()  # better than mailing a random half
    mailed_dogs = dogs[top_share(uplift, 0.5)].mean()
    assert mailed_dogs < 0.75 * dogs.mean() and mailed_dogs < dogs[top_share(churn, 0.5)].mean()
    positive = uplift > 0
    assert oracle[positive].sum() > 0.65 * oracle[oracle > 0].sum()
    assert dogs[positive].mean() < dogs.mean()
