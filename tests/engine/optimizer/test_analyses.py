"""engine.optimizer.analyses on simulated exposures with planted per-segment best variants."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from engine.optimizer.analyses import (
    ALL,
    ALL_SENDS,
    COMPARISON_COLUMNS,
    STAGES,
    ExposureError,
    Recommendation,
    apply_attribution_window,
    funnel,
    heterogeneity_test,
    holdout_incrementality,
    recommend,
    segmentation,
    timing,
    validate_exposures,
)
from engine.optimizer.stats import RateSummary

TRIGGER = "cart_recovery"
VARIANTS = ("holdout", "1h", "4h", "24h")
HOLDOUT_SHARE = 0.1

# Conversion rate by segment and variant. Bargain hunters answer best at once, loyal customers a
# day later; for browsers every delay is the same (sending still beats the holdout); at_risk has
# a clear best (4h) but too few customers to show it.
PLANTED: dict[str, dict[str, float]] = {
    "bargain_hunter": {"holdout": 0.04, "1h": 0.12, "4h": 0.08, "24h": 0.06},
    "loyal": {"holdout": 0.05, "1h": 0.06, "4h": 0.08, "24h": 0.12},
    "browser": {"holdout": 0.06, "1h": 0.07, "4h": 0.07, "24h": 0.07},
    "at_risk": {"holdout": 0.03, "1h": 0.05, "4h": 0.10, "24h": 0.05},
}
CUSTOMERS = {"bargain_hunter": 16_000, "loyal": 16_000, "browser": 16_000, "at_risk": 1_600}
PLANTED_BEST = {"bargain_hunter": "1h", "loyal": "24h", "browser": None, "at_risk": "4h"}


def simulate_exposures(
    seed: int,
    planted: Mapping[str, Mapping[str, float]] = PLANTED,
    customers: Mapping[str, int] = CUSTOMERS,
    holdout_share: float = HOLDOUT_SHARE,
) -> pd.DataFrame:
    """One exposure per customer: variant drawn with the design's shares, the funnel drawn
    stage by stage, conversion from the planted rate (on average), revenue correlated with
    pre_value."""
    rng = np.random.default_rng(seed)
    treatments = [variant for variant in VARIANTS if variant != "holdout"]
    shares = [holdout_share] + [(1 - holdout_share) / len(treatments)] * len(treatments)
    frames = []
    for segment, size in customers.items():
        variant = rng.choice(VARIANTS, size=size, p=shares)
        sent = (variant != "holdout") & (rng.random(size) < 0.95)
        delivered = sent & (rng.random(size) < 0.97)
        opened = delivered & (rng.random(size) < 0.4)
        clicked = opened & (rng.random(size) < 0.25)
        # A per-customer propensity (mean 1) drives both the pre-period spend and the chance to
        # convert, which is what makes pre_value a useful CUPED covariate.
        propensity = rng.gamma(4.0, 0.25, size)
        pre_value = 40.0 * propensity * rng.gamma(8.0, 1 / 8, size)
        rate = np.array([planted[segment][v] for v in variant]) * propensity
        converted = rng.random(size) < rate
        revenue = np.where(converted, 0.5 * pre_value + rng.gamma(2.0, 15.0, size), 0.0)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": [f"{segment}-{i}" for i in range(size)],
                    "trigger_id": TRIGGER,
                    "variant": variant,
                    "segment": segment,
                    "sent": sent,
                    "delivered": delivered,
                    "opened": opened,
                    "clicked": clicked,
                    "converted": converted,
                    "revenue": revenue,
                    "pre_value": pre_value,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def exposures() -> pd.DataFrame:
    return simulate_exposures(seed=2026)


def by_segment(recommendations: tuple[Recommendation, ...]) -> dict[str, Recommendation]:
    return {rec.segment: rec for rec in recommendations}


# --------------------------------------------------------------------------- recommendation


def test_recommend_recovers_the_planted_best_variant_per_segment(exposures: pd.DataFrame) -> None:
    recs = by_segment(recommend(exposures, holdout_share=HOLDOUT_SHARE))
    assert set(recs) == set(PLANTED)
    for segment in ("bargain_hunter", "loyal"):
        rec = recs[segment]
        assert (rec.variant, rec.reason) == (PLANTED_BEST[segment], "recommended"), rec.detail
        assert rec.p_value_corrected < 0.05
        assert all(check.passed for check in rec.checks)
    # equal delays: nothing is recommended, and the reason says why
    browser = recs["browser"]
    assert (browser.variant, browser.reason) == (None, "not_significant")
    assert "does not beat every other candidate" in browser.detail
    assert browser.p_value_corrected > 0.05
    # a real best variant, but too few customers per arm to trust it
    at_risk = recs["at_risk"]
    assert (at_risk.variant, at_risk.reason) == (None, "insufficient_sample")
    assert "need ≥ 1,000 per arm" in at_risk.detail
    assert at_risk.smallest_arm < 1_000


def test_recommend_on_revenue_finds_the_same_best_delays(exposures: pd.DataFrame) -> None:
    recs = by_segment(recommend(exposures, outcome="revenue", holdout_share=HOLDOUT_SHARE))
    assert recs["bargain_hunter"].variant == "1h"
    assert recs["loyal"].variant == "24h"
    assert recs["browser"].variant is None


def test_min_sample_guardrail_blocks_every_segment_below_the_threshold(
    exposures: pd.DataFrame,
) -> None:
    recs = recommend(exposures, min_users_per_arm=10_000, holdout_share=HOLDOUT_SHARE)
    assert {rec.reason for rec in recs} == {"insufficient_sample"}
    assert all(rec.variant is None for rec in recs)
    bargain = by_segment(recs)["bargain_hunter"]
    # the evidence is there; only the guardrail holds it back
    assert bargain.leader == "1h" and bargain.p_value_corrected < 1e-6
    assert "need ≥ 10,000 per arm" in bargain.detail


def test_srm_guardrail_blocks_the_segment_whose_split_is_skewed(exposures: pd.DataFrame) -> None:
    # Lose 8 % of the 1h exposures of bargain hunters, as a logging bug would.
    rng = np.random.default_rng(5)
    bargain_1h = exposures.index[
        (exposures["segment"] == "bargain_hunter") & (exposures["variant"] == "1h")
    ]
    lost = rng.choice(bargain_1h, size=int(0.08 * len(bargain_1h)), replace=False)
    skewed = exposures.drop(index=lost)

    recs = by_segment(recommend(skewed, holdout_share=HOLDOUT_SHARE))
    bargain = recs["bargain_hunter"]
    assert (bargain.variant, bargain.reason) == (None, "sample_ratio_mismatch")
    assert bargain.srm_p_value <= 0.001
    assert "segment split p" in bargain.detail
    # 1h still leads on the numbers: the guardrail, not the statistics, blocks it
    assert bargain.leader == "1h"
    # the trigger as a whole still splits as designed, so the other segments are unaffected
    assert recs["loyal"].variant == "24h"


def test_srm_guardrail_checks_the_designed_holdout_share(exposures: pd.DataFrame) -> None:
    wrong_design = recommend(exposures, holdout_share=0.3)
    assert {rec.reason for rec in wrong_design} >= {"sample_ratio_mismatch"}
    assert by_segment(wrong_design)["loyal"].variant is None
    # without a holdout share the holdout is left out and the variants still split 1:1:1
    assert by_segment(recommend(exposures))["loyal"].variant == "24h"
    # unequal designed weights that the data do not follow
    skewed_weights = recommend(exposures, weights={"1h": 2, "4h": 1, "24h": 1})
    assert by_segment(skewed_weights)["loyal"].reason == "sample_ratio_mismatch"
    with pytest.raises(ExposureError, match="weights must name exactly the non-holdout variants"):
        recommend(exposures, weights={"1h": 1, "4h": 1})


def test_a_single_candidate_gets_no_recommendation() -> None:
    frame = simulate_exposures(
        3,
        planted={"all": {"holdout": 0.05, "1h": 0.2, "4h": 0.2, "24h": 0.2}},
        customers={"all": 3_000},
    )
    frame = frame[frame["variant"].isin(["holdout", "1h"])]
    (rec,) = recommend(frame, min_users_per_arm=100)
    assert (rec.variant, rec.reason) == (None, "single_candidate")


def test_equal_variants_are_recommended_at_most_alpha_of_the_time() -> None:
    planted = {"all": {"holdout": 0.08, "1h": 0.08, "4h": 0.08, "24h": 0.08}}
    recommended = 0
    replicates = 200
    for seed in range(replicates):
        frame = simulate_exposures(seed, planted=planted, customers={"all": 2_000})
        (rec,) = recommend(frame, min_users_per_arm=100)
        assert rec.reason in {"not_significant", "recommended", "sample_ratio_mismatch"}
        recommended += rec.variant is not None
    # Holm over the 3 pairs bounds the false recommendation rate by α = 0.05 (Binomial(200,
    # 0.05) exceeds 17 with probability < 0.5 %).
    assert recommended / replicates <= 17 / 200


# --------------------------------------------------------------------------- segmentation


def test_segmentation_names_the_planted_best_and_detects_heterogeneity(
    exposures: pd.DataFrame,
) -> None:
    result = segmentation(exposures)
    best = result.best[result.best["outcome"] == "conversion"].set_index("segment")
    assert best.loc["bargain_hunter", "best"] == "1h"
    assert best.loc["loyal", "best"] == "24h"
    assert best.loc["browser", "best"] is None
    assert (best["comparisons"] == 3).all()  # 3 candidates → 3 pairs per segment

    heterogeneity = result.heterogeneity.set_index("outcome")
    assert heterogeneity.loc["conversion", "p_value"] < 1e-12
    assert heterogeneity.loc["conversion", "degrees_of_freedom"] == (4 - 1) * (4 - 1)
    assert heterogeneity.loc["conversion", "control"] == "holdout"

    table = result.table[result.table["outcome"] == "conversion"]
    assert list(table.columns) == ["trigger_id", "segment", "outcome", *COMPARISON_COLUMNS]
    loyal = table[table["segment"] == "loyal"].set_index("variant")
    assert list(loyal.index) == ["holdout", "1h", "4h", "24h"]  # control first, delays in order
    assert math.isnan(loyal.loc["holdout", "p_value"])
    raw = loyal["p_value"].iloc[1:].to_numpy()
    holm = multipletests(raw, method="holm")[1]
    assert loyal["p_value_corrected"].iloc[1:].to_numpy() == pytest.approx(holm)
    for variant in ("1h", "4h", "24h"):
        row = loyal.loc[variant]
        assert row["abs_ci_low"] <= PLANTED["loyal"][variant] - 0.05 <= row["abs_ci_high"]


def test_segment_without_a_segment_column_is_one_segment(exposures: pd.DataFrame) -> None:
    frame = exposures[exposures["segment"] == "loyal"].drop(columns="segment")
    (rec,) = recommend(frame, holdout_share=HOLDOUT_SHARE)
    assert (rec.segment, rec.variant) == (ALL, "24h")


def test_heterogeneity_q_equals_the_weighted_residual_of_the_additive_model() -> None:
    rng = np.random.default_rng(17)
    variants = ["control", "a", "b"]
    cells = {
        f"s{s}": {
            v: RateSummary(int(n), int(rng.binomial(n, p)))
            for v, n, p in zip(
                variants, rng.integers(300, 3_000, 3), rng.uniform(0.02, 0.3, 3), strict=True
            )
        }
        for s in range(5)
    }
    test = heterogeneity_test(cells, "control")

    # Independent check: weighted least squares of the cell means on segment + variant dummies.
    means, weights, segment_index, variant_index = [], [], [], []
    for s, row in enumerate(cells.values()):
        for v, name in enumerate(variants):
            summary = row[name]
            adjusted = (summary.conversions + 1) / (summary.users + 2)
            means.append(adjusted)
            weights.append((summary.users + 2) / (adjusted * (1 - adjusted)))
            segment_index.append(s)
            variant_index.append(v)
    design = np.zeros((len(means), 5 + 2))
    design[np.arange(len(means)), segment_index] = 1
    for row, v in enumerate(variant_index):
        if v:
            design[row, 4 + v] = 1
    root_w = np.sqrt(weights)
    coef, *_ = np.linalg.lstsq(design * root_w[:, None], np.array(means) * root_w, rcond=None)
    residual = float(np.sum(weights * (np.array(means) - design @ coef) ** 2))
    assert test.statistic == pytest.approx(residual, rel=1e-9)
    assert (test.degrees_of_freedom, test.segments, test.variants) == (8, 5, 3)


def test_heterogeneity_with_one_treatment_is_cochrans_q() -> None:
    counts = {
        "s1": ((1_000, 50), (1_000, 80)),
        "s2": ((800, 40), (820, 41)),
        "s3": ((500, 5), (500, 30)),
    }
    cells = {
        s: {"c": RateSummary(*control), "t": RateSummary(*treatment)}
        for s, (control, treatment) in counts.items()
    }
    effects, weights = [], []
    for control, treatment in counts.values():
        pc, pt = ((x + 1) / (n + 2) for n, x in (control, treatment))
        variance = pc * (1 - pc) / (control[0] + 2) + pt * (1 - pt) / (treatment[0] + 2)
        effects.append(pt - pc)
        weights.append(1 / variance)
    effects_a, weights_a = np.array(effects), np.array(weights)
    pooled = np.sum(weights_a * effects_a) / weights_a.sum()
    expected_q = float(np.sum(weights_a * (effects_a - pooled) ** 2))
    test = heterogeneity_test(cells, "c")
    assert test.statistic == pytest.approx(expected_q, rel=1e-12)
    assert test.degrees_of_freedom == 2


def test_heterogeneity_is_calibrated_when_the_absolute_effect_is_the_same_everywhere() -> None:
    # Different baselines, the same +2 pp and +4 pp effects in every segment: H₀ holds on the
    # additive scale, so about α of the tests reject.
    rng = np.random.default_rng(99)
    baselines = [0.03, 0.08, 0.15, 0.25]
    rejections, replicates = 0, 400
    for _ in range(replicates):
        cells = {
            f"s{i}": {
                v: RateSummary(2_000, int(rng.binomial(2_000, base + lift)))
                for v, lift in (("c", 0.0), ("a", 0.02), ("b", 0.04))
            }
            for i, base in enumerate(baselines)
        }
        rejections += heterogeneity_test(cells, "c").p_value <= 0.05
    assert 0.025 <= rejections / replicates <= 0.08


def test_heterogeneity_needs_two_segments() -> None:
    cells = {"only": {"c": RateSummary(100, 5), "t": RateSummary(100, 9)}}
    test = heterogeneity_test(cells, "c")
    assert math.isnan(test.p_value) and test.degrees_of_freedom == 0
    with pytest.raises(ValueError, match="control 'x' is in none of the cells"):
        heterogeneity_test(cells, "x")


# --------------------------------------------------------------------------- timing


def test_timing_compares_every_delay_with_the_holdout(exposures: pd.DataFrame) -> None:
    frame = exposures[exposures["segment"] == "bargain_hunter"]
    result = timing(frame)
    assert list(result.columns) == ["trigger_id", "outcome", *COMPARISON_COLUMNS]
    conversion = result[result["outcome"] == "conversion"].set_index("variant")
    assert list(conversion.index) == ["holdout", "1h", "4h", "24h"]
    assert (conversion["control"] == "holdout").all()

    arms = frame.groupby("variant")["converted"].agg(["sum", "count"])
    for variant in ("1h", "4h", "24h"):
        row = conversion.loc[variant]
        x = [arms.loc[variant, "sum"], arms.loc["holdout", "sum"]]
        n = [arms.loc[variant, "count"], arms.loc["holdout", "count"]]
        assert row["p_value"] == pytest.approx(proportions_ztest(x, n)[1], rel=1e-9)
        assert row["value"] == pytest.approx(x[0] / n[0])
        assert row["users"] == n[0]
        assert row["seq_ci_low"] < row["abs_ci_low"] < row["abs_lift"] < row["abs_ci_high"]
    assert conversion.loc["1h", "abs_lift"] > conversion.loc["4h", "abs_lift"]
    assert conversion.loc["1h", "chance_to_beat_control"] > 0.999
    assert conversion.loc["1h", "expected_loss"] < 1e-6


def test_timing_revenue_uses_cuped_and_narrows_the_interval(exposures: pd.DataFrame) -> None:
    frame = exposures[exposures["segment"] == "loyal"]
    with_cuped = timing(frame, outcomes=("revenue",)).set_index("variant")
    without = timing(frame, outcomes=("revenue",), cuped=False).set_index("variant")
    assert with_cuped.loc["24h", "cuped_variance_reduction"] > 0.01
    assert math.isnan(without.loc["24h", "cuped_variance_reduction"])
    width = with_cuped["abs_ci_high"] - with_cuped["abs_ci_low"]
    width_raw = without["abs_ci_high"] - without["abs_ci_low"]
    assert (width.iloc[1:] < width_raw.iloc[1:]).all()
    # the reported value stays the raw revenue per user
    assert with_cuped["value"].to_numpy() == pytest.approx(without["value"].to_numpy())


def test_timing_control_defaults_to_the_shortest_delay_without_a_holdout(
    exposures: pd.DataFrame,
) -> None:
    frame = exposures[(exposures["variant"] != "holdout") & (exposures["segment"] == "loyal")]
    result = timing(frame, outcomes=("conversion",))
    assert list(result["variant"]) == ["1h", "4h", "24h"]  # 4h before 24h: durations, not text
    assert set(result["control"]) == {"1h"}
    chosen = timing(frame, control="24h", outcomes=("conversion",))
    assert list(chosen["variant"]) == ["24h", "1h", "4h"]
    assert (chosen["abs_lift"].iloc[1:] < 0).all()
    with pytest.raises(ExposureError, match="control variant 'holdout' has no rows"):
        timing(frame, control="holdout")


def test_attribution_window_drops_late_conversions() -> None:
    frame = hand_made_exposures().assign(hours_to_conversion=np.nan)
    frame.loc[frame["customer_id"] == "c2", "hours_to_conversion"] = 100.0
    frame.loc[frame["customer_id"] == "c5", "hours_to_conversion"] = 10.0
    frame.loc[frame["customer_id"] == "c1", "hours_to_conversion"] = 1.0
    windowed = apply_attribution_window(frame, 72).set_index(["trigger_id", "customer_id"])
    assert not windowed.loc[("t1", "c2"), "converted"]
    assert windowed.loc[("t1", "c2"), "revenue"] == 0.0
    assert windowed.loc[("t1", "c5"), "converted"] and windowed.loc[("t1", "c5"), "revenue"] == 5.0
    result = timing(frame[frame["trigger_id"] == "t1"], attribution_window_hours=72)
    one_hour = result[(result["outcome"] == "conversion") & (result["variant"] == "1h")]
    assert one_hour["value"].item() == 0.0  # c2 converted after the window
    frame.loc[frame["customer_id"] == "c5", "hours_to_conversion"] = np.nan
    with pytest.raises(ExposureError, match="hours_to_conversion is missing for converted"):
        apply_attribution_window(frame, 72)


# --------------------------------------------------------------------------- holdout


def test_holdout_incrementality_pools_every_send(exposures: pd.DataFrame) -> None:
    result = holdout_incrementality(exposures, outcomes=("conversion",), by_segment=True)
    browser = result[result["segment"] == "browser"].set_index("variant")
    assert list(browser.index) == ["holdout", "1h", "4h", "24h", ALL_SENDS]
    frame = exposures[exposures["segment"] == "browser"]
    sends = frame[frame["variant"] != "holdout"]
    holdout = frame[frame["variant"] == "holdout"]
    pooled = browser.loc[ALL_SENDS]
    assert pooled["users"] == len(sends)
    assert pooled["abs_lift"] == pytest.approx(
        sends["converted"].mean() - holdout["converted"].mean()
    )
    assert pooled["incremental_total"] == pytest.approx(pooled["abs_lift"] * len(sends))
    # planted +1 pp for every delay: the pooled interval covers it
    assert pooled["abs_ci_low"] <= 0.01 <= pooled["abs_ci_high"]
    raw = browser["p_value"].iloc[1:].to_numpy()
    assert browser["p_value_corrected"].iloc[1:].to_numpy() == pytest.approx(
        multipletests(raw, method="holm")[1]
    )

    overall = holdout_incrementality(exposures, outcomes=("conversion",))
    assert set(overall["segment"]) == {ALL}
    assert overall.set_index("variant").loc[ALL_SENDS, "significant"]


def test_holdout_incrementality_skips_triggers_without_a_holdout(exposures: pd.DataFrame) -> None:
    result = holdout_incrementality(exposures[exposures["variant"] != "holdout"])
    assert result.empty and "incremental_total" in result.columns


# --------------------------------------------------------------------------- funnel


def hand_made_exposures() -> pd.DataFrame:
    columns = ["customer_id", "trigger_id", "variant", "sent", "delivered", "opened", "clicked",
               "converted", "revenue"]  # fmt: skip
    rows = [
        ("c1", "t1", "holdout", 0, 0, 0, 0, 1, 10.0),  # converted without an email
        ("c2", "t1", "1h", 1, 1, 1, 1, 1, 20.0),
        ("c3", "t1", "1h", 1, 1, 1, 0, 0, 0.0),
        ("c4", "t1", "1h", 1, 0, 0, 0, 0, 0.0),  # bounced
        ("c5", "t1", "24h", 1, 1, 0, 0, 1, 5.0),  # converted without opening
        ("c6", "t1", "24h", 0, 0, 0, 0, 0, 0.0),  # suppressed
        ("c7", "t1", "24h", 1, 1, 1, 1, 0, 0.0),
        ("c1", "t2", "1h", 1, 1, 0, 0, 0, 0.0),
    ]
    return pd.DataFrame(rows, columns=columns)


def test_funnel_counts_on_a_hand_made_frame() -> None:
    result = funnel(hand_made_exposures())
    t1 = result[result["trigger_id"] == "t1"]
    assert list(t1["variant"].unique()) == [ALL, "holdout", "1h", "24h"]

    def stage_column(variant: str, column: str) -> list:
        rows = t1[t1["variant"] == variant]
        assert list(rows["stage"]) == list(STAGES)
        return rows[column].tolist()

    assert stage_column(ALL, "users") == [7, 5, 4, 3, 2, 1]
    assert stage_column(ALL, "flagged") == [7, 5, 4, 3, 2, 3]
    assert stage_column(ALL, "drop_off") == [0, 2, 1, 1, 1, 1]
    assert stage_column(ALL, "rate_from_previous") == pytest.approx(
        [1, 5 / 7, 4 / 5, 3 / 4, 2 / 3, 1 / 2]
    )
    assert stage_column(ALL, "rate_from_triggered") == pytest.approx(
        [1, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7]
    )
    assert stage_column(ALL, "drop_off_rate") == pytest.approx(
        [0, 2 / 7, 1 / 5, 1 / 4, 1 / 3, 1 / 2]
    )
    assert stage_column("1h", "users") == [3, 3, 2, 2, 1, 1]
    assert stage_column("24h", "users") == [3, 2, 2, 1, 1, 0]
    assert stage_column("24h", "flagged") == [3, 2, 2, 1, 1, 1]
    assert stage_column("holdout", "users") == [1, 0, 0, 0, 0, 0]
    assert stage_column("holdout", "flagged")[-1] == 1
    holdout_rates = stage_column("holdout", "rate_from_previous")
    assert holdout_rates[1] == 0 and all(math.isnan(rate) for rate in holdout_rates[2:])

    t2 = result[(result["trigger_id"] == "t2") & (result["variant"] == ALL)]
    assert t2["users"].tolist() == [1, 1, 1, 0, 0, 0]


# --------------------------------------------------------------------------- input contract


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="revenue"), "lack column\\(s\\) revenue"),
        (lambda f: pd.concat([f, f.iloc[[1]]]), "share a \\(trigger_id, customer_id\\) pair"),
        (lambda f: f.assign(sent=f["sent"].where(f["customer_id"] != "c1", 1)), "'holdout' rows must not be sent"),
        (lambda f: f.assign(sent=0), "delivered without sent"),
        (lambda f: f.assign(delivered=f["opened"] * 0), "opened without delivered"),
        (lambda f: f.assign(clicked=f["clicked"].replace(1, "yes")), "column 'clicked' must hold booleans"),
        (lambda f: f.assign(revenue=f["revenue"].replace(5.0, np.nan)), "column 'revenue' must be a finite number"),
        (lambda f: f.assign(variant=f["variant"].replace("24h", "")), "column 'variant' is empty in 3 row"),
    ],
)  # fmt: skip
def test_input_contract_violations_are_named(change, message: str) -> None:
    with pytest.raises(ExposureError, match=message):
        validate_exposures(change(hand_made_exposures()))


def test_validate_normalises_flags_and_adds_the_segment() -> None:
    frame = validate_exposures(hand_made_exposures().set_index("customer_id", drop=False))
    assert frame["sent"].dtype == bool and frame["revenue"].dtype == float
    assert set(frame["segment"]) == {ALL}
    assert list(frame.index) == list(range(8))


def test_options_are_checked(exposures: pd.DataFrame) -> None:
    small = exposures.head(50)
    with pytest.raises(ValueError, match="unknown outcome 'clicks'"):
        timing(small, outcomes=("clicks",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        segmentation(small, alpha=0)
    with pytest.raises(ValueError, match="holdout_share"):
        recommend(small, holdout_share=1.0)
    with pytest.raises(ValueError, match="min_users_per_arm"):
        recommend(small, min_users_per_arm=0)
