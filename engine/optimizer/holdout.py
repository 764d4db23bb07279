"""Holdout incrementality: what a trigger adds over not sending at all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from engine.optimizer.comparisons import COMPARISON_COLUMNS, group_comparisons
from engine.optimizer.contract import Outcome, check_options, ordered_variants, validate_exposures
from engine.optimizer.labels import ALL, HOLDOUT
from engine.optimizer.stats import PValueCorrection

__all__ = ["holdout_incrementality"]


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
    check_options(alpha, outcomes)
    frame = validate_exposures(exposures)
    rows: list[dict[str, Any]] = []
    group_keys = ["trigger_id", "segment"] if by_segment else ["trigger_id"]
    for key, group in frame.groupby(group_keys, sort=True):
        trigger_id, segment = key if by_segment else (key[0], ALL)
        variants = ordered_variants(group["variant"].unique())
        if HOLDOUT not in variants or len(variants) < 2:
            continue
        for outcome in outcomes:
            comparisons = group_comparisons(
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
