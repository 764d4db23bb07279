"""Fit a model and its baselines on training rows, score a holdout, and compute every metric.

Pure: frames in, fitted estimators and numbers out. A frame holds the entity keys, the label,
the model's features and the baselines' columns (`models.baselines.on_features.BASELINE_COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator

from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
from models.baselines.on_features import make_baselines
from models.lgbm import BestSendHour, CalibratedLGBMClassifier, LGBMSpendRegressor
from models.metrics import classification_metrics, decile_calibration, regression_metrics
from models.specs import ModelSpec

__all__ = ["MODEL_COLUMN", "ModelResult", "fit_and_evaluate", "metrics_for", "score_frame"]

# The model's column in score tables; baselines use their own names.
MODEL_COLUMN = "model"


@dataclass
class ModelResult:
    """A fitted model, its fitted baselines, and how all of them did on the holdout."""

    spec: ModelSpec
    model: CalibratedLGBMClassifier | LGBMSpendRegressor
    baselines: dict[str, BaseEstimator]
    metrics: dict[str, dict[str, float]]
    holdout_scores: pd.DataFrame
    train_snapshots: list[pd.Timestamp]
    holdout_snapshot: pd.Timestamp | None
    n_train: int
    best_send_hour: BestSendHour | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> float:
        """The model's primary metric on the holdout."""
        return self.metrics[MODEL_COLUMN][self.spec.primary_metric]

    def comparison(self) -> pd.DataFrame:
        """One row per scorer (model first, then baselines), one column per metric."""
        return pd.DataFrame.from_dict(self.metrics, orient="index")

    def decile_table(self, scorer: str = MODEL_COLUMN) -> pd.DataFrame:
        """Mean predicted vs actual per decile of a scorer's prediction on the holdout."""
        label = self.holdout_scores[self.spec.label]
        return decile_calibration(label, self.holdout_scores[scorer])


def fit_and_evaluate(
    spec: ModelSpec,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    *,
    params: Mapping[str, Any] | None = None,
    max_rounds: int = 1_000,
) -> ModelResult:
    """Fit the model (folds by customer) and its baselines on `train`; evaluate on `holdout`."""
    for name, frame in (("training", train), ("holdout", holdout)):
        if frame.empty:
            raise ValueError(f"the {spec.name} {name} set is empty")
    features = list(spec.features)
    X, y = train[features].astype(spec.features), train[spec.label].to_numpy()
    groups = train[ENTITY_KEY].to_numpy()
    if spec.task == "binary":
        estimator = CalibratedLGBMClassifier(
            params=params,
            objective=spec.objective,
            max_rounds=max_rounds,
            linear_base=spec.linear_base,
        )
    else:
        estimator = LGBMSpendRegressor(
            params=params,
            objective=spec.objective,
            max_rounds=max_rounds,
            bgnbd_weight=spec.bgnbd_weight,
            horizon_days=spec.horizon_days,
        )
    estimator.fit(X, y, groups=groups, times=train[TIMESTAMP_COLUMN].to_numpy())
    baselines = {name: baseline.fit(train, y) for name, baseline in make_baselines(spec).items()}
    best_hour = BestSendHour().fit(train) if spec.best_send_hour else None
    scores = score_frame(spec, estimator, baselines, holdout)
    metrics = {
        scorer: metrics_for(spec, scores[spec.label], scores[scorer])
        for scorer in [MODEL_COLUMN, *baselines]
    }
    return ModelResult(
        spec=spec,
        model=estimator,
        baselines=baselines,
        metrics=metrics,
        holdout_scores=scores,
        train_snapshots=sorted(pd.unique(train[TIMESTAMP_COLUMN])),
        holdout_snapshot=holdout[TIMESTAMP_COLUMN].max(),
        n_train=len(train),
        best_send_hour=best_hour,
    )


def score_frame(
    spec: ModelSpec,
    model: CalibratedLGBMClassifier | LGBMSpendRegressor,
    baselines: Mapping[str, BaseEstimator],
    frame: pd.DataFrame,
) -> pd.DataFrame:
    """Keys, label (when present) and one score column per scorer: the model, then baselines."""
    keep = [c for c in (ENTITY_KEY, TIMESTAMP_COLUMN, spec.label) if c in frame.columns]
    out = frame[keep].reset_index(drop=True)
    out[MODEL_COLUMN] = _predict(model, frame)
    for name, baseline in baselines.items():
        out[name] = _predict(baseline, frame)
    return out


def metrics_for(spec: ModelSpec, y_true: Any, score: Any) -> dict[str, float]:
    """The task's metrics (models.metrics) of one scorer."""
    if spec.task == "binary":
        return classification_metrics(y_true, score)
    return regression_metrics(y_true, score)


def _predict(estimator: BaseEstimator, frame: pd.DataFrame) -> NDArray[np.float64]:
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(frame))[:, 1]
    return np.asarray(estimator.predict(frame), dtype=float)
