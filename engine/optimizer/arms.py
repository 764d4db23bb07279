"""Per-arm experiment analysis: the engine behind ``nudge experiment analyze --input FILE.csv``.

The input is one row per arm, the control first, in one of two layouts:

* rate metric: ``arm,users,conversions``
* mean metric: ``arm,users,value_sum,value_sum_squares`` (Σy and Σy² over the arm's users)

``analyze_arms`` compares every other arm with the control and returns a JSON-able dict.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.errors import UserError
from engine.optimizer.stats import (
    MeanSummary,
    PValueCorrection,
    RateSummary,
    absolute_lift,
    adjust_p_values,
    beta_binomial_comparison,
    msprt,
    normal_posterior_comparison,
    relative_lift,
    sample_ratio_mismatch,
    two_proportion_ztest,
    welch_ttest,
)

__all__ = ["Arm", "ArmInputError", "ArmTable", "Metric", "analyze_arms", "read_arms_csv"]

Metric = Literal["rate", "mean"]

RATE_COLUMNS = ("arm", "users", "conversions")
MEAN_COLUMNS = ("arm", "users", "value_sum", "value_sum_squares")


class ArmInputError(UserError):
    """The arms input is malformed; the message names the line, column and what was expected."""


@dataclass(frozen=True)
class Arm:
    """One arm: its name and its summary statistics."""

    name: str
    summary: RateSummary | MeanSummary


@dataclass(frozen=True)
class ArmTable:
    """The arms of one experiment, control first, all of the same metric."""

    metric: Metric
    arms: tuple[Arm, ...]

    def __post_init__(self) -> None:
        if self.metric not in ("rate", "mean"):
            raise ArmInputError(f"metric must be 'rate' or 'mean' (got {self.metric!r})")
        if len(self.arms) < 2:
            raise ArmInputError(
                f"need at least 2 arms (a control and a treatment), got {len(self.arms)}"
            )
        names = [arm.name for arm in self.arms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ArmInputError(f"duplicate arm names: {', '.join(map(repr, duplicates))}")
        expected = RateSummary if self.metric == "rate" else MeanSummary
        for arm in self.arms:
            if not isinstance(arm.summary, expected):
                raise ArmInputError(
                    f"arm {arm.name!r} has a {type(arm.summary).__name__} in a "
                    f"{self.metric!r} table; expected {expected.__name__}"
                )

    @property
    def control(self) -> Arm:
        """The first arm."""
        return self.arms[0]

    @property
    def treatments(self) -> tuple[Arm, ...]:
        """Every arm after the control."""
        return self.arms[1:]


def read_arms_csv(path: str | Path) -> ArmTable:
    """Read a per-arm CSV (see the module docstring); the first data row is the control.

    Raises ``ArmInputError`` naming the line and column for missing or unknown columns,
    non-integer or non-positive users, conversions outside [0, users], non-numeric sums,
    sums implying a negative variance, duplicate arm names and fewer than 2 arms; its message
    names the file. A file that cannot be opened raises the usual ``OSError``.
    """
    try:
        return _read_arms(path)
    except ArmInputError as error:
        if str(path) in str(error):
            raise
        raise ArmInputError(f"{path}: {error}") from None


def _read_arms(path: str | Path) -> ArmTable:
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        rows = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)]
    rows = [(number, row) for number, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise ArmInputError(
            f"{path} is empty; expected a header {','.join(RATE_COLUMNS)} "
            f"or {','.join(MEAN_COLUMNS)} and one row per arm"
        )
    header_line, header = rows[0]
    columns = [cell.strip().lower() for cell in header]
    metric = _metric_of(columns, header_line)
    position = {column: index for index, column in enumerate(columns)}

    arms: list[Arm] = []
    first_seen: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) != len(columns):
            raise ArmInputError(
                f"line {line}: expected {len(columns)} values ({','.join(columns)}), got {len(row)}"
            )
        cells = {column: row[index].strip() for column, index in position.items()}
        name = cells["arm"]
        if not name:
            raise ArmInputError(f"line {line}: column 'arm' is empty; give every arm a name")
        if name in first_seen:
            raise ArmInputError(
                f"line {line}: duplicate arm name {name!r} (first on line {first_seen[name]})"
            )
        first_seen[name] = line
        where = f"line {line} (arm {name!r})"
        arms.append(Arm(name, _parse_summary(metric, cells, where)))

    if len(arms) < 2:
        raise ArmInputError(
            f"{path} has {len(arms)} arm(s); need at least 2 rows: the control first, "
            "then one or more treatments"
        )
    return ArmTable(metric, tuple(arms))


def analyze_arms(
    table: ArmTable,
    alpha: float = 0.05,
    correction: PValueCorrection = "holm",
    weights: Mapping[str, float] | None = None,
    expected_relative_lift: float = 0.1,
) -> dict[str, Any]:
    """Compare each treatment arm with the control; return a JSON-able dict.

    Shape: ``{"metric", "alpha", "correction", "srm_p_value", "arms": [{"arm", "users",
    "value", "abs_lift": {"estimate", "ci_low", "ci_high"}, "rel_lift": {…}, "p_value",
    "p_value_corrected", "chance_to_beat_control", "sequential_ci": {"ci_low", "ci_high"}}]}``,
    the control first with every comparison field ``None``.

    * value: the rate p̂ or the mean ȳ;
    * abs_lift / p_value: pooled two-proportion z-test with Wald CI (rates) or Welch t-test
      (means); rel_lift: delta-method CI of ȳ_t/ȳ_c − 1;
    * p_value_corrected: ``correction`` ("holm", "bh" or "none") across the treatment arms;
    * chance_to_beat_control: P(θ_t > θ_c) under Beta(1, 1)-Binomial (rates) or normal (means)
      posteriors;
    * sequential_ci: the mSPRT confidence-sequence interval for θ_t − θ_c at this look, with
      mixing sd τ = ``expected_relative_lift`` × |control value|;
    * srm_p_value: chi-square test of users per arm against ``weights`` (equal split if None).

    Quantities that are undefined (a relative lift over a zero control value) are ``None``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (got {alpha})")
    if not (math.isfinite(expected_relative_lift) and expected_relative_lift > 0):
        raise ValueError(f"expected_relative_lift must be positive (got {expected_relative_lift})")
    control = table.control.summary
    mixing_variance = (expected_relative_lift * control.mean) ** 2

    treatment_rows: list[dict[str, Any]] = []
    raw_p_values: list[float] = []
    for arm in table.treatments:
        treatment = arm.summary
        absolute = absolute_lift(control, treatment, alpha)
        relative = relative_lift(control, treatment, alpha)
        if isinstance(control, RateSummary) and isinstance(treatment, RateSummary):
            p_value = two_proportion_ztest(control, treatment, alpha).p_value
            chance = beta_binomial_comparison(control, treatment).chance_to_beat_control
        elif isinstance(control, MeanSummary) and isinstance(treatment, MeanSummary):
            p_value = welch_ttest(control, treatment, alpha).p_value
            chance = normal_posterior_comparison(control, treatment).chance_to_beat_control
        else:  # ArmTable guarantees one metric per table
            raise TypeError(f"arm {arm.name!r} does not match the control's metric")
        if mixing_variance > 0:
            sequential = msprt(control, treatment, mixing_variance, alpha)
            sequential_ci = _interval(sequential.ci_low, sequential.ci_high)
        else:
            # τ = 0 puts all the mixture on "no effect": the interval would be unbounded.
            sequential_ci = _interval(math.nan, math.nan)
        raw_p_values.append(p_value)
        treatment_rows.append(
            {
                "arm": arm.name,
                "users": treatment.users,
                "value": _json_number(treatment.mean),
                "abs_lift": _estimate(absolute.estimate, absolute.ci_low, absolute.ci_high),
                "rel_lift": _estimate(relative.estimate, relative.ci_low, relative.ci_high),
                "p_value": _json_number(p_value),
                "p_value_corrected": None,
                "chance_to_beat_control": _json_number(chance),
                "sequential_ci": sequential_ci,
            }
        )
    for row, corrected in zip(
        treatment_rows, adjust_p_values(raw_p_values, correction), strict=True
    ):
        row["p_value_corrected"] = _json_number(corrected)

    control_row = {
        "arm": table.control.name,
        "users": control.users,
        "value": _json_number(control.mean),
        "abs_lift": None,
        "rel_lift": None,
        "p_value": None,
        "p_value_corrected": None,
        "chance_to_beat_control": None,
        "sequential_ci": None,
    }
    return {
        "metric": table.metric,
        "alpha": alpha,
        "correction": correction,
        "srm_p_value": _json_number(_srm_p_value(table, weights)),
        "arms": [control_row, *treatment_rows],
    }


# --------------------------------------------------------------------------- helpers

_WHOLE_NUMBER = re.compile(r"^\+?\d+$")


def _metric_of(columns: list[str], line: int) -> Metric:
    present = set(columns)
    duplicated = sorted({column for column in columns if columns.count(column) > 1})
    if duplicated:
        raise ArmInputError(f"line {line}: column(s) {', '.join(duplicated)} appear twice")
    layouts = f"expected {','.join(RATE_COLUMNS)} (rate) or {','.join(MEAN_COLUMNS)} (mean)"
    is_rate = "conversions" in present
    is_mean = bool(present & {"value_sum", "value_sum_squares"})
    if is_rate and is_mean:
        raise ArmInputError(f"line {line}: header mixes 'conversions' with value sums; {layouts}")
    expected = RATE_COLUMNS if is_rate or not is_mean else MEAN_COLUMNS
    missing = [column for column in expected if column not in present]
    if missing:
        raise ArmInputError(
            f"line {line}: missing column(s) {', '.join(missing)}; {layouts}, "
            f"got {','.join(columns)}"
        )
    unknown = [column for column in columns if column not in expected]
    if unknown:
        raise ArmInputError(f"line {line}: unknown column(s) {', '.join(unknown)}; {layouts}")
    return "rate" if is_rate else "mean"


def _parse_summary(metric: Metric, cells: dict[str, str], where: str) -> RateSummary | MeanSummary:
    minimum_users = 1 if metric == "rate" else 2
    users = _parse_whole_number(cells["users"], "users", where)
    if users < minimum_users:
        raise ArmInputError(
            f"{where}: users must be at least {minimum_users} for a {metric} metric, got {users}"
        )
    if metric == "rate":
        conversions = _parse_whole_number(cells["conversions"], "conversions", where)
        if conversions > users:
            raise ArmInputError(
                f"{where}: conversions ({conversions}) exceed users ({users}); each user "
                "converts at most once"
            )
        return RateSummary(users, conversions)
    value_sum = _parse_number(cells["value_sum"], "value_sum", where)
    value_sum_squares = _parse_number(cells["value_sum_squares"], "value_sum_squares", where)
    if value_sum_squares < 0:
        raise ArmInputError(
            f"{where}: value_sum_squares must be non-negative (a sum of squares), "
            f"got {value_sum_squares:g}"
        )
    try:
        return MeanSummary.from_sums(users, value_sum, value_sum_squares)
    except ValueError as error:
        raise ArmInputError(
            f"{where}: {error}; value_sum_squares must be the sum of each user's value squared"
        ) from error


def _parse_whole_number(text: str, column: str, where: str) -> int:
    if not _WHOLE_NUMBER.match(text):
        raise ArmInputError(f"{where}: {column} must be a whole number ≥ 0, got {text!r}")
    return int(text)


def _parse_number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArmInputError(f"{where}: {column} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ArmInputError(f"{where}: {column} must be a finite number, got {text!r}")
    return value


def _srm_p_value(table: ArmTable, weights: Mapping[str, float] | None) -> float:
    names = [arm.name for arm in table.arms]
    if weights is not None and set(weights) != set(names):
        raise ValueError(f"weights must name exactly the arms {names} (got {sorted(weights)})")
    expected = None if weights is None else [weights[name] for name in names]
    return sample_ratio_mismatch([arm.summary.users for arm in table.arms], expected).p_value


def _json_number(value: float) -> float | None:
    # NaN and ±inf are not JSON; an undefined quantity is reported as null.
    return float(value) if math.isfinite(value) else None


def _estimate(estimate: float, ci_low: float, ci_high: float) -> dict[str, float | None]:
    return {
        "estimate": _json_number(estimate),
        "ci_low": _json_number(ci_low),
        "ci_high": _json_number(ci_high),
    }


def _interval(ci_low: float, ci_high: float) -> dict[str, float | None]:
    return {"ci_low": _json_number(ci_low), "ci_high": _json_number(ci_high)}
