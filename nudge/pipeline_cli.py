"""`nudge pipeline features|train|optimize|deploy`, `nudge backtest` and `nudge mlflow ui`.

Composition only: check the input, configure Prefect and MLflow for $NUDGE_HOME, run the flow,
print the result. Prefect, MLflow, Feast and LightGBM are imported inside the commands.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from nudge.console import StepPrinter, console, fail

if TYPE_CHECKING:
    from nudge.settings import Settings

pipeline_app = typer.Typer(
    help="Feature and training pipelines (Prefect flows; MLflow tracking and registry).",
    no_args_is_help=True,
)
mlflow_app = typer.Typer(help="The MLflow tracking store under $NUDGE_HOME.", no_args_is_help=True)

F = TypeVar("F", bound=Callable[..., Any])


def pipeline_errors(command: F) -> F:
    """A file the pipeline needs is missing: one line, exit 2. (Its other mistakes, such as an empty
    lake or a cutoff outside the data, are PipelineError, a UserError: the one handler prints them.)"""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FileNotFoundError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


# -- pipeline features -----------------------------------------------------------------------------


@pipeline_app.command("features")
@pipeline_errors
def features(
    step_days: Annotated[
        int | None, typer.Option(min=1, help="Days between snapshots (default from settings).")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="How many snapshots.")] = None,
    online: Annotated[
        bool, typer.Option("--online/--offline", help="Materialize the latest snapshot.")
    ] = True,
) -> None:
    """Compute the feature tables from the lake, feast apply, materialize the latest snapshot."""
    settings = prepare()
    _check_lake(settings)
    progress = StepPrinter("build features")
    progress("computing feature tables, feast apply, materialize")
    built = run_features(settings, step_days=step_days, count=count, online=online)
    progress.finish()
    console.print(
        f"{len(built['snapshots'])} snapshots ({built['snapshots'][0][:10]} → "
        f"{built['snapshots'][-1][:10]}) of {built['data_range']}; views {', '.join(built['views'])}"
    )
    for model, why in (built.get("models_without_data") or {}).items():
        console.print(f"[yellow]{model}:[/] {why}; `nudge pipeline train` will skip it")


def run_features(
    settings: Settings,
    *,
    step_days: int | None = None,
    count: int | None = None,
    online: bool = True,
) -> dict[str, Any]:
    """Run the build-features flow for `settings` (used by `demo` too)."""
    from pipelines.flows.features import build_features

    return build_features(
        home=str(settings.home.resolve()),
        step_days=step_days or settings.snapshot_step_days,
        count=count or settings.snapshot_count,
        online=online,
    )


# -- pipeline train --------------------------------------------------------------------------------


@pipeline_app.command("train")
@pipeline_errors
def train(
    models: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models (default: every definition in NUDGE_MODELS_DIR)."
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address; default NUDGE_DASK_ADDRESS (unset: local)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Train every model and its baselines on Feast training sets; log and register in MLflow."""
    settings = prepare()
    chosen = _models(models)
    _check_lake(settings)
    from features.catalog import catalog
    from features.paths import feature_table_path

    if not all(feature_table_path(view, settings.home).exists() for view in catalog().views):
        fail(f"no feature tables under {settings.home.resolve()}/features: run "
             "`nudge pipeline features` first")  # fmt: skip
    progress = None if as_json else StepPrinter("train " + ", ".join(chosen or _all_models()))
    if progress:
        progress("training sets (Feast point-in-time joins), fit, log, register")
    outcome = run_train(settings, chosen, dask=dask)
    if as_json:
        sys.stdout.write(json.dumps(_clean(outcome), indent=2, default=str) + "\n")
        return
    assert progress is not None
    progress.finish()
    print_training(outcome)
    console.print(f"MLflow: [cyan]{settings.tracking_uri}[/] — [bold]nudge mlflow ui[/] to browse")


def run_train(
    settings: Settings, models: list[str] | None = None, *, dask: str | None = None
) -> dict[str, Any]:
    """Run the train flow for `settings` (used by `demo` too)."""
    from pipelines.flows.train import train as train_flow

    return train_flow(
        home=str(settings.home.resolve()),
        models=models,
        n_train=settings.train_snapshots,
        tracking_uri=settings.tracking_uri,
        dask_address=dask or settings.dask_address,
    )


def print_training(outcome: Mapping[str, Mapping[str, Any]]) -> None:
    """One table per model: the model and each baseline on the holdout, and the registry move."""
    for name, run in outcome.items():
        if name == "skipped":  # models the lake cannot train (their events are not in it)
            for model, why in run.items():
                console.print(f"[yellow]{model} skipped:[/] {why}\n")
            continue
        if name == "score_refresh":  # the scores refreshed into the engine after training
            if "error" in run:
                console.print(f"[yellow]score refresh failed:[/] {run['error']}\n")
            else:
                console.print(f"scores refreshed into the engine: {run['refreshed']:,} of "
                              f"{run['customers']:,} customers\n")  # fmt: skip
            continue
        metrics = run["metrics"]
        table = Table(
            title=f"{name} — holdout {run['holdout_snapshot']} ({run['holdout_rows']:,} customers; "
            f"trained on {run['train_rows']:,} rows, {run['train_snapshots']} snapshots)",
            title_justify="left",
            show_edge=False,
        )
        columns = list(next(iter(metrics.values())))
        table.add_column("scorer", no_wrap=True)
        for column in columns:
            table.add_column(column, justify="right")
        for scorer, values in metrics.items():
            label = f"[bold]{scorer}[/]" if scorer == "model" else scorer
            table.add_row(label, *(_fmt(values[c]) for c in columns))
        console.print(table)
        mark = "[green]champion[/]" if run["champion"] else "challenger"
        console.print(f"  registered {name} v{run['version']} → {mark}: {run['reason']}\n")


# -- pipeline deploy -------------------------------------------------------------------------------


@pipeline_app.command("deploy")
@pipeline_errors
def deploy(
    features_cron: Annotated[
        str | None, typer.Option(help="Cron of build-features (default NUDGE_FEATURES_CRON).")
    ] = None,
    train_cron: Annotated[
        str | None, typer.Option(help="Cron of train (default NUDGE_TRAIN_CRON).")
    ] = None,
    optimize_cron: Annotated[
        str | None,
        typer.Option(help="Cron of optimize, the reviews (default NUDGE_OPTIMIZE_CRON)."),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then run the scheduled flow runs until Ctrl-C.")
    ] = False,
) -> None:
    """Register the flows as deployments with schedules on the Prefect server at PREFECT_API_URL.

    Start one with `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api:
    the ephemeral API cannot run schedules.
    """
    settings = prepare()
    if not os.environ.get("PREFECT_API_URL", "").strip():
        fail(
            "PREFECT_API_URL is not set: start `prefect server start` and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (the ephemeral API cannot schedule)"
        )
    from pipelines.flows.deploy import Schedules
    from pipelines.flows.deploy import deploy as register
    from pipelines.flows.deploy import serve as run_served

    schedules = Schedules(
        features_cron=features_cron or settings.features_cron,
        train_cron=train_cron or settings.train_cron,
        timezone=settings.schedule_timezone,
        optimize_cron=optimize_cron or settings.optimize_cron,
        score_cron=settings.score_cron,
    )
    home = str(settings.home.resolve())
    feature_params = {"step_days": settings.snapshot_step_days, "count": settings.snapshot_count}
    train_params = {
        "n_train": settings.train_snapshots,
        "tracking_uri": settings.tracking_uri,
        "dask_address": settings.dask_address,
    }
    # The engine database's URL may carry a password: the deployment does not store it on the
    # Prefect server; the flow reads NUDGE_ENGINE_DB where it runs.
    optimize_params = optimize_parameters(settings)
    del optimize_params["engine_url"]
    try:
        registered = register(home, schedules, feature_params, train_params, optimize_params)
    except Exception as exc:  # the server is the user's to start: say so in one line
        fail(f"could not register deployments at {os.environ['PREFECT_API_URL']}: {exc}")
    for name, deployment_id in registered.items():
        console.print(f"[green]✓[/] {name} ({deployment_id})")
    console.print(
        f"schedules: features [bold]{schedules.features_cron}[/], train "
        f"[bold]{schedules.train_cron}[/], optimize [bold]{schedules.optimize_cron}[/], "
        f"score-batch [bold]{schedules.score_cron}[/] ({schedules.timezone})"
    )
    if serve:
        run_served(home, schedules, feature_params, train_params, optimize_params)
    else:
        console.print("run them with [bold]nudge pipeline deploy --serve[/] (or a Prefect worker)")


# -- pipeline score-batch --------------------------------------------------------------------------


@pipeline_app.command("score-batch")
@pipeline_errors
def score_batch(
    models: Annotated[
        str | None,
        typer.Option(help="Models to refresh, comma-separated (default: every model definition)."),
    ] = None,
    page_size: Annotated[
        int, typer.Option(min=1, max=1000, help="Customers per scoring request (at most 1,000).")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Refresh every known customer's scores into the engine (what `deploy` schedules daily and
    `train` runs after training): the scoring service (NUDGE_SCORING_URL) is asked in batches,
    and one `score_refreshed` event per customer reaches the inbox, where `score_crosses`
    triggers compare it with the last score.

    JSON: {"refresh_id", "models", "customers", "refreshed", "unscored", "seconds"}.
    """
    settings = prepare()
    from engine.store import EngineDB
    from pipelines.flows.score_batch import refresh_scores

    EngineDB.open(settings.engine_url).dispose()  # out of date: one line, before any scoring
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    key = settings.api_key.get_secret_value() if settings.api_key else None
    with nullcontext() if as_json else console.status("scoring customers …") as status:

        def progress(done: int) -> None:
            if status is not None:
                status.update(f"scoring customers … {done:,}")

        outcome = refresh_scores(settings.engine_url, settings.scoring_url, chosen, api_key=key,
                                 page_size=page_size, progress=progress)  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(outcome) + "\n")
        return
    console.print(
        f"refreshed {outcome['refreshed']:,} of {outcome['customers']:,} customers "
        f"({', '.join(outcome['models'])}) in {outcome['seconds']:.1f} s; "
        f"{outcome['unscored']:,} without a score; the engine decides them as it processes its inbox"
    )


# -- pipeline optimize -----------------------------------------------------------------------------


@pipeline_app.command("optimize")
@pipeline_errors
def optimize(
    days: Annotated[
        int | None,
        typer.Option(
            min=1, max=366, help="Past days to log at most (default NUDGE_OPTIMIZE_DAYS)."
        ),
    ] = None,
    window_hours: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Attribution window, hours (default NUDGE_ATTRIBUTION_HOURS)."
        ),
    ] = None,
    segment_by: Annotated[
        str | None, typer.Option(help="Profile attribute that names each customer's segment.")
    ] = None,
    min_users: Annotated[
        int, typer.Option(min=1, help="Minimum users per arm before recommending.")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Review every trigger and every running experiment in MLflow (what `deploy` schedules
    daily): each trigger's days not logged yet as metrics with a step per day and its HTML
    report (experiment nudge-triggers), each experiment's analysis (experiments/<trigger>).

    JSON: {"experiments": [{"trigger_id", "exposures", "run_id", "recommendations": [{"segment",
    "variant", "reason", "detail"}]}], "trigger_runs": {trigger_id: run_id}, "tracking_uri"}.
    """
    settings = prepare()
    from engine.store import EngineDB
    from pipelines.flows.optimize import optimize as optimize_flow

    # An out-of-date database is one line (DatabaseOutOfDate) here, not a failed flow run.
    EngineDB.open(settings.engine_url).dispose()
    params = optimize_parameters(settings)
    if days is not None:
        params["days"] = days
    if window_hours is not None:
        params["window_hours"] = window_hours
    status = "optimize: reviewing triggers and experiments …"
    with nullcontext() if as_json else console.status(status):
        outcome = optimize_flow(home=str(settings.home.resolve()), segment_by=segment_by,
                                min_users=min_users, **params)  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps({**outcome, "tracking_uri": settings.tracking_uri}) + "\n")
        return
    print_optimize(outcome)
    console.print(f"MLflow: [cyan]{settings.tracking_uri}[/] — [bold]nudge mlflow ui[/] to browse")


def optimize_parameters(settings: Settings) -> dict[str, Any]:
    """The optimize flow's parameters from the settings (the CLI's and the deployment's)."""
    return {
        "tracking_uri": settings.tracking_uri,
        "engine_url": settings.engine_url,
        "window_hours": settings.attribution_hours,
        "days": settings.optimize_days,
    }


def print_optimize(outcome: Mapping[str, Any]) -> None:
    """The reviewed triggers (with their runs) and each experiment's recommendations."""
    runs = outcome["trigger_runs"]
    if not runs:
        console.print("no decisions in the engine log yet: nothing to review")
    table = Table(title="Reviewed triggers (MLflow experiment nudge-triggers)",
                  title_justify="left", show_edge=False)  # fmt: skip
    table.add_column("trigger", no_wrap=True)
    table.add_column("run", no_wrap=True)
    for trigger_id, run_id in sorted(runs.items()):
        table.add_row(trigger_id, run_id)
    if runs:
        console.print(table)
    for summary in outcome["experiments"]:
        console.print(
            f"[bold]experiments/{summary['trigger_id']}[/]: {summary['exposures']:,} customers "
            f"assigned (run {summary['run_id']})"
        )
        for rec in summary["recommendations"]:
            verdict = (
                f"[green]use {rec['variant']}[/]"
                if rec["variant"]
                else f"no recommendation ({rec['reason']})"
            )
            console.print(f"  {rec['segment']:<16} {verdict}: {rec['detail']}", soft_wrap=True)


# -- backtest --------------------------------------------------------------------------------------


@pipeline_errors
def backtest(
    cutoff: Annotated[str, typer.Option(help="Score at the end of this day (YYYY-MM-DD, UTC).")],
    horizon_days: Annotated[
        int | None,
        typer.Option(help="Outcome window after the cutoff, in days (default: each model's)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Backtest this model only (default: every definition).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    step_days: Annotated[int, typer.Option(min=1, help="Days between training snapshots.")] = 30,
) -> None:
    """Train on data before CUTOFF, score every customer at it, compare with the next N days.

    Each model is its definition's label (churn = no purchase in the horizon, LTV = spend in it,
    …); the models and every baseline side by side; logged to MLflow (experiment
    nudge-backtest). JSON: {MODEL: {"model": {metrics}, "baselines": {NAME: {metrics}}}}.
    """
    settings = prepare()
    from engine.lake import EventLake
    from models.definitions import load_definitions
    from pipelines.datasets import covered_range
    from pipelines.flows.backtest import backtest as backtest_flow
    from pipelines.flows.backtest import parse_cutoff, plan_backtest

    # Checked before the flow starts, so a mistake is one line, not a failed flow run's log.
    definitions = load_definitions()
    chosen = [model] if model else None
    if model is not None:
        definitions.get(model)  # an unknown name: one line listing the known ones
    data = covered_range(EventLake(settings.lake_dir))
    horizons = (
        {horizon_days}
        if horizon_days is not None
        else {definitions.get(name).label.horizon_days for name in (chosen or definitions.names)}
    )
    for days in sorted(horizons):
        plan_backtest(data, parse_cutoff(cutoff), days, step_days, settings.train_snapshots)
    with nullcontext() if as_json else console.status("backtest …"):
        payload = backtest_flow(
            cutoff=cutoff,
            horizon_days=horizon_days,
            home=str(settings.home.resolve()),
            step_days=step_days,
            n_train=settings.train_snapshots,
            tracking_uri=settings.tracking_uri,
            models=chosen,
        )
    if as_json:
        sys.stdout.write(json.dumps(_clean(payload), default=str) + "\n")
        return
    print_backtest(payload, cutoff, horizon_days)


def print_backtest(payload: Mapping[str, Any], cutoff: str, horizon_days: int | None) -> None:
    """The backtest as one table per model: model first, then each baseline."""
    horizon = f"{horizon_days}-day horizon" if horizon_days else "each model's horizon"
    console.print(f"[bold]Backtest[/] at {cutoff}, {horizon}, {payload['customers']:,} customers")
    for name, block in payload.items():
        if not isinstance(block, Mapping) or "model" not in block:
            continue
        rows = {"model": block["model"], **block["baselines"]}
        columns = list(block["model"])
        table = Table(
            title=f"{name} ({block['horizon_days']:g} days)", title_justify="left", show_edge=False
        )
        table.add_column("scorer", no_wrap=True)
        for column in columns:
            table.add_column(column, justify="right")
        for scorer, values in rows.items():
            label = f"[bold]{scorer}[/]" if scorer == "model" else scorer
            table.add_row(label, *(_fmt(values[c]) for c in columns))
        console.print(table)
    for name, why in (payload.get("skipped") or {}).items():
        console.print(f"[yellow]{name} skipped:[/] {why}")


# -- mlflow ui -------------------------------------------------------------------------------------


@mlflow_app.command("ui")
def mlflow_ui(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Open the MLflow UI on nudge's tracking store (runs, plots, registry, aliases)."""
    settings = prepare()
    uri = settings.tracking_uri
    artifacts = (settings.home.resolve() / "mlartifacts").as_uri()
    console.print(f"MLflow UI on [cyan]http://{host}:{port}[/] for [cyan]{uri}[/] (Ctrl-C stops)")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    command += ["--default-artifact-root", artifacts, "--host", host, "--port", str(port)]
    try:
        raise typer.Exit(subprocess.call(command))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# -- helpers ---------------------------------------------------------------------------------------


def prepare() -> Settings:
    """Settings, Prefect's environment under $NUDGE_HOME, quiet library logs."""
    from nudge.engine_cli import settings as read_settings
    from pipelines.prefect_env import configure_prefect

    settings = read_settings()  # an invalid NUDGE_* variable: one line each, exit 2
    configure_prefect(settings.home)
    # Progress comes from the CLI; the libraries' INFO lines would bury it.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    for name in ("mlflow", "prefect", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Library deprecation notices (ibis on DuckDB, SQLAlchemy 2.1 on Prefect and MLflow) are
    # for their maintainers, not for someone training a model. Dropped where they are shown:
    # Feast re-adds a "once" filter for them when it is imported, ahead of any filter set here.
    show = warnings.showwarning
    if not getattr(show, "_nudge_quiet", False):

        def quiet(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if not issubclass(category, DeprecationWarning):
                show(message, category, *args, **kwargs)

        quiet._nudge_quiet = True  # type: ignore[attr-defined]
        warnings.showwarning = quiet
    return settings


def _check_lake(settings: Settings) -> None:
    from engine.lake import EventLake
    from pipelines.datasets import covered_range

    covered_range(EventLake(settings.lake_dir))


def _models(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = _all_models()
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in names]
    if unknown or not chosen:
        fail(f"--models: unknown {unknown or text!r}; choose from {', '.join(names)}")
    return chosen


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.4f}"


def _clean(value: Any) -> Any:
    """NaN → null, recursively: json.dumps would write the non-JSON token NaN."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _all_models() -> tuple[str, ...]:
    """The models of the definitions (NUDGE_MODELS_DIR, default the shipped three)."""
    from models.definitions import load_definitions

    return load_definitions().names
