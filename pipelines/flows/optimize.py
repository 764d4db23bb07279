"""Flow `optimize`: review every trigger and every running experiment from the execution log, in MLflow.

Every trigger: its daily performance (``nudge triggers report``'s figures) as metrics with a step
per day and a one-page HTML report, in its run of experiment ``nudge-triggers``
(`pipelines.review`). Every trigger with experiment decisions: funnel, timing per delay variant,
segmentation with the heterogeneous-effect test, holdout incrementality, and a recommendation per
segment only where the guardrails pass — one MLflow run per review in experiment
``experiments/<trigger_id>``, named ``<trigger> <day>``, with the figures an operator compares
(lift, CI bounds, p-values, users, conversions and revenue per arm) as metrics, the tables as CSV
artifacts and plots (CI forest plot, funnel, timing curve per segment). Every experiment is tagged
as model development (``mlflow.experimentKind``). ``nudge pipeline optimize`` runs it;
``nudge pipeline deploy`` schedules it daily.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from nudge.settings import Settings

__all__ = [
    "analyse_experiment",
    "experiment_metrics",
    "log_experiment",
    "optimize",
    "review_triggers",
]


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
    arms = exposures.groupby("variant").agg(
        users=("customer_id", "size"), conversions=("converted", "sum"), revenue=("revenue", "sum")
    )
    result.update(
        arms=arms,
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

    from pipelines.review import metric_key
    from pipelines.tracking import ensure_experiment, use_tracking

    if not analysis.get("exposures"):
        return None
    use_tracking(tracking_uri)
    trigger_id = analysis["trigger_id"]
    experiment_id = ensure_experiment(
        f"experiments/{trigger_id}", home,
        description=f"Reviews of the experiment of trigger {trigger_id} (flow optimize).",
    )  # fmt: skip
    day = f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}"
    verdicts = "; ".join(
        f"{r.segment}: {r.variant or f'no recommendation ({r.reason})'}"
        for r in analysis["recommendations"]
    )
    description = f"Experiment of {trigger_id} reviewed {day}: {analysis['exposures']:,} customers assigned. {verdicts}"
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{trigger_id} {day}", description=description
    ) as run:
        mlflow.set_tags({"nudge.trigger": trigger_id, "nudge.review_day": day})
        mlflow.log_metric("exposures", analysis["exposures"])
        mlflow.log_metrics(experiment_metrics(analysis))
        for rec in analysis["recommendations"]:
            mlflow.set_tag(
                f"recommendation.{metric_key(rec.segment)}", rec.variant or f"none ({rec.reason})"
            )
            if rec.p_value_corrected is not None:
                mlflow.log_metric(
                    metric_key("p_corrected", rec.segment), float(rec.p_value_corrected)
                )
        for name in ("arms", "funnel", "timing", "segments", "holdout"):
            table = analysis.get(name)
            if isinstance(table, pd.DataFrame):
                mlflow.log_text(table.to_csv(index=name == "arms"), f"tables/{name}.csv")
        mlflow.log_text(
            pd.DataFrame(
                [asdict(r) | {"checks": str(r.checks)} for r in analysis["recommendations"]]
            ).to_csv(index=False),
            "tables/recommendations.csv",
        )
        for name, figure in _figures(analysis).items():
            mlflow.log_figure(figure, f"plots/{name}.png")
        return run.info.run_id


@task(cache_policy=NO_CACHE)
def review_triggers(engine_url: str, tracking_uri: str, home: str, window_seconds: float, days: int,
                    triggers: list[str], recommendations: dict[str, list[dict[str, Any]]]) -> dict[str, str]:  # fmt: skip
    """Log every trigger's days not logged yet (and its HTML report) to its run of
    ``nudge-triggers``; returns trigger id → run id."""
    import time

    import mlflow

    from engine.store import EngineDB
    from engine.store.reporting import event_days, trigger_report
    from pipelines.review import (
        TRIGGERS_EXPERIMENT,
        DayReview,
        day_bounds,
        days_to_review,
        last_step,
        log_trigger_review,
        trigger_run,
    )  # fmt: skip
    from pipelines.tracking import ensure_experiment, use_tracking

    use_tracking(tracking_uri)
    client = mlflow.MlflowClient()
    experiment_id = ensure_experiment(
        TRIGGERS_EXPERIMENT, home,
        description="Every trigger's daily performance (flow optimize): one run per trigger.",
    )  # fmt: skip
    store = EngineDB.open(engine_url)
    try:
        span = store.read(event_days)
        total = store.read(trigger_report, window=window_seconds, triggers=tuple(triggers))
        if span is None:
            return {}
        runs = {row.trigger_id: trigger_run(client, experiment_id, row.trigger_id) for row in total}
        steps = {t: last_step(client, run_id) for t, run_id in runs.items()}
        after = None if any(v is None for v in steps.values()) else min(steps.values())  # type: ignore[type-var]
        reviews = []
        for day in days_to_review(*span, after_step=after, days=days):
            since, until = day_bounds(day)
            rows = store.read(trigger_report, window=window_seconds, since=since, until=until,
                              triggers=tuple(triggers), holdouts=False)  # fmt: skip
            reviews.append(DayReview(day, {r.trigger_id: r for r in rows}))
    finally:
        store.dispose()
    now = time.time()
    for row in total:
        done = steps[row.trigger_id]
        fresh = [r for r in reviews if done is None or r.step > done]
        log_trigger_review(client, runs[row.trigger_id], fresh, row, reviewed_at=now,
                           recommendations=recommendations.get(row.trigger_id, []))  # fmt: skip
    return runs


@flow(name="optimize")
def optimize(home: str | None = None, engine_url: str | None = None, triggers: list[str] | None = None,
             window_hours: float = 72.0, segment_by: str | None = None, min_users: int = 1000,
             tracking_uri: str | None = None, days: int = 30) -> dict[str, Any]:  # fmt: skip
    """Review every trigger (its last `days` full days, the ones not logged yet) and analyse and
    log every running experiment; returns the experiments' recommendations and the runs.

    The engine log (`engine_url`) and the MLflow store (`tracking_uri`) are those of the engine
    and of training unless given: the settings' rules (NUDGE_ENGINE_DB, else engine.db under the
    home; MLFLOW_TRACKING_URI, else NUDGE_MLFLOW_TRACKING_URI, else mlflow.db under the home).
    `triggers`: the experiments to analyse (default: every trigger with experiment decisions).
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
    advice = {s["trigger_id"]: s["recommendations"] for s in summaries}
    reviewed = review_triggers(url, uri, str(root), window_hours * 3600, days,
                               _defined_triggers(settings), advice)  # fmt: skip
    return {"experiments": summaries, "trigger_runs": reviewed}


def experiment_metrics(analysis: dict[str, Any]) -> dict[str, float]:
    """The figures an operator compares, as metrics: per arm users, conversions and revenue; per
    comparison (timing, holdout) lift, CI bounds, p-values (raw and corrected) and users."""
    import math

    from pipelines.review import metric_key

    out: dict[str, float] = {}
    arms = analysis.get("arms")
    if isinstance(arms, pd.DataFrame):
        for variant, row in arms.iterrows():
            for column in ("users", "conversions", "revenue"):
                out[metric_key("arm", str(variant), column)] = float(row[column])
    for table_name in ("timing", "holdout"):
        table = analysis.get(table_name)
        if not isinstance(table, pd.DataFrame):
            continue
        for row in table.itertuples(index=False):
            if row.variant == row.control:
                continue
            segment = getattr(row, "segment", "")
            prefix = (
                table_name,
                str(row.outcome),
                str(row.variant),
                "" if segment == "(all)" else segment,
            )
            values = {"lift": row.abs_lift, "lift_ci_low": row.abs_ci_low, "lift_ci_high": row.abs_ci_high,
                      "rel_lift": row.rel_lift, "p_value": row.p_value,
                      "p_corrected": row.p_value_corrected, "users": row.users}  # fmt: skip
            if table_name == "holdout":
                values.update(incremental=row.incremental_total,
                              incremental_ci_low=row.incremental_ci_low,
                              incremental_ci_high=row.incremental_ci_high)  # fmt: skip
            for name, value in values.items():
                number = float(value)
                if math.isfinite(number):
                    out[metric_key(*prefix, name)] = number
    return out


def _defined_triggers(settings: Settings) -> list[str]:
    """The ids of the trigger folder's definitions (none if it cannot be read)."""
    from engine.dsl.triggers import load_trigger_dir

    try:
        return [t.id for t in load_trigger_dir(settings.trigger_folder).triggers]
    except Exception:  # a broken folder must not stop the review of what the log holds
        return []


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
