"""`nudge uplift …`: who buys *because of* the message, from a randomized experiment.

Composition only: read the file (``pipelines.ingest.read_table``), prepare and backtest
(``models.uplift.backtest``), print. pandas, scikit-learn and LightGBM come in with the command,
so ``nudge --help`` stays instant. Registered in ``nudge.cli`` as
``app.add_typer(uplift_app, name="uplift")``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nudge.console import console, fail
from nudge.errors import Commands

if TYPE_CHECKING:
    import pandas as pd

    from engine.store import EngineDB
    from models.uplift.backtest import BacktestRun
    from nudge.settings import Settings

__all__ = ["uplift_app"]

uplift_app = typer.Typer(
    cls=Commands,
    help="Uplift modelling: target the customers whom the message changes.",
    no_args_is_help=True,
)


@uplift_app.command("backtest")
def backtest(
    input_path: Annotated[
        Path,
        typer.Option("--input", help="The experiment, one row per customer: .csv or .parquet."),
    ],
    treatment_column: Annotated[
        str, typer.Option("--treatment-column", help="The column naming each row's arm.")
    ],
    control: Annotated[str, typer.Option(help="The control arm's value in that column.")],
    treatment: Annotated[str, typer.Option(help="The treated arm's value in that column.")],
    outcome: Annotated[str, typer.Option(help="The binary outcome column (0/1, true/false).")],
    features: Annotated[
        str | None,
        typer.Option(
            help="Feature columns, comma-separated (default: every column but the treatment and "
            "the outcome). Text columns are encoded for you."
        ),
    ] = None,
    splits: Annotated[
        int, typer.Option(min=1, help="How many random stratified 70/30 splits.")
    ] = 10,
    seed: Annotated[int, typer.Option(help="Random seed of the splits and the models.")] = 0,
    estimators: Annotated[
        int, typer.Option(min=1, help="Boosting rounds of each LightGBM model.")
    ] = 100,
    plot: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Write a Qini-curve PNG per model to this folder."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Backtest uplift models on a randomized experiment: Qini AUC and uplift at the top 30 %.

    Candidates: random and response (the baselines), T-, X- and DR-learner, class transformation.
    Mean ± standard deviation over the test parts of the splits; the chosen model by
    cross-validation inside the training parts only; the average treatment effect with its 95 %
    confidence interval.
    """
    from models.uplift.backtest import prepare_experiment, run_backtest

    frame = _read(input_path)
    names = None if features is None else [f.strip() for f in features.split(",") if f.strip()]
    experiment = prepare_experiment(
        frame,
        treatment_column=treatment_column,
        control=control,
        treatment=treatment,
        outcome=outcome,
        features=names,
    )
    if as_json:
        run = run_backtest(experiment, splits=splits, seed=seed, n_estimators=estimators)
    else:
        with console.status("backtesting …") as status:
            run = run_backtest(
                experiment,
                splits=splits,
                seed=seed,
                n_estimators=estimators,
                progress=lambda m: status.update(f"backtesting: {m} …"),
            )
    written = _plots(run, plot) if plot is not None else []
    if as_json:
        sys.stdout.write(run.report.model_dump_json(indent=2) + "\n")
        return
    _print_backtest(run, f"{treatment_column} = {treatment!r} vs {control!r}", outcome)
    for path in written:
        console.print(f"Qini curve: [cyan]{path}[/]")


@uplift_app.command("train")
def train(
    trigger: Annotated[str, typer.Argument(help="The trigger whose experiment has a holdout.")],
    min_conversions: Annotated[
        int, typer.Option(min=1, help="Conversions needed in each arm before training.")
    ] = 200,
    splits: Annotated[
        int, typer.Option(min=1, help="Backtest splits that choose the learner.")
    ] = 5,
    seed: Annotated[int, typer.Option(help="Random seed of the splits and the models.")] = 0,
    estimators: Annotated[
        int, typer.Option(min=1, help="Boosting rounds of each LightGBM model.")
    ] = 100,
) -> None:
    """Train a trigger's uplift model from the execution log and register it as
    ``uplift_<trigger>`` in MLflow (experiment ``uplift/<trigger>``).

    Treatment: assigned a sending variant; control: the holdout; outcome: a purchase within
    NUDGE_ATTRIBUTION_HOURS of the triggering event; features: the feature tables' snapshot at
    or before each decision.
    """
    from pipelines.uplift_train import load_trigger_experiment, train_trigger

    settings, store = _engine()
    try:
        data = load_trigger_experiment(store, trigger, attribution_hours=settings.attribution_hours)
    finally:
        store.dispose()
    with console.status(f"training the uplift of {trigger} …"):
        trained = train_trigger(
            data, min_conversions=min_conversions, splits=splits, seed=seed,
            n_estimators=estimators,
        )  # fmt: skip
    r = trained.backtest.report
    console.print(
        f"[bold]{trained.model}[/] v{trained.version}: {trained.chosen} on {r.rows:,} customers "
        f"({r.treated:,} sent, {r.control:,} held out); ATE {r.ate.estimate:+.2%}"
    )
    verdict = "target by uplift" if r.recommendation.target_by_uplift else "do not target by uplift"
    console.print(f"recommendation: {verdict} — {r.recommendation.reason}", soft_wrap=True)
    console.print(f"MLflow run [cyan]{trained.run_id}[/] ({settings.tracking_uri})")


@uplift_app.command("report")
def report(
    trigger: Annotated[str, typer.Argument(help="The trigger of a trained uplift model.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Policy evaluation on the trigger's randomized log (inverse propensity): incremental
    conversions per 1,000 sends for send-to-all, churn-score targeting (when the decisions
    recorded churn scores) and uplift targeting; logged to MLflow too. Judged on the decisions
    made after the model was trained when each arm has 100 of them, else on the training log
    (said so: in-sample flatters the model)."""
    from pipelines.uplift_train import load_trigger_experiment, report_trigger

    settings, store = _engine()
    try:
        data = load_trigger_experiment(store, trigger, attribution_hours=settings.attribution_hours)
    finally:
        store.dispose()
    judged = report_trigger(data)
    table, version, run_id = judged.table, judged.version, judged.run_id
    if as_json:
        rows = json.loads(table.to_json(orient="records"))
        out = {"trigger": trigger, "model": f"uplift_{trigger}", "version": version,
               "run_id": run_id, "evaluated_on": judged.evaluated_on, "rows": judged.rows,
               "policies": rows}  # fmt: skip
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    title = (f"{trigger}: targeting rules on {judged.evaluated_on}, {judged.rows:,} customers "
             f"(uplift_{trigger} v{version})")  # fmt: skip
    shown = Table(title=title, title_justify="left", show_edge=False)
    for column in ("rule", "share sent", "incr. conversions per 1,000 sends", "95 % CI"):
        shown.add_column(column, justify="left" if column == "rule" else "right")
    for row in table.itertuples():
        value = "—" if row.per_1000_sends != row.per_1000_sends else f"{row.per_1000_sends:+.1f}"
        ci = "—" if row.ci_low != row.ci_low else f"{row.ci_low:+.1f} … {row.ci_high:+.1f}"
        shown.add_row(str(row.policy), f"{row.share_sent:.0%}", value, ci)
    console.print(shown)
    console.print(f"MLflow run [cyan]{run_id}[/] ({settings.tracking_uri})")


def _engine() -> tuple[Settings, EngineDB]:
    """The settings (MLflow pointed at their tracking store) and the engine database."""
    from engine.store import EngineDB
    from nudge.engine_cli import settings as read_settings
    from pipelines.tracking import use_tracking

    settings = read_settings()
    use_tracking(settings.tracking_uri)
    return settings, EngineDB.open(settings.engine_url)


def _read(path: Path) -> pd.DataFrame:
    """The table, or one line naming the file and what is wrong with it."""
    from pipelines.ingest import read_table

    if path.is_dir():
        fail(f"--input {path}: is a folder; expected a .csv or .parquet file")
    if path.exists() and path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        fail(f"--input {path}: expected a .csv or .parquet file")
    try:  # a missing file or a malformed one is a UserError naming it (IngestError, FileReadError)
        return read_table(path)
    except OSError as error:
        fail(f"--input {path}: cannot read it ({error.strerror or error})")
    except UnicodeDecodeError:
        fail(f"--input {path}: not a UTF-8 text file; expected a CSV")


def _plots(run: BacktestRun, folder: Path) -> list[Path]:
    from models.uplift.plots import qini_figure

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, curves in run.curves.items():
        path = folder / f"qini_{name}.png"
        qini_figure(name, curves, run.perfect).savefig(path, dpi=110)
        written.append(path)
    return written


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1%}" if percent else f"{value:+.3f}"


def _print_backtest(run: BacktestRun, arms: str, outcome: str) -> None:
    r = run.report
    console.print(
        f"[bold]Uplift backtest[/]: {arms}, outcome {outcome}; {r.rows:,} rows "
        f"({r.treated:,} treated, {r.control:,} control), {r.splits} splits of 70/30"
    )
    console.print(
        f"conversion {r.conversion_rate['treated']:.2%} treated, {r.conversion_rate['control']:.2%} "
        f"control; ATE {r.ate.estimate:+.2%} (95 % CI {r.ate.ci_low:+.2%} … {r.ate.ci_high:+.2%})"
    )
    table = Table(title="Held-out test parts (mean ± std over splits)", title_justify="left",
                  show_edge=False)  # fmt: skip
    table.add_column("model", no_wrap=True)
    for column in ("Qini AUC", "± std", "uplift at top 30 %", "± std", "inner-CV Qini"):
        table.add_column(column, justify="right")
    for name, scores in r.models.items():
        table.add_row(
            f"[bold]{name}[/] ✓" if name == r.chosen else name,
            _fmt(scores.qini_auc.mean),
            f"{scores.qini_auc.std:.3f}" if scores.qini_auc.std is not None else "—",
            _fmt(scores.uplift_at_30.mean, percent=True),
            f"{scores.uplift_at_30.std:.1%}" if scores.uplift_at_30.std is not None else "—",
            _fmt(scores.cv_qini_auc),
        )
    console.print(table)
    console.print(
        f"chosen by cross-validation inside the training parts: [bold]{r.chosen}[/]"
        + (
            "  [yellow](no model beats the baselines)[/]"
            if r.chosen in ("random", "response")
            else ""
        )
    )
    policy = Table(title=f"Targeting rules on the test parts (inverse propensity; {r.policy_model}'s uplift)",
                   title_justify="left", show_edge=False)  # fmt: skip
    policy.add_column("rule", no_wrap=True)
    policy.add_column("share sent", justify="right")
    policy.add_column("incremental conversions per 1,000 sends", justify="right")
    for row in r.policy:
        value = row.incremental_per_1000_sends
        shown = "—" if value.mean is None else f"{value.mean:+.1f} ± {value.std or 0:.1f}"
        policy.add_row(row.policy, f"{row.share_sent:.0%}", shown)
    console.print(policy)
    verdict = "[green]target by uplift[/]" if r.recommendation.target_by_uplift else "[yellow]do not target by uplift[/]"  # fmt: skip
    console.print(f"recommendation: {verdict} — {r.recommendation.reason}", soft_wrap=True)
    if r.encoded:
        console.print("encoded: " + ", ".join(f"{k} ({v})" for k, v in r.encoded.items()))
