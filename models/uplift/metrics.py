"""Uplift metrics with scikit-uplift's definitions (``sklift.metrics``, version 0.5.1).

Every function takes the outcomes ``y`` (0/1), the predicted uplift and the treatment flags (0/1)
as 1-D array-likes. The tests compare each one with scikit-uplift on random data (ties included),
so that the figures nudge reports are the figures the field quotes.

- ``qini_curve``: customers ranked by predicted uplift, best first; at each distinct score, the
  treated conversions minus the control conversions scaled to the treated count,
  ``Y_t(k) − Y_c(k) · N_t(k) / N_c(k)`` (incremental conversions among the first k).
- ``qini_auc_score``: the area between the model's Qini curve and the straight line of random
  targeting, divided by the same area for the perfect ranking (which may hold negative effects:
  scikit-uplift's ``negative_effect=True``, its default). 1 is perfect, 0 random, < 0 worse.
- ``uplift_at_k`` with ``strategy="overall"``: the top ``k`` of *all* customers by predicted uplift
  (``int(n·k)`` of them), and the treated minus the control conversion rate among them — the
  figure of a campaign that mails its best-scored 30 %.
- ``average_treatment_effect``: the difference in conversion rates with a Welch (unequal
  variances) normal-approximation confidence interval.
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

__all__ = [
    "ATE",
    "average_treatment_effect",
    "perfect_qini_curve",
    "qini_auc_score",
    "qini_curve",
    "uplift_at_k",
]

STRATEGY: Final = "overall"
"""The uplift-at-k strategy nudge reports (scikit-uplift's ``strategy="overall"``)."""


def _binary(name: str, values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D")
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be binary (0/1)")
    return array


def _inputs(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    y_, t_ = _binary("y", y), _binary("treatment", treatment)
    u_ = np.asarray(uplift, dtype=float)
    if not len(y_) == len(u_) == len(t_):
        raise ValueError(f"lengths differ: y {len(y_)}, uplift {len(u_)}, treatment {len(t_)}")
    return y_, u_, t_


def qini_curve(
    y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(number targeted, incremental conversions) at each distinct predicted uplift, from (0, 0)."""
    y_, u_, t_ = _inputs(y, uplift, treatment)
    # Descending with ties in reverse input order: exactly scikit-uplift's ranking.
    order = np.argsort(u_, kind="mergesort")[::-1]
    y_, u_, t_ = y_[order], u_[order], t_[order]
    last = np.r_[np.flatnonzero(np.diff(u_)), u_.size - 1]  # the last row of each tie group
    n_treated = np.cumsum(t_)[last]
    y_treated = np.cumsum(y_ * t_)[last]
    y_control = np.cumsum(y_ * (1 - t_))[last]
    n_all = (last + 1).astype(float)
    n_control = n_all - n_treated
    ratio = np.divide(n_treated, n_control, out=np.zeros_like(n_treated), where=n_control != 0)
    values = y_treated - y_control * ratio
    if n_all.size == 0 or values[0] != 0 or n_all[0] != 0:
        n_all, values = np.r_[0.0, n_all], np.r_[0.0, values]
    return n_all, values


def perfect_qini_curve(
    y: ArrayLike, treatment: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The Qini curve of the best possible ranking: treated converters first, control converters
    last (scikit-uplift's ``negative_effect=True``)."""
    y_, t_ = _binary("y", y), _binary("treatment", treatment)
    return qini_curve(y_, y_ * t_ - y_ * (1 - t_), t_)


def qini_auc_score(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """The area under the Qini curve above random targeting, over the same for the perfect one."""
    y_, u_, t_ = _inputs(y, uplift, treatment)
    x_actual, y_actual = qini_curve(y_, u_, t_)
    x_perfect, y_perfect = perfect_qini_curve(y_, t_)
    baseline = np.trapezoid([0.0, y_perfect[-1]], [0.0, x_perfect[-1]])
    perfect = np.trapezoid(y_perfect, x_perfect) - baseline
    actual = np.trapezoid(y_actual, x_actual) - baseline
    return float(actual / perfect) if perfect != 0 else math.nan


def uplift_at_k(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, k: float = 0.3) -> float:
    """Treated minus control conversion rate among the top ``k`` share of all customers.

    nan when the top group holds no treated or no control customer (as scikit-uplift's mean of
    an empty group).
    """
    if not 0 < k < 1:
        raise ValueError(f"k must lie strictly between 0 and 1 (got {k})")
    y_, u_, t_ = _inputs(y, uplift, treatment)
    top = np.argsort(u_, kind="mergesort")[::-1][: int(len(y_) * k)]
    treated, control = y_[top][t_[top] == 1], y_[top][t_[top] == 0]
    if treated.size == 0 or control.size == 0:
        return math.nan
    return float(treated.mean() - control.mean())


class ATE(NamedTuple):
    """An average treatment effect and its confidence interval."""

    estimate: float
    ci_low: float
    ci_high: float


def average_treatment_effect(y: ArrayLike, treatment: ArrayLike, level: float = 0.95) -> ATE:
    """Difference in means (treated − control) with its Welch normal-approximation interval.

    The standard error is ``sqrt(s_t²/n_t + s_c²/n_c)`` with the sample variances (ddof 1);
    the interval is ``estimate ± z_(1+level)/2 · se``. Valid for a randomized assignment.
    """
    y_, t_ = np.asarray(y, dtype=float), _binary("treatment", treatment)
    treated, control = y_[t_ == 1], y_[t_ == 0]
    if treated.size < 2 or control.size < 2:
        raise ValueError("each arm needs at least 2 rows")
    estimate = float(treated.mean() - control.mean())
    se = math.sqrt(treated.var(ddof=1) / treated.size + control.var(ddof=1) / control.size)
    z = float(norm.ppf((1 + level) / 2))
    return ATE(estimate, estimate - z * se, estimate + z * se)
