"""The Feast store and the calls the training pipeline and the scoring service make on it.

`import feast` costs seconds, so it happens inside these functions, never when this module is
imported. The configuration (embedded or production) comes from `features.paths`: the embedded
one keeps everything under $NUDGE_HOME, the production one reads Redis and a PostgreSQL registry
from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from numpy.typing import NDArray

from features.paths import (
    REPO_DIR,
    feast_dir,
    feast_environment,
    feature_store_yaml,
    feature_tables_dir,
)
from features.schema import (
    ENTITY_KEY,
    TIMESTAMP_COLUMN,
    Dtype,
    feature_refs,
    model_features,
)

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.feast_object import FeastObject

    from features.definitions import Definitions
    from models.definitions import Definitions as ModelDefinitions

__all__ = [
    "OnlineRows",
    "apply_definitions",
    "definitions",
    "materialize_snapshot",
    "online_features",
    "online_rows",
    "open_store",
    "training_frame",
    "typed_online_frame",
]


def open_store(
    home: Path | str | None = None,
    production: bool | None = None,
    *,
    project: str | None = None,
) -> FeatureStore:
    """A `FeatureStore` on the embedded or (`production`, default: $NUDGE_FEAST_CONFIG) config.

    `project` overrides the YAML's project name (e.g. to keep test runs apart on shared servers).
    """
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    variables = feast_environment(home, production)
    # Feast itself expands ${VAR} from os.environ; expanding here with the computed values
    # (absolute paths, defaults) leaves the process environment alone.
    text = Template(feature_store_yaml(production).read_text()).safe_substitute(
        {**os.environ, **variables}
    )
    raw = yaml.safe_load(text)
    if project is not None:
        raw["project"] = project
    config = RepoConfig(**raw)
    config.repo_path = REPO_DIR
    feast_dir(home).mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(REPO_DIR), config=config)


def definitions(home: Path | str | None = None) -> Definitions:
    """The repo's Feast objects, their sources reading ``$NUDGE_HOME/features``."""
    from features.definitions import build_definitions

    return build_definitions(feature_tables_dir(home))


def apply_definitions(store: FeatureStore, home: Path | str | None = None) -> Definitions:
    """Register every definition in the store's registry (in-process `feast apply`)."""
    applied = definitions(home)
    objects: list[FeastObject] = list(applied.all())  # `apply` takes a list of the union
    store.apply(objects)
    return applied


def training_frame(
    store: FeatureStore,
    model: str,
    entity_rows: pd.DataFrame,
    *,
    definitions: ModelDefinitions | None = None,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    """Point-in-time join of a model's features onto `entity_rows` (customer_id,
    event_timestamp, and any label columns); one output row per entity row, same order.

    `extra` names more columns (of any view: a baseline's inputs) to join beside the model's.
    """
    from features.catalog import catalog

    found = catalog(definitions)
    features = found.model_features(model)
    refs = found.feature_refs(model)
    more = [c for c in dict.fromkeys(extra) if c not in features]
    refs += [f"{found.view_of(c)}:{c}" for c in more]
    dtypes = {**features, **{c: found.views[found.view_of(c)][c] for c in more}}
    missing = {ENTITY_KEY, TIMESTAMP_COLUMN} - set(entity_rows.columns)
    if missing:
        raise ValueError(f"entity rows lack column(s) {sorted(missing)}")
    rows = entity_rows.reset_index(drop=True).assign(_row=lambda df: range(len(df)))
    rows[TIMESTAMP_COLUMN] = pd.to_datetime(rows[TIMESTAMP_COLUMN], utc=True)
    joined = store.get_historical_features(entity_df=rows, features=refs).to_df()
    # Feast's offline stores differ in whether they drop rows they cannot match; never trust it.
    if len(joined) != len(rows):
        raise RuntimeError(
            f"point-in-time join returned {len(joined)} rows for {len(rows)} entity rows"
        )
    joined = joined.sort_values("_row").drop(columns="_row").reset_index(drop=True)
    # Integer features are never null in a feature table, so a null one means no row matched.
    integers = [name for name, dtype in dtypes.items() if dtype == "int64"]
    unmatched = joined[integers].isna().any(axis=1)
    if unmatched.any():
        raise ValueError(
            f"{int(unmatched.sum())} entity row(s) matched no feature row: the customer was "
            "not in the population at that time, or its latest snapshot is older than the "
            "views' TTL; take entity rows from the labels or the feature tables"
        )
    return joined.astype(dtypes)


def materialize_snapshot(
    store: FeatureStore,
    snapshot: datetime | pd.Timestamp,
    views: Sequence[str] | None = None,
    *,
    direct: bool = True,
    batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Load one snapshot's rows into the online store: a window of one instant, so memory is
    bounded by one snapshot however many the tables hold. `views` defaults to every view of
    the model definitions' catalog.

    On the SQLite and Redis online stores the rows are written by `features.materialize` (the
    same bytes and registry records as Feast's, in batches of `batch_size` customers: 2.8× as
    fast for 100k customers on both stores, a third of the peak memory and bounded by the
    batch — BENCHMARKS.md "Materialization (issue 20)"); any other store, a view that module
    does not handle, or `direct=False` goes through Feast's `materialize`. `progress` gets a
    line per batch.
    """
    from features.materialize import DEFAULT_BATCH, direct_views, materialize_direct

    if views is None:
        from features.catalog import catalog

        views = list(catalog().views)
    at = pd.Timestamp(snapshot)
    at = at.tz_localize("UTC") if at.tz is None else at.tz_convert("UTC")
    names = list(views)
    fast = direct_views(store, names) if direct else []
    if fast:
        materialize_direct(
            store, at, fast, batch_size=batch_size or DEFAULT_BATCH, progress=progress
        )
    rest = [v for v in names if v not in fast]
    if rest:
        store.materialize(
            start_date=at.to_pydatetime(),
            end_date=(at + timedelta(microseconds=1)).to_pydatetime(),
            feature_views=rest,
        )


def online_features(store: FeatureStore, model: str, customer_ids: Iterable[str]) -> pd.DataFrame:
    """A model's latest materialized features for the customers the online store knows.

    Columns: customer_id, event_timestamp (the snapshot the features describe), then the
    model's features in the order and dtypes of `training_frame`. A customer missing from any
    of the model's views is left out: the caller decides what a missing score means.
    """
    ids = list(dict.fromkeys(str(c) for c in customer_ids))
    values = store.get_online_features(
        features=feature_refs(model), entity_rows={ENTITY_KEY: ids}
    ).to_dict(include_event_timestamps=True)
    return typed_online_frame(values, model, ids)


def typed_online_frame(values: dict[str, list[Any]], model: str, ids: list[str]) -> pd.DataFrame:
    """One model's frame from Feast's online `to_dict(include_event_timestamps=True)` answer."""
    features = model_features(model)
    rows = online_rows(values, features, ids)
    # Built column by column with explicit dtypes: Feast's own frame makes a float feature that
    # is null for every requested customer an object column, and integers float64 next to a
    # missing customer — neither is what a model's signature was inferred from.
    columns: dict[str, Any] = {
        ENTITY_KEY: np.array(rows.customer_ids, dtype=object),
        TIMESTAMP_COLUMN: pd.to_datetime(rows.snapshots, unit="s", utc=True).as_unit("us"),
    }
    for j, (name, dtype) in enumerate(features.items()):
        columns[name] = rows.matrix[:, j].astype(dtype)
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class OnlineRows:
    """One model's features for the customers the store knows, in request order."""

    customer_ids: list[str]
    snapshots: NDArray[np.int64]  # epoch seconds of the snapshot each row describes
    matrix: NDArray[np.float64]  # one row per customer, the model's features in training order
    features: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.customer_ids)


def online_rows(
    values: Mapping[str, Sequence[Any]], features: Mapping[str, Dtype], ids: Sequence[str]
) -> OnlineRows:
    """`OnlineRows` from Feast's `to_dict(include_event_timestamps=True)` answer for `ids`.

    A customer is known when every feature has a stored value (``<name>__ts`` > 0); an integer
    feature without a value fails rather than scoring a made-up number.
    """
    names = list(features)
    stamps = np.array([values[f"{name}__ts"] for name in names], dtype=np.int64)
    # One flag per customer (asarray: numpy types `.all(axis=0)` as an array or a scalar).
    known = np.asarray((stamps > 0).all(axis=0))
    block = np.array([values[name] for name in names], dtype=object)[:, known]
    matrix = np.empty((int(known.sum()), len(names)), dtype=np.float64)
    floats = [j for j, name in enumerate(names) if features[name] == "float64"]
    ints = [j for j, name in enumerate(names) if features[name] != "float64"]
    # None becomes NaN in float columns; integers go through int64 first, as in the frame.
    matrix[:, floats] = block[floats].astype(np.float64).T
    matrix[:, ints] = block[ints].astype(np.int64).T
    return OnlineRows(
        customer_ids=[cid for cid, k in zip(ids, known.tolist(), strict=True) if k],
        snapshots=stamps[:, known].min(axis=0),
        matrix=matrix,
        features=tuple(names),
    )
