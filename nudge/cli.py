"""The `nudge` command line. Composition only: parse, call the packages, print.

Heavy libraries (pandas, pyarrow, duckdb, and later feast, mlflow, prefect, lightgbm) are imported
inside the commands, so that `nudge --help` answers at once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nudge.console import StepPrinter, console, fail
from nudge.data_cli import customers_app, import_profiles, lake_sync
from nudge.db_cli import db_app
from nudge.engine_cli import engine_app, triggers_app
from nudge.errors import Commands, UserError
from nudge.experiment_cli import experiment_app
from nudge.pipeline_cli import backtest, mlflow_app, pipeline_app
from nudge.serve_cli import serve
from nudge.status import status
from nudge.suppressions_cli import suppressions_app
from nudge.templates_cli import templates_app
from nudge.uplift_cli import uplift_app

if TYPE_CHECKING:
    from nudge.settings import Settings

app = typer.Typer(
    cls=Commands,  # every command's UserError: one line, exit 2 (nudge.errors)
    name="nudge",
    help="Predictive trigger platform for lifecycle marketing.\n\n"
    "State lives under $NUDGE_HOME (default ./.nudge): the event lake, simulations, rejects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
lake_app = typer.Typer(cls=Commands, help="Inspect the event lake.", no_args_is_help=True)
app.add_typer(lake_app, name="lake")
app.add_typer(triggers_app, name="triggers")
app.add_typer(engine_app, name="engine")
app.add_typer(db_app, name="db")
app.add_typer(templates_app, name="templates")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(mlflow_app, name="mlflow")
app.add_typer(experiment_app, name="experiment")
app.add_typer(uplift_app, name="uplift")
app.command()(serve)
app.command("status")(status)
app.command("import-profiles")(import_profiles)
app.add_typer(customers_app, name="customers")
app.add_typer(suppressions_app, name="suppressions")
lake_app.command("sync")(lake_sync)

DEMO_REPLAY_DAYS = 14  # simulated after the training data: what the engine replays


# -- simulate --------------------------------------------------------------------------------------


@app.command()
def simulate(
    customers: Annotated[int, typer.Option(min=1, help="How many customers to draw.")] = 20_000,
    days: Annotated[int, typer.Option(min=1, help="How many days of history.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 42,
    start: Annotated[
        str | None, typer.Option(help="First day (YYYY-MM-DD, UTC). Default: $NUDGE_SIM_START.")
    ] = None,
    planted: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="YAML overriding the planted segments and effects."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the data set and truth. Default: $NUDGE_HOME/simulation."
        ),
    ] = None,
    lake: Annotated[
        bool, typer.Option("--lake/--no-lake", help="Also load the events into the lake.")
    ] = True,
) -> None:
    """Simulate customers and their events from a model with planted truth.

    Writes events.parquet, customers.parquet and truth/ (per-customer segment, purchase rate and
    dropout; the email effect table) to --out, and loads events and profiles into the lake.
    """
    settings = _settings()
    _check_simulation_input(start, planted)  # before anything is drawn or written
    run = _simulate(
        settings,
        customers=customers,
        days=days,
        seed=seed,
        start=start,
        planted=planted,
        out=out,
        lake=lake,
    )
    from nudge.console import print_simulation

    print_simulation(run)


def _check_simulation_input(start: str | None, planted: Path | None) -> None:
    """A --start the simulator cannot read, or a planted file it refuses, as a UserError, before
    anything is drawn or written (pandas reports a bad date as a plain ValueError: only that call is
    translated, so that a ValueError of the simulation itself stays a bug)."""
    import pandas as pd

    from pipelines.simulator import load_planted

    if start is not None:
        try:
            valid = pd.Timestamp(start) is not pd.NaT
        except ValueError:
            valid = False
        if not valid:
            raise UserError(f"--start: expected a date such as 2025-01-01 (got {start!r})")
    load_planted(planted)  # a bad file raises a UserError naming it


def _simulate(settings: Settings, *, customers: int, days: int, seed: int, start: str | None,
              planted: Path | None, out: Path | None, lake: bool, lake_days: int | None = None) -> Any:  # fmt: skip
    from engine.lake import EventLake
    from pipelines.simulate import run_simulation

    progress = StepPrinter(f"simulate {customers:,} customers × {days} days (seed {seed})")
    run = run_simulation(
        customers=customers,
        days=days,
        seed=seed,
        start=start or settings.sim_start,
        out=(out or settings.simulation_dir).resolve(),
        lake=EventLake(settings.lake_dir) if lake else None,
        planted_path=planted,
        progress=progress,
        lake_days=lake_days,
    )
    progress.finish()
    return run


# -- import ----------------------------------------------------------------------------------------


@app.command("import")
def import_(
    file: Annotated[
        Path | None, typer.Argument(help="The file to import (or use --events).")
    ] = None,
    events: Annotated[Path | None, typer.Option("--events", help="The file to import.")] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet (default: from the file name).")
    ] = None,
    column_map: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="customer_id=COL,timestamp=COL,event_type=COL_OR_CONST[,amount=COL,event_id=COL,"
            "session_id=COL,source=COL,device=COL]. Unmapped columns are kept in the properties.",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="IANA zone of timestamps that carry no offset (e.g. UTC)."),
    ] = None,
    timestamp_format: Annotated[
        str | None, typer.Option(help="strptime format of the timestamps (default: ISO 8601).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="A known format instead of --map: cdnow.")
    ] = None,
    decimal: Annotated[
        str | None,
        typer.Option(help="The amounts' decimal mark when it is not a point: --decimal ,"),
    ] = None,
) -> None:
    """Import an external event or transaction log into the lake.

    Rows that fail validation go to a rejects file with the reason; importing the same file
    twice adds nothing.
    """
    from engine.lake import EventLake
    from pipelines.ingest import PRESETS, import_events, parse_column_map

    settings = _settings()
    if decimal not in (None, ".", ","):
        fail(f"--decimal: expected , or . (got {decimal!r})")
    path = events or file
    if path is None or (events and file):
        fail("give the file to import once: nudge import FILE, or nudge import --events FILE")
    chosen = None
    if preset is not None:
        if preset not in PRESETS:
            fail(f"--preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        if column_map:
            fail("--preset and --map exclude each other: the preset brings its own column map")
        chosen = PRESETS[preset]
        mapping = chosen.column_map
        tz = tz or chosen.timezone
        timestamp_format = timestamp_format or chosen.timestamp_format
    elif column_map is None:
        fail(
            "say how the columns map: --map customer_id=COL,timestamp=COL,event_type=COL_OR_CONST, or --preset"
        )
    else:
        mapping = parse_column_map(column_map)
    started = time.perf_counter()
    with console.status(f"importing {path} …"):
        report = import_events(
            EventLake(settings.lake_dir),
            path,
            mapping,
            file_format=file_format,
            timezone=tz,
            timestamp_format=timestamp_format,
            rejects_dir=settings.rejects_dir,
            preset=chosen,
            decimal=decimal,
        )
    from nudge.console import print_import

    print_import(path, report, time.perf_counter() - started)


# -- lake ------------------------------------------------------------------------------------------


@lake_app.command("info")
def lake_info(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """What the lake holds: events, customers, date range, events per type, size on disk."""
    from engine.lake import EventLake
    from nudge.console import print_lake_info

    info = EventLake(_settings().lake_dir).info()
    if as_json:
        payload = {
            "root": str(info.root),
            "events": info.events,
            "customers": info.customers,
            "profiles": info.profiles,
            "first_event": info.first_event.isoformat() if info.first_event else None,
            "last_event": info.last_event.isoformat() if info.last_event else None,
            "partitions": info.partitions,
            "files": info.files,
            "bytes_on_disk": info.bytes_on_disk,
            "events_per_type": info.events_per_type,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    print_lake_info(info)


# -- demo ------------------------------------------------------------------------------------------


@app.command()
def demo(
    customers: Annotated[
        int, typer.Option(min=100, help="How many customers to simulate.")
    ] = 20_000,
    days: Annotated[int, typer.Option(min=30, help="How many days of history.")] = 365,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Run the main job end to end on the embedded defaults (no servers) and summarise it.

    Simulate a year of customers with planted truth (plus two more weeks kept aside), load the
    event lake, build the features (Feast), train churn, LTV and engagement beside their baselines
    (MLflow), start the scoring service, replay the two weeks through the example triggers while
    the simulated customers answer the emails, and analyse the cart-recovery delay experiment.
    """
    import pandas as pd

    from nudge.console import print_lake_info, print_simulation
    from nudge.demo import engine_stage, optimizer_stage, score_sample, scoring_service

    settings = _settings()
    console.rule("[bold]nudge demo")
    console.print(f"state under [cyan]{settings.home.resolve()}[/] (set NUDGE_HOME to move it)\n")
    run = _simulate(
        settings, customers=customers, days=days + DEMO_REPLAY_DAYS, seed=seed, start=None,
        planted=None, out=None, lake=True, lake_days=days,
    )  # fmt: skip
    print_simulation(run)
    from engine.lake import EventLake

    print_lake_info(EventLake(settings.lake_dir).info())
    trained = _demo_models(settings)
    sim = run.simulation
    start = (sim.params.start + pd.Timedelta(days=days)).to_pydatetime()
    end = (sim.params.start + pd.Timedelta(days=days + DEMO_REPLAY_DAYS)).to_pydatetime()
    if trained:
        console.print("\n[bold]Scoring service[/] (nudge serve on a free port)")
        with scoring_service(settings) as service:
            sample = sim.truth.loc[sim.truth["signup_at"] < pd.Timestamp(start), "customer_id"]
            score_sample(*service, sample.sample(5, random_state=seed).tolist())
            engine_stage(settings, settings.simulation_dir, start, end, service)
    else:
        engine_stage(settings, settings.simulation_dir, start, end, None)
    optimizer_stage(settings, sim.truth, sim.planted)
    console.print("\nNext: [bold]nudge mlflow ui[/], [bold]nudge backtest[/], or import real "
                  "data with [bold]nudge import --preset cdnow FILE[/].")  # fmt: skip


def _demo_models(settings: Settings) -> bool:
    """Features, training, and the holdout table of each model against its baselines."""
    from engine.lake import EventLake
    from models.specs import SPECS
    from nudge.pipeline_cli import prepare, print_training, run_features, run_train
    from pipelines.datasets import covered_range, too_short_to_train

    prepare()  # Prefect's home under $NUDGE_HOME, quiet library logs
    console.print()
    data = covered_range(EventLake(settings.lake_dir))
    why = too_short_to_train(data, SPECS, step_days=settings.snapshot_step_days,
                             count=settings.snapshot_count)  # fmt: skip
    if why:
        console.print(f"[yellow]models skipped:[/] {why} — simulate more days (e.g. --days 365)")
        return False
    progress = StepPrinter("features and models")
    progress("build features: compute, feast apply, materialize")
    run_features(settings)
    progress("train churn, ltv, engagement and their baselines; log to MLflow")
    outcome = run_train(settings)
    progress.finish()
    print_training(outcome)
    return True


app.command("backtest")(backtest)


def _settings() -> Settings:
    """The settings, or one line per invalid NUDGE_* variable and exit 2."""
    from nudge.engine_cli import settings

    return settings()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
