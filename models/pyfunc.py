"""The MLflow pyfunc form of a trained model: what the registry stores and serving loads.

`ScoringModel.predict` takes the model's features (any column order, extra columns ignored),
casts them to the training dtypes and order, and returns a frame with ``score`` — a calibrated
probability (churn, engagement) or expected spend (ltv) — and, for engagement, the customer's
``best_send_hour``. A scikit-learn-API LightGBM classifier logged as its own flavor would return
class labels; this wrapper returns what the engine's score conditions compare against.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel  # mlflow.pyfunc imports it without re-exporting it
from numpy.typing import NDArray

from models.lgbm import (
    BestSendHour,
    CalibratedLGBMClassifier,
    LGBMSpendRegressor,
    feature_contributions,
)

__all__ = ["SCORE_COLUMN", "ScoringModel", "pip_requirements"]

SCORE_COLUMN = "score"
# What a scoring environment needs to unpickle and run the model (the estimators live in this
# package, which serving imports anyway). Pinned to the training versions.
_REQUIREMENTS = ("lightgbm", "numpy", "pandas", "scikit-learn", "scipy", "cloudpickle")


class ScoringModel(PythonModel):
    """A fitted estimator (plus the best-send-hour rule for engagement) behind pyfunc."""

    def __init__(
        self,
        model_name: str,
        estimator: CalibratedLGBMClassifier | LGBMSpendRegressor,
        best_send_hour: BestSendHour | None = None,
    ) -> None:
        self.model_name = model_name
        self.estimator = estimator
        self.best_send_hour = best_send_hour

    @property
    def feature_names(self) -> list[str]:
        return list(self.estimator.feature_names_in_)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """``score`` per row (and ``best_send_hour`` for engagement)."""
        frame = pd.DataFrame(model_input)
        if hasattr(self.estimator, "predict_proba"):
            score = self.estimator.predict_proba(frame)[:, 1]
        else:
            score = self.estimator.predict(frame)
        out = pd.DataFrame({SCORE_COLUMN: np.asarray(score, dtype=np.float64)})
        if self.best_send_hour is not None:
            out["best_send_hour"] = self.best_send_hour.predict(frame)
        return out

    def contributions(self, model_input: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to the raw score (reason codes), one row per input row."""
        return feature_contributions(self.estimator, pd.DataFrame(model_input))

    # -- NumPy fast path (serving): the numbers of `predict` / `contributions`, no frames ------

    def matrix(self, model_input: pd.DataFrame) -> NDArray[np.floating]:
        """The model's features of `model_input` as the matrix `score_matrix` takes."""
        return self.estimator.matrix_of(pd.DataFrame(model_input))

    def score_matrix(
        self, matrix: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64] | None]:
        """``score`` (and ``best_send_hour``, else None) of `predict`, from a matrix of the
        features in training order: a single-customer request builds no DataFrame."""
        score = np.asarray(self.estimator.score_matrix(matrix), dtype=np.float64)
        return score, self._send_hours(matrix)

    def contributions_matrix(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """`contributions` as an array: one column per feature (training order), then bias."""
        return self.estimator.contributions_matrix(matrix)

    def explained_matrix(
        self, matrix: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64] | None, NDArray[np.float64]]:
        """`score_matrix` and `contributions_matrix` together: from the contributions alone when
        the estimator can turn them into its score (`score_from_contributions`), one model
        evaluation instead of two."""
        contributions = self.contributions_matrix(matrix)
        from_contributions = getattr(self.estimator, "score_from_contributions", None)
        if from_contributions is None:
            score, hours = self.score_matrix(matrix)
            return score, hours, contributions
        score = np.asarray(from_contributions(contributions), dtype=np.float64)
        return score, self._send_hours(matrix), contributions

    def _send_hours(self, matrix: NDArray[np.floating]) -> NDArray[np.int64] | None:
        if self.best_send_hour is None:
            return None
        names = self.feature_names
        hours: NDArray[np.int64] = self.best_send_hour.predict_values(
            matrix[:, names.index("preferred_send_hour")],
            matrix[:, names.index("preferred_send_hour_opens")],
        )
        return hours


def pip_requirements() -> list[str]:
    """Explicit, pinned requirements: MLflow's inference of them costs seconds per model."""
    return [f"{name}=={metadata.version(name)}" for name in _REQUIREMENTS] + [
        f"mlflow=={metadata.version('mlflow')}"
    ]
