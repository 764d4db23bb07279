"""`apply_refusals`: the guarded recommendation backs one variant, or says why not."""

from __future__ import annotations

import numpy as np

from engine.optimizer.apply_check import apply_refusals
from engine.optimizer.recommendation import recommend
from tests.engine.optimizer.test_analyses import HOLDOUT_SHARE, TRIGGER, simulate_exposures

LOYAL = {"loyal": 16_000}


def test_only_the_recommended_variant_is_backed() -> None:
    recs = recommend(simulate_exposures(3, customers=LOYAL), holdout_share=HOLDOUT_SHARE)
    assert [r.variant for r in recs] == ["24h"]
    assert apply_refusals(TRIGGER, recs, "24h") == []
    [other] = apply_refusals(TRIGGER, recs, "1h")
    assert other.startswith("the recommendation is 24h, not 1h: 24h converts")


def test_each_failed_guardrail_is_a_reason_and_segments_are_named() -> None:
    exposures = simulate_exposures(3, customers={"loyal": 16_000, "at_risk": 1_600})
    rng = np.random.default_rng(5)
    loyal_24h = exposures.index[(exposures["segment"] == "loyal") & (exposures["variant"] == "24h")]
    skewed = exposures.drop(index=rng.choice(loyal_24h, size=len(loyal_24h) // 10, replace=False))
    recs = recommend(skewed, min_users_per_arm=2_000, holdout_share=HOLDOUT_SHARE)
    reasons = apply_refusals(TRIGGER, recs, "24h")
    assert any(
        r.startswith("segment at_risk: guardrail min_sample failed: too few users") for r in reasons
    )
    assert any(
        r.startswith("segment loyal: guardrail srm failed: sample ratio mismatch") for r in reasons
    )


def test_no_experiment_is_a_reason() -> None:
    recs = recommend(simulate_exposures(3, customers=LOYAL), holdout_share=HOLDOUT_SHARE)
    assert apply_refusals("other_trigger", recs, "24h") == [
        "no experiment decisions of trigger 'other_trigger' in the execution log"
    ]
