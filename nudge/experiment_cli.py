"""`nudge experiment …`: judge an experiment from per-arm counts or sums.

Composition only: read the CSV with ``engine.optimizer.arms``, analyse, print. numpy and scipy
come in with the analysis, so they are imported inside the command and ``nudge --help`` stays
instant. Registered in ``nudge.cli`` as ``app.add_typer(experiment_app, name="experiment")``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.table import Table

from nudge.console import console, fail
from nudge.errors import Commands, UserError

__all__ = ["SRM_THRESHOLD", "experiment_app"]

SRM_THRESHOLD: Final = 0.001
"""An SRM p-value at or below this means the split is broken (the usual 0.001 of the field)."""

CORRECTIONS: Final = ("holm", "bh", "none")

experiment_app = typer.Typer(
    cls=Commands,
    help="Analyse experiments: lifts with CIs, corrected p-values, sequential CIs, SRM.",
    no_args_is_help=True,
)


@experiment_app.command("analyze")
def analyze(
    input_path: Annotated[
        Path,
        typer.Option(
            "--input",
            help="CSV with one row per arm, the control first: arm,users,conversions (a rate) "
            "or arm,users,value_sum,value_sum_squares (a mean).",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    alpha: Annotated[
        float, typer.Option(help="Significance level; intervals are at 1 − alpha.")
    ] = 0.05,
    correction: Annotated[
        str, typer.Option(help="Multiple-comparison correction: holm, bh or none.")
    ] = "holm",
    weights: Annotated[
        str | None,
        typer.Option(
            help="Intended split for the SRM check, one weight per arm in file order, e.g. "
            "1,1,2 (default: equal)."
        ),
    ] = None,
) -> None:
    """Compare every arm with the control (the first row) and check the sample ratio.

    Per arm: rate or mean, lifts with CIs, p and corrected p, chance to beat, sequential CI.
    """
    from engine.optimizer.arms import analyze_arms, read_arms_csv

    if not 0 < alpha < 1:
        fail(f"--alpha must lie strictly between 0 and 1 (got {alpha:g})")
    if correction not in CORRECTIONS:
        fail(f"--correction: unknown {correction!r}; expected one of {', '.join(CORRECTIONS)}")
    try:  # a malformed CSV is an ArmInputError naming the file and line (a UserError)
        table = read_arms_csv(input_path)
    except FileNotFoundError:
        fail(f"{input_path}: no such file")
    except IsADirectoryError:
        fail(f"{input_path}: is a folder; expected a CSV file")
    except OSError as error:
        fail(f"{input_path}: cannot read it ({error.strerror or error})")
    except UnicodeDecodeError:
        fail(f"{input_path}: not a UTF-8 text file; expected a CSV")
    names = [arm.name for arm in table.arms]
    intended = None if weights is None else dict(zip(names, _weights(weights, names), strict=True))
    result = analyze_arms(table, alpha=alpha, correction=correction, weights=intended)  # type: ignore[arg-type]

    if as_json:
        # Exactly the documented object: the settings used are the caller's own options.
        shape = {key: result[key] for key in ("metric", "srm_p_value", "arms")}
        sys.stdout.write(json.dumps(shape, indent=2, allow_nan=False) + "\n")
        return
    _print_analysis(result)


# --------------------------------------------------------------------------- helpers


@experiment_app.command("report")
def report(
    trigger: Annotated[str, typer.Argument(help="The trigger whose experiment to report.")],
    window: Annotated[
        str, typer.Option(help="Attribution window for conversions, e.g. 72h.")
    ] = "72h",
    segment_by: Annotated[
        str | None, typer.Option(help="Profile attribute that names each customer's segment.")
    ] = None,
    min_users: Annotated[
        int, typer.Option(help="Minimum users per arm before recommending.")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The experiment of a trigger from the execution log: funnel, timing, segmentation, holdout
    incrementality and a recommendation per segment (the analysis the optimize flow logs)."""
    from engine.dsl.durations import parse_duration
    from engine.optimizer.experiment import analyse_experiment
    from engine.store import EngineDB
    from engine.store.exposures import load_exposures
    from nudge.engine_cli import settings as read_settings

    try:
        seconds = parse_duration(window).total_seconds()
    except ValueError as exc:
        fail(f"--window: {exc}")
    store = EngineDB.open(read_settings().engine_url)
    exposures = store.read(
        load_exposures, trigger, attribution_window=seconds, segment_by=segment_by
    )
    store.dispose()
    if exposures.empty:
        fail(f"no experiment decisions of trigger {trigger!r} in the execution log")
    result = analyse_experiment(exposures, min_users_per_arm=min_users)
    if as_json:
        tables = {
            "funnel": result.funnel,
            "timing": result.timing,
            "segments": result.segmentation.table,
            "heterogeneity": result.segmentation.heterogeneity,
            "holdout": result.holdout,
        }
        payload = {
            "trigger": trigger,
            "exposures": result.exposures,
            **{
                name: None if table is None else json.loads(table.to_json(orient="records"))
                for name, table in tables.items()
            },
            "recommendations": [
                {"segment": r.segment, "variant": r.variant, "reason": r.reason, "detail": r.detail}
                for r in result.recommendations
            ],
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    console.print(
        f"[bold]{trigger}[/]: {result.exposures:,} customers assigned; conversions within {window}"
    )
    console.print(_funnel_table(result.funnel))
    for table in _comparison_tables("Variants against the control", result.timing):
        console.print(table)
    if result.holdout is not None:
        for table in _comparison_tables(
            "Incremental over the holdout", result.holdout, incremental=True
        ):
            console.print(table)
    for r in result.recommendations:
        verdict = (
            f"[green]use {r.variant}[/]"
            if r.variant
            else f"[yellow]no recommendation[/] ({r.reason})"
        )
        console.print(f"  {r.segment:<16} {verdict}: {r.detail}", soft_wrap=True)


@experiment_app.command("apply")
def apply(
    trigger: Annotated[str, typer.Argument(help="The trigger whose experiment ends.")],
    variant: Annotated[str, typer.Option(help="The variant to keep for everyone.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Write the new version (without it: preview only).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Apply although the guardrails fail (needs --reason, recorded)."
        ),
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(help="Why the guardrails are overridden; written into the new version."),
    ] = None,
    window: Annotated[
        str, typer.Option(help="Attribution window for conversions, e.g. 72h.")
    ] = "72h",
    min_users: Annotated[
        int, typer.Option(help="Minimum users per arm before recommending.")
    ] = 1000,
) -> None:
    """End a trigger's experiment with one variant: writes a new trigger version (after --yes).

    Refused unless the experiment's recommendation (as `experiment report` computes it from the
    execution log: minimum sample, sample ratio, corrected significance) names that variant;
    --force --reason TEXT overrides it. The new file starts with a note of who applied it, when,
    what the recommendation said and the reason."""
    import getpass
    from datetime import UTC, datetime

    from engine.dsl.durations import parse_duration
    from engine.dsl.triggers import load_trigger_dir, variant_version, write_variant_version
    from engine.dsl.version_notes import comment_line, with_note
    from nudge.engine_cli import settings as read_settings

    if force != (reason is not None):
        fail("--force and --reason go together: --force --reason TEXT says why the guardrails "
             "are overridden, and the reason is recorded in the new version")  # fmt: skip
    if reason is not None and not comment_line(reason):
        fail("--reason: say why the guardrails are overridden (got an empty reason)")
    if min_users < 1:
        fail(f"--min-users must be at least 1 (got {min_users})")
    try:
        seconds = parse_duration(window).total_seconds()
    except ValueError as exc:
        fail(f"--window: {exc}")
    settings = read_settings()
    folder = settings.trigger_folder
    loaded = load_trigger_dir(folder)
    found = next((t for t in loaded.triggers if t.id == trigger), None)
    if found is None:
        fail(f"no trigger {trigger!r} in {folder}")
    version = variant_version(found, variant)
    console.print(f"{trigger}: version {found.version} → {version.new.version} ({version.path})")
    for before, after in version.changed_actions:
        console.print(f"  action {before} → {after}", soft_wrap=True)
    console.print("  experiment removed: every customer gets the variant")

    verdict, refusals = _guardrails(settings.engine_url, trigger, variant, seconds, min_users)
    console.print(f"  recommendation: {verdict}", soft_wrap=True)
    for refusal in refusals:
        console.print(f"  [red]✗[/] {refusal}", soft_wrap=True)
    if refusals and not force:
        fail(f"refused: the experiment's recommendation does not back {variant!r} "
             f"({len(refusals)} reason(s) above); --force --reason TEXT applies it anyway")  # fmt: skip
    if refusals:
        console.print(f"[yellow]forced[/]: {comment_line(reason or '')}", soft_wrap=True)
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        who = "unknown"
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    note = [
        f"experiment apply: variant {variant} of {trigger} for everyone "
        f"(version {found.version} → {version.new.version})",
        f"by {who} at {when}",
        f"recommendation (window {window}, min {min_users:,} users per arm): {verdict}",
    ]
    if refusals:
        note += [f"guardrails overridden (--force): {'; '.join(refusals)}",
                 f"reason: {reason}"]  # fmt: skip
    noted = with_note(version, note)
    if not yes:
        console.print("[yellow]preview only[/]: run again with --yes to write it")
        return
    backup = write_variant_version(noted)
    console.print(f"[green]written[/]; the previous version is kept in {backup.name}")


def _guardrails(
    url: str, trigger: str, variant: str, window: float, min_users: int
) -> tuple[str, list[str]]:
    """The recommendation of `trigger`'s experiment in the log at `url`, in one line, and why
    it does not back `variant` (empty: it does)."""
    from engine.optimizer.apply_check import apply_refusals
    from engine.optimizer.recommendation import recommend
    from engine.store import EngineDB
    from engine.store.exposures import load_exposures

    store = EngineDB.open(url)
    try:
        exposures = store.read(load_exposures, trigger, attribution_window=window)
    finally:
        store.dispose()
    recommendations = () if exposures.empty else recommend(exposures, min_users_per_arm=min_users)
    refusals = apply_refusals(trigger, recommendations, variant)
    verdicts = [
        f"use {r.variant}: {r.detail}" if r.variant else f"none ({r.reason}): {r.detail}"
        for r in recommendations
    ]
    return "; ".join(verdicts) or "none (no experiment decisions in the log)", refusals


def _funnel_table(funnel: Any) -> Table:
    """Stages down, variants across: customers who reached the stage (share of the triggered)."""
    table = Table(title="Funnel — customers (share of those triggered)", title_justify="left",
                  show_edge=False)  # fmt: skip
    table.add_column("stage", no_wrap=True)
    variants = list(dict.fromkeys(funnel["variant"]))
    for variant in variants:
        table.add_column(str(variant), justify="right", no_wrap=True)
    cells = {(r.stage, r.variant): r for r in funnel.itertuples(index=False)}
    for stage in dict.fromkeys(funnel["stage"]):
        row = [str(stage)]
        for variant in variants:
            cell = cells.get((stage, variant))
            share = getattr(cell, "rate_from_triggered", math.nan)
            row.append("–" if cell is None else f"{cell.users:,} ({_share(_number(share))})")
        table.add_row(*row)
    return table


def _comparison_tables(title: str, frame: Any, *, incremental: bool = False) -> list[Table]:
    """One table per outcome, a row per arm against its control: lift with its CI and the
    corrected p-value (with `incremental`, against the holdout: the arm's incremental
    conversions or revenue with its CI instead of the lift)."""
    tables = []
    for outcome, rows in frame.groupby("outcome", sort=False):
        is_rate = outcome == "conversion"
        table = Table(title=f"{title} — {outcome}", title_justify="left", show_edge=False)
        names = ["arm", *([] if incremental else ["vs"]), "users", "rate" if is_rate else "mean"]
        for name in names:
            table.add_column(name, justify="left" if name in {"arm", "vs"} else "right")
        last = "incremental [95 % CI]" if incremental else "lift [95 % CI]"
        table.add_column(last, justify="right", no_wrap=True)
        table.add_column("p (corr.)", justify="right", no_wrap=True)
        for r in rows.itertuples(index=False):
            if r.variant == r.control:
                continue
            segment = getattr(r, "segment", None)
            arm = str(r.variant) + (f" ({segment})" if segment not in {None, "(all)"} else "")
            cells = [arm, *([] if incremental else [str(r.control)]), f"{int(r.users):,}",
                     _value(_number(r.value), is_rate)]  # fmt: skip
            if incremental:
                total = {"ci_low": _number(r.incremental_ci_low),
                         "ci_high": _number(r.incremental_ci_high)}  # fmt: skip
                point = _number(r.incremental_total)
                cells.append("n/a" if point is None else f"{point:+,.1f} {_interval(total, False)}")
            else:
                estimate = {"estimate": _number(r.abs_lift), "ci_low": _number(r.abs_ci_low),
                            "ci_high": _number(r.abs_ci_high)}  # fmt: skip
                cells.append(_absolute(estimate, is_rate))
            cells.append(_p(_number(r.p_value_corrected)))
            table.add_row(*cells)
        tables.append(table)
    return tables


def _number(value: Any) -> float | None:
    """A table cell as a float, None where it is missing or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _weights(text: str, names: list[str]) -> list[float]:
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise UserError(f"--weights must be numbers separated by commas, got {text!r}") from None
    if len(values) != len(names):
        raise UserError(
            f"--weights has {len(values)} value(s) for {len(names)} arms ({', '.join(names)}); "
            "give one per arm in file order"
        )
    if not all(math.isfinite(value) and value > 0 for value in values):
        raise UserError(f"--weights must be positive numbers, got {text!r}")
    return values


def _print_analysis(result: dict[str, Any]) -> None:
    """One small table per treatment arm, then the SRM check and a one-line verdict."""
    control, *treatments = result["arms"]
    is_rate = result["metric"] == "rate"
    level = f"{100 * (1 - result['alpha']):g} %"
    correction = result["correction"]
    console.print(
        f"[bold]Experiment[/] {len(result['arms'])} arms, "
        f"{'conversion rate' if is_rate else 'mean'} metric, "
        f"α = {result['alpha']:g}, {correction} correction"
    )
    console.print(
        f"control [bold]{control['arm']}[/]: {control['users']:,} users, "
        f"{'rate' if is_rate else 'mean'} {_value(control['value'], is_rate)}"
    )
    for arm in treatments:
        table = Table(
            title=f"{arm['arm']} — {arm['users']:,} users",
            title_justify="left",
            show_header=False,
            show_edge=False,
            box=None,
            padding=(0, 2),
        )
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        for label, value in (
            ("rate" if is_rate else "mean", _value(arm["value"], is_rate)),
            (f"absolute lift ({level} CI)", _absolute(arm["abs_lift"], is_rate)),
            (f"relative lift ({level} CI)", _relative(arm["rel_lift"])),
            ("p-value", _p(arm["p_value"])),
            (f"p-value ({correction})", _p(arm["p_value_corrected"])),
            ("chance to beat control", _share(arm["chance_to_beat_control"])),
            (f"sequential CI ({level})", _interval(arm["sequential_ci"], is_rate)),
        ):
            table.add_row(label, value)
        console.print()
        console.print(table)
    console.print()
    srm = result["srm_p_value"]
    srm_ok = srm is None or srm > SRM_THRESHOLD
    console.print(
        f"SRM check: p = {_p(srm)} — "
        + (
            "users split as intended"
            if srm_ok
            else f"[bold red]sample ratio mismatch[/] (p ≤ {SRM_THRESHOLD:g})"
        ),
        soft_wrap=True,
    )
    # soft_wrap: the verdict stays one line however narrow the terminal, for grep and logs.
    console.print(f"[bold]Verdict:[/] {_verdict(result, srm_ok)}", soft_wrap=True)


def _verdict(result: dict[str, Any], srm_ok: bool) -> str:
    control, *treatments = result["arms"]
    if not srm_ok:
        return (
            "do not trust these lifts: the arms did not split as intended; fix the assignment "
            "or the logging first"
        )
    alpha, correction, is_rate = result["alpha"], result["correction"], result["metric"] == "rate"
    significant = [
        arm
        for arm in treatments
        if arm["p_value_corrected"] is not None and arm["p_value_corrected"] <= alpha
    ]
    winners = [arm for arm in significant if arm["abs_lift"]["estimate"] > 0]
    if winners:
        best = max(winners, key=lambda arm: arm["abs_lift"]["estimate"])
        others = [arm["arm"] for arm in winners if arm is not best]
        also = f"; also better: {', '.join(others)}" if others else ""
        return (
            f"{best['arm']} beats {control['arm']} "
            f"({_lift(best['abs_lift']['estimate'], is_rate)}, {correction} p = "
            f"{_p(best['p_value_corrected'])}){also}"
        )
    if significant:
        worse = ", ".join(arm["arm"] for arm in significant)
        return f"no arm beats {control['arm']}; worse than it: {worse}"
    return (
        f"no arm differs significantly from {control['arm']} at α = {alpha:g} "
        f"after {correction} correction"
    )


def _value(value: float | None, is_rate: bool) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.2f} %" if is_rate else f"{value:,.4g}"


def _lift(value: float, is_rate: bool) -> str:
    return f"{100 * value:+.2f} pp" if is_rate else f"{value:+,.4g}"


def _absolute(estimate: dict[str, float | None], is_rate: bool) -> str:
    point = estimate["estimate"]
    if point is None:
        return "n/a"
    return f"{_lift(point, is_rate)}  {_interval(estimate, is_rate)}"


def _relative(estimate: dict[str, float | None]) -> str:
    point, low, high = estimate["estimate"], estimate["ci_low"], estimate["ci_high"]
    if point is None or low is None or high is None:
        return "n/a (control is 0)"
    return f"{100 * point:+.1f} %  [{100 * low:+.1f} %, {100 * high:+.1f} %]"


def _interval(interval: dict[str, float | None], is_rate: bool) -> str:
    low, high = interval["ci_low"], interval["ci_high"]
    if low is None or high is None:
        return "n/a"
    if is_rate:
        return f"[{100 * low:+.2f}, {100 * high:+.2f}] pp"
    return f"[{low:+,.4g}, {high:+,.4g}]"


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
