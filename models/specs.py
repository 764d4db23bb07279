"""What each learned model is: its task, label, horizon, feature service and how it is judged.

Plain data, import-light: the training flow, the backtest and the scoring service all read the
same specs, so a model's label and its "better than" rule are defined once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final, Literal

from features.compute import CHURN_HORIZON, ENGAGEMENT_HORIZON, LTV_HORIZON
from features.schema import MODEL_NAMES, Dtype, model_features

__all__ = ["BASELINES", "SPECS", "ModelSpec", "spec_for"]

Task = Literal["binary", "regression"]


@dataclass(frozen=True)
class ModelSpec:
    """One learned model: `name` is also its Feast feature service and registered model name."""

    name: str
    task: Task
    label: str
    horizon: timedelta
    primary_metric: str
    higher_is_better: bool
    objective: Mapping[str, Any] = field(default_factory=dict)
    # Features of the linear base a classifier's trees boost from (models.lgbm.LinearBase).
    linear_base: tuple[str, ...] = ()

    @property
    def features(self) -> dict[str, Dtype]:
        """The model's input columns, in training order, with their dtypes."""
        return model_features(self.name)

    @property
    def horizon_days(self) -> float:
        return self.horizon / timedelta(days=1)

    def better(self, candidate: float, incumbent: float) -> bool:
        """Whether `candidate` strictly beats `incumbent` on the primary metric."""
        return candidate > incumbent if self.higher_is_better else candidate < incumbent


SPECS: Final[dict[str, ModelSpec]] = {
    "churn": ModelSpec(
        "churn",
        "binary",
        label="churned",
        horizon=CHURN_HORIZON,
        primary_metric="roc_auc",
        higher_is_better=True,
        objective={"objective": "binary"},
        # Recency and frequency: the two purchase-history summaries whose effect on churn keeps its
        # sign at every customer age (customer-base models add only the age T, whose effect does
        # not), so extrapolating them linearly past the oldest training customer is safe. Spend
        # stays with the trees: it is independent of the purchase process in those models, and
        # adding it to the base lowered the CDNOW backtest (BENCHMARKS.md, "Churn on CDNOW").
        linear_base=("recency_days", "purchases_365d"),
    ),
    # Tweedie: spend is zero for many customers and right-skewed for the rest; the log link
    # keeps predictions positive and the loss does not chase the few large spenders as MSE does.
    "ltv": ModelSpec(
        "ltv",
        "regression",
        label="future_spend",
        horizon=LTV_HORIZON,
        # Targeting ranks customers by value: the share of future spend the ranking captures.
        primary_metric="normalised_gini",
        higher_is_better=True,
        objective={"objective": "tweedie", "tweedie_variance_power": 1.5},
    ),
    "engagement": ModelSpec(
        "engagement",
        "binary",
        label="engaged",
        horizon=ENGAGEMENT_HORIZON,
        primary_metric="roc_auc",
        higher_is_better=True,
        objective={"objective": "binary"},
    ),
}
assert tuple(SPECS) == MODEL_NAMES, "one spec per Feast feature service"

# The baselines reported beside each model (ARCHITECTURE.md, "Models").
BASELINES: Final[dict[str, tuple[str, ...]]] = {
    "churn": ("rfm_logistic", "bgnbd"),
    "ltv": ("bgnbd_gg", "historical_average"),
    "engagement": ("open_rate",),
}


def spec_for(name: str, horizon: timedelta | None = None) -> ModelSpec:
    """The spec of model `name`, with its label horizon replaced when `horizon` is given."""
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; the models are {list(SPECS)}")
    spec = SPECS[name]
    return spec if horizon is None else replace(spec, horizon=horizon)
