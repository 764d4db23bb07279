"""Flow `train`: training sets by Feast point-in-time joins over several snapshots, every model of
the definitions (NUDGE_MODELS_DIR; default churn, ltv, engagement) and its baselines fitted,
everything logged to MLflow and registered.

The holdout of each model is its latest snapshot with a complete label window. Fitting runs in
the `fit-models` subflow, one task per model: on a DaskTaskRunner when a Dask scheduler address
is given (the CLI passes NUDGE_DASK_ADDRESS), else one after the other in this process. Logging
and registration stay in the flow's process (one writer to the tracking store). Paths and URIs
are parameters; a flow called without them uses the settings' rules (`nudge.settings`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from models.evaluate import ModelResult
from nudge.settings import home_dir
from pipelines.datasets import DataRange, PipelineError, ProblemSet

if TYPE_CHECKING:
    from engine.lake import CustomerSlice, EventLake

__all__ = [
    "fit_model",
    "fit_models",
    "load_training_sets",
    "log_result",
    "train",
    "training_sample",
]


@task(cache_policy=NO_CACHE)
def load_training_sets(
    home: str,
    models: Sequence[str] | None,
    n_train: int,
    max_customers: int | None = None,
) -> tuple[dict[str, ProblemSet], DataRange, dict[str, str]]:
    """Labels from the lake at the feature tables' snapshots, features by Feast joins.

    `models` None means every definition the lake can train (the others come back, with the
    reason, as the third value); named models must all be trainable. A lake of more than
    `max_customers` customers (default NUDGE_TRAIN_MAX_CUSTOMERS) is sampled by customer
    (`training_sample`): train and holdout rows are the sampled customers' only."""
    from engine.lake import EventLake
    from features.compute import feature_table_snapshots, lake_columns, property_event_types
    from features.schema import CHURN_VIEW
    from features.store import open_store
    from models.definitions import load_definitions
    from models.specs import spec_for
    from pipelines.datasets import covered_range, feast_sets, label_rows
    from pipelines.vocabulary import usable_definitions

    lake = EventLake(Path(home) / "lake")
    data = covered_range(lake)
    try:
        snapshots = feature_table_snapshots(CHURN_VIEW, home)
    except FileNotFoundError:
        raise PipelineError(
            f"no feature tables under {home}/features: run `nudge pipeline features` first"
        ) from None
    every = load_definitions()
    definitions = every.subset(list(models or every.names))
    sample = training_sample(lake, max_customers)
    events = lake.read(
        end=data.last + timedelta(microseconds=1),
        columns=lake_columns(definitions),
        customers=sample,
        ordered=False,  # labels aggregate; a sort of every event would be most of the read
        properties_of=property_event_types(definitions),
    )
    definitions, skipped = usable_definitions(definitions, events, explicit=bool(models))
    specs = {name: spec_for(name, definitions=definitions) for name in definitions.names}
    labels = label_rows(events, snapshots, data.last, specs, n_train=n_train)
    return feast_sets(open_store(home), labels, specs), data, skipped


def training_sample(lake: EventLake, max_customers: int | None = None) -> CustomerSlice | None:
    """The customers to learn from when the lake has more than `max_customers` (default
    NUDGE_TRAIN_MAX_CUSTOMERS): a fixed hash sample of about that many, the same on every run
    with the same DuckDB (its `hash`), so a retrain learns from the same customers; None: all."""
    from engine.lake import CustomerSlice
    from nudge.settings import SharedSettings

    most = max_customers if max_customers is not None else SharedSettings().train_max_customers
    customers = lake.customer_count()
    if customers <= most:
        return None
    return CustomerSlice.sample(most / customers)


@task(cache_policy=NO_CACHE)
def fit_model(problem: ProblemSet, max_rounds: int = 1_000) -> ModelResult:
    """Fit one model and its baselines and evaluate them on the holdout (pure compute)."""
    from models.evaluate import fit_and_evaluate

    result = fit_and_evaluate(problem.spec, problem.train, problem.holdout, max_rounds=max_rounds)
    result.extra["fitted_on_pid"] = os.getpid()
    return result


@flow(name="fit-models", task_runner=ThreadPoolTaskRunner(max_workers=1))  # type: ignore[arg-type]  # Prefect's generic runner types do not unify
def fit_models(problems: dict[str, ProblemSet], max_rounds: int = 1_000) -> dict[str, ModelResult]:
    """One `fit_model` task per model on this flow's task runner."""
    futures = {name: fit_model.submit(problem, max_rounds) for name, problem in problems.items()}
    return {name: future.result() for name, future in futures.items()}


@task(cache_policy=NO_CACHE)
def log_result(
    result: ModelResult, problem: ProblemSet, context: dict[str, Any], home: str, tracking_uri: str
) -> dict[str, Any]:
    """Log and register one model; returns its run, version and champion decision."""
    from pipelines.tracking import TRAIN_EXPERIMENT, ensure_experiment, log_model_run, use_tracking

    use_tracking(tracking_uri)
    registration = log_model_run(
        result, problem.holdout, context, ensure_experiment(TRAIN_EXPERIMENT, home)
    )
    return {
        "run_id": registration.run_id,
        "version": registration.version,
        "champion": registration.champion,
        "reason": registration.reason,
        "metrics": registration.metrics,
        "holdout_snapshot": f"{result.holdout_snapshot:%Y-%m-%d}",
        "train_snapshots": len(result.train_snapshots),
        "train_rows": result.n_train,
        "holdout_rows": len(result.holdout_scores),
    }


@flow(name="train")
def train(
    home: str | None = None,
    models: list[str] | None = None,
    n_train: int = 6,
    tracking_uri: str | None = None,
    dask_address: str | None = None,
    max_rounds: int = 1_000,
    refresh_scores: bool = True,
) -> dict[str, Any]:
    """Build the training sets, fit every model (on Dask when an address is set), log, register;
    then (`refresh_scores`, with NUDGE_SCORING_URL set) refresh every customer's scores into the
    engine through the score-batch flow."""
    from pipelines.tracking import default_tracking_uri, git_commit

    root = str(home_dir(home))
    problems, data, skipped = load_training_sets(root, models or None, n_train)
    chosen = list(problems)
    address = dask_address or None
    runner = fit_models
    if address:
        from prefect_dask import DaskTaskRunner

        runner = fit_models.with_options(task_runner=DaskTaskRunner(address=address))  # type: ignore[arg-type]  # as above
    results = runner(problems, max_rounds)
    context = {
        "data_range": data.describe(),
        "git_commit": git_commit(),
        "task_runner": f"dask {address}" if address else "local",
        "training_customers": _sample_note(root),
    }
    uri = tracking_uri or default_tracking_uri(root)
    logged: dict[str, Any] = {
        name: log_result(results[name], problems[name], {**context}, root, uri) for name in chosen
    }
    if skipped:
        logged["skipped"] = skipped
    refreshed = _refresh_scores() if refresh_scores else None
    if refreshed is not None:  # a scoring service is configured
        logged["score_refresh"] = refreshed
    return logged


def _sample_note(home: str) -> str:
    """Whom the models learnt from, for the run's tags and model card."""
    from engine.lake import EventLake

    sample = training_sample(EventLake(Path(home) / "lake"))
    if sample is None:
        return "all"
    return f"a {sample.fraction:.1%} sample by customer (NUDGE_TRAIN_MAX_CUSTOMERS)"


def _refresh_scores() -> dict[str, Any] | None:
    """After training, every customer's scores into the engine (score crossings), when a
    scoring service is configured; a failure is logged, never fails the training run. The
    service picks a new champion up within its alias poll (NUDGE_MODEL_POLL_SECONDS); the daily
    score-batch deployment refreshes again."""
    from nudge.settings import Settings
    from pipelines.flows.score_batch import score_batch

    if not Settings().scoring_url:
        return None
    try:
        return score_batch()
    except Exception as exc:  # the models are registered; the refresh can be run again
        get_run_logger().warning("score refresh after training failed: %s", exc)
        return {"error": str(exc)}
