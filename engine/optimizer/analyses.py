"""Experiment analyses over exposure frames: funnel, timing, segmentation, holdout incrementality,
and the guarded recommendation of a variant per segment — gathered under one name.

Each analysis lives in a module of its own: the frame contract and its checks in
``engine.optimizer.contract``, the shared arm comparisons in ``comparisons``, then ``funnel``,
``timing``, ``segmentation``, ``holdout`` (incrementality), ``recommendation`` (guardrails), and
``experiment`` (``analyse_experiment``: all of them for one experiment). Every function is pure:
frames in, new frames or frozen dataclasses out.
"""

from __future__ import annotations

from engine.optimizer.comparisons import COMPARISON_COLUMNS
from engine.optimizer.contract import (
    FLAG_COLUMNS,
    STAGES,
    ExposureError,
    Outcome,
    apply_attribution_window,
    validate_exposures,
)
from engine.optimizer.experiment import ExperimentAnalysis, analyse_experiment
from engine.optimizer.funnel import funnel
from engine.optimizer.holdout import holdout_incrementality
from engine.optimizer.labels import ALL, ALL_SENDS, HOLDOUT
from engine.optimizer.recommendation import GuardrailCheck, ReasonCode, Recommendation, recommend
from engine.optimizer.segmentation import (
    HeterogeneityTest,
    SegmentationResult,
    heterogeneity_test,
    segmentation,
)
from engine.optimizer.timing import timing

__all__ = [
    "ALL",
    "ALL_SENDS",
    "COMPARISON_COLUMNS",
    "FLAG_COLUMNS",
    "HOLDOUT",
    "STAGES",
    "ExperimentAnalysis",
    "ExposureError",
    "GuardrailCheck",
    "HeterogeneityTest",
    "Outcome",
    "ReasonCode",
    "Recommendation",
    "SegmentationResult",
    "analyse_experiment",
    "apply_attribution_window",
    "funnel",
    "heterogeneity_test",
    "holdout_incrementality",
    "recommend",
    "segmentation",
    "timing",
    "validate_exposures",
]
