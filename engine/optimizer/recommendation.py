"""The guarded recommendation of a variant per segment: a variant only when every guardrail
(candidates, minimum sample, sample ratio, corrected significance) passes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import pandas as pd

from engine.optimizer.comparisons import best_variant
from engine.optimizer.contract import (
    ExposureError,
    Outcome,
    check_options,
    ordered_variants,
    validate_exposures,
)
from engine.optimizer.labels import HOLDOUT
from engine.optimizer.stats import PValueCorrection, sample_ratio_mismatch

__all__ = ["GuardrailCheck", "ReasonCode", "Recommendation", "recommend"]

ReasonCode = Literal[
    "recommended",
    "single_candidate",
    "insufficient_sample",
    "sample_ratio_mismatch",
    "not_significant",
]


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail of a recommendation: its name, whether it passed, and why."""

    name: Literal["candidates", "min_sample", "srm", "significance"]
    passed: bool
    detail: str


@dataclass(frozen=True)
class Recommendation:
    """The verdict for one segment of one trigger.

    ``variant`` is the recommended variant, or None; ``reason`` is "recommended" or the first
    failed guardrail (in the order of ``checks``); ``detail`` says it in one sentence. The
    evidence is kept whatever the verdict: ``leader``/``runner_up`` and their observed values,
    ``p_value_corrected`` (the leader's largest corrected p against another candidate),
    ``srm_p_value`` (the smaller of the segment's and the trigger's) and ``smallest_arm`` (users
    of the smallest candidate in the segment).
    """

    trigger_id: str
    segment: str
    outcome: Outcome
    variant: str | None
    reason: ReasonCode
    detail: str
    leader: str | None
    leader_value: float
    runner_up: str | None
    runner_up_value: float
    p_value_corrected: float
    srm_p_value: float
    smallest_arm: int
    checks: tuple[GuardrailCheck, ...]


def recommend(
    exposures: pd.DataFrame,
    outcome: Outcome = "conversion",
    min_users_per_arm: int = 1_000,
    srm_threshold: float = 0.001,
    alpha: float = 0.05,
    correction: PValueCorrection = "holm",
    weights: Mapping[str, float] | None = None,
    holdout_share: float | None = None,
    cuped: bool = True,
) -> tuple[Recommendation, ...]:
    """One ``Recommendation`` per (trigger, segment): a variant only when every guardrail passes.

    Candidates are the non-holdout variants of the trigger. Guardrails, in order (the first that
    fails is the ``reason``):

    1. candidates: at least 2 (else "single_candidate": there is nothing to choose);
    2. min_sample: every candidate has ≥ ``min_users_per_arm`` users in the segment
       (else "insufficient_sample");
    3. srm: the sample-ratio chi-square (``sample_ratio_mismatch``) of the segment's users per
       variant *and* of the whole trigger's has p > ``srm_threshold`` (else
       "sample_ratio_mismatch"). Intended split: ``weights`` over the non-holdout variants (equal
       if None) scaled by 1 − ``holdout_share``, the holdout getting ``holdout_share``. With
       ``holdout_share`` None the holdout is left out of the test: among assigned customers the
       variants must still follow ``weights`` exactly, whatever the holdout share;
    4. significance: the leader (highest observed ``outcome``) beats every other candidate with
       a ``correction``-corrected p ≤ ``alpha``, the correction running over all k(k − 1)/2
       candidate pairs of the segment (see ``segmentation``) (else "not_significant").

    When the candidates' effects are equal, step 4 names a variant with probability ≤ α.
    """
    check_options(alpha, (outcome,))
    if min_users_per_arm < 1:
        raise ValueError(f"min_users_per_arm must be at least 1 (got {min_users_per_arm})")
    if not 0 < srm_threshold < 1:
        raise ValueError(f"srm_threshold must lie strictly between 0 and 1 (got {srm_threshold})")
    if holdout_share is not None and not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must lie strictly between 0 and 1 (got {holdout_share})")
    frame = validate_exposures(exposures)
    recommendations: list[Recommendation] = []
    for trigger_id, trigger_rows in frame.groupby("trigger_id", sort=True):
        variants = ordered_variants(trigger_rows["variant"].unique())
        candidates = [variant for variant in variants if variant != HOLDOUT]
        srm_arms, srm_weights = _srm_design(candidates, weights, holdout_share, str(trigger_id))
        trigger_srm = _srm_p_value(trigger_rows, srm_arms, srm_weights)
        for segment in sorted(trigger_rows["segment"].unique()):
            group = trigger_rows[trigger_rows["segment"] == segment]
            segment_srm = _srm_p_value(group, srm_arms, srm_weights)
            best = best_variant(group, variants, outcome, alpha, correction, cuped)
            counts = group["variant"].value_counts()
            users = {variant: int(counts.get(variant, 0)) for variant in candidates}
            checks = _guardrail_checks(
                candidates,
                users,
                min_users_per_arm,
                (segment_srm, trigger_srm),
                srm_threshold,
                best,
                alpha,
                correction,
            )
            failed = next((check for check in checks if not check.passed), None)
            reason: ReasonCode = "recommended" if failed is None else _REASONS[failed.name]
            if failed is None:
                detail = _recommended_detail(best, outcome, correction)
            else:
                detail = failed.detail
            recommendations.append(
                Recommendation(
                    trigger_id=str(trigger_id),
                    segment=str(segment),
                    outcome=outcome,
                    variant=best["leader"] if failed is None else None,
                    reason=reason,
                    detail=detail,
                    leader=best["leader"],
                    leader_value=best["leader_value"],
                    runner_up=best["runner_up"],
                    runner_up_value=best["runner_up_value"],
                    p_value_corrected=best["p_value_corrected"],
                    srm_p_value=min(segment_srm, trigger_srm),
                    smallest_arm=min(users.values(), default=0),
                    checks=checks,
                )
            )
    return tuple(recommendations)


_REASONS: Final[dict[str, ReasonCode]] = {
    "candidates": "single_candidate",
    "min_sample": "insufficient_sample",
    "srm": "sample_ratio_mismatch",
    "significance": "not_significant",
}


def _srm_design(
    candidates: Sequence[str],
    weights: Mapping[str, float] | None,
    holdout_share: float | None,
    trigger_id: str,
) -> tuple[list[str], list[float]]:
    """The arms the SRM test counts and their intended shares (see ``recommend``)."""
    if weights is None:
        shares = [1.0 / len(candidates)] * len(candidates) if candidates else []
    else:
        if set(weights) != set(candidates):
            raise ExposureError(
                f"weights must name exactly the non-holdout variants of trigger {trigger_id!r}: "
                f"{', '.join(candidates)} (got {', '.join(sorted(weights))})"
            )
        total = math.fsum(weights.values())
        shares = [weights[name] / total for name in candidates]
    if holdout_share is None:
        return list(candidates), shares
    return [HOLDOUT, *candidates], [
        holdout_share,
        *(share * (1.0 - holdout_share) for share in shares),
    ]


def _srm_p_value(group: pd.DataFrame, arms: Sequence[str], shares: Sequence[float]) -> float:
    counts = group["variant"].value_counts()
    observed = [int(counts.get(name, 0)) for name in arms]
    if len(arms) < 2 or sum(observed) == 0:
        return 1.0  # one arm (or none) cannot be split wrongly
    return sample_ratio_mismatch(observed, shares).p_value


def _guardrail_checks(
    candidates: Sequence[str],
    users: Mapping[str, int],
    min_users_per_arm: int,
    srm_p_values: tuple[float, float],
    srm_threshold: float,
    best: Mapping[str, Any],
    alpha: float,
    correction: PValueCorrection,
) -> tuple[GuardrailCheck, ...]:
    small = [name for name in candidates if users[name] < min_users_per_arm]
    segment_srm, trigger_srm = srm_p_values
    if len(candidates) < 2:
        candidate_detail = (
            f"only {len(candidates)} non-holdout variant(s) ({', '.join(candidates) or 'none'}); "
            "nothing to choose between"
        )
    else:
        candidate_detail = f"{len(candidates)} candidates: {', '.join(candidates)}"
    if small:
        sample_detail = (
            "too few users: "
            + ", ".join(f"{name} has {users[name]:,}" for name in small)
            + f"; need ≥ {min_users_per_arm:,} per arm"
        )
    else:
        sample_detail = f"every candidate has ≥ {min_users_per_arm:,} users"
    srm_failures = [
        f"{level} split p = {p:.2g}"
        for level, p in (("segment", segment_srm), ("trigger", trigger_srm))
        if p <= srm_threshold
    ]
    srm_detail = (
        "sample ratio mismatch (" + ", ".join(srm_failures) + f" ≤ {srm_threshold:g}): "
        "the split differs from the design, so the arms may not be comparable"
        if srm_failures
        else f"split as designed (segment p = {segment_srm:.2g}, trigger p = {trigger_srm:.2g})"
    )
    leader, runner_up, decisive = best["leader"], best["runner_up"], best["p_value_corrected"]
    significant = best["best"] is not None
    if significant:
        significance_detail = (
            f"{leader} beats every other candidate ({correction} p ≤ {decisive:.2g})"
        )
    elif leader is None or runner_up is None:
        significance_detail = "fewer than 2 candidates with users: no comparison"
    else:
        significance_detail = (
            f"{leader} leads ({best['leader_value']:.4g} vs {best['runner_up_value']:.4g} for "
            f"{runner_up}) but does not beat every other candidate "
            f"({correction}-corrected p = {decisive:.2g} > {alpha:g})"
        )
    return (
        GuardrailCheck("candidates", len(candidates) >= 2, candidate_detail),
        GuardrailCheck("min_sample", not small and len(candidates) >= 1, sample_detail),
        GuardrailCheck("srm", not srm_failures, srm_detail),
        GuardrailCheck("significance", significant, significance_detail),
    )


def _recommended_detail(best: Mapping[str, Any], outcome: Outcome, correction: str) -> str:
    what = "converts" if outcome == "conversion" else "earns per user"
    return (
        f"{best['leader']} {what} {best['leader_value']:.4g} vs {best['runner_up_value']:.4g} "
        f"for the runner-up {best['runner_up']}, and beats every other candidate "
        f"({correction}-corrected p ≤ {best['p_value_corrected']:.2g})"
    )
