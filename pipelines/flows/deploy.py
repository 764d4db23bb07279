"""Deployments: `build-features` daily and `train` weekly (configurable), registered on a Prefect
server. Schedules need a real server (`prefect server start`): the ephemeral API refuses them.

`deploy` only registers the deployments and their schedules; the server's scheduler then creates
the flow runs, and `serve` (a long-running process) executes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment

from pipelines.flows.features import build_features
from pipelines.flows.train import train

__all__ = ["FEATURES_DEPLOYMENT", "TRAIN_DEPLOYMENT", "Schedules", "deploy", "deployments", "serve"]

FEATURES_DEPLOYMENT = "nudge-features"
TRAIN_DEPLOYMENT = "nudge-train"


@dataclass(frozen=True)
class Schedules:
    """Cron expressions of the two deployments, in `timezone`."""

    features_cron: str = "0 2 * * *"
    train_cron: str = "0 3 * * 1"
    timezone: str = "UTC"


def deployments(
    home: str, schedules: Schedules, feature_params: dict[str, Any], train_params: dict[str, Any]
) -> list[RunnerDeployment]:
    """The two deployments, with their parameters (the NUDGE_HOME they work on, ...)."""
    # `to_deployment` is typed sync-or-async; called outside an event loop it returns the object.
    return [
        build_features.to_deployment(  # type: ignore[list-item]
            name=FEATURES_DEPLOYMENT,
            schedules=[CronSchedule(cron=schedules.features_cron, timezone=schedules.timezone)],
            parameters={"home": home, **feature_params},
            description="Compute feature tables, feast apply, materialize the latest snapshot.",
            tags=["nudge"],
        ),
        train.to_deployment(  # type: ignore[list-item]
            name=TRAIN_DEPLOYMENT,
            schedules=[CronSchedule(cron=schedules.train_cron, timezone=schedules.timezone)],
            parameters={"home": home, **train_params},
            description="Retrain churn, ltv and engagement; register challengers in MLflow.",
            tags=["nudge"],
        ),
    ]


def deploy(
    home: str,
    schedules: Schedules,
    feature_params: dict[str, Any] | None = None,
    train_params: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Register (create or update) both deployments on the configured Prefect API; name → id."""
    registered = {}
    for deployment in deployments(home, schedules, feature_params or {}, train_params or {}):
        registered[f"{deployment.flow_name}/{deployment.name}"] = str(deployment.apply())
    return registered


def serve(
    home: str,
    schedules: Schedules,
    feature_params: dict[str, Any] | None = None,
    train_params: dict[str, Any] | None = None,
) -> None:
    """Register the deployments and execute their scheduled runs until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(home, schedules, feature_params or {}, train_params or {}))
