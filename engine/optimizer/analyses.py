"""Experiment analyses over exposure frames: funnel, timing, segmentation, holdout incrementality,
and the guarded recommendation of a variant per segment.

Input contract (``validate_exposures`` checks it): a pandas DataFrame with one row per exposure,
i.e. one customer assigned in the experiment of one trigger, so (trigger_id, customer_id) is
unique. Columns:

* ``customer_id``, ``trigger_id``, ``variant`` — strings; the holdout variant is ``"holdout"``
  (``engine.optimizer.assignment.HOLDOUT``), every other variant is a treatment such as a send
  delay (``"1h"``, ``"24h"``);
* ``segment`` — optional string; without it every row is in the one segment ``ALL``;
* ``sent``, ``delivered``, ``opened``, ``clicked``, ``converted`` — booleans (or 0/1). A
  delivery needs a send, an open or a click needs a delivery, and a holdout row is never sent;
  ``converted`` may be true anywhere (holdout customers and non-clickers convert too);
* ``revenue`` — float, the revenue attributed to the exposure (0 when none);
* ``pre_value`` — optional float, a pre-period covariate (e.g. revenue in the 30 days before
  assignment) used by CUPED for the revenue outcome;
* ``hours_to_conversion`` — optional float, hours from exposure to conversion (NaN when the
  customer did not convert), used only by ``apply_attribution_window``.

Outcomes: ``"conversion"`` is the per-user 0/1 ``converted`` (a rate: two-proportion z-test,
Beta-Binomial posterior); ``"revenue"`` is revenue per user (a mean: Welch t-test, normal
posterior), CUPED-adjusted when ``pre_value`` is present (θ and X̄ estimated on all arms of
the rows compared — a trigger, or one segment of it). Lifts and tests are computed by
``engine.optimizer.stats``; comparisons are intent-to-treat: arms are who was *assigned*, not who
was sent, because conditioning on a post-assignment event (a send that suppression allowed)
compares groups that are no longer alike.

Every function is pure: frames in, new frames or frozen dataclasses out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from scipy import special

from engine.dsl.durations import parse_duration
from engine.optimizer.assignment import HOLDOUT
from engine.optimizer.stats import (
    ArmSummary,
    MeanSummary,
    PValueCorrection,
    RateSummary,
    adjust_p_values,
    beta_binomial_comparison,
    cuped_adjust,
    msprt,
    normal_posterior_comparison,
    relative_lift,
    sample_ratio_mismatch,
    two_proportion_ztest,
    welch_ttest,
)

__all__ = [
    "ALL",
    "ALL_SENDS",
    "COMPARISON_COLUMNS",
    "FLAG_COLUMNS",
    "STAGES",
    "ExposureError",
    "GuardrailCheck",
    "HeterogeneityTest",
    "Outcome",
    "ReasonCode",
    "Recommendation",
    "SegmentationResult",
    "apply_attribution_window",
    "funnel",
    "heterogeneity_test",
    "holdout_incrementality",
    "recommend",
    "segmentation",
    "timing",
    "validate_exposures",
]

Outcome = Literal["conversion", "revenue"]
ReasonCode = Literal[
    "recommended",
    "single_candidate",
    "insufficient_sample",
    "sample_ratio_mismatch",
    "not_significant",
]

ALL: Final = "(all)"
"""The variant label of pooled funnel rows, and the segment of frames without a segment column."""
ALL_SENDS: Final = "(all sends)"
"""The arm pooling every non-holdout variant in ``holdout_incrementality``."""

STAGES: Final = ("triggered", "sent", "delivered", "opened", "clicked", "converted")
FLAG_COLUMNS: Final = STAGES[1:]
REQUIRED_COLUMNS: Final = ("customer_id", "trigger_id", "variant", *FLAG_COLUMNS, "revenue")

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
_PAIR_COLUMNS: Final = ("trigger_id", "customer_id")


class ExposureError(ValueError):
    """The exposure frame breaks the input contract; the message names the column and rows."""


# --------------------------------------------------------------------------- results


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


# --------------------------------------------------------------------------- input


def validate_exposures(exposures: pd.DataFrame) -> pd.DataFrame:
    """Check the input contract (module docstring) and return a normalised copy.

    The copy has string ids, bool flags, float revenue (and pre_value), and a ``segment`` column
    (``ALL`` when the input has none). Raises ``ExposureError`` for missing columns, missing ids,
    flags that are not booleans or 0/1, non-finite revenue or pre_value, duplicate
    (trigger_id, customer_id) pairs, impossible funnels (delivered but not sent, opened or
    clicked but not delivered) and holdout rows that were sent.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in exposures.columns]
    if missing:
        raise ExposureError(
            f"exposures lack column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}"
            " (+ optional segment, pre_value, hours_to_conversion)"
        )
    # Positions in error messages and in the result are those of the input rows.
    frame = exposures.reset_index(drop=True)
    id_columns = ["customer_id", "trigger_id", "variant"]
    if "segment" in frame.columns:
        id_columns.append("segment")
    else:
        frame["segment"] = ALL
    for column in id_columns:
        missing_id = frame[column].isna()
        text = frame[column].astype(str)
        # Strip each distinct value once: ids repeat, and .str.strip() on every row is slow.
        blank = [value for value in pd.unique(text) if not value.strip()]
        empty = missing_id | text.isin(blank)
        if empty.any():
            raise ExposureError(f"column {column!r} is empty in {_rows(empty)}")
        frame[column] = text
    for column in FLAG_COLUMNS:
        frame[column] = _as_flags(frame[column], column)
    for column in ("revenue", "pre_value"):
        if column in frame.columns:
            frame[column] = _as_finite(frame[column], column)

    duplicated = frame.duplicated(list(_PAIR_COLUMNS), keep=False)
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise ExposureError(
            f"{int(duplicated.sum())} rows share a (trigger_id, customer_id) pair, e.g. "
            f"({first['trigger_id']!r}, {first['customer_id']!r}); give one row per exposure"
        )
    for later, earlier in (
        ("delivered", "sent"),
        ("opened", "delivered"),
        ("clicked", "delivered"),
    ):
        impossible = frame[later] & ~frame[earlier]
        if impossible.any():
            raise ExposureError(f"{later} without {earlier} in {_rows(impossible)}")
    sent_holdout = (frame["variant"] == HOLDOUT) & frame["sent"]
    if sent_holdout.any():
        raise ExposureError(f"{HOLDOUT!r} rows must not be sent, but {_rows(sent_holdout)} were")
    return frame


def apply_attribution_window(exposures: pd.DataFrame, window_hours: float) -> pd.DataFrame:
    """Count only conversions within ``window_hours`` of the exposure.

    converted′ = converted ∧ hours_to_conversion ≤ window; revenue′ = revenue if converted′ else 0.
    Needs the ``hours_to_conversion`` column; a converted row without it is an ``ExposureError``.
    """
    if not (math.isfinite(window_hours) and window_hours > 0):
        raise ValueError(f"window_hours must be positive and finite (got {window_hours})")
    frame = validate_exposures(exposures)
    if "hours_to_conversion" not in frame.columns:
        raise ExposureError("an attribution window needs the column hours_to_conversion")
    hours = pd.to_numeric(frame["hours_to_conversion"], errors="coerce").to_numpy(float)
    unknown = frame["converted"].to_numpy() & ~np.isfinite(hours)
    if unknown.any():
        raise ExposureError(f"hours_to_conversion is missing for converted {_rows(unknown)}")
    inside = frame["converted"].to_numpy() & (hours <= window_hours)
    frame["converted"] = inside
    frame["revenue"] = np.where(inside, frame["revenue"].to_numpy(float), 0.0)
    return frame


# --------------------------------------------------------------------------- funnel


def funnel(exposures: pd.DataFrame) -> pd.DataFrame:
    """The funnel triggered → sent → delivered → opened → clicked → converted per trigger.

    One row per trigger_id, variant (``ALL`` for every exposure of the trigger, then each
    variant) and stage. ``users`` counts the exposures that reached the stage *and every earlier
    stage* (so the funnel never widens); ``flagged`` counts every exposure with the stage's flag
    (it also holds conversions without a click, e.g. in the holdout). With uₖ the users at stage
    k: rate_from_previous = uₖ/uₖ₋₁, rate_from_triggered = uₖ/u₀, drop_off = uₖ₋₁ − uₖ,
    drop_off_rate = 1 − uₖ/uₖ₋₁ (NaN when uₖ₋₁ = 0; the first stage has rate 1 and drop-off 0).
    """
    frame = validate_exposures(exposures)
    rows: list[dict[str, Any]] = []
    for trigger_id, group in frame.groupby("trigger_id", sort=True):
        flags = group[list(FLAG_COLUMNS)].to_numpy(bool)
        everyone = np.ones((len(group), 1), bool)
        reached = np.hstack([everyone, np.logical_and.accumulate(flags, axis=1)])
        flagged = np.hstack([everyone, flags])
        variant_of_row = group["variant"].to_numpy()
        for variant in [ALL, *_ordered_variants(variant_of_row)]:
            chosen = slice(None) if variant == ALL else variant_of_row == variant
            users = reached[chosen].sum(axis=0)
            flag_counts = flagged[chosen].sum(axis=0)
            for stage_index, stage in enumerate(STAGES):
                previous = users[max(stage_index - 1, 0)]
                current = users[stage_index]
                rate = current / previous if previous else math.nan
                rows.append(
                    {
                        "trigger_id": trigger_id,
                        "variant": variant,
                        "stage": stage,
                        "users": int(current),
                        "flagged": int(flag_counts[stage_index]),
                        "rate_from_previous": rate,
                        "rate_from_triggered": current / users[0] if users[0] else math.nan,
                        "drop_off": int(previous - current),
                        "drop_off_rate": 1.0 - rate,
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "trigger_id",
            "variant",
            "stage",
            "users",
            "flagged",
            "rate_from_previous",
            "rate_from_triggered",
            "drop_off",
            "drop_off_rate",
        ],
    )


# --------------------------------------------------------------------------- timing


def timing(
    exposures: pd.DataFrame,
    control: str | None = None,
    outcomes: Sequence[Outcome] = ("conversion", "revenue"),
    alpha: float = 0.05,
    correction: PValueCorrection = "holm",
    cuped: bool = True,
    attribution_window_hours: float | None = None,
) -> pd.DataFrame:
    """Outcome per delay variant of each trigger, each variant against ``control``.

    ``control`` defaults to the holdout when the trigger has one, else the first variant (delays
    shortest first when every variant name is a duration such as 1h, else by name). With
    ``attribution_window_hours`` only conversions within the window count
    (``apply_attribution_window``). Columns: trigger_id, outcome, then ``COMPARISON_COLUMNS``,
    the control first. Conversion: pooled two-proportion z-test, Wald CI, Beta(1, 1) posterior;
    revenue: Welch t-test and normal posterior on Y − θ(X − X̄) (CUPED, θ = Cov(Y, X)/Var(X) over
    the trigger's rows, every arm pooled) when ``cuped`` and ``pre_value`` is present. p_value_corrected applies
    ``correction`` across the trigger's treatment variants, per outcome.
    """
    _check_options(alpha, outcomes)
    frame = (
        validate_exposures(exposures)
        if attribution_window_hours is None
        else apply_attribution_window(exposures, attribution_window_hours)
    )
    rows: list[dict[str, Any]] = []
    for trigger_id, group in frame.groupby("trigger_id", sort=True):
        arms = _arms_with_control(group["variant"].unique(), control, str(trigger_id))
        for outcome in outcomes:
            for row in _group_comparisons(group, arms, outcome, alpha, correction, cuped):
                rows.append({"trigger_id": trigger_id, "outcome": outcome, **row})
    return pd.DataFrame(rows, columns=["trigger_id", "outcome", *COMPARISON_COLUMNS])


# --------------------------------------------------------------------------- segmentation


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
    _check_options(alpha, outcomes)
    frame = validate_exposures(exposures)
    table_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    best_rows: list[dict[str, Any]] = []
    for trigger_id, trigger_rows in frame.groupby("trigger_id", sort=True):
        arms = _arms_with_control(trigger_rows["variant"].unique(), control, str(trigger_id))
        segments = sorted(trigger_rows["segment"].unique())
        for outcome in outcomes:
            cells: dict[str, dict[str, ArmSummary]] = {}
            for segment in segments:
                group = trigger_rows[trigger_rows["segment"] == segment]
                keys = {"trigger_id": trigger_id, "segment": segment, "outcome": outcome}
                for row in _group_comparisons(group, arms, outcome, alpha, correction, cuped):
                    table_rows.append({**keys, **row})
                cells[segment] = _cell_summaries(group, arms, outcome)
                best = _best_variant(group, arms, outcome, alpha, correction, cuped)
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
        best=pd.DataFrame(best_rows, columns=["trigger_id", "segment", "outcome", *_BEST_COLUMNS]),
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
        moments = {variant: _cell_moments(summary) for variant, summary in row.items()}
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


# --------------------------------------------------------------------------- holdout


def holdout_incrementality(
    exposures: pd.DataFrame,
    outcomes: Sequence[Outcome] = ("conversion", "revenue"),
    alpha: float = 0.05,
    correction: PValueCorrection = "holm",
    cuped: bool = True,
    by_segment: bool = False,
) -> pd.DataFrame:
    """Lift of each variant, and of ``ALL_SENDS`` (every non-holdout variant pooled), over the
    holdout: what the trigger adds over not sending at all.

    Columns: trigger_id, segment (``ALL`` unless ``by_segment``), outcome, ``COMPARISON_COLUMNS``
    with the holdout as control, plus ``incremental_total`` = abs_lift × users (incremental
    conversions or revenue of that arm, with ``incremental_ci_low``/``_high`` from the lift's
    CI). ``correction`` runs across the variants and the pooled arm of one trigger (and segment)
    and outcome; Holm stays valid although the pooled arm overlaps the others, since it assumes
    nothing about dependence. Triggers without holdout rows are left out.
    """
    _check_options(alpha, outcomes)
    frame = validate_exposures(exposures)
    rows: list[dict[str, Any]] = []
    group_keys = ["trigger_id", "segment"] if by_segment else ["trigger_id"]
    for key, group in frame.groupby(group_keys, sort=True):
        trigger_id, segment = key if by_segment else (key[0], ALL)
        variants = _ordered_variants(group["variant"].unique())
        if HOLDOUT not in variants or len(variants) < 2:
            continue
        for outcome in outcomes:
            comparisons = _group_comparisons(
                group, variants, outcome, alpha, correction, cuped, pool_sends=True
            )
            for row in comparisons:
                rows.append(
                    {
                        "trigger_id": trigger_id,
                        "segment": segment,
                        "outcome": outcome,
                        **row,
                        "incremental_total": row["abs_lift"] * row["users"],
                        "incremental_ci_low": row["abs_ci_low"] * row["users"],
                        "incremental_ci_high": row["abs_ci_high"] * row["users"],
                    }
                )
    return pd.DataFrame(
        rows,
        columns=[
            "trigger_id",
            "segment",
            "outcome",
            *COMPARISON_COLUMNS,
            "incremental_total",
            "incremental_ci_low",
            "incremental_ci_high",
        ],
    )


# --------------------------------------------------------------------------- recommendation


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
    _check_options(alpha, (outcome,))
    if min_users_per_arm < 1:
        raise ValueError(f"min_users_per_arm must be at least 1 (got {min_users_per_arm})")
    if not 0 < srm_threshold < 1:
        raise ValueError(f"srm_threshold must lie strictly between 0 and 1 (got {srm_threshold})")
    if holdout_share is not None and not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must lie strictly between 0 and 1 (got {holdout_share})")
    frame = validate_exposures(exposures)
    recommendations: list[Recommendation] = []
    for trigger_id, trigger_rows in frame.groupby("trigger_id", sort=True):
        variants = _ordered_variants(trigger_rows["variant"].unique())
        candidates = [variant for variant in variants if variant != HOLDOUT]
        srm_arms, srm_weights = _srm_design(candidates, weights, holdout_share, str(trigger_id))
        trigger_srm = _srm_p_value(trigger_rows, srm_arms, srm_weights)
        for segment in sorted(trigger_rows["segment"].unique()):
            group = trigger_rows[trigger_rows["segment"] == segment]
            segment_srm = _srm_p_value(group, srm_arms, srm_weights)
            best = _best_variant(group, variants, outcome, alpha, correction, cuped)
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


# --------------------------------------------------------------------------- helpers

_BEST_COLUMNS: Final = (
    "leader",
    "leader_value",
    "runner_up",
    "runner_up_value",
    "p_value_corrected",
    "comparisons",
    "best",
)
_REASONS: Final[dict[str, ReasonCode]] = {
    "candidates": "single_candidate",
    "min_sample": "insufficient_sample",
    "srm": "sample_ratio_mismatch",
    "significance": "not_significant",
}


def _check_options(alpha: float, outcomes: Iterable[str]) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (got {alpha})")
    for outcome in outcomes:
        if outcome not in ("conversion", "revenue"):
            raise ValueError(f"unknown outcome {outcome!r}; expected 'conversion' or 'revenue'")


def _rows(mask: pd.Series | np.ndarray) -> str:
    positions = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(p) for p in positions[:5])
    more = f" and {positions.size - 5} more" if positions.size > 5 else ""
    return f"{positions.size} row(s) (positions {shown}{more})"


def _as_flags(values: pd.Series, column: str) -> pd.Series:
    if values.dtype == bool:
        return values
    # Accept 0/1 and True/False (object columns from CSV or SQL); anything else is a data bug.
    valid = values.isin([0, 1, True, False]) & values.notna()
    if not valid.all():
        example = values[~valid].iloc[0]
        raise ExposureError(
            f"column {column!r} must hold booleans or 0/1; got {example!r} in {_rows(~valid)}"
        )
    return values.astype(bool)


def _as_finite(values: pd.Series, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    bad = ~np.isfinite(numbers.to_numpy())
    if bad.any():
        raise ExposureError(f"column {column!r} must be a finite number in every row; {_rows(bad)}")
    return numbers


def _ordered_variants(names: Iterable[str]) -> list[str]:
    """The holdout first, then the other variants: shortest delay first when every name is a
    duration (1h, 4h, 24h — not the string order 1h, 24h, 4h), else by name."""
    present = {str(name) for name in names}
    others = sorted(present - {HOLDOUT})
    try:
        durations = {name: parse_duration(name) for name in others}
    except ValueError:
        durations = {}  # not all durations: name order is deterministic and good enough
    if durations:
        others.sort(key=durations.__getitem__)
    return ([HOLDOUT] if HOLDOUT in present else []) + others


def _arms_with_control(names: Iterable[str], control: str | None, trigger_id: str) -> list[str]:
    """The variants with the control first: ``control``, else the holdout, else the first."""
    ordered = _ordered_variants(names)
    if control is None:
        return ordered
    if control not in ordered:
        raise ExposureError(
            f"control variant {control!r} has no rows in trigger {trigger_id!r}; "
            f"its variants are {', '.join(ordered)}"
        )
    return [control, *(name for name in ordered if name != control)]


def _outcome_values(group: pd.DataFrame, outcome: Outcome, cuped: bool) -> tuple[np.ndarray, float]:
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


def _summary(values: np.ndarray, outcome: Outcome) -> ArmSummary | None:
    if outcome == "conversion":
        return RateSummary(int(values.size), int(values.sum())) if values.size >= 1 else None
    return MeanSummary.from_values(values) if values.size >= 2 else None


def _group_comparisons(
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
    analysed, reduction = _outcome_values(group, outcome, cuped)
    variant = group["variant"].to_numpy()
    masks = [(name, variant == name) for name in arms]
    if pool_sends:
        masks.append((ALL_SENDS, variant != HOLDOUT))
    control_name, control_mask = masks[0]
    control = _summary(analysed[control_mask], outcome)
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
        treatment = _summary(analysed[mask], outcome)
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
    if isinstance(control, RateSummary) and isinstance(treatment, RateSummary):
        test = two_proportion_ztest(control, treatment, alpha)
        bayes = beta_binomial_comparison(control, treatment)
    elif isinstance(control, MeanSummary) and isinstance(treatment, MeanSummary):
        test = welch_ttest(control, treatment, alpha)
        bayes = normal_posterior_comparison(control, treatment)
    else:  # _summary builds both arms of one group from the same outcome
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


def _cell_summaries(
    group: pd.DataFrame, arms: Sequence[str], outcome: Outcome
) -> dict[str, ArmSummary]:
    values = group["converted" if outcome == "conversion" else "revenue"].to_numpy(float)
    variant = group["variant"].to_numpy()
    summaries = {name: _summary(values[variant == name], outcome) for name in arms}
    return {name: summary for name, summary in summaries.items() if summary is not None}


def _cell_moments(summary: ArmSummary) -> tuple[float, float]:
    """(ȳ, Var(ȳ)) of a cell: Agresti–Caffo p̃ for rates, (ȳ, s²/n) for means."""
    if isinstance(summary, RateSummary):
        adjusted = (summary.conversions + 1.0) / (summary.users + 2.0)
        return adjusted, adjusted * (1.0 - adjusted) / (summary.users + 2.0)
    return summary.mean, summary.variance / summary.users


def _best_variant(
    group: pd.DataFrame,
    variants: Sequence[str],
    outcome: Outcome,
    alpha: float,
    correction: PValueCorrection,
    cuped: bool,
) -> dict[str, Any]:
    """Leader, runner-up and the corrected pairwise tests among the non-holdout variants."""
    candidates = [variant for variant in variants if variant != HOLDOUT]
    analysed, _ = _outcome_values(group, outcome, cuped)
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
    summaries = {name: _summary(analysed[variant_of_row == name], outcome) for name in candidates}
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
