"""Timing: the outcome of each (delay) variant of a trigger against its control."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from engine.optimizer.comparisons import COMPARISON_COLUMNS, group_comparisons
from engine.optimizer.contract import (
    Outcome,
    apply_attribution_window,
    arms_with_control,
    check_options,
    validate_exposures,
)
from engine.optimizer.stats import PValueCorrection

__all__ = ["timing"]


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
    check_options(alpha, outcomes)
    frame = (
        validate_exposures(exposures)
        if attribution_window_hours is None
        else apply_attribution_window(exposures, attribution_window_hours)
    )
    rows: list[dict[str, Any]] = []
    for trigger_id, group in frame.groupby("trigger_id", sort=True):
        arms = arms_with_control(group["variant"].unique(), control, str(trigger_id))
        for outcome in outcomes:
            for row in group_comparisons(group, arms, outcome, alpha, correction, cuped):
                rows.append({"trigger_id": trigger_id, "outcome": outcome, **row})
    return pd.DataFrame(rows, columns=["trigger_id", "outcome", *COMPARISON_COLUMNS])
