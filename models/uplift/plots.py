"""The Qini-curve figure of one uplift candidate, built on ``matplotlib.figure.Figure`` directly
(no pyplot, no GUI backend: as ``models.plots``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

__all__ = ["qini_figure"]

Curve = tuple[NDArray[np.float64], NDArray[np.float64]]


def qini_figure(name: str, curves: Sequence[Curve], perfect: Sequence[Curve]) -> Figure:
    """Every split's test Qini curve of ``name`` (thin), their mean on a common grid (bold), the
    mean perfect curve and random targeting (the straight line to the overall incremental)."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    grid = np.linspace(0, 1, 101)
    for x, y in curves:
        ax.plot(x, y, color="tab:blue", alpha=0.25, linewidth=0.8)
    mean = np.mean([np.interp(grid, x, y) for x, y in curves], axis=0)
    ax.plot(
        grid, mean, color="tab:blue", linewidth=2, label=f"{name} (mean of {len(curves)} splits)"
    )
    best = np.mean([np.interp(grid, x, y) for x, y in perfect], axis=0)
    ax.plot(grid, best, color="tab:green", linestyle=":", label="perfect ranking")
    ax.plot([0, 1], [0, best[-1]], color="grey", linestyle="--", label="random targeting")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(
        xlabel="share of customers targeted (by predicted uplift)",
        ylabel="incremental conversions per customer",
        title=f"Qini curve — {name}",
    )
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
