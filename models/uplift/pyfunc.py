"""A trigger's uplift model as an MLflow pyfunc: ``predict`` returns a frame whose ``score`` is
each row's estimated uplift (conversion probability with the message minus without) — the column
the engine's score conditions compare (``score: {model: uplift_<trigger>, gt: 0}``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel  # mlflow.pyfunc imports it without re-exporting it

__all__ = ["UpliftScoringModel"]


class UpliftScoringModel(PythonModel):
    """An uplift estimator (``models.uplift.learners``) over its encoded feature columns."""

    def __init__(self, name: str, estimator: Any, features: Sequence[str]) -> None:
        self.name, self.estimator, self.features = name, estimator, list(features)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Uplift of each row of ``model_input``, in a ``score`` column."""
        del context, params
        X = model_input[self.features].astype(float)
        return pd.DataFrame({"score": np.asarray(self.estimator.predict(X), dtype=float)})
