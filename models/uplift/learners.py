"""Uplift estimators with scikit-learn's API: ``fit(X, treatment, y)``, ``predict(X)`` → uplift.

The uplift of a customer is ``P(y=1 | x, sent) − P(y=1 | x, not sent)``, the change in their
conversion chance that the message causes. Every estimator here is pure (no I/O) and learns from a
*randomized* experiment: the propensity is the share of treated rows, the same for everyone.

- ``RandomUplift``: a random score — the floor any model must clear.
- ``ResponseModel``: a conversion classifier that ignores the treatment, i.e. today's targeting by
  propensity ("who will buy"); it ranks sure things first.
- ``TLearner``: one classifier per arm; uplift = p_treated − p_control.
- ``XLearner`` (Künzel et al. 2019): T-learner outcome models, then regressors on each arm's
  imputed individual effects, blended by the propensity.
- ``DRLearner`` (Kennedy 2020): a regressor on doubly robust pseudo-outcomes built from
  cross-fitted outcome models, so that no row's pseudo-outcome uses a model that saw it.
- ``ClassTransformation`` (Jaskowski & Jaroszewicz 2012): one classifier of
  ``z = y·t + (1−y)(1−t)``; uplift = 2·P(z=1) − 1. The identity holds for a 50/50 split, so rows
  are weighted to make the arms count equally when the split is not even.

The learners use LightGBM (missing values handled natively) with small, regularised trees;
``n_estimators`` bounds the cost (the tests and the backtest on small data use fewer).
"""

from __future__ import annotations

from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.validation import check_is_fitted

from models.uplift.metrics import qini_auc_score

__all__ = [
    "CANDIDATES",
    "ClassTransformation",
    "DRLearner",
    "RandomUplift",
    "ResponseModel",
    "TLearner",
    "UpliftMixin",
    "XLearner",
    "make_candidates",
]


class UpliftMixin:
    """Marks an uplift estimator; ``score`` is the Qini AUC (scikit-uplift's definition)."""

    _estimator_type = "uplift"

    def score(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> float:
        """Qini AUC of the predicted uplift of ``X`` against the observed outcomes."""
        return qini_auc_score(y, self.predict(X), treatment)

    def predict(self, X: Any) -> NDArray[np.float64]:  # pragma: no cover - overridden
        raise NotImplementedError


def _checked(X: Any, treatment: ArrayLike, y: ArrayLike) -> tuple[Any, NDArray[np.float64], NDArray[np.float64]]:  # fmt: skip
    t = np.asarray(treatment, dtype=float)
    y_ = np.asarray(y, dtype=float)
    if not len(X) == len(t) == len(y_):
        raise ValueError(f"lengths differ: X {len(X)}, treatment {len(t)}, y {len(y_)}")
    for name, values in (("treatment", t), ("y", y_)):
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"{name} must be binary (0/1)")
    if t.min() == t.max():
        raise ValueError("treatment must hold both arms (0 and 1)")
    return X, t, y_


def _rows(X: Any, mask: NDArray[np.bool_]) -> Any:
    return X[mask] if isinstance(X, pd.DataFrame) else np.asarray(X)[mask]


class _LGBMUplift(UpliftMixin, BaseEstimator):
    """Shared LightGBM settings of the learners."""

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.random_state = random_state

    def _params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "reg_lambda": 1.0,
            "random_state": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "n_jobs": 1,  # the backtest fits hundreds of small models; threads only contend
            "verbose": -1,
        }

    def _classifier(self, X: Any, y: NDArray[np.float64], weight: Any = None) -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(**self._params()).fit(X, y.astype(int), sample_weight=weight)

    def _regressor(self, X: Any, target: NDArray[np.float64]) -> lgb.LGBMRegressor:
        return lgb.LGBMRegressor(**self._params()).fit(X, target)


def _p1(model: lgb.LGBMClassifier, X: Any) -> NDArray[np.float64]:
    return np.asarray(np.asarray(model.predict_proba(X))[:, 1], dtype=float)


class RandomUplift(UpliftMixin, BaseEstimator):
    """A uniformly random score: what targeting without any knowledge achieves."""

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def fit(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> RandomUplift:
        _checked(X, treatment, y)
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self)
        return np.random.default_rng(self.random_state).random(len(X))


class ResponseModel(_LGBMUplift):
    """P(conversion | x), treatment ignored: propensity targeting, scored as if it were uplift."""

    def fit(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> ResponseModel:
        X, _, y_ = _checked(X, treatment, y)
        self.model_ = self._classifier(X, y_)
        return self

    def predict(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self)
        return _p1(self.model_, X)


class TLearner(_LGBMUplift):
    """Two conversion classifiers, one per arm; uplift is their difference."""

    def fit(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> TLearner:
        X, t, y_ = _checked(X, treatment, y)
        self.treated_ = self._classifier(_rows(X, t == 1), y_[t == 1])
        self.control_ = self._classifier(_rows(X, t == 0), y_[t == 0])
        return self

    def predict(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self)
        return _p1(self.treated_, X) - _p1(self.control_, X)


class XLearner(_LGBMUplift):
    """Imputed effects per arm (treated: y − μ₀(x); control: μ₁(x) − y), regressed on x, blended
    as ``g·τ₀(x) + (1−g)·τ₁(x)`` with g the propensity (constant in a randomized test)."""

    def fit(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> XLearner:
        X, t, y_ = _checked(X, treatment, y)
        X1, X0 = _rows(X, t == 1), _rows(X, t == 0)
        mu1 = self._classifier(X1, y_[t == 1])
        mu0 = self._classifier(X0, y_[t == 0])
        self.tau_treated_ = self._regressor(X1, y_[t == 1] - _p1(mu0, X1))
        self.tau_control_ = self._regressor(X0, _p1(mu1, X0) - y_[t == 0])
        self.propensity_ = float(t.mean())
        return self

    def predict(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self)
        g = self.propensity_
        tau1 = np.asarray(self.tau_treated_.predict(X), dtype=float)
        tau0 = np.asarray(self.tau_control_.predict(X), dtype=float)
        return g * tau0 + (1 - g) * tau1


class DRLearner(_LGBMUplift):
    """A regressor of the doubly robust pseudo-outcome
    ``μ₁ − μ₀ + t(y − μ₁)/e − (1 − t)(y − μ₀)/(1 − e)``, with μ cross-fitted over ``n_folds``."""

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 50,
        random_state: int = 0,
        n_folds: int = 2,
    ) -> None:
        super().__init__(n_estimators, learning_rate, num_leaves, min_child_samples, random_state)
        self.n_folds = n_folds

    def fit(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> DRLearner:
        X, t, y_ = _checked(X, treatment, y)
        e = float(t.mean())
        mu1, mu0 = np.empty(len(t)), np.empty(len(t))
        folds = StratifiedKFold(self.n_folds, shuffle=True, random_state=self.random_state)
        for fit_rows, out_rows in folds.split(np.zeros(len(t)), 2 * t + y_):
            fit_mask = np.zeros(len(t), dtype=bool)
            fit_mask[fit_rows] = True
            for arm, target in ((1, mu1), (0, mu0)):
                rows = fit_mask & (t == arm)
                model = self._classifier(_rows(X, rows), y_[rows])
                target[out_rows] = _p1(model, _rows(X, ~fit_mask))
        pseudo = mu1 - mu0 + t * (y_ - mu1) / e - (1 - t) * (y_ - mu0) / (1 - e)
        self.model_ = self._regressor(X, pseudo)
        return self

    def predict(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self)
        return np.asarray(self.model_.predict(X), dtype=float)


class ClassTransformation(_LGBMUplift):
    """One classifier of z = 1 for treated converters and control non-converters; the arms are
    weighted to count equally, so that uplift = 2·P(z=1 | x) − 1 holds for any split."""

    def fit(self, X: Any, treatment: ArrayLike, y: ArrayLike) -> ClassTransformation:
        X, t, y_ = _checked(X, treatment, y)
        e = float(t.mean())
        z = t * y_ + (1 - t) * (1 - y_)
        weight = np.where(t == 1, 0.5 / e, 0.5 / (1 - e))
        self.model_ = self._classifier(X, z, weight)
        return self

    def predict(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self)
        return 2 * _p1(self.model_, X) - 1


CANDIDATES: Final[dict[str, type[UpliftMixin]]] = {
    "random": RandomUplift,
    "response": ResponseModel,
    "t_learner": TLearner,
    "x_learner": XLearner,
    "dr_learner": DRLearner,
    "class_transformation": ClassTransformation,
}
"""The backtest's candidates by the names its JSON uses; ``random`` and ``response`` are the
baselines an uplift model must beat."""


def make_candidates(n_estimators: int = 100, random_state: int = 0) -> dict[str, Any]:
    """A fresh, unfitted estimator per candidate name."""
    made: dict[str, Any] = {}
    for name, cls in CANDIDATES.items():
        if cls is RandomUplift:
            made[name] = RandomUplift(random_state=random_state)
        else:
            made[name] = cls(n_estimators=n_estimators, random_state=random_state)  # type: ignore[call-arg]
    return made
