"""Flow `backtest`: what the models (and every baseline) would have scored at a past cutoff,
against what actually happened in (cutoff, cutoff + N days].

Every model of the definitions by default (one named with `models`): N is each model's own label
horizon unless `horizon_days` replaces it. Training rows are computed from the lake cut at the
cutoff (labels of training snapshots end by it); the evaluation rows are every customer seen by
the cutoff, scored on features at the cutoff and labelled from the N days after it. Features are
computed in memory, so the Feast store the scoring service reads is left alone. Without named
models, a model whose events the lake lacks (engagement on CDNOW) is reported as skipped.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from models.evaluate import ModelResult
from nudge.settings import home_dir
from pipelines.datasets import WARMUP, DataRange, PipelineError

__all__ = [
    "BACKTEST_METRICS",
    "backtest",
    "backtest_payload",
    "parse_cutoff",
    "plan_backtest",
    "run_backtest",
]

# The metrics the backtest reports per model task (its JSON shape).
BACKTEST_METRICS = {"binary": ("roc_auc", "log_loss"), "regression": ("mae", "rmse", "spearman")}
_US = timedelta(microseconds=1)


def parse_cutoff(text: str) -> pd.Timestamp:
    """An ISO date (the end of that day, UTC: its events are history, not future) or an ISO
    timestamp (naive ones are UTC)."""
    value = text.strip()
    try:
        day = date.fromisoformat(value) if len(value) <= 10 else None
        moment = datetime.fromisoformat(value) if day is None else None
    except ValueError:
        raise PipelineError(f"--cutoff {text!r} is not an ISO date (YYYY-MM-DD)") from None
    if day is not None:
        return pd.Timestamp(day, tz="UTC") + timedelta(days=1) - _US
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")


def plan_backtest(
    data: DataRange, cutoff: pd.Timestamp, horizon_days: int, step_days: int, n_train: int
) -> list[pd.Timestamp]:
    """The training snapshots: every `step_days` back from cutoff − horizon; checks the inputs."""
    if horizon_days < 1:
        raise PipelineError("--horizon-days must be at least 1")
    horizon = timedelta(days=horizon_days)
    if not data.first < cutoff < data.last:
        raise PipelineError(
            f"cutoff {cutoff:%Y-%m-%d} is outside the data ({data.describe()}); pick a date "
            "inside it"
        )
    if cutoff + horizon > data.last + timedelta(days=1):
        room = (data.last - cutoff).days
        raise PipelineError(
            f"horizon too long: the lake ends {data.last:%Y-%m-%d}, {room} days after the "
            f"cutoff, so a {horizon_days}-day outcome window cannot be observed"
        )
    latest = cutoff - horizon
    snapshots = [latest - timedelta(days=step_days * k) for k in range(n_train)]
    kept = sorted(t for t in snapshots if t >= data.first + WARMUP)
    if not kept:
        raise PipelineError(
            f"horizon too long for the history: a training snapshot needs {WARMUP.days} days "
            f"of data before it and its {horizon_days}-day label window before the cutoff, "
            f"but the data starts {data.first:%Y-%m-%d}"
        )
    return kept


@task(cache_policy=NO_CACHE)
def run_backtest(
    home: str,
    cutoff: pd.Timestamp,
    horizon_days: int | None,
    step_days: int,
    n_train: int,
    models: list[str] | None = None,
) -> tuple[dict[str, ModelResult], int, dict[str, str]]:
    """Fit the models (and baselines) on history before the cutoff; evaluate after it.

    Returns the results, the customers scored, and the models skipped with their reason."""
    from engine.lake import EventLake
    from features.compute import lake_columns
    from models.definitions import load_definitions
    from models.evaluate import fit_and_evaluate
    from models.specs import spec_for
    from pipelines.datasets import covered_range, memory_sets
    from pipelines.vocabulary import usable_definitions

    lake = EventLake(Path(home) / "lake")
    data = covered_range(lake)
    every = load_definitions()
    definitions = every.subset(list(models or every.names))
    columns = lake_columns(definitions)
    customers = lake.read_customers()
    history = lake.read(end=cutoff + _US, columns=columns)
    definitions, skipped = usable_definitions(definitions, history, explicit=bool(models))
    by_horizon: dict[int, list[str]] = {}
    for definition in definitions:
        days = horizon_days or definition.label.horizon_days
        by_horizon.setdefault(days, []).append(definition.name)
    results: dict[str, ModelResult] = {}
    scored = 0
    for days, names in sorted(by_horizon.items()):
        snapshots = plan_backtest(data, cutoff, days, step_days, n_train)
        horizon = timedelta(days=days)
        outcome = lake.read(end=cutoff + horizon + _US, columns=columns)
        specs = {n: spec_for(n, horizon, definitions) for n in names}
        sets = memory_sets(history, customers, snapshots, outcome, cutoff, specs)
        for name, problem in sets.items():
            results[name] = fit_and_evaluate(problem.spec, problem.train, problem.holdout)
            scored = max(scored, len(problem.holdout))
    return {n: results[n] for n in definitions.names}, scored, skipped


def backtest_payload(
    results: dict[str, ModelResult], customers: int, skipped: dict[str, str] | None = None
) -> dict[str, Any]:
    """The backtest's JSON: per model its metrics and each baseline's (``{NAME: {"model":
    {metrics}, "baselines": {BASELINE: {metrics}}}}``), the customer count, the skipped."""
    payload: dict[str, Any] = {}
    for name, result in results.items():
        wanted = BACKTEST_METRICS[result.spec.task]
        metrics = {
            scorer: {m: values[m] for m in wanted} for scorer, values in result.metrics.items()
        }
        payload[name] = {
            "model": metrics.pop("model"),
            "baselines": dict(sorted(metrics.items())),
            "horizon_days": result.spec.horizon_days,
        }
    payload["customers"] = customers
    if skipped:
        payload["skipped"] = dict(skipped)
    return payload


@flow(name="backtest")
def backtest(
    cutoff: str,
    horizon_days: int | None = None,
    home: str | None = None,
    step_days: int = 30,
    n_train: int = 6,
    tracking_uri: str | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """Run the backtest and log it to MLflow; returns the JSON payload."""
    from pipelines.tracking import (
        BACKTEST_EXPERIMENT,
        default_tracking_uri,
        ensure_experiment,
        git_commit,
        log_backtest,
        use_tracking,
    )

    root = str(home_dir(home))
    at = parse_cutoff(cutoff)
    results, customers, skipped = run_backtest(root, at, horizon_days, step_days, n_train, models)
    payload = backtest_payload(results, customers, skipped)
    use_tracking(tracking_uri or default_tracking_uri(root))
    first = next(iter(results.values()))
    log_backtest(
        payload,
        {
            "cutoff": f"{at:%Y-%m-%d %H:%M:%S}",
            "horizon_days": horizon_days if horizon_days else "per model",
            "step_days": step_days,
            "models": ",".join(results),
            "train_snapshots": ",".join(f"{t:%Y-%m-%d}" for t in first.train_snapshots),
            "git_commit": git_commit(),
        },
        ensure_experiment(BACKTEST_EXPERIMENT, root),
    )
    return payload
