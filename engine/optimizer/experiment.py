"""One experiment analysis: every analysis of a trigger's exposures, as one result.

``nudge experiment report``, the Prefect ``optimize`` flow and ``nudge demo`` (through that flow)
all call ``analyse_experiment``, so the numbers a person reads in the terminal are the numbers
logged to MLflow. Pure: a frame and options in, a frozen result out.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from engine.optimizer.contract import Outcome, validate_exposures
from engine.optimizer.funnel import funnel
from engine.optimizer.holdout import holdout_incrementality
from engine.optimizer.labels import HOLDOUT
from engine.optimizer.recommendation import Recommendation, recommend
from engine.optimizer.segmentation import SegmentationResult, segmentation
from engine.optimizer.stats import PValueCorrection
from engine.optimizer.timing import timing

__all__ = ["ExperimentAnalysis", "analyse_experiment"]


@dataclass(frozen=True, eq=False)
class ExperimentAnalysis:
    """Every analysis of one experiment's exposures.

    ``exposures`` counts the rows analysed; ``funnel``, ``timing``, ``segmentation`` and
    ``recommendations`` are what ``funnel``, ``timing``, ``segmentation`` and ``recommend``
    return; ``holdout`` is ``holdout_incrementality``, or None when nobody was held out.
    """

    exposures: int
    funnel: pd.DataFrame
    timing: pd.DataFrame
    segmentation: SegmentationResult
    holdout: pd.DataFrame | None
    recommendations: tuple[Recommendation, ...]


def analyse_experiment(
    exposures: pd.DataFrame,
    *,
    min_users_per_arm: int = 1_000,
    outcome: Outcome = "conversion",
    alpha: float = 0.05,
    correction: PValueCorrection = "holm",
) -> ExperimentAnalysis:
    """Funnel, timing, segmentation, holdout incrementality and the guarded recommendation per
    segment of ``exposures`` (the contract of ``engine.optimizer.contract``; at least one row).

    ``alpha`` and ``correction`` apply to every test; ``outcome`` and ``min_users_per_arm`` to
    the recommendation (see ``recommend``). Raises ``ExposureError`` for a frame that breaks the
    contract and ValueError for options out of range.
    """
    frame = validate_exposures(exposures)
    held_out = bool((frame["variant"] == HOLDOUT).any())
    return ExperimentAnalysis(
        exposures=len(frame),
        funnel=funnel(frame),
        timing=timing(frame, alpha=alpha, correction=correction),
        segmentation=segmentation(frame, alpha=alpha, correction=correction),
        holdout=holdout_incrementality(frame, alpha=alpha, correction=correction)
        if held_out
        else None,
        recommendations=recommend(
            frame,
            outcome=outcome,
            min_users_per_arm=min_users_per_arm,
            alpha=alpha,
            correction=correction,
        ),
    )
