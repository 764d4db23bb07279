"""Deployments: `build-features` daily, `train` weekly and `optimize` (the reviews in MLflow) daily
(configurable), registered on a Prefect server. Schedules need a real server (`prefect server
start`): the ephemeral API refuses them.

`deploy` only registers the deployments and their schedules; the server's scheduler then creates
the flow runs, and `serve` (a long-running process) executes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment

from pipelines.flows.features import build_features
from pipelines.flows.optimize import optimize
from pipelines.flows.train import train

if TYPE_CHECKING:
    from models.definitions import Definitions

__all__ = [
    "FEATURES_DEPLOYMENT",
    "OPTIMIZE_DEPLOYMENT",
    "TRAIN_DEPLOYMENT",
    "Schedules",
    "deploy",
    "deployments",
    "optimize_deployment",
    "serve",
    "train_deployments",
]

FEATURES_DEPLOYMENT = "nudge-features"
TRAIN_DEPLOYMENT = "nudge-train"
OPTIMIZE_DEPLOYMENT = "nudge-optimize"
SCORE_BATCH_DEPLOYMENT = "nudge-score-batch"


@dataclass(frozen=True)
class Schedules:
    """Cron expressions of the two deployments, in `timezone`."""

    features_cron: str = "0 2 * * *"
    train_cron: str = "0 3 * * 1"
    timezone: str = "UTC"
    optimize_cron: str = "0 4 * * *"
    score_cron: str = "0 5 * * *"


def deployments(
    home: str,
    schedules: Schedules,
    feature_params: dict[str, Any],
    train_params: dict[str, Any],
    optimize_params: dict[str, Any] | None = None,
) -> list[RunnerDeployment]:
    """The deployments, with their parameters (the NUDGE_HOME they work on, ...)."""
    # `to_deployment` is typed sync-or-async; called outside an event loop it returns the object.
    return [
        build_features.to_deployment(  # type: ignore[list-item]
            name=FEATURES_DEPLOYMENT,
            schedules=[CronSchedule(cron=schedules.features_cron, timezone=schedules.timezone)],
            parameters={"home": home, **feature_params},
            description="Compute feature tables, feast apply, materialize the latest snapshot.",
            tags=["nudge"],
        ),
        *train_deployments(home, schedules, train_params),
        optimize_deployment(home, schedules, optimize_params or {}),
        score_batch_deployment(schedules),
    ]


def score_batch_deployment(schedules: Schedules) -> RunnerDeployment:
    """Every customer's scores refreshed into the engine (score crossings, fresh audiences)."""
    from pipelines.flows.score_batch import score_batch

    # No parameters: the flow reads NUDGE_ENGINE_DB and NUDGE_SCORING_URL where it runs, so no
    # database password is stored on the Prefect server.
    return score_batch.to_deployment(  # type: ignore[return-value]
        name=SCORE_BATCH_DEPLOYMENT,
        schedules=[CronSchedule(cron=schedules.score_cron, timezone=schedules.timezone)],
        description="Refresh every known customer's scores into the engine.",
        tags=["nudge"],
    )


def optimize_deployment(
    home: str, schedules: Schedules, params: dict[str, Any]
) -> RunnerDeployment:
    """The daily review: every trigger's performance and every experiment, logged to MLflow."""
    return optimize.to_deployment(  # type: ignore[return-value]
        name=OPTIMIZE_DEPLOYMENT,
        schedules=[CronSchedule(cron=schedules.optimize_cron, timezone=schedules.timezone)],
        parameters={"home": home, **params},
        description="Review every trigger's performance and every running experiment in MLflow.",
        tags=["nudge"],
    )


def train_deployments(
    home: str, schedules: Schedules, params: dict[str, Any], definitions: Definitions | None = None
) -> list[RunnerDeployment]:
    """One `train` deployment per retraining cadence of the model definitions (their
    ``retrain``): weekly models in `TRAIN_DEPLOYMENT` on ``schedules.train_cron``
    (NUDGE_TRAIN_CRON), each other cadence in ``nudge-train-<cadence>`` on its own schedule.
    With one cadence for every model, the one deployment trains them all (models unnamed)."""
    from prefect.client.schemas.schedules import IntervalSchedule

    from models.definitions import load_definitions, retrain_schedule

    defs = definitions if definitions is not None else load_definitions()
    groups: dict[tuple[str, str], list[str]] = {}
    for definition in defs:
        kind, value = retrain_schedule(definition.retrain)
        key = (kind, value if isinstance(value, str) else str(value.total_seconds()))
        groups.setdefault(key, []).append(definition.name)
    out = []
    for (kind, value), names in groups.items():
        weekly = (kind, value) == ("cron", "0 3 * * 1")
        cadence = next(d.retrain for d in defs if d.name == names[0]).strip().lower()
        name = TRAIN_DEPLOYMENT if weekly else f"{TRAIN_DEPLOYMENT}-{_slug(cadence)}"
        if weekly:
            schedule: Any = CronSchedule(cron=schedules.train_cron, timezone=schedules.timezone)
        elif kind == "cron":
            schedule = CronSchedule(cron=value, timezone=schedules.timezone)
        else:
            schedule = IntervalSchedule(interval=timedelta(seconds=float(value)))
        models = {"models": names} if len(groups) > 1 else {}
        out.append(
            train.to_deployment(
                name=name,
                schedules=[schedule],
                parameters={"home": home, **params, **models},
                description=f"Retrain {', '.join(names)} ({cadence}); register challengers.",
                tags=["nudge"],
            )
        )
    return out  # type: ignore[return-value]  # to_deployment is typed sync-or-async


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "custom"


def deploy(
    home: str,
    schedules: Schedules,
    feature_params: dict[str, Any] | None = None,
    train_params: dict[str, Any] | None = None,
    optimize_params: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Register (create or update) the deployments on the configured Prefect API; name → id."""
    registered = {}
    for deployment in deployments(
        home, schedules, feature_params or {}, train_params or {}, optimize_params
    ):
        registered[f"{deployment.flow_name}/{deployment.name}"] = str(deployment.apply())
    return registered


def serve(
    home: str,
    schedules: Schedules,
    feature_params: dict[str, Any] | None = None,
    train_params: dict[str, Any] | None = None,
    optimize_params: dict[str, Any] | None = None,
) -> None:
    """Register the deployments and execute their scheduled runs until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(
        *deployments(home, schedules, feature_params or {}, train_params or {}, optimize_params)
    )
