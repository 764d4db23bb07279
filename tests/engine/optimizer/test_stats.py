"""engine.optimizer.stats against scipy/statsmodels, published examples and A/A simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats
from scipy.integrate import quad
from scipy.special import betainc, betaln
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    proportions_ztest,
    samplesize_proportions_2indep_onetail,
)

from engine.optimizer.stats import (
    MeanSummary,
    RateSummary,
    SequentialTest,
    absolute_lift,
    adjust_p_values,
    benjamini_hochberg_adjust,
    beta_binomial_comparison,
    cuped_adjust,
    cuped_theta,
    holm_adjust,
    msprt,
    normal_posterior_comparison,
    relative_lift,
    sample_ratio_mismatch,
    two_mean_power,
    two_mean_sample_size,
    two_proportion_power,
    two_proportion_sample_size,
    two_proportion_ztest,
    welch_ttest,
)

RATE_CASES = [
    (500, 10_000, 580, 10_050),
    (12, 40, 25, 45),
    (3, 1_000, 0, 1_000),
    (48_210, 1_000_000, 47_905, 1_000_000),
]


# --------------------------------------------------------------------------- arm summaries


def test_mean_summary_from_sums_matches_numpy_sample_variance() -> None:
    values = np.array([3.0, 0.0, 12.5, 7.25, 0.0, 1.0])
    summary = MeanSummary.from_sums(values.size, values.sum(), (values**2).sum())
    assert summary.mean == pytest.approx(values.mean())
    assert summary.variance == pytest.approx(values.var(ddof=1))
    from_values = MeanSummary.from_values(values)
    assert (from_values.users, from_values.mean) == (6, pytest.approx(summary.mean))
    assert from_values.variance == pytest.approx(summary.variance)


def test_mean_summary_from_sums_rejects_negative_variance_but_tolerates_rounding() -> None:
    with pytest.raises(ValueError, match="negative variance"):
        MeanSummary.from_sums(10, 100.0, 900.0)
    # ten users who all spent 0.1: Σy² − (Σy)²/n cancels to about −1e-17, not to 0
    constant = MeanSummary.from_sums(10, 0.1 * 10, 0.1**2 * 10)
    assert constant.variance == pytest.approx(0.0, abs=1e-15)


def test_summaries_reject_impossible_counts() -> None:
    with pytest.raises(ValueError, match="conversions"):
        RateSummary(10, 11)
    with pytest.raises(ValueError, match="users"):
        RateSummary(0, 0)
    with pytest.raises(ValueError, match="at least 2 users"):
        MeanSummary(1, 3.0, 0.0)


# --------------------------------------------------------------------------- z-test and lifts


@pytest.mark.parametrize(("x_c", "n_c", "x_t", "n_t"), RATE_CASES)
def test_two_proportion_ztest_matches_statsmodels(x_c: int, n_c: int, x_t: int, n_t: int) -> None:
    result = two_proportion_ztest(RateSummary(n_c, x_c), RateSummary(n_t, x_t))
    z, p = proportions_ztest([x_t, x_c], [n_t, n_c])
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="wald", compare="diff")
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert result.difference == pytest.approx(x_t / n_t - x_c / n_c)


def test_two_proportion_ztest_with_no_conversions_anywhere_is_not_significant() -> None:
    result = two_proportion_ztest(RateSummary(500, 0), RateSummary(700, 0))
    assert (result.z, result.p_value, result.ci_low, result.ci_high) == (0.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        (MeanSummary(1_000, 5.0, 60.0), MeanSummary(1_000, 5.4, 41.0)),
        (MeanSummary(12, 20.0, 2.5), MeanSummary(300, 19.1, 40.0)),
        (MeanSummary(5_000, 31.2, 900.0), MeanSummary(4_800, 30.7, 1_300.0)),
    ],
)
def test_welch_ttest_matches_scipy(control: MeanSummary, treatment: MeanSummary) -> None:
    result = welch_ttest(control, treatment)
    expected = scipy_stats.ttest_ind_from_stats(
        treatment.mean,
        math.sqrt(treatment.variance),
        treatment.users,
        control.mean,
        math.sqrt(control.variance),
        control.users,
        equal_var=False,
    )
    assert result.t == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_welch_df_and_interval_match_scipy_on_raw_data() -> None:
    rng = np.random.default_rng(7)
    control_values = rng.gamma(2.0, 10.0, size=40)
    treatment_values = rng.gamma(2.0, 13.0, size=75)
    result = welch_ttest(
        MeanSummary.from_values(control_values), MeanSummary.from_values(treatment_values), 0.1
    )
    expected = scipy_stats.ttest_ind(treatment_values, control_values, equal_var=False)
    interval = expected.confidence_interval(0.9)
    assert result.df == pytest.approx(expected.df, rel=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))


def test_welch_example_published_on_wikipedia() -> None:
    """Wikipedia, "Welch's t-test", Examples, example 1 (two samples of 15): the published
    Welch statistic is t = −2.46 with p = 0.021."""
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    result = welch_ttest(MeanSummary.from_values(a2), MeanSummary.from_values(a1))
    assert round(result.t, 2) == -2.46
    assert round(result.p_value, 3) == 0.021


def test_welch_with_constant_arms_is_decided_by_the_difference() -> None:
    same = welch_ttest(MeanSummary(10, 4.0, 0.0), MeanSummary(10, 4.0, 0.0))
    different = welch_ttest(MeanSummary(10, 4.0, 0.0), MeanSummary(10, 5.0, 0.0))
    assert (same.t, same.p_value) == (0.0, 1.0)
    assert (different.t, different.p_value) == (math.inf, 0.0)


def test_absolute_lift_is_the_interval_of_the_matching_test() -> None:
    control, treatment = RateSummary(10_000, 500), RateSummary(10_050, 580)
    rate_lift = absolute_lift(control, treatment)
    low, high = confint_proportions_2indep(580, 10_050, 500, 10_000, method="wald", compare="diff")
    assert (rate_lift.ci_low, rate_lift.ci_high) == pytest.approx((low, high))

    mean_control, mean_treatment = MeanSummary(200, 10.0, 25.0), MeanSummary(220, 11.0, 36.0)
    mean_lift = absolute_lift(mean_control, mean_treatment, alpha=0.1)
    welch = welch_ttest(mean_control, mean_treatment, alpha=0.1)
    assert (mean_lift.estimate, mean_lift.ci_low, mean_lift.ci_high) == (
        welch.difference,
        welch.ci_low,
        welch.ci_high,
    )
    with pytest.raises(TypeError, match="both be RateSummary or both MeanSummary"):
        absolute_lift(control, mean_treatment)


def test_relative_lift_agrees_with_the_log_ratio_interval_at_large_n() -> None:
    # Delta method and statsmodels' log-ratio (Katz) interval are asymptotically the same.
    control, treatment = RateSummary(2_000_000, 100_000), RateSummary(2_000_000, 104_000)
    lift = relative_lift(control, treatment)
    low, high = confint_proportions_2indep(
        104_000, 2_000_000, 100_000, 2_000_000, method="log", compare="ratio"
    )
    assert lift.estimate == pytest.approx(0.04)
    assert lift.ci_low == pytest.approx(low - 1, abs=2e-4)
    assert lift.ci_high == pytest.approx(high - 1, abs=2e-4)


def test_relative_lift_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2024)
    true_control, true_treatment, users = 8.0, 9.0, 400
    covered = 0
    for _ in range(2_000):
        control = MeanSummary.from_values(rng.exponential(true_control, users))
        treatment = MeanSummary.from_values(rng.exponential(true_treatment, users))
        lift = relative_lift(control, treatment)
        covered += lift.ci_low <= true_treatment / true_control - 1 <= lift.ci_high
    assert 0.93 <= covered / 2_000 <= 0.97


def test_relative_lift_over_a_zero_control_is_undefined() -> None:
    lift = relative_lift(RateSummary(100, 0), RateSummary(100, 4))
    assert all(math.isnan(value) for value in (lift.estimate, lift.ci_low, lift.ci_high))


# --------------------------------------------------------------------------- Bayesian


def exact_chance_to_beat(control: RateSummary, treatment: RateSummary) -> float:
    """Evan Miller's closed form for P(θ_t > θ_c) with integer Beta parameters:
    Σ_{i=0}^{a_t−1} B(a_c + i, b_c + b_t) / ((b_t + i) B(1 + i, b_t) B(a_c, b_c))."""
    a_c, b_c = 1 + control.conversions, 1 + control.users - control.conversions
    a_t, b_t = 1 + treatment.conversions, 1 + treatment.users - treatment.conversions
    i = np.arange(a_t)
    terms = betaln(a_c + i, b_c + b_t) - np.log(b_t + i) - betaln(1 + i, b_t) - betaln(a_c, b_c)
    return float(np.exp(terms).sum())


def chance_to_beat_by_direct_quadrature(control: RateSummary, treatment: RateSummary) -> float:
    """An independent numerical route: P(θ_t > θ_c) = ∫ f_t(x) F_c(x) dx over ±40 sd of θ_t."""
    a_c, b_c = 1 + control.conversions, 1 + control.users - control.conversions
    posterior_t = scipy_stats.beta(
        1 + treatment.conversions, 1 + treatment.users - treatment.conversions
    )
    mean, sd = posterior_t.mean(), posterior_t.std()
    value, _ = quad(
        lambda x: posterior_t.pdf(x) * betainc(a_c, b_c, x),
        max(0.0, mean - 40 * sd),
        min(1.0, mean + 40 * sd),
        points=[mean],
        epsabs=1e-15,
        epsrel=1e-13,
        limit=1_000,
    )
    return value


BETA_CASES = [
    (RateSummary(40, 4), RateSummary(40, 9)),
    (RateSummary(1_000, 100), RateSummary(1_000, 120)),
    (RateSummary(100_000, 5_000), RateSummary(100_000, 5_200)),
    (RateSummary(100, 10), RateSummary(100_000, 10_000)),
    (RateSummary(1_000_000, 30_000), RateSummary(5, 1)),
    (RateSummary(10, 10), RateSummary(10, 0)),
]


@pytest.mark.parametrize(("control", "treatment"), BETA_CASES)
def test_chance_to_beat_matches_the_exact_beta_sum_and_direct_quadrature(
    control: RateSummary, treatment: RateSummary
) -> None:
    chance = beta_binomial_comparison(control, treatment).chance_to_beat_control
    # The closed form goes through lgamma of arguments up to 10⁶, which costs it ~1e-9.
    assert chance == pytest.approx(exact_chance_to_beat(control, treatment), abs=1e-8)
    assert chance == pytest.approx(
        chance_to_beat_by_direct_quadrature(control, treatment), abs=1e-12
    )


def test_expected_losses_match_seeded_monte_carlo_and_the_mean_identity() -> None:
    control, treatment = RateSummary(800, 64), RateSummary(820, 75)
    comparison = beta_binomial_comparison(control, treatment)
    rng = np.random.default_rng(5)
    draws = 2_000_000
    theta_c = rng.beta(1 + 64, 1 + 800 - 64, draws)
    theta_t = rng.beta(1 + 75, 1 + 820 - 75, draws)
    loss_choosing = np.maximum(theta_c - theta_t, 0)
    loss_keeping = np.maximum(theta_t - theta_c, 0)
    assert comparison.chance_to_beat_control == pytest.approx(np.mean(theta_t > theta_c), abs=2e-3)
    assert comparison.expected_loss_choosing_treatment == pytest.approx(
        loss_choosing.mean(), abs=4 * loss_choosing.std() / math.sqrt(draws)
    )
    assert comparison.expected_loss_keeping_control == pytest.approx(
        loss_keeping.mean(), abs=4 * loss_keeping.std() / math.sqrt(draws)
    )
    # E[max(D, 0)] − E[max(−D, 0)] = E[D] = E[θ_t] − E[θ_c] exactly
    posterior_mean_difference = 76 / 822 - 65 / 802
    assert (
        comparison.expected_loss_keeping_control - comparison.expected_loss_choosing_treatment
    ) == pytest.approx(posterior_mean_difference, abs=1e-10)


def test_identical_rate_arms_are_a_coin_flip() -> None:
    comparison = beta_binomial_comparison(RateSummary(5_000, 250), RateSummary(5_000, 250))
    assert comparison.chance_to_beat_control == pytest.approx(0.5, abs=1e-10)
    assert comparison.expected_loss_choosing_treatment == pytest.approx(
        comparison.expected_loss_keeping_control, abs=1e-12
    )


def test_normal_posterior_comparison_matches_scipy_and_monte_carlo() -> None:
    control, treatment = MeanSummary(900, 20.0, 400.0), MeanSummary(950, 21.0, 441.0)
    comparison = normal_posterior_comparison(control, treatment)
    sigma = math.sqrt(400 / 900 + 441 / 950)
    assert comparison.chance_to_beat_control == pytest.approx(scipy_stats.norm.cdf(1.0 / sigma))
    difference = np.random.default_rng(9).normal(1.0, sigma, 2_000_000)
    assert comparison.expected_loss_choosing_treatment == pytest.approx(
        np.maximum(-difference, 0).mean(), rel=2e-2
    )
    assert comparison.expected_loss_keeping_control == pytest.approx(
        np.maximum(difference, 0).mean(), rel=2e-3
    )


# --------------------------------------------------------------------------- mSPRT


def test_msprt_reproduces_johari_et_al_balanced_formulas() -> None:
    """Johari et al. (2017, §4, two-stream normal case, n per arm, known σ²):
    Λₙ = √(2σ²/(2σ² + nτ²)) exp(n²τ²(ȳ_t − ȳ_c)²/(4σ²(2σ² + nτ²))) and the interval
    ȳ_t − ȳ_c ± √((2σ²(2σ² + nτ²)/(n²τ²)) log((2σ² + nτ²)/(2σ²α²)))."""
    n, sigma2, tau2, alpha = 2_500, 36.0, 0.04, 0.05
    control, treatment = MeanSummary(n, 10.0, sigma2), MeanSummary(n, 10.45, sigma2)
    result = msprt(control, treatment, tau2, alpha)
    d = 0.45
    likelihood_ratio = math.sqrt(2 * sigma2 / (2 * sigma2 + n * tau2)) * math.exp(
        n**2 * tau2 * d**2 / (4 * sigma2 * (2 * sigma2 + n * tau2))
    )
    half_width = math.sqrt(
        2
        * sigma2
        * (2 * sigma2 + n * tau2)
        / (n**2 * tau2)
        * math.log((2 * sigma2 + n * tau2) / (2 * sigma2 * alpha**2))
    )
    assert result.log_likelihood_ratio == pytest.approx(math.log(likelihood_ratio), rel=1e-12)
    assert result.p_value == pytest.approx(min(1.0, 1 / likelihood_ratio), rel=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((d - half_width, d + half_width))


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        (RateSummary(20_000, 1_000), RateSummary(20_000, 1_130)),
        (RateSummary(20_000, 1_000), RateSummary(20_000, 1_040)),
        (MeanSummary(3_000, 12.0, 150.0), MeanSummary(3_100, 13.1, 170.0)),
        (MeanSummary(3_000, 12.0, 150.0), MeanSummary(3_100, 12.2, 170.0)),
    ],
)
def test_msprt_p_value_and_interval_agree_and_are_wider_than_fixed_horizon(
    control: RateSummary | MeanSummary, treatment: RateSummary | MeanSummary
) -> None:
    tau2 = (0.1 * control.mean) ** 2
    result = msprt(control, treatment, tau2)
    fixed = absolute_lift(control, treatment)
    assert (result.p_value <= 0.05) == (not result.ci_low <= 0 <= result.ci_high)
    assert result.ci_low < fixed.ci_low and result.ci_high > fixed.ci_high
    assert result.difference == pytest.approx(fixed.estimate)


def test_msprt_carries_the_running_minimum_and_intersection() -> None:
    previous = SequentialTest(0.01, 3.0, 0.02, 0.001, 0.015)
    result = msprt(RateSummary(5_000, 250), RateSummary(5_000, 255), 2.5e-5, previous=previous)
    alone = msprt(RateSummary(5_000, 250), RateSummary(5_000, 255), 2.5e-5)
    assert alone.p_value == 1.0 and alone.ci_low < 0.001 and alone.ci_high > 0.015
    assert (result.p_value, result.ci_low, result.ci_high) == (0.02, 0.001, 0.015)


def test_msprt_rejects_a_non_positive_mixing_variance() -> None:
    with pytest.raises(ValueError, match="mixing_variance"):
        msprt(RateSummary(10, 1), RateSummary(10, 2), 0.0)


# --------------------------------------------------------------------------- SRM


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ([5_000, 5_100], None),
        ([3_400, 3_310, 3_290], None),
        ([7_900, 2_100], [0.8, 0.2]),
        ([1_000, 980, 520], [2, 2, 1]),
    ],
)
def test_srm_matches_scipy_chisquare(observed: list[int], weights: list[float] | None) -> None:
    result = sample_ratio_mismatch(observed, weights)
    shares = np.ones(len(observed)) if weights is None else np.asarray(weights, dtype=float)
    expected = scipy_stats.chisquare(observed, sum(observed) * shares / shares.sum())
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.degrees_of_freedom == len(observed) - 1


def test_srm_example_from_kohavi_tang_xu() -> None:
    """Kohavi, Tang & Xu, "Trustworthy Online Controlled Experiments" (2020), ch. 3: control
    821,588 and treatment 815,482 users in a 50/50 experiment; published p-value 1.8e-6."""
    result = sample_ratio_mismatch([821_588, 815_482])
    assert f"{result.p_value:.1e}" == "1.8e-06"


def test_srm_example_from_wikipedia() -> None:
    """Wikipedia, "Sample ratio mismatch", Example: 600 and 400 users where a 50/50 split was
    intended; the published p-value is 2.54 × 10⁻¹⁰."""
    result = sample_ratio_mismatch([600, 400], [0.5, 0.5])
    assert f"{result.p_value:.2e}" == "2.54e-10"


def test_srm_rejects_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="2 expected weights for 3 arms"):
        sample_ratio_mismatch([10, 10, 10], [1, 1])
    with pytest.raises(ValueError, match="positive"):
        sample_ratio_mismatch([10, 10], [1, 0])


# --------------------------------------------------------------------------- multiplicity

BH_1995_P_VALUES = [
    0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344,
    0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000,
]  # fmt: skip


def test_benjamini_hochberg_1995_worked_example() -> None:
    """Benjamini & Hochberg (1995), J. R. Statist. Soc. B 57(1), §4: the 15 p-values of the
    thrombolysis trial of Neuhaus et al. (1992). At q = 0.05 the BH procedure rejects the four
    hypotheses with p ≤ 0.0095, while the family-wise procedures reject only the three with
    p ≤ 0.0019."""
    bh = benjamini_hochberg_adjust(BH_1995_P_VALUES)
    holm = holm_adjust(BH_1995_P_VALUES)
    assert [p for p, adjusted in zip(BH_1995_P_VALUES, bh, strict=True) if adjusted <= 0.05] == [
        0.0001,
        0.0004,
        0.0019,
        0.0095,
    ]
    assert [p for p, adjusted in zip(BH_1995_P_VALUES, holm, strict=True) if adjusted <= 0.05] == [
        0.0001,
        0.0004,
        0.0019,
    ]
    assert bh[3] == pytest.approx(0.0095 * 15 / 4)


@pytest.mark.parametrize(
    ("ours", "method"), [(holm_adjust, "holm"), (benjamini_hochberg_adjust, "fdr_bh")]
)
def test_corrections_match_statsmodels_on_the_published_p_values(ours, method: str) -> None:
    expected = multipletests(BH_1995_P_VALUES, method=method)[1]
    assert ours(BH_1995_P_VALUES) == pytest.approx(expected.tolist(), rel=1e-12)


def holm_by_definition(p_values: list[float]) -> list[float]:
    """Holm (1979) read literally: p̃₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1)·p₍ⱼ₎), O(m²)."""
    m = len(p_values)
    ranked = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [0.0] * m
    for i, index in enumerate(ranked):
        adjusted[index] = min(1.0, max((m - j) * p_values[ranked[j]] for j in range(i + 1)))
    return adjusted


@pytest.mark.parametrize(
    "p_values",
    [[0.01, 0.04, 0.03, 0.2], [0.02, 0.02, 0.02], [0.5, 1.0, 0.0, 0.5, 0.001], [0.049]],
)
def test_holm_matches_statsmodels_with_ties_and_extremes(p_values: list[float]) -> None:
    expected = multipletests(p_values, method="holm")[1]
    assert holm_adjust(p_values) == pytest.approx(expected.tolist(), rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=30))
def test_corrections_match_references_and_are_monotone_and_capped(p_values: list[float]) -> None:
    # statsmodels' holm takes ~50 ms a call, so here Holm is checked against its definition.
    holm = np.array(holm_adjust(p_values))
    bh = np.array(benjamini_hochberg_adjust(p_values))
    np.testing.assert_allclose(holm, holm_by_definition(p_values), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        bh, multipletests(p_values, method="fdr_bh")[1], rtol=1e-12, atol=1e-15
    )
    order = np.argsort(p_values, kind="stable")
    for adjusted in (holm, bh):
        assert np.all(np.diff(adjusted[order]) >= 0)
        assert np.all((adjusted >= np.asarray(p_values)) & (adjusted <= 1.0))
    assert np.all(bh <= holm)


def test_adjust_p_values_none_and_unknown_method() -> None:
    assert adjust_p_values([0.2, 0.01], "none") == [0.2, 0.01]
    assert adjust_p_values([], "holm") == []
    with pytest.raises(ValueError, match="unknown p-value correction"):
        adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.2, 1.5])


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize(
    ("control_rate", "treatment_rate"), [(0.05, 0.0525), (0.10, 0.12), (0.30, 0.27), (0.5, 0.51)]
)
def test_two_proportion_power_and_sample_size_match_statsmodels(
    control_rate: float, treatment_rate: float
) -> None:
    users = two_proportion_sample_size(control_rate, treatment_rate, alpha=0.05, power=0.8)
    expected = samplesize_proportions_2indep_onetail(
        treatment_rate - control_rate, control_rate, 0.8, alpha=0.05, alternative="two-sided"
    )
    assert users == math.ceil(expected)
    for n in (users - 1, users, 3 * users):
        assert two_proportion_power(control_rate, treatment_rate, n) == pytest.approx(
            power_proportions_2indep(
                treatment_rate - control_rate, control_rate, n, return_results=False
            ),
            rel=1e-12,
        )
    assert two_proportion_power(control_rate, treatment_rate, users - 1) < 0.8
    assert two_proportion_power(control_rate, treatment_rate, users) >= 0.8


def test_two_proportion_sample_size_is_close_to_cohens_h_in_statsmodels_power() -> None:
    from statsmodels.stats.proportion import proportion_effectsize

    users = two_proportion_sample_size(0.10, 0.12, alpha=0.05, power=0.9)
    arcsine = NormalIndPower().solve_power(
        proportion_effectsize(0.12, 0.10), alpha=0.05, power=0.9, ratio=1.0
    )
    assert users == pytest.approx(arcsine, rel=0.01)


@pytest.mark.parametrize(("std_dev", "difference", "power"), [(30.0, 2.0, 0.8), (1.0, 0.1, 0.9)])
def test_two_mean_power_and_sample_size_match_statsmodels(
    std_dev: float, difference: float, power: float
) -> None:
    users = two_mean_sample_size(std_dev, difference, alpha=0.05, power=power)
    effect = difference / std_dev
    expected = NormalIndPower().solve_power(effect, alpha=0.05, power=power, ratio=1.0)
    assert users == math.ceil(expected)
    assert two_mean_power(std_dev, difference, users) == pytest.approx(
        NormalIndPower().power(effect, users, 0.05, ratio=1.0), rel=1e-12
    )


def test_sample_size_is_close_to_kohavis_rule_of_thumb_example() -> None:
    """Kohavi, Longbotham, Sommerfield & Henne, "Controlled experiments on the web: survey and
    practical guide" (Data Min. Knowl. Disc. 2009), §3.2: n = 16σ²/Δ²; for a 5 % conversion
    rate and a 5 % relative change they publish 16·0.05·0.95/0.0025² = 121,600 users per variant.
    The exact constant is 2(z₀.₉₇₅ + z₀.₈)² = 15.7, so we need about 2 % fewer."""
    users = two_mean_sample_size(math.sqrt(0.05 * 0.95), 0.0025)
    assert 0.98 * 121_600 <= users <= 121_600


def test_power_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="no effect"):
        two_proportion_sample_size(0.1, 0.1)
    with pytest.raises(ValueError, match="control_rate"):
        two_proportion_power(0.0, 0.1, 100)
    with pytest.raises(ValueError, match="power"):
        two_mean_sample_size(1.0, 0.1, power=1.0)


# --------------------------------------------------------------------------- CUPED


def test_cuped_theta_is_the_ols_slope_and_removes_rho_squared_of_the_variance() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(3)
    pre_period = rng.gamma(2.0, 10.0, 5_000)
    outcome = 4.0 + 0.7 * pre_period + rng.normal(0, 8.0, 5_000)
    adjustment = cuped_adjust(outcome, pre_period)
    slope = sm.OLS(outcome, sm.add_constant(pre_period)).fit().params[1]
    rho = np.corrcoef(outcome, pre_period)[0, 1]
    assert cuped_theta(outcome, pre_period) == pytest.approx(slope, rel=1e-10)
    assert adjustment.theta == pytest.approx(slope, rel=1e-10)
    assert adjustment.variance_reduction == pytest.approx(rho**2, rel=1e-10)
    assert adjustment.adjusted.mean() == pytest.approx(outcome.mean())
    assert adjustment.adjusted.var(ddof=1) == pytest.approx(outcome.var(ddof=1) * (1 - rho**2))


def test_cuped_keeps_the_effect_and_narrows_its_interval() -> None:
    rng = np.random.default_rng(11)
    users = 4_000
    pre_period = rng.gamma(2.0, 10.0, 2 * users)
    in_treatment = np.arange(2 * users) >= users
    outcome = 0.8 * pre_period + rng.normal(0, 6.0, 2 * users) + 1.5 * in_treatment
    adjusted = cuped_adjust(outcome, pre_period).adjusted  # θ and X̄ pooled over both arms
    raw = welch_ttest(
        MeanSummary.from_values(outcome[~in_treatment]),
        MeanSummary.from_values(outcome[in_treatment]),
    )
    cuped = welch_ttest(
        MeanSummary.from_values(adjusted[~in_treatment]),
        MeanSummary.from_values(adjusted[in_treatment]),
    )
    assert cuped.difference == pytest.approx(1.5, abs=3 * cuped.standard_error)
    assert cuped.standard_error < 0.6 * raw.standard_error


def test_cuped_rejects_a_constant_covariate() -> None:
    with pytest.raises(ValueError, match="constant"):
        cuped_adjust([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])


# --------------------------------------------------------------------------- A/A validation

AA_EXPERIMENTS = 500
LOOKS = 50
USERS_PER_LOOK = 200
AA_RATE = 0.05


def aa_rate_counts(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative conversions per arm after each look, shape (experiments, looks, arms=2)."""
    rng = np.random.default_rng(seed)
    per_look = rng.binomial(USERS_PER_LOOK, AA_RATE, size=(AA_EXPERIMENTS, LOOKS, 2))
    users = USERS_PER_LOOK * np.arange(1, LOOKS + 1)
    return np.cumsum(per_look, axis=1), users


def fixed_horizon_false_positive_rate(seed: int = 20240601) -> float:
    conversions, users = aa_rate_counts(seed)
    n = int(users[-1])
    rejections = sum(
        two_proportion_ztest(RateSummary(n, int(c)), RateSummary(n, int(t))).p_value <= 0.05
        for c, t in conversions[:, -1, :]
    )
    return rejections / AA_EXPERIMENTS


def naive_peeking_false_positive_rate(seed: int = 20240601) -> float:
    conversions, users = aa_rate_counts(seed)
    rejected = 0
    for experiment in conversions:
        rejected += any(
            two_proportion_ztest(RateSummary(n, int(c)), RateSummary(n, int(t))).p_value <= 0.05
            for n, (c, t) in zip(users.tolist(), experiment, strict=True)
        )
    return rejected / AA_EXPERIMENTS


def msprt_rate_false_positive_rate(seed: int = 20240601) -> float:
    conversions, users = aa_rate_counts(seed)
    tau2 = (0.1 * AA_RATE) ** 2  # fixed before the data: a 10 % relative lift on 5 %
    rejected = 0
    for experiment in conversions:
        look: SequentialTest | None = None
        for n, (c, t) in zip(users.tolist(), experiment, strict=True):
            look = msprt(RateSummary(n, int(c)), RateSummary(n, int(t)), tau2, previous=look)
        rejected += look is not None and look.p_value <= 0.05
    return rejected / AA_EXPERIMENTS


def msprt_mean_false_positive_rate(seed: int = 77) -> float:
    """Skewed revenue-like values (gamma, shape 2, mean 20), summarised look by look."""
    rng = np.random.default_rng(seed)
    tau2 = (0.1 * 20.0) ** 2
    rejected = 0
    for _ in range(AA_EXPERIMENTS):
        values = rng.gamma(2.0, 10.0, size=(2, LOOKS, USERS_PER_LOOK))
        sums = np.cumsum(values.sum(axis=2), axis=1)
        squares = np.cumsum((values**2).sum(axis=2), axis=1)
        look: SequentialTest | None = None
        for k in range(LOOKS):
            n = USERS_PER_LOOK * (k + 1)
            control = MeanSummary.from_sums(n, sums[0, k], squares[0, k])
            treatment = MeanSummary.from_sums(n, sums[1, k], squares[1, k])
            look = msprt(control, treatment, tau2, previous=look)
        rejected += look is not None and look.p_value <= 0.05
    return rejected / AA_EXPERIMENTS


def test_fixed_horizon_test_has_its_nominal_false_positive_rate() -> None:
    assert 0.03 <= fixed_horizon_false_positive_rate() <= 0.07


def test_msprt_controls_false_positives_under_continuous_peeking_and_naive_peeking_does_not() -> (
    None
):
    """500 A/A experiments, 50 looks of 200 users per arm each (5 % conversion rate): the running
    always-valid p-value reaches 0.05 in at most 5 % of them, while stopping at the first fixed
    z-test with p ≤ 0.05 does so far more often — the reason the sequential test exists."""
    assert msprt_rate_false_positive_rate() <= 0.05
    assert naive_peeking_false_positive_rate() > 0.10


def test_msprt_controls_false_positives_for_means_under_continuous_peeking() -> None:
    assert msprt_mean_false_positive_rate() <= 0.05


def test_msprt_still_detects_a_real_lift_under_continuous_peeking() -> None:
    """Guards the A/A tests above against a test that never rejects: with a true 5 % → 6 %
    lift (τ set for a 10 % lift), the running always-valid p-value reaches 0.05 within 50 looks
    in about half of the experiments (51 % with this seed; a fixed test at the last look alone
    would have 87 % power — the price of being allowed to stop early)."""
    rng = np.random.default_rng(4)
    experiments, tau2 = 200, (0.1 * AA_RATE) ** 2
    control = np.cumsum(rng.binomial(USERS_PER_LOOK, AA_RATE, (experiments, LOOKS)), axis=1)
    treatment = np.cumsum(rng.binomial(USERS_PER_LOOK, 0.06, (experiments, LOOKS)), axis=1)
    detected = 0
    for c_row, t_row in zip(control, treatment, strict=True):
        look: SequentialTest | None = None
        for k in range(LOOKS):
            n = USERS_PER_LOOK * (k + 1)
            look = msprt(
                RateSummary(n, int(c_row[k])), RateSummary(n, int(t_row[k])), tau2, previous=look
            )
        detected += look is not None and look.p_value <= 0.05 and look.ci_low > 0
    assert detected / experiments > 0.4
