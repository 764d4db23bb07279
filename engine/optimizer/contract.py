"""The exposure frame every analysis takes, and its checks.

Input contract (``validate_exposures`` checks it): a pandas DataFrame with one row per exposure,
i.e. one customer assigned in the experiment of one trigger, so (trigger_id, customer_id) is
unique. Columns:

* ``customer_id``, ``trigger_id``, ``variant`` — strings; the holdout variant is ``"holdout"``
  (``engine.optimizer.labels.HOLDOUT``), every other variant is a treatment such as a send
  delay (``"1h"``, ``"24h"``);
* ``segment`` — optional string; without it every row is in the one segment ``ALL``;
* ``sent``, ``delivered``, ``opened``, ``clicked``, ``converted`` — booleans (or 0/1). A
  delivery needs a send, an open or a click needs a delivery, and a holdout row is never sent;
  ``converted`` may be true anywhere (holdout customers and non-clickers convert too);
* ``revenue`` — float, the revenue attributed to the exposure (0 when none);
* ``pre_value`` — optional float, a pre-period covariate (e.g. revenue in the 30 days before
  assignment) used by CUPED for the revenue outcome;
* ``hours_to_conversion`` — optional float, hours from exposure to conversion (NaN when the
  customer did not convert), used only by ``apply_attribution_window``.

Also here: the options every analysis checks, and the order variants are reported in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Literal

import numpy as np
import pandas as pd

from engine.dsl.durations import parse_duration
from engine.optimizer.labels import ALL, HOLDOUT

__all__ = [
    "FLAG_COLUMNS",
    "REQUIRED_COLUMNS",
    "STAGES",
    "ExposureError",
    "Outcome",
    "apply_attribution_window",
    "validate_exposures",
]

Outcome = Literal["conversion", "revenue"]

STAGES: Final = ("triggered", "sent", "delivered", "opened", "clicked", "converted")
FLAG_COLUMNS: Final = STAGES[1:]
REQUIRED_COLUMNS: Final = ("customer_id", "trigger_id", "variant", *FLAG_COLUMNS, "revenue")
_PAIR_COLUMNS: Final = ("trigger_id", "customer_id")


class ExposureError(ValueError):
    """The exposure frame breaks the input contract; the message names the column and rows."""


def validate_exposures(exposures: pd.DataFrame) -> pd.DataFrame:
    """Check the input contract (module docstring) and return a normalised copy.

    The copy has string ids, bool flags, float revenue (and pre_value), and a ``segment`` column
    (``ALL`` when the input has none). Raises ``ExposureError`` for missing columns, missing ids,
    flags that are not booleans or 0/1, non-finite revenue or pre_value, duplicate
    (trigger_id, customer_id) pairs, impossible funnels (delivered but not sent, opened or
    clicked but not delivered) and holdout rows that were sent.
    """
    missing = [column for column in REQUIRED_COLUMNS if column not in exposures.columns]
    if missing:
        raise ExposureError(
            f"exposures lack column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}"
            " (+ optional segment, pre_value, hours_to_conversion)"
        )
    # Positions in error messages and in the result are those of the input rows.
    frame = exposures.reset_index(drop=True)
    id_columns = ["customer_id", "trigger_id", "variant"]
    if "segment" in frame.columns:
        id_columns.append("segment")
    else:
        frame["segment"] = ALL
    for column in id_columns:
        missing_id = frame[column].isna()
        text = frame[column].astype(str)
        # Strip each distinct value once: ids repeat, and .str.strip() on every row is slow.
        blank = [value for value in pd.unique(text) if not value.strip()]
        empty = missing_id | text.isin(blank)
        if empty.any():
            raise ExposureError(f"column {column!r} is empty in {describe_rows(empty)}")
        frame[column] = text
    for column in FLAG_COLUMNS:
        frame[column] = _as_flags(frame[column], column)
    for column in ("revenue", "pre_value"):
        if column in frame.columns:
            frame[column] = _as_finite(frame[column], column)

    duplicated = frame.duplicated(list(_PAIR_COLUMNS), keep=False)
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise ExposureError(
            f"{int(duplicated.sum())} rows share a (trigger_id, customer_id) pair, e.g. "
            f"({first['trigger_id']!r}, {first['customer_id']!r}); give one row per exposure"
        )
    for later, earlier in (
        ("delivered", "sent"),
        ("opened", "delivered"),
        ("clicked", "delivered"),
    ):
        impossible = frame[later] & ~frame[earlier]
        if impossible.any():
            raise ExposureError(f"{later} without {earlier} in {describe_rows(impossible)}")
    sent_holdout = (frame["variant"] == HOLDOUT) & frame["sent"]
    if sent_holdout.any():
        raise ExposureError(
            f"{HOLDOUT!r} rows must not be sent, but {describe_rows(sent_holdout)} were"
        )
    return frame


def apply_attribution_window(exposures: pd.DataFrame, window_hours: float) -> pd.DataFrame:
    """Count only conversions within ``window_hours`` of the exposure.

    converted′ = converted ∧ hours_to_conversion ≤ window; revenue′ = revenue if converted′ else 0.
    Needs the ``hours_to_conversion`` column; a converted row without it is an ``ExposureError``.
    """
    if not (math.isfinite(window_hours) and window_hours > 0):
        raise ValueError(f"window_hours must be positive and finite (got {window_hours})")
    frame = validate_exposures(exposures)
    if "hours_to_conversion" not in frame.columns:
        raise ExposureError("an attribution window needs the column hours_to_conversion")
    hours = pd.to_numeric(frame["hours_to_conversion"], errors="coerce").to_numpy(float)
    unknown = frame["converted"].to_numpy() & ~np.isfinite(hours)
    if unknown.any():
        raise ExposureError(
            f"hours_to_conversion is missing for converted {describe_rows(unknown)}"
        )
    inside = frame["converted"].to_numpy() & (hours <= window_hours)
    frame["converted"] = inside
    frame["revenue"] = np.where(inside, frame["revenue"].to_numpy(float), 0.0)
    return frame


def check_options(alpha: float, outcomes: Iterable[str]) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (got {alpha})")
    for outcome in outcomes:
        if outcome not in ("conversion", "revenue"):
            raise ValueError(f"unknown outcome {outcome!r}; expected 'conversion' or 'revenue'")


def describe_rows(mask: pd.Series | np.ndarray) -> str:
    positions = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(p) for p in positions[:5])
    more = f" and {positions.size - 5} more" if positions.size > 5 else ""
    return f"{positions.size} row(s) (positions {shown}{more})"


def _as_flags(values: pd.Series, column: str) -> pd.Series:
    if values.dtype == bool:
        return values
    # Accept 0/1 and True/False (object columns from CSV or SQL); anything else is a data bug.
    valid = values.isin([0, 1, True, False]) & values.notna()
    if not valid.all():
        example = values[~valid].iloc[0]
        raise ExposureError(
            f"column {column!r} must hold booleans or 0/1; got {example!r} in {describe_rows(~valid)}"
        )
    return values.astype(bool)


def _as_finite(values: pd.Series, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    bad = ~np.isfinite(numbers.to_numpy())
    if bad.any():
        raise ExposureError(
            f"column {column!r} must be a finite number in every row; {describe_rows(bad)}"
        )
    return numbers


def ordered_variants(names: Iterable[str]) -> list[str]:
    """The holdout first, then the other variants: shortest delay first when every name is a
    duration (1h, 4h, 24h — not the string order 1h, 24h, 4h), else by name."""
    present = {str(name) for name in names}
    others = sorted(present - {HOLDOUT})
    try:
        durations = {name: parse_duration(name) for name in others}
    except ValueError:
        durations = {}  # not all durations: name order is deterministic and good enough
    if durations:
        others.sort(key=durations.__getitem__)
    return ([HOLDOUT] if HOLDOUT in present else []) + others


def arms_with_control(names: Iterable[str], control: str | None, trigger_id: str) -> list[str]:
    """The variants with the control first: ``control``, else the holdout, else the first."""
    ordered = ordered_variants(names)
    if control is None:
        return ordered
    if control not in ordered:
        raise ExposureError(
            f"control variant {control!r} has no rows in trigger {trigger_id!r}; "
            f"its variants are {', '.join(ordered)}"
        )
    return [control, *(name for name in ordered if name != control)]
