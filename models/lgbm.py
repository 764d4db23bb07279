"""LightGBM models with the scikit-learn API: a calibrated classifier (churn, engagement), a
Tweedie regressor (LTV), per-feature contributions for reason codes, and the best send hour.

Rows come from several snapshot dates, so one customer appears in many rows whose label windows
overlap. The number of boosting rounds and the classifier's calibration are chosen on
out-of-fold scores where each fold holds whole customers (`groups`): a fold's model never saw any
row of the customers it is scored on, so early stopping is not fooled by a customer's
neighbouring snapshots (folds by snapshot were: on CDNOW they asked for 5–20× the rounds and
lost 0.02–0.06 ROC-AUC on the later holdout). The final booster is then fit on every row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression

from features.schema import UNKNOWN_HOUR

__all__ = [
    "DEFAULT_PARAMS",
    "BestSendHour",
    "CalibratedLGBMClassifier",
    "LGBMSpendRegressor",
    "feature_contributions",
    "top_reasons",
]

# Small trees, row and feature subsampling, a little L2: robust defaults for a few dozen
# dense features; `deterministic` so that a rerun on the same data gives the same model.
DEFAULT_PARAMS: Final[dict[str, Any]] = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbose": -1,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
}


class _LGBMBase(BaseEstimator):
    """Shared fitting: grouped out-of-fold rounds, then one booster on every row."""

    _default_objective: ClassVar[Mapping[str, Any]] = {}

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        objective: Mapping[str, Any] | None = None,
        max_rounds: int = 1_000,
        early_stopping_rounds: int = 50,
        n_folds: int = 3,
        cv_max_rows: int = 200_000,
        random_state: int = 0,
    ) -> None:
        self.params = params
        self.objective = objective
        self.max_rounds = max_rounds
        self.early_stopping_rounds = early_stopping_rounds
        self.n_folds = n_folds
        self.cv_max_rows = cv_max_rows
        self.random_state = random_state

    def _fit(self, X: pd.DataFrame, y: ArrayLike, groups: ArrayLike | None) -> NDArray[np.float64]:
        """Fit the booster; returns the out-of-fold raw scores of the CV sample (nan elsewhere)."""
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        self.feature_dtypes_ = {name: str(dtype) for name, dtype in X.dtypes.items()}
        self.n_features_in_ = len(self.feature_names_in_)
        target = np.asarray(y, dtype=float)
        params = {
            **DEFAULT_PARAMS,
            **self._default_objective,
            **(self.objective or {}),
            **(self.params or {}),
        }
        oof, rounds = self._cross_validate(X, target, groups, params)
        self.best_iteration_ = rounds
        self.booster_ = lgb.train(params, lgb.Dataset(X, target), num_boost_round=rounds)
        return oof

    def _cross_validate(
        self,
        X: pd.DataFrame,
        y: NDArray[np.float64],
        groups: ArrayLike | None,
        params: dict[str, Any],
    ) -> tuple[NDArray[np.float64], int]:
        oof = np.full(len(y), np.nan)
        folds = _group_folds(groups, self.n_folds)
        if not folds:  # no groups given: no honest fold to stop on
            return oof, max(1, self.max_rounds // 5)
        rng = np.random.default_rng(self.random_state)
        # Large training sets: the rounds and the calibration are settled on a sample.
        sample = (
            np.sort(rng.choice(len(y), self.cv_max_rows, replace=False))
            if len(y) > self.cv_max_rows
            else np.arange(len(y))
        )
        in_sample = np.zeros(len(y), dtype=bool)
        in_sample[sample] = True
        best = []
        for held in folds:
            test = held & in_sample
            train = ~held & in_sample
            booster = lgb.train(
                params,
                lgb.Dataset(X[train], y[train]),
                num_boost_round=self.max_rounds,
                valid_sets=[lgb.Dataset(X[test], y[test])],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            best.append(booster.best_iteration or self.max_rounds)
            oof[test] = booster.predict(X[test], raw_score=True, num_iteration=best[-1])
        # The final booster sees (k / (k - 1)) times the rows: a few more rounds than the folds.
        return oof, max(1, round(float(np.mean(best)) * len(folds) / max(len(folds) - 1, 1)))

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        """X's training columns, in training order and dtypes (extra columns are ignored)."""
        if not hasattr(self, "booster_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(X, y)")
        names = list(self.feature_names_in_)
        missing = [n for n in names if n not in X.columns]
        if missing:
            raise ValueError(f"X lacks feature column(s) {missing}")
        matrix = X[names]
        # Casting costs milliseconds per call even when nothing changes: serving sends one row at a time.
        if all(matrix[n].dtype == dtype for n, dtype in self.feature_dtypes_.items()):
            return matrix
        return matrix.astype(self.feature_dtypes_)

    def raw_score(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """The booster's raw score: log-odds (classifier) or log of the expected value (Tweedie)."""
        matrix = self._matrix(X)  # raises first when not fitted
        return self.booster_.predict(matrix, raw_score=True)


class CalibratedLGBMClassifier(_LGBMBase, ClassifierMixin):
    """Binary LightGBM classifier whose probabilities are Platt-calibrated out of fold.

    Platt scaling (a logistic regression on the raw log-odds) is strictly monotone, so it fixes
    the level and spread of the probabilities without creating ties that would lower ROC-AUC, as
    isotonic regression's steps do.
    """

    _default_objective: ClassVar[Mapping[str, Any]] = {"objective": "binary"}

    def fit(self, X: pd.DataFrame, y: ArrayLike, groups: ArrayLike | None = None):
        """Fit on X (feature columns only) and 0/1 labels `y`; `groups` are the rows' customers."""
        target = np.asarray(y)
        if not np.isin(target, (0, 1)).all():
            raise ValueError("y must be binary (0/1 or bool)")
        if len(np.unique(target)) < 2:
            raise ValueError("y holds a single class: nothing to learn")
        self.classes_ = np.array([0, 1])
        oof = self._fit(X, target, groups)
        seen = ~np.isnan(oof)
        if seen.sum() >= 20 and len(np.unique(target[seen])) == 2:
            platt = LogisticRegression(C=1e6).fit(oof[seen, None], target[seen].astype(int))
            self.calibration_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
        else:
            self.calibration_ = (1.0, 0.0)
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """(n, 2) calibrated class probabilities, as scikit-learn classifiers return them."""
        raw = self.raw_score(X)  # raises first when not fitted
        slope, intercept = self.calibration_
        positive = expit(slope * raw + intercept)
        return np.column_stack([1 - positive, positive])

    def predict(self, X: pd.DataFrame) -> NDArray[np.int64]:
        """Class labels at probability 0.5."""
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


class LGBMSpendRegressor(_LGBMBase, RegressorMixin):
    """LightGBM regressor for non-negative, zero-inflated, skewed targets (Tweedie, log link)."""

    _default_objective: ClassVar[Mapping[str, Any]] = {
        "objective": "tweedie",
        "tweedie_variance_power": 1.5,
    }

    def fit(self, X: pd.DataFrame, y: ArrayLike, groups: ArrayLike | None = None):
        """Fit on X and non-negative targets `y`; `groups` are the rows' customers."""
        target = np.asarray(y, dtype=float)
        if np.any(target < 0) or not np.all(np.isfinite(target)):
            raise ValueError("y must be finite and non-negative for the Tweedie objective")
        self._fit(X, target, groups)
        return self

    def predict(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """Expected value of the target for each row."""
        matrix = self._matrix(X)
        return self.booster_.predict(matrix)


class BestSendHour(BaseEstimator):
    """Each customer's best local send hour: the hour they opened most, else the population's.

    A preference resting on fewer than `min_opens` opens is not trusted; those customers get the
    most common preferred hour among the customers with a trusted one (learned in `fit`).
    """

    def __init__(self, min_opens: int = 2, fallback_hour: int = 10) -> None:
        self.min_opens = min_opens
        self.fallback_hour = fallback_hour

    def fit(self, X: pd.DataFrame, y: ArrayLike | None = None) -> BestSendHour:
        """Learn the population's most common trusted hour; `y` is ignored."""
        trusted = self._trusted(X)
        hours = X.loc[trusted, "preferred_send_hour"].to_numpy(dtype=np.int64)
        self.population_hour_ = (
            int(np.bincount(hours, minlength=24).argmax()) if len(hours) else self.fallback_hour
        )
        return self

    def predict(self, X: pd.DataFrame) -> NDArray[np.int64]:
        """The hour (0–23, customer-local) to send at, one per row."""
        if not hasattr(self, "population_hour_"):
            raise RuntimeError("BestSendHour is not fitted yet; call fit(X)")
        own = X["preferred_send_hour"].to_numpy(dtype=np.int64)
        return np.where(self._trusted(X), own, self.population_hour_).astype(np.int64)

    def _trusted(self, X: pd.DataFrame) -> NDArray[np.bool_]:
        hour = X["preferred_send_hour"].to_numpy(dtype=np.int64)
        opens = X["preferred_send_hour_opens"].to_numpy(dtype=np.int64)
        return (hour != UNKNOWN_HOUR) & (opens >= self.min_opens)


def feature_contributions(
    model: CalibratedLGBMClassifier | LGBMSpendRegressor | lgb.Booster,
    X: pd.DataFrame,
    feature_names: list[str] | None = None,
) -> pd.DataFrame:
    """Per-row, per-feature contributions to the raw score (LightGBM `pred_contrib`, i.e. SHAP
    values of the trees), plus a ``bias`` column; each row sums to the raw score.

    Raw score units: log-odds for the classifiers, log of expected spend for the LTV model.
    """
    if isinstance(model, lgb.Booster):
        names = feature_names or model.feature_name()
        matrix = X[names]
        booster = model
    else:
        matrix = model._matrix(X)
        names = list(matrix.columns)
        booster = model.booster_
    contributions = booster.predict(matrix, pred_contrib=True)
    return pd.DataFrame(contributions, columns=[*names, "bias"], index=X.index)


def top_reasons(contributions: pd.DataFrame, k: int = 3) -> list[list[tuple[str, float]]]:
    """The `k` features pushing each row's score up the most, as (feature, contribution)."""
    values = contributions.drop(columns="bias")
    names = np.array(values.columns)
    order = np.argsort(-values.to_numpy(), axis=1)[:, :k]
    return [
        [(str(names[j]), float(values.iat[i, j])) for j in row if values.iat[i, j] > 0]
        for i, row in enumerate(order)
    ]


def _group_folds(groups: ArrayLike | None, n_folds: int) -> list[NDArray[np.bool_]]:
    """Boolean masks of held-out rows, each holding whole groups (customers), assigned by a hash
    of the group so the split does not depend on row order; none with fewer than 2 groups."""
    if groups is None:
        return []
    keys = pd.Series(np.asarray(groups)).astype(str)
    k = min(n_folds, keys.nunique())
    if k < 2:
        return []
    assignment = pd.util.hash_pandas_object(keys, index=False).to_numpy() % np.uint64(k)
    return [assignment == i for i in range(k)]
