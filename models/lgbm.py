"""LightGBM models with the scikit-learn API: a calibrated classifier (churn, engagement), a
Tweedie regressor (LTV), per-feature contributions for reason codes, and the best send hour.

Rows come from several snapshot dates, so one customer appears in many rows whose label windows
overlap. The number of boosting rounds and the classifier's calibration are chosen on
out-of-fold scores where each fold holds whole customers (`groups`): a fold's model never saw any
row of the customers it is scored on, so early stopping is not fooled by a customer's
neighbouring snapshots (folds by snapshot were: on CDNOW they asked for 5–20× the rounds and
lost 0.02–0.06 ROC-AUC on the later holdout). Given the rows' snapshot `times`, validation is
also forward in time: a fold's model learns from the earlier snapshots of the other customers
and is scored on the latest snapshot of its own, as the deployed model learns from the past and
scores today, when customers are older than in any training row. Rounds that only help inside
the training range then stop early (CDNOW cutoff 1997-10-31: 0.784 → 0.795 ROC-AUC). The final
booster is fit on every row.

One module (~540 lines): the three models share the fitting base, the forward validation and the
NumPy scoring path that serving checks against pyfunc.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression

from features.schema import UNKNOWN_HOUR

__all__ = [
    "DEFAULT_PARAMS",
    "BestSendHour",
    "CalibratedLGBMClassifier",
    "LGBMSpendRegressor",
    "LinearBase",
    "feature_contributions",
    "top_reason_indices",
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

    def _fit(
        self,
        X: pd.DataFrame,
        y: ArrayLike,
        groups: ArrayLike | None,
        times: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """Fit the booster; returns the out-of-fold raw scores of the validation rows (nan
        elsewhere)."""
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
        oof, rounds = self._cross_validate(X, target, groups, times, params)
        self.best_iteration_ = rounds
        self.linear_base_ = self._fit_linear_base(X, target)
        self.booster_ = lgb.train(
            params,
            lgb.Dataset(X, target, init_score=_margin(self.linear_base_, X)),
            num_boost_round=rounds,
        )
        return oof

    def _fit_linear_base(self, X: pd.DataFrame, y: NDArray[np.float64]) -> LinearBase | None:
        """The linear model the trees boost from, if any (see `CalibratedLGBMClassifier`)."""
        return None

    def _cross_validate(
        self,
        X: pd.DataFrame,
        y: NDArray[np.float64],
        groups: ArrayLike | None,
        times: ArrayLike | None,
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
        earlier, latest = _forward_split(times, len(y))
        best = []
        for held in folds:
            test = held & latest & in_sample
            train = ~held & earlier & in_sample
            if not test.any() or not train.any():
                continue
            base = self._fit_linear_base(X[train], y[train])
            start = _margin(base, X[test])
            booster = lgb.train(
                params,
                lgb.Dataset(X[train], y[train], init_score=_margin(base, X[train])),
                num_boost_round=self.max_rounds,
                valid_sets=[lgb.Dataset(X[test], y[test], init_score=start)],
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
            )
            best.append(booster.best_iteration or self.max_rounds)
            raw = booster.predict(X[test], raw_score=True, num_iteration=best[-1])
            oof[test] = raw if start is None else raw + start
        if not best:
            return oof, max(1, self.max_rounds // 5)
        # The final booster sees (k / (k - 1)) times the rows: a few more rounds than the folds.
        return oof, max(1, round(float(np.mean(best)) * len(folds) / max(len(folds) - 1, 1)))

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        """X's training columns, in training order and dtypes (extra columns are ignored)."""
        if not hasattr(self, "booster_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, y)")
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
        return self._plus_base(_dense(self.booster_.predict(matrix, raw_score=True)), matrix)

    # -- NumPy fast path: the same numbers as the frame methods, without building frames.
    # Single-threaded: online requests score a few rows, where OpenMP's start-up and spinning
    # cost more than the trees (the service parallelises across requests instead).

    @property
    def matrix_dtype(self) -> np.dtype:
        """The dtype LightGBM turns a frame of the training dtypes into before predicting."""
        return _frame_dtype(tuple(self.feature_dtypes_.values()))

    def matrix_of(self, X: pd.DataFrame) -> NDArray[np.floating]:
        """X's training columns as the matrix the `*_matrix` methods take."""
        matrix: NDArray[np.floating] = self._matrix(X).to_numpy(dtype=self.matrix_dtype)
        return matrix

    def raw_score_matrix(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """`raw_score` of a matrix of the features in training order (one row per customer)."""
        array = self._checked(matrix)
        raw = _dense(self.booster_.predict(array, raw_score=True, num_threads=1))
        return self._plus_base(raw, array)

    def contributions_matrix(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """`feature_contributions` as an array: one column per feature, then the bias."""
        array = self._checked(matrix)
        contributions = _dense(self.booster_.predict(array, pred_contrib=True, num_threads=1))
        return self._with_base_terms(contributions, array)

    def _linear_base(self) -> LinearBase | None:
        # Models pickled before linear bases existed have no attribute.
        return getattr(self, "linear_base_", None)

    def _plus_base(
        self, raw: NDArray[np.float64], X: pd.DataFrame | NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """The booster's raw scores plus the linear base's log-odds, when there is a base."""
        base = self._linear_base()
        return raw if base is None else raw + base.margin(X)

    def _with_base_terms(
        self, contributions: NDArray[np.float64], X: pd.DataFrame | NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """Booster contributions plus the linear base's terms on its columns and its intercept on
        the bias, so a row still sums to the raw score."""
        base = self._linear_base()
        if base is None:
            return contributions
        out = np.array(contributions, dtype=np.float64)
        out[:, base.index_] += base.terms(X)
        out[:, -1] += base.intercept_
        return out

    def _checked(self, matrix: NDArray[np.floating]) -> NDArray[np.floating]:
        if not hasattr(self, "booster_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, y)")
        # No copy when the caller built it in the right dtype, as serving does.
        array = np.asarray(matrix, dtype=self.matrix_dtype)
        if array.ndim != 2 or array.shape[1] != self.n_features_in_:
            raise ValueError(f"expected a (rows, {self.n_features_in_}) matrix, not {array.shape}")
        return array


class CalibratedLGBMClassifier(ClassifierMixin, _LGBMBase):
    """Binary LightGBM classifier whose probabilities are Platt-calibrated out of fold.

    Platt scaling (a logistic regression on the raw log-odds) is strictly monotone, so it fixes
    the level and spread of the probabilities without creating ties that would lower ROC-AUC, as
    isotonic regression's steps do.

    `linear_base` names features for a `LinearBase`: the trees then boost from its log-odds
    instead of a constant. Trees predict a constant beyond the largest value they were trained
    on; when the scored customers lie there (older than any training customer, as in a one-cohort
    backtest), the base still ranks them by those features while the trees add what is
    non-linear inside the range they saw.
    """

    _default_objective: ClassVar[Mapping[str, Any]] = {"objective": "binary"}

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        objective: Mapping[str, Any] | None = None,
        max_rounds: int = 1_000,
        early_stopping_rounds: int = 50,
        n_folds: int = 3,
        cv_max_rows: int = 200_000,
        random_state: int = 0,
        linear_base: Sequence[str] = (),
    ) -> None:
        super().__init__(
            params, objective, max_rounds, early_stopping_rounds, n_folds, cv_max_rows, random_state
        )
        self.linear_base = linear_base

    def fit(
        self,
        X: pd.DataFrame,
        y: ArrayLike,
        groups: ArrayLike | None = None,
        times: ArrayLike | None = None,
    ) -> CalibratedLGBMClassifier:
        """Fit on X (feature columns only) and 0/1 labels `y`; `groups` are the rows' customers
        and `times` their snapshot times."""
        target = np.asarray(y)
        if not np.isin(target, (0, 1)).all():
            raise ValueError("y must be binary (0/1 or bool)")
        if len(np.unique(target)) < 2:
            raise ValueError("y holds a single class: nothing to learn")
        self.classes_ = np.array([0, 1])
        oof = self._fit(X, target, groups, times)
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

    def _fit_linear_base(self, X: pd.DataFrame, y: NDArray[np.float64]) -> LinearBase | None:
        if not self.linear_base:
            return None
        return LinearBase(self.linear_base).fit(X, y)

    def score_matrix(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """`predict_proba(X)[:, 1]` of the same rows given as a matrix (see `matrix_of`)."""
        return self._calibrated(self.raw_score_matrix(matrix))

    def score_from_contributions(self, contributions: NDArray[np.float64]) -> NDArray[np.float64]:
        """`score_matrix` of the rows whose `contributions_matrix` is given: a row of
        contributions sums to the raw score, so an explained request predicts once, not twice
        (one LightGBM call is ~0.2 ms of a single-customer request's ~2 ms)."""
        return self._calibrated(np.asarray(contributions, dtype=np.float64).sum(axis=1))

    def _calibrated(self, raw: NDArray[np.float64]) -> NDArray[np.float64]:
        slope, intercept = self.calibration_
        positive: NDArray[np.float64] = expit(slope * raw + intercept)
        return positive


class LGBMSpendRegressor(RegressorMixin, _LGBMBase):
    """LightGBM regressor for non-negative, zero-inflated, skewed targets (Tweedie, log link).

    With `bgnbd_weight` w > 0 the prediction is (1 − w) × the boosted model + w × BG/NBD ×
    Gamma-Gamma expected spend over `horizon_days` (`models.baselines.on_features.BGNBDSpend`,
    fitted on the latest training snapshot; the rows must carry its columns). The two err in
    opposite directions — the trees extrapolate as a constant past the oldest training customer,
    BG/NBD keeps its customer-base structure but under-predicts the repeat buyers — so their mean
    beats BG/NBD × Gamma-Gamma on RMSE and Spearman at every CDNOW cutoff of BENCHMARKS.md where
    the trees alone lost one of them. Reason codes (contributions) explain the boosted part.
    """

    _default_objective: ClassVar[Mapping[str, Any]] = {
        "objective": "tweedie",
        "tweedie_variance_power": 1.5,
    }

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        objective: Mapping[str, Any] | None = None,
        max_rounds: int = 1_000,
        early_stopping_rounds: int = 50,
        n_folds: int = 3,
        cv_max_rows: int = 200_000,
        random_state: int = 0,
        bgnbd_weight: float = 0.0,
        horizon_days: float = 90.0,
    ) -> None:
        super().__init__(
            params, objective, max_rounds, early_stopping_rounds, n_folds, cv_max_rows, random_state
        )
        self.bgnbd_weight = bgnbd_weight
        self.horizon_days = horizon_days

    def fit(
        self,
        X: pd.DataFrame,
        y: ArrayLike,
        groups: ArrayLike | None = None,
        times: ArrayLike | None = None,
    ) -> LGBMSpendRegressor:
        """Fit on X and non-negative targets `y`; `groups` are the rows' customers and `times`
        their snapshot times."""
        target = np.asarray(y, dtype=float)
        if np.any(target < 0) or not np.all(np.isfinite(target)):
            raise ValueError("y must be finite and non-negative for the Tweedie objective")
        if not 0.0 <= self.bgnbd_weight <= 1.0:
            raise ValueError(f"bgnbd_weight must be in [0, 1] (got {self.bgnbd_weight})")
        self._fit(X, target, groups, times)
        self.bgnbd_ = None
        if self.bgnbd_weight > 0:
            from models.baselines.on_features import BGNBDSpend

            latest = X
            if times is not None and len(X):
                stamps = pd.to_datetime(pd.Series(np.asarray(times)))
                latest = X[(stamps == stamps.max()).to_numpy()]
            self.bgnbd_ = BGNBDSpend(self.horizon_days).fit(latest)
        return self

    def predict(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """Expected value of the target for each row."""
        matrix = self._matrix(X)
        return self._blend(_dense(self.booster_.predict(matrix)), matrix)

    def score_matrix(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """`predict(X)` of the same rows given as a matrix (see `matrix_of`)."""
        array = self._checked(matrix)
        boosted = _dense(self.booster_.predict(array, num_threads=1))
        # Columns by name without a DataFrame: building one costs ~0.5 ms per request.
        columns = {name: array[:, i] for i, name in enumerate(self.feature_names_in_)}
        return self._blend(boosted, columns)

    def _blend(
        self, boosted: NDArray[np.float64], X: pd.DataFrame | Mapping[str, NDArray[np.floating]]
    ) -> NDArray[np.float64]:
        bgnbd = getattr(self, "bgnbd_", None)  # models pickled before the blend have none
        if bgnbd is None:
            return boosted
        w = self.bgnbd_weight
        blended: NDArray[np.float64] = (1.0 - w) * boosted + w * bgnbd.predict(X)
        return blended


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
            raise NotFittedError("BestSendHour is not fitted yet; call fit(X)")
        own = X["preferred_send_hour"].to_numpy(dtype=np.int64)
        return np.where(self._trusted(X), own, self.population_hour_).astype(np.int64)

    def predict_values(self, hour: ArrayLike, opens: ArrayLike) -> NDArray[np.int64]:
        """`predict` from the two columns it reads (preferred_send_hour and its opens)."""
        if not hasattr(self, "population_hour_"):
            raise NotFittedError("BestSendHour is not fitted yet; call fit(X)")
        own = np.asarray(hour).astype(np.int64)
        trusted = (own != UNKNOWN_HOUR) & (np.asarray(opens).astype(np.int64) >= self.min_opens)
        return np.where(trusted, own, self.population_hour_).astype(np.int64)

    def _trusted(self, X: pd.DataFrame) -> NDArray[np.bool_]:
        hour: NDArray[np.int64] = X["preferred_send_hour"].to_numpy(dtype=np.int64)
        opens: NDArray[np.int64] = X["preferred_send_hour_opens"].to_numpy(dtype=np.int64)
        known: NDArray[np.bool_] = hour != UNKNOWN_HOUR  # numpy types == and != as Any
        return known & (opens >= self.min_opens)


def feature_contributions(
    model: CalibratedLGBMClassifier | LGBMSpendRegressor | lgb.Booster,
    X: pd.DataFrame,
    feature_names: list[str] | None = None,
) -> pd.DataFrame:
    """Per-row, per-feature contributions to the raw score (LightGBM `pred_contrib`, i.e. SHAP
    values of the trees, plus the terms of a linear base), and a ``bias`` column; each row sums
    to the raw score.

    Raw score units: log-odds for the classifiers, log of expected spend for the LTV model.
    """
    if isinstance(model, lgb.Booster):
        # mypy keeps the estimators in this branch too (their scikit-learn bases are Any).
        booster: lgb.Booster = model
        names = feature_names or booster.feature_name()
        contributions = _dense(booster.predict(X[names], pred_contrib=True))
    else:
        matrix = model._matrix(X)
        names = list(matrix.columns)
        contributions = model._with_base_terms(
            _dense(model.booster_.predict(matrix, pred_contrib=True)), matrix
        )
    return pd.DataFrame(contributions, columns=[*names, "bias"], index=X.index)


class LinearBase(BaseEstimator):
    """Logistic regression on standardised log1p of a few non-negative features (a missing value
    counts as 0 and gets an indicator term): the starting log-odds of a boosted classifier.

    Fitted on a frame; scores frames or matrices of all the features in training order (it keeps
    its columns' positions in `index_`).
    """

    def __init__(self, columns: Sequence[str] = (), C: float = 1.0) -> None:
        self.columns = columns
        self.C = C

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> LinearBase:
        """Fit on the frame's `columns` and 0/1 labels `y`."""
        names = list(self.columns)
        unknown = [c for c in names if c not in X.columns]
        if not names or unknown:
            raise ValueError(
                f"linear_base needs feature columns; {unknown or names} not among {list(X.columns)}"
            )
        self.index_ = np.array([list(X.columns).index(c) for c in names])
        values = X[names].to_numpy(dtype=np.float64)
        self.indicated_ = np.isnan(values).any(axis=0)
        design = self._design(values)
        self.mean_: NDArray[np.float64] = design.mean(axis=0)
        self.scale_: NDArray[np.float64] = np.where(design.std(axis=0) > 0, design.std(axis=0), 1.0)
        logistic = LogisticRegression(C=self.C, max_iter=1_000)
        logistic.fit((design - self.mean_) / self.scale_, np.asarray(y).astype(int))
        self.coef_: NDArray[np.float64] = logistic.coef_[0]
        self.intercept_ = float(logistic.intercept_[0])  # the log-odds of the average row
        return self

    def terms(self, X: pd.DataFrame | NDArray[np.floating]) -> NDArray[np.float64]:
        """Each column's term in the log-odds (its indicator's included), centred on the training
        mean as SHAP values of a linear model are; one row each."""
        weighted = (self._design(self._values(X)) - self.mean_) * (self.coef_ / self.scale_)
        k = len(self.index_)
        terms = weighted[:, :k].copy()
        terms[:, self.indicated_] += weighted[:, k:]
        return terms

    def margin(self, X: pd.DataFrame | NDArray[np.floating]) -> NDArray[np.float64]:
        """The log-odds of each row."""
        log_odds: NDArray[np.float64] = self.terms(X).sum(axis=1) + self.intercept_
        return log_odds

    def _values(self, X: pd.DataFrame | NDArray[np.floating]) -> NDArray[np.float64]:
        if isinstance(X, pd.DataFrame):
            values: NDArray[np.float64] = X[list(self.columns)].to_numpy(dtype=np.float64)
            return values
        return np.asarray(X, dtype=np.float64)[:, self.index_]

    def _design(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        missing = np.isnan(values)
        logged = np.log1p(np.clip(np.where(missing, 0.0, values), 0.0, None))
        return np.hstack([logged, missing[:, self.indicated_].astype(np.float64)])


def top_reasons(contributions: pd.DataFrame, k: int = 3) -> list[list[tuple[str, float]]]:
    """The `k` features pushing each row's score up the most, as (feature, contribution)."""
    values = contributions.drop(columns="bias")
    names = list(values.columns)
    return [
        [(str(names[j]), contribution) for j, contribution in row]
        for row in top_reason_indices(values.to_numpy(), k)
    ]


def top_reason_indices(
    contributions: NDArray[np.float64], k: int = 3
) -> list[list[tuple[int, float]]]:
    """`top_reasons` on an array of one column per feature (no bias): per row, the (column,
    contribution) of the `k` largest positive contributions, largest first."""
    order = np.argsort(-contributions, axis=1)[:, :k]
    return [
        [(int(j), float(contributions[i, j])) for j in row if contributions[i, j] > 0]
        for i, row in enumerate(order)
    ]


def _dense(prediction: object) -> NDArray[np.float64]:
    """`Booster.predict` of a dense matrix or frame: typed as maybe sparse, always an array."""
    assert isinstance(prediction, np.ndarray)
    return prediction


def _margin(base: LinearBase | None, X: pd.DataFrame) -> NDArray[np.float64] | None:
    """The base's log-odds of X's rows: LightGBM's `init_score`, or None without a base."""
    return None if base is None else base.margin(X)


def _forward_split(times: ArrayLike | None, n: int) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(rows to learn from, rows to validate on): the snapshots before the latest and the latest
    one; every row for both without times or with a single snapshot."""
    everything = np.ones(n, dtype=bool)
    if times is None:
        return everything, everything
    stamps = pd.to_datetime(pd.Series(np.asarray(times)))
    if stamps.nunique() < 2:
        return everything, everything
    latest = (stamps == stamps.max()).to_numpy()
    return ~latest, latest


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


@functools.lru_cache(maxsize=32)
def _frame_dtype(dtypes: tuple[str, ...]) -> np.dtype:
    """LightGBM's rule for the matrix it makes of a frame (lightgbm.basic._data_from_pandas):
    float64 for int64 + float64 columns. Cached: `np.result_type` costs more than a prediction."""
    return np.result_type(*(np.dtype(d) for d in dtypes), np.float32)
