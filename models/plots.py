"""Evaluation plots as matplotlib figures; the caller saves or logs them.

Figures are built on `matplotlib.figure.Figure` directly, not pyplot: no GUI backend, no global
figure registry to leak memory across runs (the effect of the Agg backend, without setting it).

Every function takes the holdout's labels and a mapping scorer name → score, so the model and its
baselines are drawn on the same axes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from models.metrics import decile_calibration

__all__ = ["calibration_figure", "decile_figure", "gain_figure", "importance_figure"]


def calibration_figure(
    y_true: ArrayLike, scores: Mapping[str, ArrayLike], bins: int = 10
) -> Figure:
    """Reliability diagram: mean predicted probability vs observed rate per quantile bin."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    y = np.asarray(y_true, dtype=float)
    for name, score in scores.items():
        table = _binned(y, np.asarray(score, dtype=float), bins)
        ax.plot(table["mean_predicted"], table["mean_actual"], marker="o", label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def gain_figure(y_true: ArrayLike, scores: Mapping[str, ArrayLike]) -> Figure:
    """Cumulative gain (share of positives captured) and lift, by share of customers targeted."""
    fig = Figure(figsize=(10, 4.5))
    gain_ax, lift_ax = fig.subplots(1, 2)
    y = np.asarray(y_true, dtype=float)
    share = np.arange(1, len(y) + 1) / max(len(y), 1)
    for name, score in scores.items():
        order = np.argsort(-np.asarray(score, dtype=float), kind="stable")
        captured = np.cumsum(y[order]) / max(y.sum(), 1e-12)
        gain_ax.plot(share, captured, label=name)
        lift_ax.plot(share, captured / share, label=name)
    gain_ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
    gain_ax.set(xlabel="share targeted", ylabel="share of positives", title="Cumulative gain")
    lift_ax.axhline(1, color="grey", linestyle="--", linewidth=1)
    lift_ax.set(xlabel="share targeted", ylabel="lift", title="Lift", xlim=(0.01, 1))
    gain_ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def decile_figure(y_true: ArrayLike, predictions: Mapping[str, ArrayLike]) -> Figure:
    """Mean predicted vs actual value per decile of each scorer's prediction (LTV)."""
    fig = Figure(figsize=(4.5 * len(predictions), 4))
    axes = fig.subplots(1, len(predictions), squeeze=False)
    for ax, (name, pred) in zip(axes[0], predictions.items(), strict=True):
        table = decile_calibration(y_true, pred)
        x = table["decile"].to_numpy()
        ax.bar(x - 0.2, table["mean_predicted"], width=0.4, label="predicted")
        ax.bar(x + 0.2, table["mean_actual"], width=0.4, label="actual")
        ax.set(xlabel="decile of prediction", ylabel="mean value", title=name, xticks=x)
    axes[0][0].legend(loc="upper left")
    fig.tight_layout()
    return fig


def importance_figure(importance: pd.Series, top: int = 20) -> Figure:
    """Horizontal bars of the `top` largest importances (e.g. total gain per feature)."""
    shown = importance.sort_values(ascending=True).tail(top)
    fig = Figure(figsize=(6, 0.3 * len(shown) + 1.2))
    ax = fig.subplots()
    ax.barh(shown.index.astype(str), shown.to_numpy())
    ax.set(xlabel=importance.name or "importance", title="Feature importance")
    fig.tight_layout()
    return fig


def _binned(y: np.ndarray, p: np.ndarray, bins: int) -> pd.DataFrame:
    """Mean prediction and outcome per equal-count bin of `p`."""
    order = np.argsort(p, kind="stable")
    group = np.empty(len(p), dtype=np.int64)
    group[order] = np.arange(len(p)) * bins // max(len(p), 1)
    frame = pd.DataFrame({"group": group, "mean_predicted": p, "mean_actual": y})
    return frame.groupby("group").mean()
