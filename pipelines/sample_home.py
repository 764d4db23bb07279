"""A small scoring-ready $NUDGE_HOME: simulated customers, feature tables, Feast online, and the
three models registered as ``champion`` in a SQLite MLflow store.

The fixture data of the serving tests (tests/serving/conftest.py) and of the scoring benchmark
(bench/scoring.py): ``prepare_home`` is a small stand-in for the Prefect ``train`` flow that
writes the same artifacts, in well under a minute for a thousand customers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "SIMULATION_END",
    "SNAPSHOTS",
    "LakeModels",
    "PreparedHome",
    "prepare_home",
    "train_from_lake",
]

# Monthly snapshots over the simulated 240 days (2025-01-01 → 2025-08-29); the latest is the
# one materialized online.
SNAPSHOTS = [pd.Timestamp(f"2025-{month:02d}-01", tz="UTC") for month in range(2, 9)]
SIMULATION_END = pd.Timestamp("2025-08-29", tz="UTC")


@dataclass(frozen=True)
class PreparedHome:
    """A $NUDGE_HOME with features online and champions registered, and facts about it."""

    home: Path
    tracking_uri: str
    versions: dict[str, str]
    known_ids: list[str]
    unknown_ids: list[str]
    snapshot: pd.Timestamp


def prepare_home(
    home: Path, *, customers: int = 1_000, seed: int = 5, max_rounds: int = 60
) -> PreparedHome:
    """Simulate, build features, materialize the latest snapshot, fit and register the three
    models as ``champion`` (a small stand-in for the Prefect `train` flow, same artifacts)."""
    from engine.lake import EventLake
    from features.schema import ENTITY_KEY
    from pipelines.simulator import simulate

    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    sim = simulate(customers, 240, seed=seed)
    lake = EventLake(home / "lake")
    lake.append(sim.events)
    lake.upsert_customers(sim.customers)
    scored = train_from_lake(home, lake, max_rounds=max_rounds)
    uri, versions, online = scored.tracking_uri, scored.versions, scored.online_ids
    everyone = sim.customers[ENTITY_KEY].astype(str).tolist()
    return PreparedHome(
        home=home,
        tracking_uri=uri,
        versions=versions,
        known_ids=sorted(online),
        unknown_ids=[c for c in everyone if c not in online],
        snapshot=SNAPSHOTS[-1],
    )


@dataclass(frozen=True)
class LakeModels:
    """What `train_from_lake` made: the lake's events, the joined feature frame, the MLflow
    store, the registered champion versions and the customers online at the last snapshot."""

    events: Any
    features: pd.DataFrame
    tracking_uri: str
    versions: dict[str, str]
    online_ids: set[str]


def train_from_lake(home: Path, lake: Any, *, max_rounds: int = 60) -> LakeModels:
    """Feature tables from `lake` under `home`, the latest snapshot materialized online, and
    the three models fitted and registered as ``champion`` in ``home/mlflow.db``."""
    from features.compute import compute_features, write_feature_tables
    from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
    from features.store import apply_definitions, materialize_snapshot, open_store

    events = lake.read()
    tables = compute_features(events, SNAPSHOTS, lake.read_customers())
    write_feature_tables(tables, home)
    store = open_store(home, production=False)
    apply_definitions(store, home)
    materialize_snapshot(store, SNAPSHOTS[-1])

    keys = [ENTITY_KEY, TIMESTAMP_COLUMN]
    frames = iter(tables.values())
    joined = next(frames)
    for table in frames:
        joined = joined.merge(table, on=keys, validate="1:1")
    uri = f"sqlite:///{(home / 'mlflow.db').as_posix()}"
    versions = _train_and_register(events, joined, home, uri, max_rounds)
    online = set(joined.loc[joined[TIMESTAMP_COLUMN] == SNAPSHOTS[-1], ENTITY_KEY])
    return LakeModels(events, joined, uri, versions, online)


def _train_and_register(
    events: Any, joined: pd.DataFrame, home: Path, uri: str, max_rounds: int
) -> dict[str, str]:
    import mlflow

    # MLflow's fluent API (runs, log_model) needs the process-wide URI, and setting it also
    # exports MLFLOW_TRACKING_URI — which would then override every service's own settings.
    previous = os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        return _register(events, joined, home, uri, max_rounds)
    finally:
        # None puts MLflow back on its default (and unsets the variable); its stubs say str only.
        mlflow.set_tracking_uri(previous[0])  # type: ignore[arg-type]
        mlflow.set_registry_uri(previous[1])  # type: ignore[arg-type]
        for name, value in zip(
            ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"), previous, strict=True
        ):
            if value is None:
                os.environ.pop(name, None)


def _register(
    events: Any, joined: pd.DataFrame, home: Path, uri: str, max_rounds: int
) -> dict[str, str]:
    import mlflow
    from mlflow.models import infer_signature

    from features.compute import complete_label_snapshots, compute_labels
    from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
    from models.evaluate import metrics_for
    from models.lgbm import BestSendHour, CalibratedLGBMClassifier, LGBMSpendRegressor
    from models.pyfunc import ScoringModel, pip_requirements
    from models.specs import SPECS
    from pipelines.tracking import EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT

    artifacts = home / "mlartifacts"
    artifacts.mkdir(exist_ok=True)
    experiment = mlflow.create_experiment(
        "nudge-train",
        artifact_location=artifacts.as_uri(),
        tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT},
    )
    client = mlflow.MlflowClient(uri, uri)
    labels = compute_labels(events, SNAPSHOTS[:-1])
    versions = {}
    for name, spec in SPECS.items():
        usable = complete_label_snapshots(SNAPSHOTS, SIMULATION_END, spec.horizon)
        rows = labels[name][labels[name][TIMESTAMP_COLUMN].isin(usable)]
        frame = rows.merge(joined, on=[ENTITY_KEY, TIMESTAMP_COLUMN], validate="1:1")
        holdout = frame[TIMESTAMP_COLUMN] == frame[TIMESTAMP_COLUMN].max()
        train, test = frame[~holdout], frame[holdout]
        X = train[list(spec.features)].astype(spec.features)
        # One thread: LightGBM's OpenMP threads crawl on a busy 2-core machine (10× slower).
        options: dict[str, Any] = {
            "params": {"num_threads": 1},
            "objective": spec.objective,
            "max_rounds": max_rounds,
        }
        # The estimators models.evaluate.fit_and_evaluate builds (churn's linear base included).
        estimator = (
            CalibratedLGBMClassifier(**options, linear_base=spec.linear_base)
            if spec.task == "binary"
            else LGBMSpendRegressor(**options)
        ).fit(
            X,
            train[spec.label].to_numpy(),
            groups=train[ENTITY_KEY].to_numpy(),
            times=train[TIMESTAMP_COLUMN].to_numpy(),
        )
        best_hour = BestSendHour().fit(train) if name == "engagement" else None
        wrapper = ScoringModel(name, estimator, best_hour)
        example = test[list(spec.features)].head(5).astype(spec.features)
        holdout_scores = wrapper.predict(None, test)["score"]
        metrics = metrics_for(spec, test[spec.label], holdout_scores)
        with mlflow.start_run(experiment_id=experiment, run_name=f"train-{name}"):
            mlflow.log_metrics({f"model.{k}": v for k, v in metrics.items() if v == v})
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=wrapper,
                signature=infer_signature(example, wrapper.predict(None, example)),
                input_example=example,
                pip_requirements=pip_requirements(),
            )
        version = str(mlflow.register_model(info.model_uri, name).version)
        client.set_registered_model_alias(name, "champion", version)
        versions[name] = version
    return versions
