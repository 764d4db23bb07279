"""`nudge uplift …`: who buys *because of* the message, from a randomized experiment.

Composition only: read the file (``pipelines.ingest.read_table``), prepare and backtest
(``models.uplift.backtest``), print. pandas, scikit-learn and LightGBM come in with the command,
so ``nudge --help`` stays instant. Registered in ``nudge.cli`` as
``app.add_typer(uplift_app, name="uplift")``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nudge.console import console, fail
from nudge.errors import Commands

if TYPE_CHECKING:
    import pandas as pd

    from models.uplift.backtest import BacktestRun

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
