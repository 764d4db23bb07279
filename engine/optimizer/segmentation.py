"""Segmentation: segment × variant comparisons, the heterogeneous-effect test, and the best
variant per segment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from engine.optimizer.comparisons import (
    BEST_COLUMNS,
    COMPARISON_COLUMNS,
    best_variant,
    cell_moments,
    cell_summaries,
    group_comparisons,
)
from engine.optimizer.contract import Outcome, arms_with_control, check_options, validate_exposures
from engine.optimizer.stats import ArmSummary, PValueCorrection

__all__ = ["HeterogeneityTest", "SegmentationResult", "heterogeneity_test", "segmentation"]


@dataclass(frozen=True)
class HeterogeneityTest:
    """Multivariate Cochran's Q test that the treatment effects are equal in every segment.

    ``statistic`` Q, ``degrees_of_freedom`` (S − 1)(V − 1), ``p_value`` P(χ²_df ≥ Q); ``segments``
    is how many segments entered the test (those with every variant and a positive variance).
    NaN statistic and p-value when fewer than 2 segments or 2 variants are usable.
    """

    statistic: float
    degrees_of_freedom: int
    p_value: float
    segments: int
    variants: int


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """The segment × variant analysis of ``segmentation``.

    * ``table``: per trigger_id, segment, outcome and variant, the comparison with the control
      inside that segment (``COMPARISON_COLUMNS``), corrected across the segment's treatments;
    * ``heterogeneity``: per trigger_id and outcome, the ``HeterogeneityTest`` fields;
    * ``best``: per trigger_id, segment and outcome, the ``leader`` (highest observed value among
      the non-holdout variants), the ``runner_up``, their values, ``p_value_corrected`` (the
      largest corrected p-value of the leader against another candidate) and ``best`` (the
      leader when it beats every other candidate at level α, else None).
    """

    table: pd.DataFrame
    heterogeneity: pd.DataFrame
    best: pd.DataFrame


def segmentation(
    exposures: pd.DataFrame,
    control: str | None = None,
    outcomes: Sequence[Outcome] = ("conversion", "revenue"),
    alpha: float = 0.05,
    correction: PValueCorrection = "holm",
    cuped: bool = True,
) -> SegmentationResult:
    """Segment × variant comparisons, a heterogeneous-effect test and the best variant per segment.

    * table: inside each (trigger, segment), every variant against ``control`` (default as in
      ``timing``), ``correction`` across that segment's treatments;
    * heterogeneity: ``heterogeneity_test`` of the segment × variant cells per trigger, on the
      same control;
    * best: among the candidates (every non-holdout variant) of each segment, every pair is
      tested (z-test or Welch), ``correction`` is applied across the k(k − 1)/2 pairs of the
      segment, and the leader is the best variant when it beats every other candidate with a
      corrected p ≤ α. Holm over all pairs bounds the chance of any false "i beats j" claim in
      the segment by α, so a named best variant is wrong with probability at most α.
    """
    check_options(alpha, outcomes)
    frame = validate_exposures(exposures)
    table_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    best_rows: list[dict[str, Any]] = []
    for trigger_id, trigger_rows in frame.groupby("trigger_id", sort=True):
        arms = arms_with_control(trigger_rows["variant"].unique(), control, str(trigger_id))
        segments = sorted(trigger_rows["segment"].unique())
        for outcome in outcomes:
            cells: dict[str, dict[str, ArmSummary]] = {}
            for segment in segments:
                group = trigger_rows[trigger_rows["segment"] == segment]
                keys = {"trigger_id": trigger_id, "segment": segment, "outcome": outcome}
                for row in group_comparisons(group, arms, outcome, alpha, correction, cuped):
                    table_rows.append({**keys, **row})
                cells[segment] = cell_summaries(group, arms, outcome)
                best = best_variant(group, arms, outcome, alpha, correction, cuped)
                best_rows.append({**keys, **best})
            if any(arms[0] in row for row in cells.values()):
                test = heterogeneity_test(cells, arms[0])
            else:  # e.g. revenue with fewer than 2 control users in every segment
                test = HeterogeneityTest(math.nan, 0, math.nan, 0, len(arms))
            test_rows.append(
                {
                    "trigger_id": trigger_id,
                    "outcome": outcome,
                    "control": arms[0],
                    "statistic": test.statistic,
                    "degrees_of_freedom": test.degrees_of_freedom,
                    "p_value": test.p_value,
                    "segments": test.segments,
                    "variants": test.variants,
                }
            )
    return SegmentationResult(
        table=pd.DataFrame(
            table_rows, columns=["trigger_id", "segment", "outcome", *COMPARISON_COLUMNS]
        ),
        heterogeneity=pd.DataFrame(
            test_rows,
            columns=[
                "trigger_id",
                "outcome",
                "control",
                "statistic",
                "degrees_of_freedom",
                "p_value",
                "segments",
                "variants",
            ],
        ),
        best=pd.DataFrame(best_rows, columns=["trigger_id", "segment", "outcome", *BEST_COLUMNS]),
    )


def heterogeneity_test(
    cells: Mapping[str, Mapping[str, ArmSummary]], control: str
) -> HeterogeneityTest:
    """Multivariate Cochran's Q: are the effects against ``control`` the same in every segment?

    ``cells[segment][variant]`` is the arm summary of that cell. Per segment s and treatment j,
    dₛⱼ = ȳₛⱼ − ȳₛ꜀ with cell moments ȳ and v = Var(ȳ): for rates the Agresti–Caffo p̃ = (x + 1)/
    (n + 2), v = p̃(1 − p̃)/(n + 2) (finite even for 0 or n conversions); for means ȳ, v = s²/n.
    The effects of one segment share the control, so Σₛ = diag(vₛⱼ) + vₛ꜀·11ᵀ, Wₛ = Σₛ⁻¹;
    the common effect d̄ = (Σₛ Wₛ)⁻¹ Σₛ Wₛdₛ and
        Q = Σₛ (dₛ − d̄)ᵀ Wₛ (dₛ − d̄) ~ χ² with (S − 1)(V − 1) df under H₀: dₛ = d for all s.
    With one treatment this is Cochran's Q = Σₛ wₛ(dₛ − d̄)²; it equals the weighted residual
    sum of squares of the additive model ȳₛᵥ = aₛ + bᵥ (no segment × variant interaction). The
    scale is additive (absolute lift), the scale a decision between variants is made on.
    Segments missing a variant, or with a zero-variance cell, are left out.
    """
    variants = sorted({variant for row in cells.values() for variant in row})
    if control not in variants:
        raise ValueError(f"control {control!r} is in none of the cells")
    treatments = [variant for variant in variants if variant != control]
    usable: list[tuple[np.ndarray, np.ndarray]] = []
    for row in cells.values():
        if any(variant not in row for variant in variants):
            continue
        moments = {variant: cell_moments(summary) for variant, summary in row.items()}
        if any(variance <= 0 for _, variance in moments.values()):
            continue
        control_mean, control_variance = moments[control]
        effects = np.array([moments[t][0] - control_mean for t in treatments])
        covariance = np.diag([moments[t][1] for t in treatments]) + control_variance
        usable.append((effects, np.linalg.inv(covariance)))
    degrees_of_freedom = (len(usable) - 1) * len(treatments)
    if degrees_of_freedom < 1:
        return HeterogeneityTest(math.nan, 0, math.nan, len(usable), len(variants))
    weight_sum = sum(weights for _, weights in usable)
    common = np.linalg.solve(weight_sum, sum(weights @ effects for effects, weights in usable))
    statistic = float(
        sum((effects - common) @ weights @ (effects - common) for effects, weights in usable)
    )
    return HeterogeneityTest(
        statistic,
        degrees_of_freedom,
        float(special.chdtrc(degrees_of_freedom, statistic)),
        len(usable),
        len(variants),
    )
