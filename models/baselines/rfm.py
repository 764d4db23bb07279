"""Simple baselines the learned models must beat: RFM logistic regression, historical average LTV,
and a recency-weighted open rate for email engagement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

__all__ = ["HistoricalAverageLTV", "RFMLogisticRegression", "RecencyWeightedOpenRate"]


class RFMLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression on standardised log1p(recency, frequency, monetary) — the churn baseline.

    `feature_columns` name the columns of X in that order. Recency here is the RFM one, *time since
    the last purchase*; a BG/NBD summary's ``recency`` is t_x, so pass ``T - recency`` instead.
    """

    def __init__(
        self,
        feature_columns: Sequence[str] = ("recency", "frequency", "monetary_value"),
        C: float = 1.0,
        max_iter: int = 1_000,
    ) -> None:
        self.feature_columns = feature_columns
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> RFMLogisticRegression:
        """Fit the scaler and the logistic regression; `y` is 1 for the positive class (e.g. churn)."""
        y = np.asarray(y)
        if not np.isin(y, (0, 1)).all():
            raise ValueError("y must be binary (0/1 or bool)")
        self.pipeline_: Pipeline = make_pipeline(
            FunctionTransformer(np.log1p),
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter),
        ).fit(self._features(X), y.astype(int))
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """P(positive) for each row of X, as a 1-D array."""
        if not hasattr(self, "pipeline_"):
            raise NotFittedError("RFMLogisticRegression is not fitted yet; call fit(X, y)")
        # Column 1 is class 1: classes_ is [0, 1], as LogisticRegression refuses a single class.
        positive: NDArray[np.float64] = self.pipeline_.predict_proba(self._features(X))[:, 1]
        return positive

    def _features(self, X: pd.DataFrame) -> NDArray[np.float64]:
        features: NDArray[np.float64] = X.loc[:, list(self.feature_columns)].to_numpy(dtype=float)
        if not np.all(np.isfinite(features)) or np.any(features < 0):
            raise ValueError(
                f"{list(self.feature_columns)} must be finite and non-negative (log1p)"
            )
        return features


class HistoricalAverageLTV(RegressorMixin, BaseEstimator):
    """Spend in the next `horizon` = the customer's historical spend rate × `horizon` — LTV baseline.

    The rate is ``X[spend_col] / X[tenure_col]`` (tenure floored at `min_tenure` so a customer who
    bought today is not extrapolated from a near-zero denominator). Customers without history
    (tenure missing or 0) get the population mean rate learned in `fit`. Horizon and tenure share
    one time unit.
    """

    def __init__(
        self,
        horizon: float = 90.0,
        spend_col: str = "total_spend",
        tenure_col: str = "tenure",
        min_tenure: float = 1.0,
    ) -> None:
        self.horizon = horizon
        self.spend_col = spend_col
        self.tenure_col = tenure_col
        self.min_tenure = min_tenure

    def fit(self, X: pd.DataFrame, y: ArrayLike | None = None) -> HistoricalAverageLTV:
        """Learn the population mean spend rate over customers with history; `y` is ignored."""
        rates = self._rates(X)
        seen = rates[~np.isnan(rates)]
        if len(seen) == 0:
            raise ValueError("no customer with history to learn the population spend rate from")
        self.population_rate_ = float(np.mean(seen))
        return self

    def predict(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """Expected spend over `horizon` for each row of X."""
        if not hasattr(self, "population_rate_"):
            raise NotFittedError("HistoricalAverageLTV is not fitted yet; call fit(X)")
        rates = self._rates(X)
        return np.where(np.isnan(rates), self.population_rate_, rates) * self.horizon

    def _rates(self, X: pd.DataFrame) -> NDArray[np.float64]:
        spend = X[self.spend_col].to_numpy(dtype=float)
        tenure = X[self.tenure_col].to_numpy(dtype=float)
        unseen = np.isnan(spend) | np.isnan(tenure) | (tenure <= 0)
        with np.errstate(invalid="ignore"):
            rates = spend / np.maximum(tenure, self.min_tenure)
        return np.where(unseen, np.nan, rates)


class RecencyWeightedOpenRate(BaseEstimator):
    """Exponentially decayed open rate with a prior — the engagement baseline.

    rate = (Σ w·opened + k·prior) / (Σ w + k), with w = 2^(-age / `half_life_days`) for each send
    at or before `as_of` and k = `prior_strength` pseudo-sends at the population's decayed open rate
    (learned in `fit`). A customer with no sends gets the prior.
    """

    def __init__(
        self,
        half_life_days: float = 30.0,
        prior_strength: float = 2.0,
        customer_col: str = "customer_id",
        time_col: str = "sent_at",
        opened_col: str = "opened",
    ) -> None:
        self.half_life_days = half_life_days
        self.prior_strength = prior_strength
        self.customer_col = customer_col
        self.time_col = time_col
        self.opened_col = opened_col

    def fit(
        self, sends: pd.DataFrame, as_of: pd.Timestamp | str | None = None
    ) -> RecencyWeightedOpenRate:
        """Learn the prior: the decayed open rate pooled over sends up to `as_of` (default: last send)."""
        weights, opened = self._weighted(sends, as_of)
        if weights.sum() == 0:
            raise ValueError("no sends up to as_of to learn the prior open rate from")
        self.prior_rate_ = float(np.sum(weights * opened) / np.sum(weights))
        return self

    def predict(
        self,
        sends: pd.DataFrame,
        as_of: pd.Timestamp | str,
        customers: ArrayLike | None = None,
    ) -> pd.Series:
        """Shrunk decayed open rate per customer from sends up to `as_of` (default: all in `sends`)."""
        if not hasattr(self, "prior_rate_"):
            raise NotFittedError("RecencyWeightedOpenRate is not fitted yet; call fit(sends)")
        weights, opened = self._weighted(sends, as_of)
        by_customer = (
            pd.DataFrame({"w": weights, "wo": weights * opened})
            .groupby(sends[self.customer_col].to_numpy())
            .sum()
        )
        if customers is not None:
            by_customer = by_customer.reindex(pd.Index(customers), fill_value=0.0)
        k = self.prior_strength
        rate = (by_customer["wo"] + k * self.prior_rate_) / (by_customer["w"] + k)
        # With prior_strength 0 a customer without past sends has 0/0: fall back to the prior.
        rate = rate.where(by_customer["w"] + k > 0, self.prior_rate_)
        return rate.rename("open_rate").rename_axis(self.customer_col)

    def _weighted(
        self, sends: pd.DataFrame, as_of: pd.Timestamp | str | None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Decay weight of every send (0 after `as_of`) and whether it was opened."""
        times = pd.to_datetime(sends[self.time_col])
        cutoff = times.max() if as_of is None else pd.Timestamp(as_of)
        age_days = ((cutoff - times) / pd.Timedelta(days=1)).to_numpy(dtype=float)
        # Sends after as_of are in the future of the snapshot (the label window): weight 0.
        weights = np.where(age_days >= 0, np.exp2(-age_days / self.half_life_days), 0.0)
        return weights, sends[self.opened_col].to_numpy(dtype=float)
