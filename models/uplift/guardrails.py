"""The guardrails of uplift targeting (issue 18, item 5), as pure functions.

- The holdout stays: customers assigned to the holdout are held out whatever their uplift, so
  the experiment keeps measuring the message's effect on everyone (targeting only decides among
  the others).
- No model from too little: training waits for a minimum number of conversions in each arm.
- A recommendation to target by uplift only when the uplift model's held-out Qini beats the
  response model's (the propensity targeting a marketer already has).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:  # the backtest reports through these guardrails: no import cycle at run time
    from models.uplift.backtest import CandidateScores

__all__ = [
    "BASELINES",
    "MIN_CONVERSIONS_PER_ARM",
    "Check",
    "enough_conversions",
    "recommend_uplift_targeting",
    "uplift_decisions",
]

MIN_CONVERSIONS_PER_ARM: Final = 200
"""Below this, a Qini AUC's standard deviation over splits is of the size of the differences
between learners (the Cai experiment: ~330 conversions per arm, std ≈ 0.02–0.04)."""
BASELINES: Final = frozenset({"random", "response"})


class Check(NamedTuple):
    """A guardrail's verdict and, when it says no, why."""

    ok: bool
    reason: str


def uplift_decisions(
    uplift: ArrayLike, holdout: ArrayLike, threshold: float = 0.0
) -> NDArray[np.str_]:
    """Per customer ``held_out`` (the holdout, whatever its uplift), ``send`` (uplift above
    ``threshold``) or ``skip``."""
    u = np.asarray(uplift, dtype=float)
    held = np.asarray(holdout, dtype=bool)
    if u.shape != held.shape:
        raise ValueError(f"lengths differ: uplift {u.shape}, holdout {held.shape}")
    return np.where(held, "held_out", np.where(u > threshold, "send", "skip"))


def enough_conversions(
    y: ArrayLike, treatment: ArrayLike, minimum: int = MIN_CONVERSIONS_PER_ARM
) -> Check:
    """Whether both arms hold at least ``minimum`` conversions."""
    y_, t = np.asarray(y, dtype=float), np.asarray(treatment, dtype=float)
    treated, control = int(y_[t == 1].sum()), int(y_[t == 0].sum())
    if min(treated, control) < minimum:
        return Check(False, f"{treated:,} treated and {control:,} control conversions; "
                            f"at least {minimum:,} of each are needed")  # fmt: skip
    return Check(True, f"{treated:,} treated and {control:,} control conversions")


def recommend_uplift_targeting(chosen: str, models: Mapping[str, CandidateScores]) -> Check:
    """Target by uplift only when the chosen model is an uplift model whose held-out Qini AUC
    beats the response model's."""
    if chosen in BASELINES:
        return Check(False, f"the cross-validation chose the {chosen} baseline")
    ours = models[chosen].qini_auc.mean
    response = models["response"].qini_auc.mean if "response" in models else None
    if ours is None or response is None:
        return Check(False, "no held-out Qini AUC to compare")
    if ours <= response:
        return Check(False, f"{chosen}'s held-out Qini AUC {ours:+.3f} does not beat the "
                            f"response model's {response:+.3f}")  # fmt: skip
    return Check(True, f"{chosen}'s held-out Qini AUC {ours:+.3f} beats the response model's "
                       f"{response:+.3f}")  # fmt: skip
