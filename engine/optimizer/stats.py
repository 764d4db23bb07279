"""Statistics for comparing a treatment arm with the control arm of an experiment.

Every function is pure: arm summaries in, frozen results out. Conventions used throughout:

* a conversion-rate arm is ``RateSummary(users, conversions)``; a mean arm (revenue per user, …)
  is ``MeanSummary(users, mean, variance)`` with the sample variance (divisor n − 1);
* both expose ``mean`` (ȳ: the rate p̂ or the mean) and ``variance`` (s²: the per-user variance,
  p̂(1 − p̂) for rates), so Var(ȳ) = s²/n;
* a difference is always treatment − control, d = ȳ_t − ȳ_c;
* Φ is the standard-normal CDF, φ its density, z_q = Φ⁻¹(q); intervals are two-sided, level 1 − α.

One module on purpose (over 700 lines): the tests, Bayesian comparisons, sequential intervals,
corrections, power and CUPED all rest on these conventions and the private helpers below
(critical values, standard errors, Beta moments); split up, each part would restate them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate, special

__all__ = [
    "ArmSummary",
    "BayesianComparison",
    "CupedAdjustment",
    "Estimate",
    "MeanSummary",
    "PValueCorrection",
    "ProportionTest",
    "RateSummary",
    "SequentialTest",
    "SrmTest",
    "WelchTest",
    "absolute_lift",
    "adjust_p_values",
    "benjamini_hochberg_adjust",
    "beta_binomial_comparison",
    "cuped_adjust",
    "cuped_theta",
    "holm_adjust",
    "msprt",
    "normal_posterior_comparison",
    "relative_lift",
    "sample_ratio_mismatch",
    "two_mean_power",
    "two_mean_sample_size",
    "two_proportion_power",
    "two_proportion_sample_size",
    "two_proportion_ztest",
    "welch_ttest",
]

PValueCorrection = Literal["holm", "bh", "none"]


# --------------------------------------------------------------------------- arm summaries


@dataclass(frozen=True)
class RateSummary:
    """One arm of a conversion-rate metric: ``conversions`` of ``users`` converted."""

    users: int
    conversions: int

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"users must be at least 1 (got {self.users})")
        if not 0 <= self.conversions <= self.users:
            raise ValueError(
                f"conversions must lie in [0, users={self.users}] (got {self.conversions})"
            )

    @property
    def rate(self) -> float:
        """p̂ = conversions / users."""
        return self.conversions / self.users

    @property
    def mean(self) -> float:
        """The per-user mean of the 0/1 outcome, i.e. the rate p̂."""
        return self.rate

    @property
    def variance(self) -> float:
        """Per-user Bernoulli variance p̂(1 − p̂) (the plug-in used by the Wald interval)."""
        return self.rate * (1.0 - self.rate)


@dataclass(frozen=True)
class MeanSummary:
    """One arm of a mean metric: ``users`` users, sample ``mean`` and sample ``variance`` (n − 1)."""

    users: int
    mean: float
    variance: float

    def __post_init__(self) -> None:
        if self.users < 2:
            raise ValueError(f"a mean metric needs at least 2 users per arm (got {self.users})")
        if not math.isfinite(self.mean):
            raise ValueError(f"mean must be finite (got {self.mean})")
        if not (math.isfinite(self.variance) and self.variance >= 0):
            raise ValueError(f"variance must be finite and non-negative (got {self.variance})")

    @classmethod
    def from_sums(cls, users: int, value_sum: float, value_sum_squares: float) -> MeanSummary:
        """From Σy and Σy²: ȳ = Σy/n, s² = (Σy² − (Σy)²/n)/(n − 1).

        Raises ValueError when the sums imply a negative variance beyond rounding error.
        """
        if users < 2:
            raise ValueError(f"a mean metric needs at least 2 users per arm (got {users})")
        centred_sum_squares = value_sum_squares - value_sum * value_sum / users
        # Equal values make the two terms cancel; allow the rounding error of that cancellation.
        if centred_sum_squares < -1e-9 * max(abs(value_sum_squares), 1.0):
            raise ValueError(
                f"value_sum_squares ({value_sum_squares:g}) is smaller than "
                f"value_sum²/users ({value_sum * value_sum / users:g}), which implies a "
                "negative variance"
            )
        return cls(
            int(users), float(value_sum / users), float(max(centred_sum_squares, 0.0) / (users - 1))
        )

    @classmethod
    def from_values(cls, values: ArrayLike) -> MeanSummary:
        """From per-user values: ȳ = mean(y), s² = Σ(y − ȳ)²/(n − 1)."""
        array = np.asarray(values, dtype=float)
        return cls(int(array.size), float(array.mean()), float(array.var(ddof=1)))


ArmSummary = RateSummary | MeanSummary


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its two-sided confidence interval."""

    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ProportionTest:
    """Result of ``two_proportion_ztest``; ``difference`` = p̂_t − p̂_c."""

    control_rate: float
    treatment_rate: float
    difference: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class WelchTest:
    """Result of ``welch_ttest``; ``difference`` = ȳ_t − ȳ_c, ``df`` the Welch–Satterthwaite ν."""

    difference: float
    standard_error: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class BayesianComparison:
    """Posterior comparison of treatment (θ_t) with control (θ_c).

    ``chance_to_beat_control`` = P(θ_t > θ_c); ``expected_loss_choosing_treatment`` =
    E[max(θ_c − θ_t, 0)], what shipping the treatment costs if it is in fact worse;
    ``expected_loss_keeping_control`` = E[max(θ_t − θ_c, 0)].
    """

    chance_to_beat_control: float
    expected_loss_choosing_treatment: float
    expected_loss_keeping_control: float


@dataclass(frozen=True)
class SequentialTest:
    """One look of the mSPRT: always-valid p-value and confidence-sequence interval for d."""

    difference: float
    log_likelihood_ratio: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SrmTest:
    """Chi-square goodness-of-fit of the observed split against the intended split."""

    statistic: float
    degrees_of_freedom: int
    p_value: float


@dataclass(frozen=True, eq=False)
class CupedAdjustment:
    """CUPED-adjusted outcomes and how much variance the adjustment removed."""

    theta: float
    covariate_mean: float
    adjusted: np.ndarray
    variance_reduction: float


# --------------------------------------------------------------------------- frequentist tests


def two_proportion_ztest(
    control: RateSummary, treatment: RateSummary, alpha: float = 0.05
) -> ProportionTest:
    """Two-sided z-test of equal conversion rates, with a Wald interval for the difference.

    p̂ᵢ = xᵢ/nᵢ, d = p̂_t − p̂_c, pooled p̄ = (x_c + x_t)/(n_c + n_t);
    z = d / √(p̄(1 − p̄)(1/n_c + 1/n_t)), p = 2Φ(−|z|);
    CI = d ± z_{1−α/2} √(p̂_c(1 − p̂_c)/n_c + p̂_t(1 − p̂_t)/n_t).

    The test uses the pooled variance because that is the variance under H₀: p_c = p_t; the
    interval must hold for any d, so it uses the unpooled one. If nobody (or everybody) converted
    in both arms the pooled variance is 0 and d = 0: z = 0, p = 1.
    """
    _check_alpha(alpha)
    difference = treatment.rate - control.rate
    pooled = (control.conversions + treatment.conversions) / (control.users + treatment.users)
    null_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / control.users + 1.0 / treatment.users))
    z = difference / null_se if null_se > 0 else 0.0
    margin = _z_critical(alpha) * _standard_error_of_difference(control, treatment)
    return ProportionTest(
        control_rate=control.rate,
        treatment_rate=treatment.rate,
        difference=difference,
        z=z,
        p_value=_two_sided_normal_p(z),
        ci_low=difference - margin,
        ci_high=difference + margin,
    )


def welch_ttest(control: MeanSummary, treatment: MeanSummary, alpha: float = 0.05) -> WelchTest:
    """Welch's unequal-variance t-test from summary statistics (n, ȳ, s²) of each arm.

    d = ȳ_t − ȳ_c, se² = s_t²/n_t + s_c²/n_c,
    ν = se⁴ / [(s_t²/n_t)²/(n_t − 1) + (s_c²/n_c)²/(n_c − 1)]  (Welch–Satterthwaite),
    t = d/se, p = 2·P(T_ν > |t|), CI = d ± t_{ν, 1−α/2}·se.

    With zero variance in both arms ν is 0/0; we report ν = n_c + n_t − 2, t = 0 and p = 1 when
    d = 0, and t = ±∞, p = 0 otherwise.
    """
    _check_alpha(alpha)
    difference = treatment.mean - control.mean
    control_part = control.variance / control.users
    treatment_part = treatment.variance / treatment.users
    standard_error = math.sqrt(control_part + treatment_part)
    if standard_error == 0:
        degenerate_t = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        return WelchTest(
            difference=difference,
            standard_error=0.0,
            t=degenerate_t,
            df=float(control.users + treatment.users - 2),
            p_value=1.0 if difference == 0 else 0.0,
            ci_low=difference,
            ci_high=difference,
        )
    df = (control_part + treatment_part) ** 2 / (
        control_part**2 / (control.users - 1) + treatment_part**2 / (treatment.users - 1)
    )
    t = difference / standard_error
    margin = float(special.stdtrit(df, 1.0 - alpha / 2.0)) * standard_error
    return WelchTest(
        difference=difference,
        standard_error=standard_error,
        t=t,
        df=df,
        p_value=min(1.0, 2.0 * float(special.stdtr(df, -abs(t)))),
        ci_low=difference - margin,
        ci_high=difference + margin,
    )


def absolute_lift(control: ArmSummary, treatment: ArmSummary, alpha: float = 0.05) -> Estimate:
    """Absolute lift d = ȳ_t − ȳ_c with the interval of the matching test.

    Rates: the Wald interval d ± z_{1−α/2} √(p̂_c(1 − p̂_c)/n_c + p̂_t(1 − p̂_t)/n_t).
    Means: the Welch interval d ± t_{ν, 1−α/2} √(s_t²/n_t + s_c²/n_c) (see ``welch_ttest``).
    """
    if isinstance(control, RateSummary) and isinstance(treatment, RateSummary):
        proportion = two_proportion_ztest(control, treatment, alpha)
        return Estimate(proportion.difference, proportion.ci_low, proportion.ci_high)
    if isinstance(control, MeanSummary) and isinstance(treatment, MeanSummary):
        welch = welch_ttest(control, treatment, alpha)
        return Estimate(welch.difference, welch.ci_low, welch.ci_high)
    raise TypeError(_mixed_kinds_message(control, treatment))


def relative_lift(control: ArmSummary, treatment: ArmSummary, alpha: float = 0.05) -> Estimate:
    """Relative lift r = ȳ_t/ȳ_c − 1 with a delta-method interval for the ratio of means.

    For independent arms the first-order Taylor expansion of ȳ_t/ȳ_c gives
    Var(r) ≈ Var(ȳ_t)/ȳ_c² + ȳ_t²·Var(ȳ_c)/ȳ_c⁴ with Var(ȳ) = s²/n,
    CI = r ± z_{1−α/2} √Var(r)  (Deng, Knoblich & Lu 2018, "Applying the delta method in
    metric analytics"). Undefined (all fields NaN) when ȳ_c = 0.
    """
    _check_alpha(alpha)
    _check_same_kind(control, treatment)
    if control.mean == 0:
        return Estimate(math.nan, math.nan, math.nan)
    ratio = treatment.mean / control.mean
    ratio_variance = (treatment.variance / treatment.users) / control.mean**2 + (
        treatment.mean**2 * (control.variance / control.users) / control.mean**4
    )
    margin = _z_critical(alpha) * math.sqrt(ratio_variance)
    return Estimate(ratio - 1.0, ratio - 1.0 - margin, ratio - 1.0 + margin)


# --------------------------------------------------------------------------- Bayesian


def beta_binomial_comparison(control: RateSummary, treatment: RateSummary) -> BayesianComparison:
    """Chance to beat control and expected losses under Beta-Binomial posteriors.

    With a uniform Beta(1, 1) prior, θᵢ | data ~ Beta(aᵢ, bᵢ), aᵢ = 1 + xᵢ, bᵢ = 1 + nᵢ − xᵢ.
    chance to beat control = P(θ_t > θ_c) = ∫₀¹ F_c(F_t⁻¹(u)) du;
    expected loss choosing treatment = E[max(θ_c − θ_t, 0)]
        = E[θ_c]·P(θ_c⁺ > θ_t) − E[θ_t]·P(θ_c > θ_t⁺),
    expected loss keeping control = E[max(θ_t − θ_c, 0)]
        = E[θ_t]·P(θ_t⁺ > θ_c) − E[θ_c]·P(θ_t > θ_c⁺),
    where θ⁺ ~ Beta(a + 1, b) and E[θ] = a/(a + b), because θ·f_{a,b}(θ) = E[θ]·f_{a+1,b}(θ).

    Each P(X > Y) is a deterministic adaptive quadrature of ∫₀¹ F_Y(F_X⁻¹(u)) du over the
    quantiles of the narrower posterior (absolute error below 1e-9); no Monte Carlo.
    """
    control_posterior = (1.0 + control.conversions, 1.0 + control.users - control.conversions)
    treatment_posterior = (
        1.0 + treatment.conversions,
        1.0 + treatment.users - treatment.conversions,
    )
    control_mean = _beta_mean(control_posterior)
    treatment_mean = _beta_mean(treatment_posterior)
    control_shifted = (control_posterior[0] + 1.0, control_posterior[1])
    treatment_shifted = (treatment_posterior[0] + 1.0, treatment_posterior[1])

    loss_choosing_treatment = control_mean * _probability_beta_exceeds(
        control_shifted, treatment_posterior
    ) - treatment_mean * _probability_beta_exceeds(control_posterior, treatment_shifted)
    loss_keeping_control = treatment_mean * _probability_beta_exceeds(
        treatment_shifted, control_posterior
    ) - control_mean * _probability_beta_exceeds(treatment_posterior, control_shifted)
    return BayesianComparison(
        chance_to_beat_control=_probability_beta_exceeds(treatment_posterior, control_posterior),
        # Cancellation between the two terms can leave −1e-17 where the loss is 0.
        expected_loss_choosing_treatment=max(loss_choosing_treatment, 0.0),
        expected_loss_keeping_control=max(loss_keeping_control, 0.0),
    )


def normal_posterior_comparison(control: MeanSummary, treatment: MeanSummary) -> BayesianComparison:
    """Chance to beat control and expected losses under normal posteriors for the means.

    With a flat prior and the plug-in variance, μᵢ | data ~ N(ȳᵢ, sᵢ²/nᵢ), so
    D = μ_t − μ_c ~ N(d, σ²) with d = ȳ_t − ȳ_c, σ² = s_t²/n_t + s_c²/n_c:
    chance to beat control = Φ(d/σ);
    expected loss choosing treatment = E[max(−D, 0)] = σφ(d/σ) − dΦ(−d/σ);
    expected loss keeping control = E[max(D, 0)] = σφ(d/σ) + dΦ(d/σ).
    """
    difference = treatment.mean - control.mean
    sigma = math.sqrt(control.variance / control.users + treatment.variance / treatment.users)
    if sigma == 0:
        chance = 0.5 if difference == 0 else float(difference > 0)
        return BayesianComparison(chance, max(-difference, 0.0), max(difference, 0.0))
    standardized = difference / sigma
    density = math.exp(-0.5 * standardized**2) / math.sqrt(2.0 * math.pi)
    return BayesianComparison(
        chance_to_beat_control=float(special.ndtr(standardized)),
        expected_loss_choosing_treatment=sigma * density
        - difference * float(special.ndtr(-standardized)),
        expected_loss_keeping_control=sigma * density
        + difference * float(special.ndtr(standardized)),
    )


# --------------------------------------------------------------------------- sequential


def msprt(
    control: ArmSummary,
    treatment: ArmSummary,
    mixing_variance: float,
    alpha: float = 0.05,
    previous: SequentialTest | None = None,
) -> SequentialTest:
    """Always-valid inference on d = θ_t − θ_c: the normal-mixture mSPRT of Johari, Koomen,
    Pekelis & Walsh ("Always valid inference", KDD 2017; Operations Research 70(3), 2022).

    With d = ȳ_t − ȳ_c, V = s_t²/n_t + s_c²/n_c (plug-in variance of d; p̂(1 − p̂) for rates)
    and mixing distribution θ ~ N(θ₀, τ²), τ² = ``mixing_variance``, the mixture likelihood ratio
    against H₀: θ = θ₀ is
        Λ(θ₀) = √(V/(V + τ²)) · exp( τ²(d − θ₀)² / (2V(V + τ²)) ).
    Always-valid p-value: pₙ = min(pₙ₋₁, 1/Λₙ(0)), p₀ = 1.
    Confidence sequence: {θ₀ : Λₙ(θ₀) < 1/α} = d ± √( V(V + τ²)/τ² · [2 ln(1/α) + ln((V + τ²)/V)] ),
    intersected with the previous look's interval.
    For n per arm and equal variances σ², V = 2σ²/n and these are exactly Johari et al.'s
    formulas. For unequal arms the same expressions hold because d/V is a Brownian motion in
    the information 1/V (the canonical joint distribution of Jennison & Turnbull, ch. 3), which
    is what the normal mixture needs to be a martingale under H₀.

    Pass the previous look's result as ``previous`` to get the running minimum and the running
    intersection; one look alone (``previous=None``) is still valid, only less tight. pₙ ≤ α
    exactly when 0 lies outside that look's interval. At most α of A/A experiments ever reach
    pₙ ≤ α, however often they are looked at (asymptotically, since V is estimated).

    Choosing τ²: any fixed τ² > 0 keeps the guarantee; it decides *when* the test is most
    sensitive. Johari et al. match the mixture to the distribution of true effects, so set τ to
    the size of effect you expect (``analyze_arms`` uses τ = 10 % of the control mean); the
    interval is tightest near the sample size where V ≈ τ²/8 (at α = 0.05). τ² must be chosen
    before looking at the data; a τ² tuned to the current sample voids the guarantee.
    """
    _check_alpha(alpha)
    _check_same_kind(control, treatment)
    if not (math.isfinite(mixing_variance) and mixing_variance > 0):
        raise ValueError(f"mixing_variance must be positive and finite (got {mixing_variance})")
    difference = treatment.mean - control.mean
    variance = control.variance / control.users + treatment.variance / treatment.users
    if variance == 0:
        # Both arms are constant: d is known exactly, so the evidence is all-or-nothing.
        log_likelihood_ratio = -math.inf if difference == 0 else math.inf
        half_width = 0.0
    else:
        log_likelihood_ratio = 0.5 * math.log(variance / (variance + mixing_variance)) + (
            mixing_variance * difference**2 / (2.0 * variance * (variance + mixing_variance))
        )
        half_width = math.sqrt(
            variance
            * (variance + mixing_variance)
            / mixing_variance
            * (2.0 * math.log(1.0 / alpha) + math.log((variance + mixing_variance) / variance))
        )
    p_value = 1.0 if log_likelihood_ratio <= 0 else math.exp(-log_likelihood_ratio)
    ci_low, ci_high = difference - half_width, difference + half_width
    if previous is not None:
        p_value = min(p_value, previous.p_value)
        ci_low, ci_high = max(ci_low, previous.ci_low), min(ci_high, previous.ci_high)
    return SequentialTest(difference, log_likelihood_ratio, p_value, ci_low, ci_high)


# --------------------------------------------------------------------------- sample ratio


def sample_ratio_mismatch(
    observed_users: Sequence[int], expected_weights: Sequence[float] | None = None
) -> SrmTest:
    """Pearson chi-square test that users were split in the intended proportions.

    N = Σoᵢ, eᵢ = N·wᵢ/Σw (wᵢ = 1 for all arms if no weights are given),
    χ² = Σ(oᵢ − eᵢ)²/eᵢ, p = P(χ²_{k−1} ≥ χ²) for k arms.
    """
    observed = np.asarray(observed_users, dtype=float)
    if observed.ndim != 1 or observed.size < 2:
        raise ValueError("sample_ratio_mismatch needs the user counts of at least 2 arms")
    if np.any(observed < 0) or not np.all(np.isfinite(observed)):
        raise ValueError("observed user counts must be finite and non-negative")
    if observed.sum() == 0:
        raise ValueError("observed user counts are all 0")
    weights = np.ones_like(observed) if expected_weights is None else np.asarray(expected_weights)
    if weights.shape != observed.shape:
        raise ValueError(
            f"got {weights.size} expected weights for {observed.size} arms; give one per arm"
        )
    if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
        raise ValueError("expected weights must be positive and finite")
    expected = observed.sum() * weights / weights.sum()
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    degrees_of_freedom = observed.size - 1
    return SrmTest(
        statistic, degrees_of_freedom, float(special.chdtrc(degrees_of_freedom, statistic))
    )


# --------------------------------------------------------------------------- multiplicity


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (control the family-wise error rate).

    With p₍₁₎ ≤ … ≤ p₍ₘ₎ sorted ascending: p̃₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1)·p₍ⱼ₎),
    returned in the input order. Reject H₍ᵢ₎ when p̃₍ᵢ₎ ≤ α.
    """
    p = _as_p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    return _unsort(np.minimum(1.0, np.maximum.accumulate(scaled)), order)


def benjamini_hochberg_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg step-up adjusted p-values (control the false discovery rate).

    With p₍₁₎ ≤ … ≤ p₍ₘ₎ sorted ascending: p̃₍ᵢ₎ = min(1, min_{j ≥ i} m·p₍ⱼ₎/j),
    returned in the input order. Reject H₍ᵢ₎ when p̃₍ᵢ₎ ≤ q.
    """
    p = _as_p_values(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    # p·(m/j) rather than (p·m)/j: with m/j ≥ 1 rounding can never push p̃ below p.
    scaled = p[order] * (m / np.arange(1, m + 1))
    step_up = np.minimum.accumulate(scaled[::-1])[::-1]
    return _unsort(np.minimum(1.0, step_up), order)


def adjust_p_values(p_values: Sequence[float], method: PValueCorrection) -> list[float]:
    """``holm_adjust`` for "holm", ``benjamini_hochberg_adjust`` for "bh", pᵢ unchanged for "none"."""
    if method == "holm":
        return holm_adjust(p_values)
    if method == "bh":
        return benjamini_hochberg_adjust(p_values)
    if method == "none":
        unchanged: list[float] = _as_p_values(p_values).tolist()  # a flat float array
        return unchanged
    raise ValueError(f"unknown p-value correction {method!r}; expected 'holm', 'bh' or 'none'")


# --------------------------------------------------------------------------- power


def two_proportion_power(
    control_rate: float, treatment_rate: float, users_per_arm: float, alpha: float = 0.05
) -> float:
    """Power of the two-sided pooled z-test with ``users_per_arm`` users in each arm.

    δ = p_t − p_c, p̄ = (p_c + p_t)/2, σ₀ = √(2p̄(1 − p̄)) (pooled, under H₀),
    σ₁ = √(p_c(1 − p_c) + p_t(1 − p_t)) (under the alternative), z = z_{1−α/2}:
    power = Φ((|δ|√n − zσ₀)/σ₁) + Φ((−|δ|√n − zσ₀)/σ₁).
    """
    delta, sd_null, sd_alternative = _two_proportion_design(control_rate, treatment_rate, alpha)
    return _normal_power(delta, users_per_arm, sd_null, sd_alternative, alpha)


def two_proportion_sample_size(
    control_rate: float, treatment_rate: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Minimum users per arm for the pooled z-test to reach ``power`` (σ₀, σ₁ as in
    ``two_proportion_power``): n = ⌈(z_{1−α/2}σ₀ + z_{power}σ₁)²/δ²⌉ (Fleiss), lowered by one
    when the far rejection tail already supplies the missing power.
    """
    delta, sd_null, sd_alternative = _two_proportion_design(control_rate, treatment_rate, alpha)
    return _normal_sample_size(delta, sd_null, sd_alternative, alpha, power)


def two_mean_power(
    std_dev: float, difference: float, users_per_arm: float, alpha: float = 0.05
) -> float:
    """Power of the two-sided two-sample z-test of means, per-user sd σ in both arms.

    power = Φ(|δ|√(n/2)/σ − z_{1−α/2}) + Φ(−|δ|√(n/2)/σ − z_{1−α/2}).
    """
    _check_mean_design(std_dev, difference, alpha)
    sd = std_dev * math.sqrt(2.0)
    return _normal_power(difference, users_per_arm, sd, sd, alpha)


def two_mean_sample_size(
    std_dev: float, difference: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Minimum users per arm to detect a difference δ of means with per-user sd σ:
    n = ⌈2σ²(z_{1−α/2} + z_{power})²/δ²⌉ (Kohavi's rule of thumb n ≈ 16σ²/δ² at α = 0.05, 80 %).
    """
    _check_mean_design(std_dev, difference, alpha)
    sd = std_dev * math.sqrt(2.0)
    return _normal_sample_size(difference, sd, sd, alpha, power)


# --------------------------------------------------------------------------- CUPED


def cuped_theta(outcome: ArrayLike, covariate: ArrayLike) -> float:
    """θ = Cov(Y, X)/Var(X), the slope that minimises Var(Y − θX) (Deng et al., WSDM 2013)."""
    y, x = _paired_arrays(outcome, covariate)
    x_centred = x - x.mean()
    return float(np.dot(x_centred, y - y.mean()) / np.dot(x_centred, x_centred))


def cuped_adjust(
    outcome: ArrayLike,
    covariate: ArrayLike,
    theta: float | None = None,
    covariate_mean: float | None = None,
) -> CupedAdjustment:
    """CUPED: Y_cv = Y − θ(X − X̄), with θ = Cov(Y, X)/Var(X) unless given.

    variance reduction = 1 − Var(Y_cv)/Var(Y), which equals ρ²(Y, X) when θ and X̄ come from the
    same data. In an experiment, estimate θ and X̄ on all arms pooled (or pass them), then compare
    arms on Y_cv. X must be measured before assignment (a pre-period value of the same metric is
    ideal) so the treatment cannot move it; the adjustment then keeps the effect unbiased.
    """
    y, x = _paired_arrays(outcome, covariate)
    slope = cuped_theta(y, x) if theta is None else float(theta)
    centre = float(x.mean()) if covariate_mean is None else float(covariate_mean)
    adjusted = y - slope * (x - centre)
    outcome_variance = float(y.var(ddof=1))
    reduction = (
        0.0 if outcome_variance == 0 else 1.0 - float(adjusted.var(ddof=1)) / outcome_variance
    )
    return CupedAdjustment(slope, centre, adjusted, reduction)


# --------------------------------------------------------------------------- helpers


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (got {alpha})")


def _check_same_kind(control: ArmSummary, treatment: ArmSummary) -> None:
    if type(control) is not type(treatment):
        raise TypeError(_mixed_kinds_message(control, treatment))


def _mixed_kinds_message(control: object, treatment: object) -> str:
    return (
        "control and treatment must both be RateSummary or both MeanSummary "
        f"(got {type(control).__name__} and {type(treatment).__name__})"
    )


def _z_critical(alpha: float) -> float:
    return float(special.ndtri(1.0 - alpha / 2.0))


def _two_sided_normal_p(z: float) -> float:
    return min(1.0, 2.0 * float(special.ndtr(-abs(z))))


def _standard_error_of_difference(control: ArmSummary, treatment: ArmSummary) -> float:
    return math.sqrt(control.variance / control.users + treatment.variance / treatment.users)


def _beta_mean(parameters: tuple[float, float]) -> float:
    a, b = parameters
    return a / (a + b)


def _beta_variance(parameters: tuple[float, float]) -> float:
    a, b = parameters
    return a * b / ((a + b) ** 2 * (a + b + 1.0))


def _probability_beta_exceeds(x: tuple[float, float], y: tuple[float, float]) -> float:
    """P(X > Y) for independent X ~ Beta(x), Y ~ Beta(y)."""
    # Integrating over the quantiles of the narrower distribution keeps the integrand nearly
    # flat; over the wider one it could be a step narrower than quad's first subdivision.
    if _beta_variance(x) <= _beta_variance(y):
        return min(1.0, max(0.0, _quantile_integral(outer=x, inner=y)))
    return min(1.0, max(0.0, 1.0 - _quantile_integral(outer=y, inner=x)))


def _quantile_integral(outer: tuple[float, float], inner: tuple[float, float]) -> float:
    """∫₀¹ F_inner(F_outer⁻¹(u)) du = P(Inner < Outer)."""

    def inner_cdf_at_outer_quantile(u: float) -> float:
        return float(special.betainc(*inner, special.betaincinv(*outer, u)))

    value, _ = integrate.quad(
        inner_cdf_at_outer_quantile, 0.0, 1.0, epsabs=1e-12, epsrel=1e-10, limit=200
    )
    return float(value)


def _as_p_values(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError("p-values must be a flat sequence")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must lie in [0, 1] (got {p.tolist()})")
    return p


def _unsort(sorted_values: np.ndarray, order: np.ndarray) -> list[float]:
    result = np.empty_like(sorted_values)
    result[order] = sorted_values
    values: list[float] = result.tolist()  # a flat float array
    return values


def _two_proportion_design(
    control_rate: float, treatment_rate: float, alpha: float
) -> tuple[float, float, float]:
    _check_alpha(alpha)
    for name, rate in (("control_rate", control_rate), ("treatment_rate", treatment_rate)):
        if not 0 < rate < 1:
            raise ValueError(f"{name} must lie strictly between 0 and 1 (got {rate})")
    if control_rate == treatment_rate:
        raise ValueError("control_rate and treatment_rate are equal: there is no effect to detect")
    mean_rate = (control_rate + treatment_rate) / 2.0
    sd_null = math.sqrt(2.0 * mean_rate * (1.0 - mean_rate))
    sd_alternative = math.sqrt(
        control_rate * (1.0 - control_rate) + treatment_rate * (1.0 - treatment_rate)
    )
    return treatment_rate - control_rate, sd_null, sd_alternative


def _check_mean_design(std_dev: float, difference: float, alpha: float) -> None:
    _check_alpha(alpha)
    if not (math.isfinite(std_dev) and std_dev > 0):
        raise ValueError(f"std_dev must be positive and finite (got {std_dev})")
    if not math.isfinite(difference) or difference == 0:
        raise ValueError(f"difference must be finite and non-zero (got {difference})")


def _normal_power(
    delta: float, users_per_arm: float, sd_null: float, sd_alternative: float, alpha: float
) -> float:
    """Φ((|δ|√n − z·σ₀)/σ₁) + Φ((−|δ|√n − z·σ₀)/σ₁): both rejection tails of a two-sided test."""
    if users_per_arm <= 0:
        raise ValueError(f"users_per_arm must be positive (got {users_per_arm})")
    shift = abs(delta) * math.sqrt(users_per_arm)
    critical = _z_critical(alpha) * sd_null
    return float(
        special.ndtr((shift - critical) / sd_alternative)
        + special.ndtr((-shift - critical) / sd_alternative)
    )


def _normal_sample_size(
    delta: float, sd_null: float, sd_alternative: float, alpha: float, power: float
) -> int:
    if not 0 < power < 1:
        raise ValueError(f"power must lie strictly between 0 and 1 (got {power})")
    root_n = (_z_critical(alpha) * sd_null + float(special.ndtri(power)) * sd_alternative) / abs(
        delta
    )
    users = max(1, math.ceil(max(root_n, 0.0) ** 2))
    # The closed form ignores the far tail, so it can overshoot by one; never undershoots.
    while users > 1 and _normal_power(delta, users - 1, sd_null, sd_alternative, alpha) >= power:
        users -= 1
    while _normal_power(delta, users, sd_null, sd_alternative, alpha) < power:
        users += 1
    return users


def _paired_arrays(outcome: ArrayLike, covariate: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(outcome, dtype=float)
    x = np.asarray(covariate, dtype=float)
    if y.ndim != 1 or y.shape != x.shape:
        raise ValueError(
            f"outcome and covariate must be flat and of equal length (got {y.shape}, {x.shape})"
        )
    if y.size < 2:
        raise ValueError("CUPED needs at least 2 users")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(x))):
        raise ValueError("outcome and covariate must be finite")
    if np.all(x == x[0]):
        raise ValueError("the covariate is constant, so it cannot explain any variance")
    return y, x
