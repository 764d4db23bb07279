"""Model definitions: one YAML file per model in ``NUDGE_MODELS_DIR`` (default: this folder).

A data scientist adds a prediction by adding a file; the feature tables, the Feast views and
services, training, MLflow, serving, score conditions and backtests all read it from here, so no
code changes. Churn, LTV and engagement are such files themselves (``churn.yaml`` …).

Import-light on purpose (pydantic, the bounded YAML loader and the trigger operators; never
Feast, MLflow or LightGBM): the CLI, the trigger checks and the Feast repo all load definitions,
and loading the shipped three takes about 5 ms here. Every mistake is a `DefinitionError` naming
the file and the line (the YAML node of the field), e.g.
``ltv.yaml:7: label.horizon: the horizon must be between 1 day and 730 days (got 0:00:00)``.

What a file says (see ``churn.yaml`` for a commented example):

- ``name``, ``task`` (classification | regression), ``description``;
- ``label``: ``event`` (one type or a list), optional ``where`` (the trigger operators over
  ``amount`` and ``properties.<key>``), ``horizon`` (a duration, whole days), for regression
  ``value`` (``amount`` or ``properties.<key>``: its sum over the horizon), for classification
  optionally ``absent: true`` (the positive class is "no such event", as churn);
- ``features``: feature groups — the standard ones (``activity``, ``value``, ``email``,
  ``label_history``, each optionally ``only: [...]`` columns), per-event-type groups
  (``{events: [refund], windows: [30, 90]}``: counts, amount sums, mean, maximum, recency) and
  property features (``{property: category, event: purchase_completed, share: books}``,
  ``distinct: true`` or ``last: true``); default: the standard customer features and the
  label's own history;
- ``baselines`` (default: a recency/frequency logistic on the label's event and the base rate
  for classification, the historical average of the label's value for regression);
- ``retrain``: daily, weekly (default), monthly, an interval such as ``14d``, or a cron line;
- ``training`` (optional): LightGBM ``objective``, a ``linear_base``, the ``primary_metric``,
  ``best_send_hour``, the champion gate's ``champion_margin``, and for spend regressions a
  ``bgnbd_weight`` (blend BG/NBD × Gamma-Gamma into the prediction).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.dsl.bounded_yaml import (
    MAX_FILE_BYTES,
    BoundedLoader,
    Expansion,
    TooBig,
    walk_expanded,
    yaml_line,
    yaml_message,
)
from engine.dsl.durations import parse_duration
from engine.dsl.operators import compile_predicate
from engine.errors import UserError

__all__ = [
    "BASELINE_TASKS",
    "DEFAULT_DIR",
    "STANDARD_GROUPS",
    "DefinitionError",
    "Definitions",
    "EventGroup",
    "GroupRef",
    "LabelSpec",
    "ModelDefinition",
    "PropertyFeature",
    "Training",
    "load_definition_file",
    "load_definitions",
    "retrain_schedule",
]

DEFAULT_DIR: Final = Path(__file__).resolve().parent
# The standard feature groups: the three standard feature views, and the label's own history.
STANDARD_GROUPS: Final = ("activity", "value", "email", "label_history")
# Baselines a definition may name, and the task each one scores.
BASELINE_TASKS: Final[dict[str, str]] = {
    "rfm_logistic": "classification",  # RFM logistic regression on the purchase history
    "bgnbd": "classification",  # BG/NBD P(no purchase in the horizon)
    "open_rate": "classification",  # recency-weighted email open rate, Platt-scaled
    "recency_frequency": "classification",  # logistic on the label event's recency and count
    "base_rate": "classification",  # the training label's mean for everyone
    "bgnbd_gg": "regression",  # BG/NBD × Gamma-Gamma expected spend
    "historical_average": "regression",  # spend to date / tenure × horizon
    "label_average": "regression",  # the label value's last 365 days / tenure × horizon
}
DEFAULT_BASELINES: Final[dict[str, tuple[str, ...]]] = {
    "classification": ("recency_frequency", "base_rate"),
    "regression": ("label_average",),
}
DEFAULT_FEATURES: Final = ("activity", "value", "email", "label_history")
MAX_HORIZON: Final = timedelta(days=730)
_CADENCES: Final = {"daily": "0 3 * * *", "weekly": "0 3 * * 1", "monthly": "0 3 1 * *"}
_CRON: Final = re.compile(r"^\s*\S+(\s+\S+){4}\s*$")
_NAME: Final = r"^[a-z][a-z0-9_]{0,39}$"
_FIELD: Final = re.compile(r"^(amount|properties\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*)$")
_PRIMARY: Final = {
    "classification": ("roc_auc", "pr_auc", "log_loss", "brier"),
    "regression": ("rmse", "mae", "spearman", "normalised_gini"),
}
LOWER_IS_BETTER: Final = frozenset({"log_loss", "brier", "rmse", "mae"})


class DefinitionError(UserError):
    """A model definition that cannot be used: file, line (when known) and what is wrong."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {message}")
        self.source, self.line, self.message = source, line, message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field_ref(value: str, what: str) -> str:
    if not _FIELD.match(value):
        raise ValueError(f"{what}: expected amount or properties.<key> (got {value!r})")
    return value


class LabelSpec(_Strict):
    """What is predicted, in (t, t + horizon] after the snapshot t."""

    event: tuple[str, ...]
    where: dict[str, Any] | None = None
    horizon: timedelta
    value: str | None = None
    absent: bool = False
    column: str = Field(default="label", pattern=_NAME)

    @field_validator("event", mode="before")
    @classmethod
    def _events(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items:
            raise ValueError("expected an event type or a non-empty list of them")
        for item in items:
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"expected event type names (got {item!r})")
        return tuple(items)

    @field_validator("horizon", mode="before")
    @classmethod
    def _horizon(cls, value: Any) -> timedelta:
        if isinstance(value, bool) or not isinstance(value, str | int | float | timedelta):
            raise ValueError("expected a duration such as 30d or 13w")
        horizon = parse_duration(f"{value}d" if isinstance(value, int | float) else value)
        if not timedelta(days=1) <= horizon <= MAX_HORIZON:
            raise ValueError(
                f"the horizon must be between 1 day and {MAX_HORIZON.days} days (got {value!r})"
            )
        if horizon % timedelta(days=1):
            raise ValueError(f"the horizon must be a whole number of days (got {value!r})")
        return horizon

    @field_validator("where")
    @classmethod
    def _where(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, test in (value or {}).items():
            _field_ref(key, "where")
            compile_predicate(test)  # unknown operators and bad operands fail here
        return value

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        return None if value is None else _field_ref(value, "value")

    @property
    def horizon_days(self) -> int:
        return self.horizon // timedelta(days=1)


class GroupRef(_Strict):
    """A standard group, optionally only some of its columns."""

    group: Literal["activity", "value", "email", "label_history"]
    only: tuple[str, ...] | None = None


class EventGroup(_Strict):
    """Per event type: counts and amount sums over each window, the amount's mean and maximum
    over the longest window, and the days since the latest such event."""

    events: tuple[str, ...] = Field(min_length=1)
    windows: tuple[int, ...] = (7, 30, 90, 365)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 1 <= w <= 730 for w in value):
            raise ValueError("windows: expected whole days between 1 and 730")
        return tuple(sorted(set(value)))


class PropertyFeature(_Strict):
    """One property feature of an event type over the last `window` days: the share of those
    events whose property equals `share`, the number of distinct values, or the latest value
    (numeric values only; otherwise null)."""

    property: str = Field(pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
    event: str
    share: str | int | float | None = None
    distinct: bool = False
    last: bool = False
    window: int = Field(default=365, ge=1, le=730)

    @model_validator(mode="after")
    def _one_kind(self) -> PropertyFeature:
        kinds = [self.share is not None, self.distinct, self.last]
        if sum(kinds) != 1:
            raise ValueError("a property feature needs exactly one of share, distinct or last")
        return self

    def kind(self) -> str:
        """share, distinct or last."""
        return "share" if self.share is not None else "distinct" if self.distinct else "last"


FeatureEntry = GroupRef | EventGroup | PropertyFeature


class Training(_Strict):
    """How the learned model is fitted and judged."""

    objective: dict[str, Any] = Field(default_factory=dict)
    linear_base: tuple[str, ...] = ()
    primary_metric: str | None = None
    best_send_hour: bool = False
    # The champion gate: a challenger must beat every baseline and the champion by this much on
    # the primary metric (absolute, in the metric's units).
    champion_margin: float = Field(default=0.0, ge=0.0)
    # Regression on purchases: blend BG/NBD × Gamma-Gamma expected spend into the prediction
    # with this weight (models.lgbm.LGBMSpendRegressor; the model needs the `value` group).
    bgnbd_weight: float = Field(default=0.0, ge=0.0, le=1.0)


class ModelDefinition(_Strict):
    """One model, as its file says (validated)."""

    name: str = Field(pattern=_NAME)
    task: Literal["classification", "regression"]
    description: str = ""
    label: LabelSpec
    features: tuple[FeatureEntry, ...] | None = None
    baselines: tuple[str, ...] | None = None
    retrain: str = "weekly"
    training: Training = Field(default_factory=Training)

    @field_validator("features", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"group": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("retrain")
    @classmethod
    def _retrain(cls, value: str) -> str:
        retrain_schedule(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelDefinition:
        if self.task == "regression" and self.label.value is None:
            raise ValueError("label.value: a regression label needs a value (amount or "
                             "properties.<key>: its sum over the horizon)")  # fmt: skip
        if self.task == "classification" and self.label.value is not None:
            raise ValueError("label.value: only a regression label has a value")
        if self.task == "regression" and self.label.absent:
            raise ValueError("label.absent: only a classification label can be an absence")
        for name in self.baselines or ():
            if name not in BASELINE_TASKS:
                raise ValueError(f"baselines: unknown baseline {name!r}; known: "
                                 f"{', '.join(BASELINE_TASKS)}")  # fmt: skip
            if BASELINE_TASKS[name] != self.task:
                raise ValueError(f"baselines: {name} scores {BASELINE_TASKS[name]}, not "
                                 f"{self.task}")  # fmt: skip
        if self.training.bgnbd_weight and self.task != "regression":
            raise ValueError("training.bgnbd_weight: only a regression model blends BG/NBD")
        primary = self.training.primary_metric
        if primary is not None and primary not in _PRIMARY[self.task]:
            raise ValueError(f"training.primary_metric: expected one of "
                             f"{', '.join(_PRIMARY[self.task])} (got {primary!r})")  # fmt: skip
        return self

    # -- what the rest of nudge reads ------------------------------------------------------------

    @property
    def feature_entries(self) -> tuple[FeatureEntry, ...]:
        """The declared feature groups, or the default ones."""
        if self.features is not None:
            return self.features
        return tuple(GroupRef.model_validate({"group": g}) for g in DEFAULT_FEATURES)

    @property
    def baseline_names(self) -> tuple[str, ...]:
        return self.baselines if self.baselines is not None else DEFAULT_BASELINES[self.task]

    @property
    def primary_metric(self) -> str:
        if self.training.primary_metric:
            return self.training.primary_metric
        return "roc_auc" if self.task == "classification" else "rmse"

    @property
    def higher_is_better(self) -> bool:
        return self.primary_metric not in LOWER_IS_BETTER

    def event_types(self) -> set[str]:
        """Every event type the definition reads (label and features)."""
        types = set(self.label.event)
        for entry in self.feature_entries:
            if isinstance(entry, EventGroup):
                types.update(entry.events)
            elif isinstance(entry, PropertyFeature):
                types.add(entry.event)
        return types

    def properties(self) -> dict[str, set[str]]:
        """The property keys the definition reads, by the event types that must carry them."""
        wanted: dict[str, set[str]] = {}
        refs = [*(self.label.where or {}), *([self.label.value] if self.label.value else [])]
        for ref in refs:
            if ref.startswith("properties."):
                key = ref.removeprefix("properties.").split(".")[0]
                for event in self.label.event:
                    wanted.setdefault(event, set()).add(key)
        for entry in self.feature_entries:
            if isinstance(entry, PropertyFeature):
                wanted.setdefault(entry.event, set()).add(entry.property.split(".")[0])
        return wanted


@dataclass(frozen=True)
class Located:
    """A loaded definition and where its fields are: file and 1-based line by dotted path."""

    definition: ModelDefinition
    source: str
    lines: Mapping[str, int] = field(default_factory=dict)

    def line(self, path: str) -> int | None:
        """The line of `path` (``label.event``), else of its nearest parent present."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return self.lines.get("")

    def error(self, path: str, message: str) -> DefinitionError:
        """A `DefinitionError` at `path`'s line."""
        return DefinitionError(self.source, self.line(path), f"{path}: {message}")


@dataclass(frozen=True)
class Definitions:
    """Every model of one folder, by name, in file order."""

    folder: Path
    located: Mapping[str, Located]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.located)

    def __iter__(self) -> Iterator[ModelDefinition]:
        return (item.definition for item in self.located.values())

    def __len__(self) -> int:
        return len(self.located)

    def __contains__(self, name: object) -> bool:
        return name in self.located

    def get(self, name: str) -> ModelDefinition:
        """The definition of `name`; an unknown name is a `UserError` listing the known ones."""
        if name not in self.located:
            raise UserError(
                f"unknown model {name!r}: the definitions in {self.folder} are "
                f"{', '.join(self.located) or 'none'}"
            )
        return self.located[name].definition

    def where(self, name: str) -> Located:
        self.get(name)
        return self.located[name]

    def subset(self, names: list[str] | tuple[str, ...]) -> Definitions:
        """Only the named models (each must exist), in the given order."""
        for name in names:
            self.get(name)
        return Definitions(self.folder, {n: self.located[n] for n in names})


_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], Definitions] = {}


def load_definitions(folder: Path | str | None = None) -> Definitions:
    """Every ``*.yaml`` / ``*.yml`` of `folder` (default: NUDGE_MODELS_DIR, else the shipped
    definitions), validated; cached until a file changes. Raises `DefinitionError`."""
    if folder is None:
        from nudge.settings import SharedSettings

        folder = SharedSettings().model_definitions_dir
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DefinitionError(
            str(root), None, "NUDGE_MODELS_DIR: no such folder of model definitions"
        )
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    key = (str(root), stamp)
    if key in _CACHE:
        return _CACHE[key]
    if not files:
        raise DefinitionError(str(root), None, "no model definitions (*.yaml) in this folder")
    located: dict[str, Located] = {}
    for path in files:
        item = load_definition_file(path)
        name = item.definition.name
        if name in located:
            raise item.error("name", f"model {name!r} is also defined in {located[name].source}")
        located[name] = item
    loaded = Definitions(root, located)
    _CACHE.clear()  # one folder in use at a time; keep the cache from growing
    _CACHE[key] = loaded
    return loaded


def load_definition_file(path: Path) -> Located:
    """One definition file, validated; raises `DefinitionError` with the file and line."""
    source = str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DefinitionError(
                source, None, f"file too large (over {MAX_FILE_BYTES // 1024} KiB)"
            )
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DefinitionError(source, None, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DefinitionError(source, None, f"not UTF-8 text (byte {exc.start})") from None
    return load_definition_text(text, source)


def load_definition_text(text: str, source: str = "<string>") -> Located:
    """A definition from YAML text (the bounded loader: size, depth and aliases are capped)."""
    loader = BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DefinitionError(source, None, "empty file: expected a model definition")
        walk_expanded(node, Expansion())
        raw = loader.construct_document(node)
    except TooBig as exc:
        raise DefinitionError(source, exc.line, exc.message) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(source, yaml_line(exc), yaml_message(exc)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise DefinitionError(source, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    lines = _lines(node)
    if not isinstance(raw, Mapping):
        raise DefinitionError(source, lines.get(""), "expected a mapping (name, task, label, …)")
    try:
        definition = ModelDefinition.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        path = ".".join(str(p) for p in problem["loc"] if not _is_union_tag(p))
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "missing":
            message = "is required"
        located = Located(_placeholder(), source, lines)
        count = len(exc.errors())
        more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
        raise located.error(path or "(top)", message + more) from None
    return Located(definition, source, lines)


def retrain_schedule(retrain: str) -> tuple[str, str | timedelta]:
    """``("cron", "0 3 * * 1")`` or ``("interval", timedelta)`` of a ``retrain`` value."""
    text = retrain.strip().lower()
    if text in _CADENCES:
        return "cron", _CADENCES[text]
    if _CRON.match(text):
        return "cron", text
    try:
        interval = parse_duration(text)
    except ValueError:
        raise ValueError(
            f"retrain: expected daily, weekly, monthly, an interval such as 14d, or a cron line "
            f"(got {retrain!r})"
        ) from None
    if interval < timedelta(hours=1):
        raise ValueError(f"retrain: an interval of at least 1h (got {retrain!r})")
    return "interval", interval


# -- internals -----------------------------------------------------------------------------------


def _is_union_tag(part: object) -> bool:
    """Pydantic puts the union member's class name in error locations; not a YAML key."""
    return isinstance(part, str) and part in {"GroupRef", "EventGroup", "PropertyFeature"}


def _placeholder() -> ModelDefinition:
    return ModelDefinition.model_construct(name="?", task="classification")


def _lines(node: yaml.Node) -> dict[str, int]:
    """Dotted path (``label.where.amount``, ``features.2.events``) → 1-based line."""
    lines: dict[str, int] = {"": node.start_mark.line + 1}

    def walk(current: yaml.Node, path: str) -> None:
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines.setdefault(child, key.start_mark.line + 1)
                walk(value, child)
        elif isinstance(current, yaml.SequenceNode):
            for index, value in enumerate(current.value):
                child = f"{path}.{index}" if path else str(index)
                lines.setdefault(child, value.start_mark.line + 1)
                walk(value, child)

    walk(node, "")
    return lines
