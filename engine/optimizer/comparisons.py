"""Comparisons of arms on one outcome: the machinery shared by timing, segmentation, holdout
incrementality and the recommendation.

Outcomes: ``"conversion"`` is the per-user 0/1 ``converted`` (a rate: two-proportion z-test,
Beta-Binomial posterior); ``"revenue"`` is revenue per user (a mean: Welch t-test, normal
posterior), CUPED-adjusted when ``pre_value`` is present (θ and X̄ estimated on all arms of
the rows compared — a trigger, or one segment of it). Lifts and tests are computed by
``engine.optimizer.stats``; comparisons are intent-to-treat: arms are who was *assigned*, not who
was sent, because conditioning on a post-assignment event (a send that suppression allowed)
compares groups that are no longer alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from engine.optimizer.contract import Outcome
from engine.optimizer.labels import ALL_SENDS, HOLDOUT
from engine.optimizer.stats import (
    ArmSummary,
    MeanSummary,
    ProportionTest,
    PValueCorrection,
    RateSummary,
    WelchTest,
    adjust_p_values,
    beta_binomial_comparison,
    cuped_adjust,
    msprt,
    normal_posterior_comparison,
    relative_lift,
    two_proportion_ztest,
    welch_ttest,
)

__all__ = ["BEST_COLUMNS", "COMPARISON_COLUMNS"]

COMPARISON_COLUMNS: Final = (
    "variant",
    "control",
    "users",
    "value",
    "abs_lift",
    "abs_ci_low",
    "abs_ci_high",
    "rel_lift",
    "rel_ci_low",
    "rel_ci_high",
    "p_value",
    "p_value_corrected",
    "significant",
    "chance_to_beat_control",
    "expected_loss",
    "seq_ci_low",
    "seq_ci_high",
    "cuped_variance_reduction",
)
"""Columns of every comparison table (after the grouping keys). ``value`` is the arm's raw rate
or mean; lifts are treatment − control (on CUPED-adjusted values for revenue with a covariate);
``expected_loss`` = E[max(θ_c − θ_t, 0)], what shipping the treatment costs if it is worse;
``seq_ci_*`` the mSPRT confidence sequence with τ = 10 % of the control value (as in
``analyze_arms``); the control row has NaN in every comparison field."""

# The mixing sd of the mSPRT as a share of the control value, the same as ``analyze_arms``.
_EXPECTED_RELATIVE_LIFT: Final = 0.1

BEST_COLUMNS: Final = (
    "leader",
    "leader_value",
    "runner_up",
    "runner_up_value",
    "p_value_corrected",
    "comparisons",
    "best",
)
"""Columns of a best-variant row (``best_variant``, ``SegmentationResult.best``)."""


def outcome_values(group: pd.DataFrame, outcome: Outcome, cuped: bool) -> tuple[np.ndarray, float]:
    """Per-user outcome values (CUPED-adjusted revenue when possible) and the variance reduction.

    θ and X̄ are estimated on all rows of the group, every arm pooled, so each arm is adjusted by
    the same line and the difference between arms stays unbiased.
    """
    if outcome == "conversion":
        return group["converted"].to_numpy(float), math.nan
    revenue = group["revenue"].to_numpy(float)
    if not cuped or "pre_value" not in group.columns or len(group) < 2:
        return revenue, math.nan
    try:
        adjustment = cuped_adjust(revenue, group["pre_value"].to_numpy(float))
    except ValueError:
        return revenue, math.nan  # a constant covariate explains nothing
    if not math.isfinite(adjustment.theta):
        return revenue, math.nan
    return adjustment.adjusted, adjustment.variance_reduction


def arm_summary(values: np.ndarray, outcome: Outcome) -> ArmSummary | None:
    if outcome == "conversion":
        return RateSummary(int(values.size), int(values.sum())) if values.size >= 1 else None
    return MeanSummary.from_values(values) if values.size >= 2 else None


def group_comparisons(
    group: pd.DataFrame,
    arms: Sequence[str],
    outcome: Outcome,
    alpha: float,
    correction: PValueCorrection,
    cuped: bool,
    pool_sends: bool = False,
) -> list[dict[str, Any]]:
    """``COMPARISON_COLUMNS`` rows for ``arms`` (control first) within ``group``; with
    ``pool_sends`` an extra ``ALL_SENDS`` arm pools every non-holdout row."""
    raw = group["converted" if outcome == "conversion" else "revenue"].to_numpy(float)
    analysed, reduction = outcome_values(group, outcome, cuped)
    variant = group["variant"].to_numpy()
    masks = [(name, variant == name) for name in arms]
    if pool_sends:
        masks.append((ALL_SENDS, variant != HOLDOUT))
    control_name, control_mask = masks[0]
    control = arm_summary(analysed[control_mask], outcome)
    rows: list[dict[str, Any]] = []
    for name, mask in masks:
        row: dict[str, Any] = {
            "variant": name,
            "control": control_name,
            "users": int(mask.sum()),
            "value": float(raw[mask].mean()) if mask.any() else math.nan,
            **dict.fromkeys(COMPARISON_COLUMNS[4:], math.nan),
            "significant": False,
            "cuped_variance_reduction": reduction,
        }
        treatment = arm_summary(analysed[mask], outcome)
        if name != control_name and control is not None and treatment is not None:
            row.update(_compare(control, treatment, alpha))
        rows.append(row)
    tested = [index for index, row in enumerate(rows) if math.isfinite(row["p_value"])]
    corrected = adjust_p_values([rows[index]["p_value"] for index in tested], correction)
    for index, p_value in zip(tested, corrected, strict=True):
        rows[index]["p_value_corrected"] = p_value
        rows[index]["significant"] = p_value <= alpha
    return rows


def _compare(control: ArmSummary, treatment: ArmSummary, alpha: float) -> dict[str, float]:
    """Lifts, test, Bayesian comparison and mSPRT interval of treatment against control."""
    test: ProportionTest | WelchTest
    if isinstance(control, RateSummary) and isinstance(treatment, RateSummary):
        test = two_proportion_ztest(control, treatment, alpha)
        bayes = beta_binomial_comparison(control, treatment)
    elif isinstance(control, MeanSummary) and isinstance(treatment, MeanSummary):
        test = welch_ttest(control, treatment, alpha)
        bayes = normal_posterior_comparison(control, treatment)
    else:  # arm_summary builds both arms of one group from the same outcome
        raise TypeError("control and treatment summaries are of different kinds")
    relative = relative_lift(control, treatment, alpha)
    mixing_variance = (_EXPECTED_RELATIVE_LIFT * control.mean) ** 2
    if mixing_variance > 0:
        sequential = msprt(control, treatment, mixing_variance, alpha)
        seq_low, seq_high = sequential.ci_low, sequential.ci_high
    else:
        # τ = 0 puts the whole mixture on "no effect": the interval would be unbounded.
        seq_low = seq_high = math.nan
    return {
        "abs_lift": test.difference,
        "abs_ci_low": test.ci_low,
        "abs_ci_high": test.ci_high,
        "rel_lift": relative.estimate,
        "rel_ci_low": relative.ci_low,
        "rel_ci_high": relative.ci_high,
        "p_value": test.p_value,
        "chance_to_beat_control": bayes.chance_to_beat_control,
        "expected_loss": bayes.expected_loss_choosing_treatment,
        "seq_ci_low": seq_low,
        "seq_ci_high": seq_high,
    }


def cell_summaries(
    group: pd.DataFrame, arms: Sequence[str], outcome: Outcome
) -> dict[str, ArmSummary]:
    values = group["converted" if outcome == "conversion" else "revenue"].to_numpy(float)
    variant = group["variant"].to_numpy()
    summaries = {name: arm_summary(values[variant == name], outcome) for name in arms}
    return {name: summary for name, summary in summaries.items() if summary is not None}


def cell_moments(summary: ArmSummary) -> tuple[float, float]:
    """(ȳ, Var(ȳ)) of a cell: Agresti–Caffo p̃ for rates, (ȳ, s²/n) for means."""
    if isinstance(summary, RateSummary):
        adjusted = (summary.conversions + 1.0) / (summary.users + 2.0)
        return adjusted, adjusted * (1.0 - adjusted) / (summary.users + 2.0)
    return summary.mean, summary.variance / summary.users


def best_variant(
    group: pd.DataFrame,
    variants: Sequence[str],
    outcome: Outcome,
    alpha: float,
    correction: PValueCorrection,
    cuped: bool,
) -> dict[str, Any]:
    """Leader, runner-up and the corrected pairwise tests among the non-holdout variants."""
    candidates = [variant for variant in variants if variant != HOLDOUT]
    analysed, _ = outcome_values(group, outcome, cuped)
    raw = group["converted" if outcome == "conversion" else "revenue"].to_numpy(float)
    variant_of_row = group["variant"].to_numpy()
    observed = {
        name: float(raw[variant_of_row == name].mean())
        for name in candidates
        if (variant_of_row == name).any()
    }
    empty: dict[str, Any] = {
        "leader": None,
        "leader_value": math.nan,
        "runner_up": None,
        "runner_up_value": math.nan,
        "p_value_corrected": math.nan,
        "comparisons": 0,
        "best": None,
    }
    if not observed:
        return empty
    ranked = sorted(observed, key=lambda name: -observed[name])
    leader = ranked[0]
    result = {**empty, "leader": leader, "leader_value": observed[leader]}
    if len(ranked) < 2:
        return result
    result.update(runner_up=ranked[1], runner_up_value=observed[ranked[1]])
    summaries = {
        name: arm_summary(analysed[variant_of_row == name], outcome) for name in candidates
    }
    pairs = [
        (first, second)
        for index, first in enumerate(candidates)
        for second in candidates[index + 1 :]
    ]
    p_values = [_pair_p_value(summaries[first], summaries[second]) for first, second in pairs]
    finite = [index for index, p in enumerate(p_values) if math.isfinite(p)]
    corrected = dict(
        zip(finite, adjust_p_values([p_values[index] for index in finite], correction), strict=True)
    )
    # An arm without users (or a revenue arm with one) cannot be beaten on evidence: p = 1.
    leader_pairs = [corrected.get(index, 1.0) for index, pair in enumerate(pairs) if leader in pair]
    decisive = max(leader_pairs)
    result.update(
        p_value_corrected=decisive,
        comparisons=len(pairs),
        best=leader if decisive <= alpha and len(observed) == len(candidates) else None,
    )
    return result


def _pair_p_value(first: ArmSummary | None, second: ArmSummary | None) -> float:
    if first is None or second is None:
        return math.nan
    if isinstance(first, RateSummary) and isinstance(second, RateSummary):
        return two_proportion_ztest(first, second).p_value
    if isinstance(first, MeanSummary) and isinstance(second, MeanSummary):
        return welch_ttest(first, second).p_value
    raise TypeError("pairwise summaries are of different kinds")
