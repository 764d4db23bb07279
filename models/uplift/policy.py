"""Off-policy evaluation of targeting rules on randomized data, by inverse propensity.

In a randomized test every customer had a known chance ``e`` to be sent the message. A targeting
rule π (send or not, per customer) can then be judged on the same data without running it: each
row whose actual arm agrees with π stands for ``1/P(arm)`` customers under π. The incremental
conversions of π over sending nobody, per customer, are

    (1/n) · Σ π_i · y_i · (t_i / e_i − (1 − t_i) / (1 − e_i)),

an unbiased estimate whose standard error is that of the mean of the summed terms. Divided by
the share π sends to, it becomes incremental conversions per send; nudge reports it per 1,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

__all__ = ["PolicyValue", "policy_table", "policy_value", "top_share"]


class PolicyValue(NamedTuple):
    """What a targeting rule would have done on the experiment's customers."""

    share_sent: float
    incremental_per_customer: float
    per_1000_sends: float
    ci_low: float
    ci_high: float
    """The 95 % interval of ``per_1000_sends`` (normal approximation)."""


def _propensity(
    t: NDArray[np.float64], propensity: ArrayLike | float | None
) -> NDArray[np.float64]:
    e = np.full(len(t), t.mean()) if propensity is None else np.broadcast_to(np.asarray(propensity, dtype=float), t.shape)  # fmt: skip
    if np.any((e <= 0) | (e >= 1)):
        raise ValueError("propensities must lie strictly between 0 and 1")
    return e


def policy_value(
    y: ArrayLike, treatment: ArrayLike, send: ArrayLike, propensity: ArrayLike | float | None = None
) -> PolicyValue:
    """The inverse-propensity value of sending to the rows where ``send`` is true.

    ``propensity`` is each row's chance to have been treated (default: the treated share, as in
    a test that randomizes everyone alike).
    """
    y_, t = np.asarray(y, dtype=float), np.asarray(treatment, dtype=float)
    pi = np.asarray(send, dtype=bool).astype(float)
    if not len(y_) == len(t) == len(pi):
        raise ValueError(f"lengths differ: y {len(y_)}, treatment {len(t)}, send {len(pi)}")
    e = _propensity(t, propensity)
    terms = pi * y_ * (t / e - (1 - t) / (1 - e))
    share = float(pi.mean())
    mean = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else math.nan
    z = float(norm.ppf(0.975))
    if share == 0:
        return PolicyValue(0.0, 0.0, math.nan, math.nan, math.nan)
    scale = 1000 / share
    return PolicyValue(share, mean, mean * scale, (mean - z * se) * scale, (mean + z * se) * scale)


def top_share(score: ArrayLike, share: float) -> NDArray[np.bool_]:
    """Send to the ``share`` of customers with the highest score (``int(n·share)`` of them)."""
    s = np.asarray(score, dtype=float)
    chosen = np.zeros(len(s), dtype=bool)
    chosen[np.argsort(-s, kind="mergesort")[: int(len(s) * share)]] = True
    return chosen


def policy_table(
    y: ArrayLike,
    treatment: ArrayLike,
    *,
    uplift: ArrayLike,
    scores: Mapping[str, ArrayLike] | None = None,
    shares: Sequence[float] = (0.1, 0.3, 0.5),
    thresholds: Sequence[float] = (0.0, 0.01, 0.02, 0.05),
    propensity: ArrayLike | float | None = None,
    name: str = "uplift",
) -> pd.DataFrame:
    """Send-to-all, each score's top shares (e.g. churn-score targeting), the uplift model's top
    shares, and uplift above each threshold: one row per rule, incremental conversions per
    1,000 sends with their interval. ``name`` labels the uplift model's rules."""
    rules: dict[str, NDArray[np.bool_]] = {"send to all": np.ones(len(np.asarray(y)), dtype=bool)}
    for label, score in (scores or {}).items():
        for share in shares:
            rules[f"{label}: top {share:.0%}"] = top_share(score, share)
    for share in shares:
        rules[f"{name}: top {share:.0%}"] = top_share(uplift, share)
    u = np.asarray(uplift, dtype=float)
    for threshold in thresholds:
        rules[f"{name} > {threshold:g}"] = u > threshold
    rows = [{"policy": rule, **policy_value(y, treatment, send, propensity)._asdict()}
            for rule, send in rules.items()]  # fmt: skip
    return pd.DataFrame(rows)
