"""Evaluation metrics shared by every model run: classification, regression (LTV), calibration.

Each function takes true values and scores as 1-D array-likes and returns plain Python floats, so
results can be logged as they are.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "classification_metrics",
    "decile_calibration",
    "lift_at",
    "normalised_gini",
    "oracle_roc_auc",
    "regression_metrics",
]

# Probabilities are clipped this far from 0 and 1 so one confident mistake costs ~34.5, not inf.
_EPS = 1e-15


def classification_metrics(y_true: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """roc_auc, pr_auc (average precision), log_loss, brier and lift_at_10 of probabilities `p`.

    Ranking metrics are nan when `y_true` holds a single class.
    """
    y, p = _paired(y_true, p)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be binary (0/1 or bool)")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p must be probabilities in [0, 1]")
    both_classes = 0 < y.sum() < len(y)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else math.nan,
        "pr_auc": float(average_precision_score(y, p)) if both_classes else math.nan,
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
        "brier": float(np.mean((p - y) ** 2)),
        "lift_at_10": lift_at(y, p, 0.10),
    }


def regression_metrics(y_true: ArrayLike, pred: ArrayLike) -> dict[str, float]:
    """mae, rmse, spearman and normalised_gini of predictions `pred` (e.g. LTV)."""
    y, pred = _paired(y_true, pred)
    error = pred - y
    constant = np.ptp(y) == 0 or np.ptp(pred) == 0
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        # Spearman is undefined (and scipy warns) when either side is constant.
        "spearman": math.nan if constant else float(spearmanr(y, pred).statistic),
        "normalised_gini": normalised_gini(y, pred),
    }


def decile_calibration(y_true: ArrayLike, pred: ArrayLike) -> pd.DataFrame:
    """Mean predicted vs mean actual per decile of `pred` (1 = lowest tenth), with counts.

    Rows are ranked by prediction (ties in input order) and cut into ten equal-count groups;
    deciles with no rows (fewer than ten rows) are left out.
    """
    y, pred = _paired(y_true, pred)
    order = np.argsort(pred, kind="stable")
    decile = np.empty(len(pred), dtype=np.int64)
    decile[order] = np.arange(len(pred)) * 10 // max(len(pred), 1) + 1
    table = (
        pd.DataFrame({"decile": decile, "mean_predicted": pred, "mean_actual": y})
        .groupby("decile")
        .agg(
            mean_predicted=("mean_predicted", "mean"),
            mean_actual=("mean_actual", "mean"),
            count=("mean_actual", "size"),
        )
        .reset_index()
    )
    return table


def oracle_roc_auc(y_true: ArrayLike, true_probability: ArrayLike) -> float:
    """ROC AUC of the planted true probabilities on the realised labels: the ceiling for any model.

    Even a perfect model cannot exceed it, because the labels are random given the probabilities;
    compare a model's AUC with this rather than with 1.
    """
    y, p = _paired(y_true, true_probability)
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else math.nan


def lift_at(y_true: ArrayLike, score: ArrayLike, fraction: float) -> float:
    """Positive rate among the top `fraction` by score / overall positive rate.

    The top group holds ceil(fraction · n) rows; scores tied at its boundary contribute their
    average positive rate (the expectation under random tie-breaking), so the result is order-free.
    """
    y, score = _paired(y_true, score)
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    if len(y) == 0 or y.sum() == 0:
        return math.nan
    k = math.ceil(fraction * len(y))
    boundary = np.sort(score)[::-1][k - 1]
    above = score > boundary
    at = score == boundary
    positives_in_top = y[above].sum() + (k - above.sum()) * y[at].mean()
    return float(positives_in_top / k / y.mean())


def normalised_gini(y_true: ArrayLike, pred: ArrayLike) -> float:
    """Gini of `y_true` ordered by `pred`, divided by the Gini of `y_true` ordered by itself.

    1 for a perfect ranking, -1 for a reversed one, about 0 for a random one. Gini(y | s) =
    Σ y_i R_i / (n Σ y) - (n + 1) / (2n) with R the ascending mid-ranks of s (ties averaged): the
    area between the Lorenz curve of y sorted by s and the diagonal. Needs Σ y > 0.
    """
    y, pred = _paired(y_true, pred)
    best = _gini(y, y)
    return _gini(y, pred) / best if best != 0 else math.nan


# -- helpers ---------------------------------------------------------------------------------------


def _gini(y: NDArray[np.float64], score: NDArray[np.float64]) -> float:
    n, total = len(y), y.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(np.dot(y, rankdata(score)) / (n * total) - (n + 1) / (2 * n))


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    first = np.asarray(a, dtype=float).ravel()
    second = np.asarray(b, dtype=float).ravel()
    if first.shape != second.shape:
        raise ValueError(f"lengths differ: {len(first)} true values, {len(second)} predictions")
    if not (np.all(np.isfinite(first)) and np.all(np.isfinite(second))):
        raise ValueError("inputs must be finite (no nan or inf)")
    return first, second
