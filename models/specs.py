"""What each learned model is: its task, label, horizon, feature service and how it is judged.

Built from the model definitions (`models.definitions`, one YAML file per model), so a model's
label and its "better than" rule are defined once, in its file; the training flow, the backtest
and the scoring service read these specs. Plain data, import-light.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final, Literal

from features.schema import Dtype, model_features

# At run time, not under TYPE_CHECKING: Prefect validates flow parameters (a ProblemSet holds a
# spec) with pydantic, which must resolve these annotations.
from models.definitions import DEFAULT_DIR, Definitions, ModelDefinition, load_definitions

__all__ = ["BASELINES", "SPECS", "ModelSpec", "spec_for", "spec_of", "specs"]

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
    baselines: tuple[str, ...] = ()
    description: str = ""
    best_send_hour: bool = False
    # The champion gate's margin on the primary metric (absolute).
    champion_margin: float = 0.0
    # Regression: the weight of BG/NBD × Gamma-Gamma in the prediction (models.lgbm).
    bgnbd_weight: float = 0.0
    definition: ModelDefinition | None = field(default=None, compare=False, repr=False)
    definitions: Definitions | None = field(default=None, compare=False, repr=False)

    @property
    def features(self) -> dict[str, Dtype]:
        """The model's input columns, in training order, with their dtypes."""
        return model_features(self.name, self.definitions)

    @property
    def horizon_days(self) -> float:
        return self.horizon / timedelta(days=1)

    def better(self, candidate: float, incumbent: float, margin: float = 0.0) -> bool:
        """Whether `candidate` beats `incumbent` on the primary metric by more than `margin`."""
        if self.higher_is_better:
            return candidate > incumbent + margin
        return candidate < incumbent - margin


def spec_of(definition: ModelDefinition, definitions: Definitions | None = None) -> ModelSpec:
    """The spec a definition describes."""
    training = definition.training
    objective = dict(training.objective) or (
        {"objective": "binary"} if definition.task == "classification" else {}
    )
    return ModelSpec(
        name=definition.name,
        task="binary" if definition.task == "classification" else "regression",
        label=definition.label.column,
        horizon=definition.label.horizon,
        primary_metric=definition.primary_metric,
        higher_is_better=definition.higher_is_better,
        objective=objective,
        linear_base=training.linear_base,
        baselines=definition.baseline_names,
        description=definition.description,
        best_send_hour=training.best_send_hour,
        champion_margin=training.champion_margin,
        bgnbd_weight=training.bgnbd_weight,
        definition=definition,
        definitions=definitions,
    )


def specs(definitions: Definitions | None = None) -> dict[str, ModelSpec]:
    """Every model's spec, by name (default: NUDGE_MODELS_DIR's definitions)."""
    defs = definitions if definitions is not None else load_definitions()
    return {d.name: spec_of(d, defs) for d in defs}


def spec_for(
    name: str, horizon: timedelta | None = None, definitions: Definitions | None = None
) -> ModelSpec:
    """The spec of model `name`, with its label horizon replaced when `horizon` is given."""
    defs = definitions if definitions is not None else load_definitions()
    if name not in defs:
        raise ValueError(f"unknown model {name!r}; the models are {list(defs.names)}")
    spec = spec_of(defs.get(name), defs)
    return spec if horizon is None else replace(spec, horizon=horizon)


_SHIPPED = load_definitions(DEFAULT_DIR)
# The built-in models (the definitions shipped with nudge), in the order churn, ltv, engagement.
SPECS: Final[dict[str, ModelSpec]] = {
    name: spec_of(_SHIPPED.get(name), _SHIPPED) for name in ("churn", "ltv", "engagement")
}
# The baselines reported beside each built-in model (ARCHITECTURE.md, "Models").
BASELINES: Final[dict[str, tuple[str, ...]]] = {name: s.baselines for name, s in SPECS.items()}
