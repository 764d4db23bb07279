"""The baselines fitted and scored on feature-table rows, so they see exactly what the models see.

Each takes a frame holding feature columns (see `BASELINE_COLUMNS`) and follows the scikit-learn
API. Times in the feature tables are in days; the BG/NBD fits use weeks (the published scale,
and better conditioned). A customer without a purchase has no BG/NBD clock yet; his clock starts
at his first event (`tenure_days`) with x = 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import logit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from models.baselines.bgnbd import BetaGeoModel, GammaGammaModel, expected_spend
from models.baselines.rfm import HistoricalAverageLTV, RFMLogisticRegression

if TYPE_CHECKING:
    from models.specs import ModelSpec

__all__ = [
    "BASELINE_COLUMNS",
    "BGNBDChurn",
    "BGNBDSpend",
    "BaseRate",
    "DecayedOpenRate",
    "HistoricalSpend",
    "LabelAverage",
    "RFMChurn",
    "RecencyFrequency",
    "baseline_columns",
    "make_baselines",
]

_PURCHASE_HISTORY = (
    "recency_days",
    "tenure_days",
    "purchases_total",
    "spend_total",
    "avg_order_value",
    "bgnbd_x",
    "bgnbd_t_x",
    "bgnbd_age",
    "gg_monetary",
)
# The standard feature columns each baseline reads (some lie outside the model's service);
# the label-history baselines read the model's own view too (`baseline_columns`).
_STANDARD_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "rfm_logistic": _PURCHASE_HISTORY,
    "bgnbd": _PURCHASE_HISTORY,
    "bgnbd_gg": _PURCHASE_HISTORY,
    "historical_average": _PURCHASE_HISTORY,
    "open_rate": ("emails_sent_decayed", "emails_opened_decayed"),
    "recency_frequency": ("tenure_days",),
    "base_rate": (),
    "label_average": ("tenure_days",),
}
# The built-in models' baseline columns (their baselines as the shipped definitions name them).
BASELINE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "churn": _PURCHASE_HISTORY,
    "ltv": _PURCHASE_HISTORY,
    "engagement": ("emails_sent_decayed", "emails_opened_decayed"),
}
_WEEK = 7.0


class RFMChurn(ClassifierMixin, BaseEstimator):
    """RFM logistic regression: recency (days since the last purchase, else since the first
    event), frequency (purchases to date), monetary (average order value, 0 without one)."""

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> RFMChurn:
        self.model_ = RFMLogisticRegression().fit(_rfm(X), y)
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self)
        positive = self.model_.predict_proba(_rfm(X))
        return np.column_stack([1 - positive, positive])


class BGNBDChurn(ClassifierMixin, BaseEstimator):
    """P(no purchase in the next `horizon_days`) under BG/NBD: dead, or alive and silent.

    1 − P(alive) · (1 − ((α+T)/(α+T+h))^(r+x)); the second factor is the chance an alive customer
    with the posterior purchase rate buys at least once in h. Ranks like 1 − P(alive) among
    customers with the same history length and adds the rate, which P(alive) alone ignores.
    """

    def __init__(self, horizon_days: float = 90.0) -> None:
        self.horizon_days = horizon_days

    def fit(self, X: pd.DataFrame, y: ArrayLike | None = None) -> BGNBDChurn:
        """Fit BG/NBD by maximum likelihood on the latest snapshot's cross-section of X."""
        self.bgnbd_ = BetaGeoModel().fit(*_rft(_latest(X)))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self)
        x, t_x, t_obs = _rft(X)
        alive = self.bgnbd_.probability_alive(x, t_x, t_obs)
        p = self.bgnbd_.params_
        h = self.horizon_days / _WEEK
        silent_if_alive = ((p["alpha"] + t_obs) / (p["alpha"] + t_obs + h)) ** (p["r"] + x)
        positive = np.clip(1 - alive * (1 - silent_if_alive), 0.0, 1.0)
        return np.column_stack([1 - positive, positive])


class BGNBDSpend(RegressorMixin, BaseEstimator):
    """BG/NBD expected purchases × Gamma-Gamma expected value per purchase, over `horizon_days`."""

    def __init__(self, horizon_days: float = 90.0) -> None:
        self.horizon_days = horizon_days

    def fit(self, X: pd.DataFrame, y: ArrayLike | None = None) -> BGNBDSpend:
        """Fit both models on the latest snapshot's cross-section of X."""
        latest = _latest(X)
        self.bgnbd_ = BetaGeoModel().fit(*_rft(latest))
        x, value = _monetary(latest)
        self.gamma_gamma_ = GammaGammaModel().fit(x, value)
        return self

    def predict(self, X: Columns) -> NDArray[np.float64]:
        """Expected spend over the horizon of each row of a frame or a mapping of columns."""
        check_is_fitted(self)
        x, t_x, t_obs = _rft(X)
        _, value = _monetary(X)
        spend = expected_spend(
            self.bgnbd_, self.gamma_gamma_, self.horizon_days / _WEEK, x, t_x, t_obs, value
        )
        # q <= 1 gives an infinite population mean value; no finite prediction exists then.
        return np.nan_to_num(spend, nan=0.0, posinf=0.0)


class HistoricalSpend(RegressorMixin, BaseEstimator):
    """Spend to date / tenure × `horizon_days` (HistoricalAverageLTV on the feature columns)."""

    def __init__(self, horizon_days: float = 90.0) -> None:
        self.horizon_days = horizon_days

    def fit(self, X: pd.DataFrame, y: ArrayLike | None = None) -> HistoricalSpend:
        self.model_ = HistoricalAverageLTV(
            horizon=self.horizon_days, spend_col="spend_total", tenure_col="tenure_days"
        ).fit(X)
        return self

    def predict(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self)
        return self.model_.predict(X)


class DecayedOpenRate(ClassifierMixin, BaseEstimator):
    """Recency-weighted open rate shrunk to the population's (the `RecencyWeightedOpenRate`
    formula on the feature tables' decayed send and open counts), Platt-scaled to the label.

    The rate is per email while the label is "any open or click in the horizon"; the one-variable
    logistic map keeps the ranking and makes log-loss and Brier comparable with the model's.
    """

    def __init__(self, prior_strength: float = 2.0) -> None:
        self.prior_strength = prior_strength

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> DecayedOpenRate:
        sent = X["emails_sent_decayed"].to_numpy(dtype=float)
        opened = X["emails_opened_decayed"].to_numpy(dtype=float)
        self.prior_rate_ = float(opened.sum() / sent.sum()) if sent.sum() > 0 else 0.5
        self.platt_ = LogisticRegression(C=1e6).fit(self._logit(X)[:, None], np.asarray(y, int))
        self.classes_ = np.array([0, 1])
        return self

    def open_rate(self, X: pd.DataFrame) -> NDArray[np.float64]:
        """The shrunk decayed open rate per row."""
        sent: NDArray[np.float64] = X["emails_sent_decayed"].to_numpy(dtype=float)
        opened: NDArray[np.float64] = X["emails_opened_decayed"].to_numpy(dtype=float)
        k = self.prior_strength
        return (opened + k * self.prior_rate_) / (sent + k)

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self)
        positive = self.platt_.predict_proba(self._logit(X)[:, None])[:, 1]
        return np.column_stack([1 - positive, positive])

    def _logit(self, X: pd.DataFrame) -> NDArray[np.float64]:
        logits: NDArray[np.float64] = logit(np.clip(self.open_rate(X), 1e-6, 1 - 1e-6))
        return logits


def make_baselines(
    model: str | ModelSpec, horizon_days: float | None = None
) -> dict[str, BaseEstimator]:
    """Fresh (unfitted) baselines of a model, by their reporting names (its definition's
    ``baselines``). `model` is a spec, or a built-in model's name with `horizon_days`."""
    if isinstance(model, str):
        from models.specs import spec_for

        spec = spec_for(model)
        horizon = spec.horizon_days if horizon_days is None else horizon_days
    else:
        spec, horizon = model, model.horizon_days if horizon_days is None else horizon_days
    return {name: _baseline(name, spec.name, horizon) for name in spec.baselines}


def baseline_columns(spec: ModelSpec) -> tuple[str, ...]:
    """The feature columns a model's baselines read, in a stable order."""
    columns: list[str] = []
    for name in spec.baselines:
        columns += _STANDARD_COLUMNS[name]
        if name == "recency_frequency":
            columns += [f"{spec.name}_label_days_since", f"{spec.name}_label_count_365d"]
        elif name == "label_average":
            columns += [f"{spec.name}_label_value_365d"]
    return tuple(dict.fromkeys(columns))


def _baseline(name: str, model: str, horizon_days: float) -> BaseEstimator:
    if name == "rfm_logistic":
        return RFMChurn()
    if name == "bgnbd":
        return BGNBDChurn(horizon_days)
    if name == "bgnbd_gg":
        return BGNBDSpend(horizon_days)
    if name == "historical_average":
        return HistoricalSpend(horizon_days)
    if name == "open_rate":
        return DecayedOpenRate()
    if name == "recency_frequency":
        return RecencyFrequency(model)
    if name == "base_rate":
        return BaseRate()
    if name == "label_average":
        return LabelAverage(model, horizon_days)
    raise ValueError(f"unknown baseline {name!r}")


class RecencyFrequency(ClassifierMixin, BaseEstimator):
    """Logistic regression on the label event's history: log days since the latest one (since
    the first event when there is none) and log(1 + count in the last 365 days)."""

    def __init__(self, model: str = "") -> None:
        self.model = model

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> RecencyFrequency:
        target = np.asarray(y, dtype=int)
        self.classes_ = np.array([0, 1])
        self.constant_ = float(target.mean()) if target.min() == target.max() else None
        if self.constant_ is None:
            self.logistic_ = LogisticRegression(C=1.0, max_iter=1_000).fit(self._x(X), target)
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self, "classes_")
        if self.constant_ is not None:
            positive = np.full(len(X), self.constant_)
        else:
            positive = self.logistic_.predict_proba(self._x(X))[:, 1]
        return np.column_stack([1 - positive, positive])

    def _x(self, X: pd.DataFrame) -> NDArray[np.float64]:
        tenure = X["tenure_days"].fillna(0.0).clip(lower=0.0)
        since = X[f"{self.model}_label_days_since"].fillna(tenure).clip(lower=0.0)
        count = X[f"{self.model}_label_count_365d"].astype(float)
        return np.column_stack([np.log1p(since), np.log1p(count), (count == 0).astype(float)])


class BaseRate(ClassifierMixin, BaseEstimator):
    """Everyone gets the training label's mean: the score a model must beat to know anything."""

    def fit(self, X: pd.DataFrame, y: ArrayLike) -> BaseRate:
        self.rate_ = float(np.mean(np.asarray(y, dtype=float)))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self)
        positive = np.full(len(X), self.rate_)
        return np.column_stack([1 - positive, positive])


class LabelAverage(RegressorMixin, BaseEstimator):
    """The label value's historical rate: its sum over the last 365 days / min(tenure, 365)
    days × the horizon (0 for a customer without history)."""

    def __init__(self, model: str = "", horizon_days: float = 90.0) -> None:
        self.model = model
        self.horizon_days = horizon_days

    def fit(self, X: pd.DataFrame, y: ArrayLike | None = None) -> LabelAverage:
        self.fitted_ = True
        return self

    def predict(self, X: pd.DataFrame) -> NDArray[np.float64]:
        check_is_fitted(self)
        value = X[f"{self.model}_label_value_365d"].fillna(0.0).to_numpy(dtype=float)
        days = X["tenure_days"].fillna(0.0).clip(lower=1.0, upper=365.0).to_numpy(dtype=float)
        rate: NDArray[np.float64] = value / days * self.horizon_days
        return rate


def _rfm(X: pd.DataFrame) -> pd.DataFrame:
    tenure = X["tenure_days"].fillna(0.0).clip(lower=0.0)
    return pd.DataFrame(
        {
            "recency": X["recency_days"].fillna(tenure).clip(lower=0.0),
            "frequency": X["purchases_total"].astype(float),
            "monetary_value": X["avg_order_value"].fillna(0.0).clip(lower=0.0),
        },
        index=X.index,
    )


Columns: TypeAlias = "pd.DataFrame | Mapping[str, NDArray[np.floating]]"


def _rft(X: Columns) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """BG/NBD (x, t_x, T) in weeks; customers without a purchase: x = t_x = 0, T = tenure."""
    age = _column(X, "bgnbd_age")
    bought = ~np.isnan(age)
    x = np.where(bought, _column(X, "bgnbd_x"), 0.0)
    t_x = np.where(bought, _column(X, "bgnbd_t_x"), 0.0)
    tenure = _column(X, "tenure_days")
    t_obs = np.where(bought, age, np.where(np.isnan(tenure), 0.0, tenure))
    t_obs = np.maximum(t_obs, t_x)
    return x, t_x / _WEEK, t_obs / _WEEK


def _monetary(X: Columns) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(x, mean repeat-day spend); customers whose repeat spend is not positive count as x = 0."""
    x = _column(X, "bgnbd_x")
    value = _column(X, "gg_monetary")
    usable = (x > 0) & np.isfinite(value) & (value > 0)
    return np.where(usable, x, 0.0), np.where(usable, value, 0.0)


def _column(X: Columns, name: str) -> NDArray[np.float64]:
    """Column `name` of a frame (missing values as NaN) or of a mapping of NumPy columns (the
    serving path, which builds no frame)."""
    if isinstance(X, pd.DataFrame):
        return X[name].to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(X[name], dtype=np.float64)


def _latest(X: pd.DataFrame) -> pd.DataFrame:
    """The rows of the latest snapshot: one cross-section, as the BG/NBD likelihood assumes."""
    if "event_timestamp" not in X.columns:
        return X
    return X[X["event_timestamp"] == X["event_timestamp"].max()]
