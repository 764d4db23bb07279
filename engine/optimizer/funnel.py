"""The funnel of an experiment: triggered → sent → delivered → opened → clicked → converted."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from engine.optimizer.contract import FLAG_COLUMNS, STAGES, ordered_variants, validate_exposures
from engine.optimizer.labels import ALL

__all__ = ["funnel"]


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
        for variant in [ALL, *ordered_variants(variant_of_row)]:
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
