"""Policy evaluation by inverse propensity, and the guardrails."""

import math

import numpy as np
import pytest

from models.uplift.backtest import CandidateScores, MeanStd
from models.uplift.guardrails import (
    enough_conversions,
    recommend_uplift_targeting,
    uplift_decisions,
)
from models.uplift.policy import policy_table, policy_value, top_share


def planted(n=40_000, seed=0, e=0.5):
    rng = np.random.default_rng(seed)
    kind = rng.choice(["persuadable", "sure_thing", "sleeping_dog"], n, p=[0.3, 0.4, 0.3])
    base = np.select([kind == "persuadable", kind == "sure_thing"], [0.05, 0.4], 0.2)
    effect = np.select([kind == "persuadable", kind == "sure_thing"], [0.2, 0.0], -0.1)
    t = (rng.random(n) < e).astype(int)
    y = (rng.random(n) < base + t * effect).astype(int)
    return y, t, effect, base


def test_send_to_all_is_the_ate():
    y, t, _, _ = planted()
    value = policy_value(y, t, np.ones(len(y), dtype=bool))
    ate = y[t == 1].mean() - y[t == 0].mean()
    assert value.share_sent == 1.0
    assert value.per_1000_sends == pytest.approx(1000 * ate)
    assert value.ci_low < value.per_1000_sends < value.ci_high


def test_by_hand():
    # e = 0.5; π sends to rows 0 and 1: (1·1·2 + 1·1·(−2)·… ) — row 0 treated converter (+2),
    # row 1 control converter (−2), row 2 not sent: incremental per customer (2 − 2)/4 = 0.
    y, t = [1, 1, 1, 0], [1, 0, 1, 0]
    assert policy_value(y, t, [1, 1, 0, 0]).incremental_per_customer == 0.0
    # Sending to row 0 only: 2/4 = 0.5 per customer, share 1/4 → 2 per send, 2,000 per 1,000.
    assert policy_value(y, t, [1, 0, 0, 0]).per_1000_sends == pytest.approx(2000)
    assert math.isnan(policy_value(y, t, [0, 0, 0, 0]).per_1000_sends)
    with pytest.raises(ValueError, match="strictly between"):
        policy_value(y, t, [1, 1, 1, 1], propensity=1.0)


@pytest.mark.parametrize("e", [0.5, 0.8])
def test_uplift_targeting_recovers_the_planted_increment_and_beats_score_targeting(e):
    y, t, effect, base = planted(e=e)
    table = policy_table(y, t, uplift=effect, scores={"response": base}, shares=(0.3,),
                         thresholds=(0.0,)).set_index("policy")  # fmt: skip
    # The persuadables alone: +0.2 each, 200 per 1,000 sends.
    assert table.loc["uplift > 0", "share_sent"] == pytest.approx(0.3, abs=0.01)
    assert table.loc["uplift > 0", "per_1000_sends"] == pytest.approx(200, abs=20)
    # Send to all: 0.3·0.2 − 0.3·0.1 = 0.03 per customer, 30 per 1,000.
    assert table.loc["send to all", "per_1000_sends"] == pytest.approx(30, abs=15)
    # Scoring by conversion chance mails sure things: nothing gained.
    assert abs(table.loc["response: top 30%", "per_1000_sends"]) < 25
    assert table.loc["uplift: top 30%", "per_1000_sends"] > table.loc["response: top 30%", "per_1000_sends"] + 100  # fmt: skip


def test_top_share():
    assert top_share([0.1, 0.9, 0.5, 0.7], 0.5).tolist() == [False, True, False, True]


def test_the_holdout_is_never_targeted_away():
    uplift = np.array([0.3, -0.2, 0.05, 0.4])
    holdout = np.array([True, True, False, False])
    assert uplift_decisions(uplift, holdout, threshold=0.1).tolist() == ["held_out", "held_out", "skip", "send"]  # fmt: skip


def test_enough_conversions():
    y, t = np.array([1] * 5 + [0] * 5), np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    assert enough_conversions(y, t, minimum=2).ok
    check = enough_conversions(y, t, minimum=3)
    assert not check.ok and "3 treated and 2 control conversions" in check.reason


def _report(chosen, ours, response):
    def scores(q):
        return CandidateScores(qini_auc=MeanStd(mean=q, std=0.01),
                               uplift_at_30=MeanStd(mean=0.0, std=0.0), cv_qini_auc=q)  # fmt: skip

    models = {"random": scores(0.0), "response": scores(response), "t_learner": scores(ours)}
    return chosen, models


def test_recommendation_needs_an_uplift_model_that_beats_the_response_model():
    assert recommend_uplift_targeting(*_report("t_learner", 0.08, 0.02)).ok
    assert not recommend_uplift_targeting(*_report("t_learner", 0.02, 0.05)).ok
    assert (
        "response baseline" in recommend_uplift_targeting(*_report("response", 0.08, 0.02)).reason
    )
