"""A trigger's uplift model as an MLflow pyfunc: ``predict`` returns a frame whose ``score`` is
each row's estimated uplift (conversion probability with the message minus without) — the column
the engine's score conditions compare (``score: {model: uplift_<trigger>, gt: 0}``).

The scoring service serves it like a definition's model: the NumPy path (``score_matrix``,
``contributions_matrix``) the champions use, over the features it was trained on — columns of
the standard feature views, which is how the service knows what to read online.

Reason codes: an uplift is a difference of two predictions (or a learner's blend of them), so
LightGBM's additive contributions of one booster do not explain it. A feature's contribution is
instead how far the uplift moves when that feature alone is set back to the training median (an
occlusion attribution, one extra prediction of the batch per feature): "tenure 12 days" is a
reason to send when a typical tenure would lower the uplift. They do not sum to the score; the
last column holds the uplift of the all-median customer, in the bias's place.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel  # mlflow.pyfunc imports it without re-exporting it
from numpy.typing import NDArray

__all__ = ["UpliftScoringModel"]


class UpliftScoringModel(PythonModel):
    """An uplift estimator (``models.uplift.learners``) over its encoded feature columns."""

    def __init__(
        self,
        name: str,
        estimator: Any,
        features: Sequence[str],
        reference: Sequence[float] | None = None,
    ) -> None:
        self.name, self.estimator, self.features = name, estimator, list(features)
        # The training medians the reason codes occlude with (None: the scored batch's own).
        self.reference = None if reference is None else [float(v) for v in reference]

    @property
    def feature_names(self) -> list[str]:
        """The features in training order (the online read's column order)."""
        return list(self.features)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        """Uplift of each row of ``model_input``, in a ``score`` column."""
        del context, params
        X = model_input[self.features].astype(float)
        return pd.DataFrame({"score": np.asarray(self.estimator.predict(X), dtype=float)})

    # -- NumPy path (serving) ------------------------------------------------------------------

    def matrix(self, model_input: pd.DataFrame) -> NDArray[np.float64]:
        """The features of `model_input` as the matrix `score_matrix` takes."""
        return pd.DataFrame(model_input)[self.features].to_numpy(dtype=np.float64)

    def score_matrix(self, matrix: NDArray[np.floating]) -> tuple[NDArray[np.float64], None]:
        """`predict`'s ``score`` from a matrix of the features in training order (no send hour)."""
        return self._uplift(np.asarray(matrix, dtype=np.float64)), None

    def contributions_matrix(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """Per feature, the uplift minus the uplift with that feature at its reference value
        (module docstring); then the all-reference uplift. One column per feature, then bias."""
        rows = np.asarray(matrix, dtype=np.float64)
        n, k = rows.shape
        reference = self._reference(rows)
        # One prediction over the batch repeated k times, feature j occluded in copy j.
        stacked = np.tile(rows, (k, 1))
        for j in range(k):
            stacked[j * n : (j + 1) * n, j] = reference[j]
        base = self._uplift(rows)
        occluded = self._uplift(stacked).reshape(k, n).T
        typical = self._uplift(reference.reshape(1, -1))[0]
        out = np.empty((n, k + 1), dtype=np.float64)
        out[:, :k] = base[:, None] - occluded
        out[:, k] = typical
        return out

    def _uplift(self, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        frame = pd.DataFrame(matrix, columns=self.features)
        return np.asarray(self.estimator.predict(frame), dtype=np.float64)

    def _reference(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        # Versions logged before reason codes carry no reference: the batch's medians serve.
        reference = getattr(self, "reference", None)
        if reference is not None and len(reference) == rows.shape[1]:
            return np.asarray(reference, dtype=np.float64)
        if not len(rows):
            return np.zeros(rows.shape[1])
        with warnings.catch_warnings():  # an all-NaN column keeps a NaN median: nothing occluded
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np.nanmedian(rows, axis=0), dtype=np.float64)
