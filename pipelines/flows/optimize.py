"""Flow `optimize`: analyse every running experiment from the execution log and report it in MLflow.

For each trigger with experiment decisions: funnel, timing per delay variant, segmentation with the
heterogeneous-effect test, holdout incrementality, and a recommendation per segment only where the
guardrails pass. One MLflow run per analysis in experiment ``experiments/<trigger_id>``: metrics,
the tables as CSV artifacts, and plots (CI forest plot, funnel, timing curve per segment).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from nudge.settings import Settings

__all__ = ["analyse_experiment", "log_experiment", "optimize"]


@task(cache_policy=NO_CACHE)
def analyse_experiment(engine_url: str, trigger_id: str, window_seconds: float, segment_by: str | None,
                       min_users: int) -> dict[str, Any]:  # fmt: skip
    """Every analysis of one trigger's experiment, as plain tables and recommendations: the one
    ``engine.optimizer.experiment.analyse_experiment`` that ``nudge experiment report`` runs too."""
    from engine.optimizer.experiment import analyse_experiment as analyse
    from engine.store import EngineDB
    from engine.store.exposures import load_exposures

    store = EngineDB.open(engine_url)
    exposures = store.read(
        load_exposures, trigger_id, attribution_window=window_seconds, segment_by=segment_by
    )
    store.dispose()
    result: dict[str, Any] = {"trigger_id": trigger_id, "exposures": len(exposures)}
    if exposures.empty:
        return result
    analysis = analyse(exposures, min_users_per_arm=min_users)
    result.update(
        funnel=analysis.funnel,
        timing=analysis.timing,
        segments=analysis.segmentation.table,
        heterogeneity=analysis.segmentation.heterogeneity,
        holdout=analysis.holdout,
        recommendations=analysis.recommendations,
    )
    return result


@task(cache_policy=NO_CACHE)
def log_experiment(analysis: dict[str, Any], home: str, tracking_uri: str) -> str | None:
    """One MLflow run in ``experiments/<trigger_id>`` of the store `tracking_uri` with metrics,
    tables and plots (artifacts under `home`)."""
    import mlflow

    from pipelines.tracking import ensure_experiment, use_tracking

    if not analysis.get("exposures"):
        return None
    use_tracking(tracking_uri)
    experiment_id = ensure_experiment(f"experiments/{analysis['trigger_id']}", home)
    with mlflow.start_run(experiment_id=experiment_id, run_name="optimize") as run:
        mlflow.log_metric("exposures", analysis["exposures"])
        for rec in analysis["recommendations"]:
            mlflow.set_tag(f"recommendation.{rec.segment}", rec.variant or f"none ({rec.reason})")
            if rec.p_value_corrected is not None:
                mlflow.log_metric(f"p_corrected.{rec.segment}", float(rec.p_value_corrected))
        for name in ("funnel", "timing", "segments", "holdout"):
            table = analysis.get(name)
            if isinstance(table, pd.DataFrame):
                mlflow.log_text(table.to_csv(index=False), f"tables/{name}.csv")
        mlflow.log_text(
            pd.DataFrame(
                [asdict(r) | {"checks": str(r.checks)} for r in analysis["recommendations"]]
            ).to_csv(index=False),
            "tables/recommendations.csv",
        )
        for name, figure in _figures(analysis).items():
            mlflow.log_figure(figure, f"plots/{name}.png")
        return run.info.run_id


@flow(name="optimize")
def optimize(home: str | None = None, engine_url: str | None = None, triggers: list[str] | None = None,
             window_hours: float = 72.0, segment_by: str | None = None, min_users: int = 1000,
             tracking_uri: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Analyse and log every running experiment; returns each trigger's recommendations.

    The engine log (`engine_url`) and the MLflow store (`tracking_uri`) are those of the engine
    and of training unless given: the settings' rules (NUDGE_ENGINE_DB, else engine.db under the
    home; MLFLOW_TRACKING_URI, else NUDGE_MLFLOW_TRACKING_URI, else mlflow.db under the home).
    """
    from engine.store import EngineDB
    from engine.store.exposures import experiment_triggers

    settings = Settings.for_home(home)
    root = settings.home_dir
    url = engine_url or settings.engine_url
    uri = tracking_uri or settings.tracking_uri
    if triggers is None:
        store = EngineDB.open(url)
        triggers = store.read(experiment_triggers)
        store.dispose()
    summaries = []
    for trigger_id in triggers:
        analysis = analyse_experiment(url, trigger_id, window_hours * 3600, segment_by, min_users)
        run_id = log_experiment(analysis, str(root), uri)
        summaries.append(
            {
                "trigger_id": trigger_id,
                "exposures": analysis["exposures"],
                "run_id": run_id,
                "recommendations": [
                    {
                        "segment": r.segment,
                        "variant": r.variant,
                        "reason": r.reason,
                        "detail": r.detail,
                    }
                    for r in analysis.get("recommendations", ())
                ],
            }
        )
    return summaries


def _figures(analysis: dict[str, Any]) -> dict[str, Any]:
    """CI forest plot of the lifts, the pooled funnel, and conversion by delay per segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.optimizer.labels import ALL, HOLDOUT

    figures = {}
    timing_table = analysis["timing"]
    lifts = timing_table[
        (timing_table["outcome"] == "conversion") & timing_table["abs_lift"].notna()
    ]
    if len(lifts):
        fig, ax = plt.subplots(figsize=(6, 0.8 + 0.4 * len(lifts)))
        y = list(range(len(lifts)))
        errors = [lifts["abs_lift"] - lifts["abs_ci_low"], lifts["abs_ci_high"] - lifts["abs_lift"]]
        ax.errorbar(lifts["abs_lift"], y, xerr=errors, fmt="o")
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(
            y, [f"{v} vs {c}" for v, c in zip(lifts["variant"], lifts["control"], strict=True)]
        )
        ax.set_xlabel("absolute lift in conversion (95 % CI)")
        fig.tight_layout()
        figures["ci_forest"] = fig
    stages = analysis["funnel"]
    pooled = stages[stages["variant"] == ALL]
    if len(pooled):
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(pooled["stage"].astype(str), pooled["users"])
        ax.set_ylabel("customers")
        ax.set_title("funnel")
        fig.tight_layout()
        figures["funnel"] = fig
    segments = analysis["segments"]
    rates = segments[(segments["outcome"] == "conversion") & (segments["variant"] != HOLDOUT)]
    if len(rates):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for segment, rows in rates.groupby("segment"):
            rows = rows.assign(hours=rows["variant"].map(_hours)).sort_values("hours")
            ax.plot(rows["hours"], rows["value"], marker="o", label=str(segment))
        ax.set_xscale("log")
        ax.set_xlabel("send delay (hours)")
        ax.set_ylabel("conversion rate")
        ax.legend(fontsize=7)
        fig.tight_layout()
        figures["timing_by_segment"] = fig
    return figures


def _hours(variant: str) -> float:
    from engine.dsl.durations import parse_duration

    text = str(variant).lstrip("d")
    try:
        return parse_duration(text).total_seconds() / 3600
    except ValueError:
        return float("nan")
