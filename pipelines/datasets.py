"""Training and evaluation sets: which snapshots, which labels, and the frames models fit on.

Two sources of feature rows share this module's rules:

- the training flow reads features through Feast point-in-time joins (`feast_sets`), so what a
  model trains on is what the feature store serves;
- the backtest computes them in memory from the lake cut at the cutoff (`memory_sets`), so it can
  run at any past date without touching the store the scoring service reads.

The holdout is always the latest snapshot whose labels are complete; training uses the snapshots
before it. Never a random split across time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import pandas as pd

from engine.errors import UserError
from features.compute import (
    complete_label_snapshots,
    compute_definition_labels,
    compute_features,
)
from features.compute.workspace import EventsInput
from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN, VIEW_NAMES, model_features
from models.baselines.on_features import baseline_columns
from models.definitions import Definitions, load_definitions
from models.specs import ModelSpec

if TYPE_CHECKING:
    from feast import FeatureStore

    from engine.lake import EventLake

__all__ = [
    "DataRange",
    "PipelineError",
    "ProblemSet",
    "check_label",
    "covered_range",
    "feast_sets",
    "feature_snapshots",
    "label_rows",
    "memory_sets",
    "too_short_to_train",
]

KEYS = [ENTITY_KEY, TIMESTAMP_COLUMN]
# A snapshot needs this much history before it to describe anyone.
WARMUP = timedelta(days=28)


class PipelineError(UserError):
    """A mistake in the input the user can fix (empty lake, cutoff outside the data, ...)."""


@dataclass(frozen=True)
class DataRange:
    """The lake's first and last event (UTC)."""

    first: pd.Timestamp
    last: pd.Timestamp

    def describe(self) -> str:
        return f"{self.first:%Y-%m-%d %H:%M} → {self.last:%Y-%m-%d %H:%M} UTC"


@dataclass
class ProblemSet:
    """One model's training rows and holdout rows: keys, label, features, baseline columns."""

    spec: ModelSpec
    train: pd.DataFrame
    holdout: pd.DataFrame

    @property
    def train_snapshots(self) -> list[pd.Timestamp]:
        return sorted(pd.unique(self.train[TIMESTAMP_COLUMN]))


def covered_range(lake: EventLake) -> DataRange:
    """The lake's date range; an empty lake is a user error."""
    info = lake.info()
    if not info.events or info.first_event is None or info.last_event is None:
        raise PipelineError(
            f"the event lake at {lake.root} is empty: load data first "
            "(nudge simulate, or nudge import --preset cdnow FILE)"
        )
    return DataRange(_utc(info.first_event), _utc(info.last_event))


def feature_snapshots(
    data: DataRange, *, step_days: int = 30, count: int = 12, end: pd.Timestamp | None = None
) -> list[pd.Timestamp]:
    """Snapshot times every `step_days`, the latest at `end` (default: the start of the day of
    the last event), going back at most `count` steps and never into the warm-up period."""
    if step_days < 1 or count < 1:
        raise PipelineError("the snapshot step and count must be at least 1")
    anchor = _utc(end) if end is not None else data.last.normalize()
    earliest = data.first + WARMUP
    stamps = [anchor - timedelta(days=step_days * k) for k in range(count)]
    kept = [t for t in stamps if t >= earliest]
    if not kept:
        raise PipelineError(
            f"the lake holds {data.describe()}: too short for a snapshot after "
            f"{WARMUP.days} days of history"
        )
    return sorted(kept)


def too_short_to_train(
    data: DataRange, specs: Mapping[str, ModelSpec], *, step_days: int = 30, count: int = 12
) -> str | None:
    """Why the lake's history cannot give every model a training and a holdout snapshot, or None."""
    try:
        snapshots = feature_snapshots(data, step_days=step_days, count=count)
    except PipelineError as exc:
        return str(exc)
    for name, spec in specs.items():
        if len(complete_label_snapshots(snapshots, data.last, spec.horizon)) < 2:
            return (
                f"{name} needs two snapshots {step_days} days apart, {WARMUP.days} days after the "
                f"first event and {spec.horizon.days} days before the last ({data.describe()})"
            )
    return None


def label_rows(
    events: EventsInput,
    snapshots: Sequence[pd.Timestamp],
    covered_until: pd.Timestamp,
    specs: Mapping[str, ModelSpec],
    *,
    n_train: int,
) -> dict[str, pd.DataFrame]:
    """Per model: the label rows (keys + labels) of its latest `n_train` + 1 label-complete
    snapshots; the latest of them is the holdout."""
    chosen: dict[str, list[pd.Timestamp]] = {}
    for name, spec in specs.items():
        complete = complete_label_snapshots(snapshots, covered_until, spec.horizon)
        if len(complete) < 2:
            raise PipelineError(
                f"{name}: {len(complete)} snapshot(s) with a complete {spec.horizon.days}-day "
                f"label window before {covered_until:%Y-%m-%d}; need at least 2 (training + "
                "holdout) — more history, a shorter horizon or a smaller snapshot step"
            )
        chosen[name] = complete[-(n_train + 1) :]
    every = sorted({t for ts in chosen.values() for t in ts})
    # One workspace for every model; each model keeps its own snapshots.
    labels = compute_definition_labels(
        events, every, _definitions(specs), horizons=_horizons(specs)
    )
    out = {
        name: labels[name][labels[name][TIMESTAMP_COLUMN].isin(chosen[name])].reset_index(drop=True)
        for name in specs
    }
    for name, spec in specs.items():
        rows = out[name]
        check_label(spec, rows[rows[TIMESTAMP_COLUMN] < rows[TIMESTAMP_COLUMN].max()])
    return out


def check_label(spec: ModelSpec, rows: pd.DataFrame) -> None:
    """A label the model can learn from its training rows: both classes (classification), some
    non-zero value (regression); else a `PipelineError` at the definition's label line."""
    label = rows[spec.label]
    if spec.task == "binary":
        positives, n = int(label.sum()), len(label)
        problem = "no positives" if positives == 0 else "only positives" if positives == n else None
    else:
        problem = "no non-zero value" if not (label != 0).any() else None
    if problem is None:
        return
    event = spec.definition.label.event if spec.definition else (spec.label,)
    message = (
        f"the label has {problem} in the {len(label):,} training rows "
        f"({', '.join(event)} within {spec.horizon_days:g} days): widen the horizon or the "
        "where filter, or bring more history"
    )
    if spec.definitions is not None and spec.name in spec.definitions:
        raise PipelineError(str(spec.definitions.where(spec.name).error("label", message)))
    raise PipelineError(f"{spec.name}: {message}")


def feast_sets(
    store: FeatureStore, labels: Mapping[str, pd.DataFrame], specs: Mapping[str, ModelSpec]
) -> dict[str, ProblemSet]:
    """Training and holdout frames by Feast point-in-time joins on each model's label rows.

    The baselines may read columns outside the model's feature service (the churn baselines
    read the LTV view's BG/NBD summaries); those are joined from the views that hold them.
    """
    from features.store import training_frame

    sets = {}
    for name, spec in specs.items():
        rows = labels[name]
        frame = training_frame(
            store, name, rows, definitions=spec.definitions, extra=baseline_columns(spec)
        )
        sets[name] = _split(spec, frame)
    return sets


def memory_sets(
    events: EventsInput,
    customers: pd.DataFrame | None,
    train_snapshots: Sequence[pd.Timestamp],
    holdout_events: EventsInput,
    holdout_snapshot: pd.Timestamp,
    specs: Mapping[str, ModelSpec],
) -> dict[str, ProblemSet]:
    """Training rows from `events` (which must end where training labels may end) and holdout
    rows at `holdout_snapshot` labelled from `holdout_events`, all computed in memory."""
    from features.catalog import catalog

    definitions = _definitions(specs)
    found = catalog(definitions)
    views = [*VIEW_NAMES, *(found.view_of_model[n] for n in specs if n in found.view_of_model)]
    # Features only ever see `events` (cut at the cutoff): nothing after it can leak in.
    tables = compute_features(
        events,
        [*train_snapshots, holdout_snapshot],
        customers,
        views=views,
        definitions=definitions,
    )
    features = _joined(tables)
    horizons = _horizons(specs)
    train_labels = compute_definition_labels(
        events, train_snapshots, definitions, horizons=horizons
    )
    hold_labels = compute_definition_labels(
        holdout_events, [holdout_snapshot], definitions, horizons=horizons
    )
    sets = {}
    for name, spec in specs.items():
        check_label(spec, train_labels[name])
        train = train_labels[name].merge(features, on=KEYS, how="left", validate="1:1")
        holdout = hold_labels[name].merge(features, on=KEYS, how="left", validate="1:1")
        sets[name] = ProblemSet(spec, _conform(spec, train), _conform(spec, holdout))
    return sets


def _definitions(specs: Mapping[str, ModelSpec]) -> Definitions:
    """The definitions of `specs` (those they were built from, else NUDGE_MODELS_DIR's)."""
    source = next((s.definitions for s in specs.values() if s.definitions is not None), None)
    defs = source if source is not None else load_definitions()
    return defs.subset(list(specs))


def _horizons(specs: Mapping[str, ModelSpec]) -> dict[str, timedelta]:
    """Each model's horizon (a backtest may replace a definition's)."""
    return {name: spec.horizon for name, spec in specs.items()}


def _joined(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    frames = iter(tables.values())
    out = next(frames)
    for table in frames:
        out = out.merge(table, on=KEYS, how="inner", validate="1:1")
    return out


def _conform(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(model_features(spec.name, spec.definitions)).reset_index(drop=True)


def _split(spec: ModelSpec, frame: pd.DataFrame) -> ProblemSet:
    latest = frame[TIMESTAMP_COLUMN].max()
    holdout = frame[TIMESTAMP_COLUMN] == latest
    return ProblemSet(
        spec, frame[~holdout].reset_index(drop=True), frame[holdout].reset_index(drop=True)
    )


def _utc(value: object) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")
