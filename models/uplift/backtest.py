"""The uplift backtest of a bring-your-own randomized experiment (``nudge uplift backtest``).

``prepare_experiment`` turns a table into features, treatment flags and binary outcomes, with one
clear ``UserError`` per mistake (a missing column, an arm value no row has, a non-binary outcome,
too few rows per arm). ``run_backtest`` then scores every candidate of ``learners.CANDIDATES`` on
repeated stratified 70/30 splits (strata: treatment × outcome, so that every test part keeps the
experiment's shape): the mean and sample standard deviation over splits of the Qini AUC and of the
uplift at the top 30 %. The ``chosen`` candidate is the one with the best mean Qini AUC of a
k-fold cross-validation *inside each training part* — the test parts never take part in choosing,
so the reported test figures of the chosen model are not inflated by the choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from engine.errors import UserError
from models.uplift.guardrails import BASELINES, recommend_uplift_targeting
from models.uplift.learners import make_candidates
from models.uplift.metrics import (
    STRATEGY,
    average_treatment_effect,
    perfect_qini_curve,
    qini_auc_score,
    qini_curve,
    uplift_at_k,
)
from models.uplift.policy import policy_table

__all__ = [
    "MIN_ROWS_PER_ARM",
    "MIN_ROWS_PER_CELL",
    "BacktestReport",
    "BacktestRun",
    "Experiment",
    "cross_fitted_uplift",
    "prepare_experiment",
    "run_backtest",
]

MIN_ROWS_PER_ARM: Final = 100
"""Fewer rows in an arm leave test parts of a few dozen rows: Qini figures of noise."""
MIN_ROWS_PER_CELL: Final = 10
"""Converters and non-converters per arm: each stratum must reach every split and inner fold."""
TEST_SIZE: Final = 0.3
TOP_SHARE: Final = 0.3  # uplift_at_30
ONE_HOT_MAX_LEVELS: Final = 30
"""A text column with at most this many values is one-hot encoded; more, and it is coded as
integers (LightGBM still splits on them; a one-hot of hundreds of columns would not help it)."""
_TRUE = frozenset({"1", "1.0", "true", "yes", "t", "y"})
_FALSE = frozenset({"0", "0.0", "false", "no", "f", "n"})


@dataclass(frozen=True)
class Experiment:
    """A randomized experiment ready for the learners: numeric features, 0/1 treatment and y."""

    X: pd.DataFrame
    treatment: NDArray[np.float64]
    y: NDArray[np.float64]
    features: list[str]
    encoded: dict[str, str] = field(default_factory=dict)
    """How each non-numeric feature was encoded, e.g. ``{"channel": "one-hot, 3 values"}``."""


def _columns_hint(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    return f"the file has: {shown}"


def _values_hint(values: pd.Series) -> str:
    counts = values.astype(str).value_counts()
    shown = ", ".join(repr(v) for v in counts.index[:8])
    return shown + (f", … ({len(counts)} in all)" if len(counts) > 8 else "")


def _matches(values: pd.Series, wanted: str) -> pd.Series:
    """Rows whose value is ``wanted`` as text, or as a number (``1`` matches ``1.0``)."""
    text = values.astype(str).str.strip()
    hit = text == wanted.strip()
    try:
        number = float(wanted)
    except ValueError:
        return hit
    return hit | (pd.to_numeric(values, errors="coerce") == number)


def _binary_outcome(values: pd.Series, name: str) -> NDArray[np.float64]:
    missing = int(values.isna().sum())
    if missing:
        raise UserError(
            f"--outcome {name!r}: {missing:,} rows have no value; expected 0 or 1 (drop or fill those rows first)"
        )
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float)
    text = values.astype(str).str.strip().str.lower()
    known = text.isin(_TRUE | _FALSE)
    if not known.all():
        distinct = values[~known].astype(str).unique()
        raise UserError(
            f"--outcome {name!r}: expected a binary outcome (0/1, true/false); found "
            f"{values.astype(str).nunique():,} distinct values, e.g. {', '.join(map(repr, distinct[:3]))} "
            "— for an amount, make a column such as spend > 0 and pass that"
        )
    return text.isin(_TRUE).to_numpy(dtype=float)


def _encode(frame: pd.DataFrame, features: Sequence[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Numbers stay numbers (text that parses as numbers too); other columns are one-hot or
    integer coded, missing values kept missing."""
    parts: list[pd.DataFrame | pd.Series] = []
    encoded: dict[str, str] = {}
    for name in features:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column):
            parts.append(column.astype(float).rename(name))
            continue
        numeric = pd.to_numeric(column, errors="coerce")
        if (numeric.notna() == column.notna()).all():
            parts.append(numeric.astype(float).rename(name))
            continue
        text = column.astype("string").str.strip()
        levels = sorted(text.dropna().unique())
        if len(levels) <= ONE_HOT_MAX_LEVELS:
            dummies = pd.get_dummies(text, prefix=name, prefix_sep="=", dtype=float)
            dummies.loc[text.isna().to_numpy()] = np.nan
            parts.append(dummies)
            encoded[name] = f"one-hot, {len(levels)} values"
        else:
            codes = pd.Categorical(text, categories=levels).codes.astype(float)
            parts.append(
                pd.Series(np.where(codes < 0, np.nan, codes), index=frame.index, name=name)
            )
            encoded[name] = f"integer codes, {len(levels)} values"
    X = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=frame.index)
    # LightGBM refuses some characters in feature names (JSON specials).
    X.columns = [str(c).replace('"', "'").replace(":", "_") for c in X.columns]
    return X.reset_index(drop=True), encoded


def prepare_experiment(
    frame: pd.DataFrame,
    *,
    treatment_column: str,
    control: str,
    treatment: str,
    outcome: str,
    features: Sequence[str] | None = None,
) -> Experiment:
    """The rows of the two arms, their features encoded; a ``UserError`` names any mistake.

    Rows of other arms (a third variant) are left out. Without ``features``, every column but
    the treatment and the outcome is a feature — leave out other outcomes (spend, a second
    conversion) with ``features``, or they leak the answer.
    """
    for option, name in (("--treatment-column", treatment_column), ("--outcome", outcome)):
        if name not in frame.columns:
            raise UserError(f"{option} {name!r}: no such column; {_columns_hint(frame)}")
    if treatment_column == outcome:
        raise UserError(f"--outcome {outcome!r} is also the treatment column")
    if features is None:
        chosen = [str(c) for c in frame.columns if c not in (treatment_column, outcome)]
    else:
        chosen = list(dict.fromkeys(features))
        unknown = [f for f in chosen if f not in frame.columns]
        if unknown:
            raise UserError(f"--features {unknown[0]!r}: no such column; {_columns_hint(frame)}")
        clash = [f for f in chosen if f in (treatment_column, outcome)]
        if clash:
            raise UserError(
                f"--features {clash[0]!r}: the treatment or outcome cannot be a feature"
            )
    if not chosen:
        raise UserError("--features: no feature columns left to learn from")
    arms = frame[treatment_column]
    is_control, is_treated = _matches(arms, control), _matches(arms, treatment)
    for option, value, mask in (("--control", control, is_control), ("--treatment", treatment, is_treated)):  # fmt: skip
        if not mask.any():
            raise UserError(
                f"{option} {value!r}: no row has {treatment_column} = {value!r}; "
                f"its values: {_values_hint(arms)}"
            )
    if (is_control & is_treated).any():
        raise UserError(f"--control and --treatment name the same value of {treatment_column}")
    rows = frame[is_control | is_treated].reset_index(drop=True)
    t = _matches(rows[treatment_column], treatment).to_numpy(dtype=float)
    y = _binary_outcome(rows[outcome], outcome)
    for arm, value in ((1.0, treatment), (0.0, control)):
        in_arm = t == arm
        label = f"{treatment_column} = {value!r}"
        if in_arm.sum() < MIN_ROWS_PER_ARM:
            raise UserError(
                f"too few rows: {int(in_arm.sum()):,} with {label}; the backtest needs at least "
                f"{MIN_ROWS_PER_ARM} per arm"
            )
        for outcome_value in (1.0, 0.0):
            cell = int((in_arm & (y == outcome_value)).sum())
            if cell < MIN_ROWS_PER_CELL:
                raise UserError(
                    f"too few rows: {cell} with {label} and {outcome} = {int(outcome_value)}; "
                    f"the backtest needs at least {MIN_ROWS_PER_CELL} of each outcome per arm"
                )
    X, encoded = _encode(rows, chosen)
    return Experiment(X=X, treatment=t, y=y, features=chosen, encoded=encoded)


# -- the report ---------------------------------------------------------------------------------


class MeanStd(BaseModel):
    """Mean and sample standard deviation over the splits (null where undefined)."""

    model_config = ConfigDict(extra="forbid")
    mean: float | None
    std: float | None


class CandidateScores(BaseModel):
    """One candidate's test figures; ``cv_qini_auc`` is what the choice was made on."""

    model_config = ConfigDict(extra="forbid")
    qini_auc: MeanStd
    uplift_at_30: MeanStd
    cv_qini_auc: float | None


class AteOut(BaseModel):
    """Treated minus control conversion rate, with its 95 % confidence interval."""

    model_config = ConfigDict(extra="forbid")
    estimate: float
    ci_low: float
    ci_high: float


class PolicyRow(BaseModel):
    """A targeting rule judged on the test parts by inverse propensity (``models.uplift.policy``)."""

    model_config = ConfigDict(extra="forbid")
    policy: str
    share_sent: float
    incremental_per_1000_sends: MeanStd


class Recommendation(BaseModel):
    """Whether to target by uplift (``models.uplift.guardrails.recommend_uplift_targeting``)."""

    model_config = ConfigDict(extra="forbid")
    target_by_uplift: bool
    reason: str


class BacktestReport(BaseModel):
    """The JSON of ``nudge uplift backtest --json``: ``ate``, ``models``, ``chosen`` (the
    contract) and how they were measured."""

    model_config = ConfigDict(extra="forbid")
    ate: AteOut
    models: dict[str, CandidateScores]
    chosen: str
    rows: int
    treated: int
    control: int
    conversion_rate: dict[str, float]
    splits: int
    test_size: float
    inner_folds: int
    seed: int
    uplift_at_k_strategy: str
    features: list[str]
    encoded: dict[str, str]
    policy_model: str
    """The uplift model of the policy rules: the best non-baseline candidate by inner CV (the
    chosen one, unless a baseline was chosen)."""
    policy: list[PolicyRow]
    """That model's targeting rules against send-to-all and response-score targeting."""
    recommendation: Recommendation


@dataclass
class BacktestRun:
    """The report and, per candidate, the Qini curve of every split's test part (for plots)."""

    report: BacktestReport
    curves: dict[str, list[tuple[NDArray[np.float64], NDArray[np.float64]]]]
    perfect: list[tuple[NDArray[np.float64], NDArray[np.float64]]]


def _mean_std(values: Sequence[float]) -> MeanStd:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return MeanStd(mean=None, std=None)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return MeanStd(mean=float(np.mean(finite)), std=std)


def _strata(exp: Experiment, rows: NDArray[np.intp] | None = None) -> NDArray[np.float64]:
    t, y = (exp.treatment, exp.y) if rows is None else (exp.treatment[rows], exp.y[rows])
    return 2 * t + y


def run_backtest(
    exp: Experiment,
    *,
    splits: int = 10,
    seed: int = 0,
    inner_folds: int = 3,
    n_estimators: int = 100,
    candidates: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BacktestRun:
    """Every candidate on ``splits`` stratified 70/30 splits; the choice by inner CV."""
    if splits < 1 or inner_folds < 2:
        raise ValueError("splits must be >= 1 and inner_folds >= 2")
    prototypes = candidates or make_candidates(n_estimators=n_estimators, random_state=seed)
    qini: dict[str, list[float]] = {name: [] for name in prototypes}
    at_k: dict[str, list[float]] = {name: [] for name in prototypes}
    cv: dict[str, list[float]] = {name: [] for name in prototypes}
    curves: dict[str, list[tuple[NDArray[np.float64], NDArray[np.float64]]]] = {n: [] for n in prototypes}  # fmt: skip
    perfect = []
    predictions: dict[str, list[NDArray[np.float64]]] = {name: [] for name in prototypes}
    test_parts: list[NDArray[np.intp]] = []
    outer = StratifiedShuffleSplit(n_splits=splits, test_size=TEST_SIZE, random_state=seed)
    for number, (train, test) in enumerate(outer.split(exp.X, _strata(exp)), start=1):
        if progress:
            progress(f"split {number}/{splits}")
        inner = StratifiedKFold(inner_folds, shuffle=True, random_state=seed + number)
        folds = list(inner.split(train, _strata(exp, train)))
        t_test, y_test = exp.treatment[test], exp.y[test]
        test_parts.append(test)
        perfect.append(_normalised(perfect_qini_curve(y_test, t_test), len(test)))
        for name, prototype in prototypes.items():
            for fit_part, check_part in folds:
                fit_rows, check_rows = train[fit_part], train[check_part]
                model = _fitted(prototype, exp, fit_rows, seed + number)
                cv[name].append(
                    qini_auc_score(
                        exp.y[check_rows],
                        model.predict(exp.X.iloc[check_rows]),
                        exp.treatment[check_rows],
                    )
                )
            model = _fitted(prototype, exp, train, seed + number)
            uplift = model.predict(exp.X.iloc[test])
            predictions[name].append(uplift)
            qini[name].append(qini_auc_score(y_test, uplift, t_test))
            at_k[name].append(uplift_at_k(y_test, uplift, t_test, k=TOP_SHARE))
            curves[name].append(_normalised(qini_curve(y_test, uplift, t_test), len(test)))
    cv_means = {name: _nanmean(values) for name, values in cv.items()}
    chosen = max(cv_means, key=lambda n: -math.inf if math.isnan(cv_means[n]) else cv_means[n])
    ate = average_treatment_effect(exp.y, exp.treatment)
    treated = exp.treatment == 1
    models = {
        name: CandidateScores(
            qini_auc=_mean_std(qini[name]),
            uplift_at_30=_mean_std(at_k[name]),
            cv_qini_auc=None if math.isnan(cv_means[name]) else cv_means[name],
        )
        for name in prototypes
    }
    check = recommend_uplift_targeting(chosen, models)
    learners = [n for n in cv_means if n not in BASELINES and not math.isnan(cv_means[n])] or [
        chosen
    ]
    policy_model = max(learners, key=lambda n: cv_means[n])
    report = BacktestReport(
        ate=AteOut(estimate=ate.estimate, ci_low=ate.ci_low, ci_high=ate.ci_high),
        models=models,
        chosen=chosen,
        rows=len(exp.y),
        treated=int(treated.sum()),
        control=int((~treated).sum()),
        conversion_rate={
            "treated": float(exp.y[treated].mean()),
            "control": float(exp.y[~treated].mean()),
        },
        splits=splits,
        test_size=TEST_SIZE,
        inner_folds=inner_folds,
        seed=seed,
        uplift_at_k_strategy=STRATEGY,
        features=exp.features,
        encoded=exp.encoded,
        policy_model=policy_model,
        policy=_policy(exp, test_parts, predictions, policy_model),
        recommendation=Recommendation(target_by_uplift=check.ok, reason=check.reason),
    )
    return BacktestRun(report=report, curves=curves, perfect=perfect)


def _policy(
    exp: Experiment,
    test_parts: Sequence[NDArray[np.intp]],
    predictions: dict[str, list[NDArray[np.float64]]],
    chosen: str,
) -> list[PolicyRow]:
    """The targeting rules of ``policy_table`` on every test part, the chosen model's uplift
    against the response model's score; mean and std over the splits."""
    tables = [
        policy_table(
            exp.y[test],
            exp.treatment[test],
            uplift=predictions[chosen][number],
            name=chosen,
            scores={"response score": predictions["response"][number]} if "response" in predictions else None,
        )
        for number, test in enumerate(test_parts)
    ]  # fmt: skip
    rows = []
    for index, name in enumerate(tables[0]["policy"]):
        per_split = [float(table["per_1000_sends"].iloc[index]) for table in tables]
        share = float(np.mean([table["share_sent"].iloc[index] for table in tables]))
        rows.append(
            PolicyRow(
                policy=name, share_sent=share, incremental_per_1000_sends=_mean_std(per_split)
            )
        )
    return rows


def cross_fitted_uplift(
    prototype: Any, exp: Experiment, *, folds: int = 5, seed: int = 0
) -> NDArray[np.float64]:
    """Every row's uplift from a model that did not see it: `folds` stratified folds, each
    predicted by the learner fitted on the others — what a policy table judged on the same
    rows needs to be held out."""
    if folds < 2:
        raise ValueError("folds must be >= 2")
    out = np.empty(len(exp.y), dtype=np.float64)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for number, (fit_rows, predict_rows) in enumerate(splitter.split(exp.X, _strata(exp))):
        model = _fitted(prototype, exp, fit_rows, seed + number)
        out[predict_rows] = model.predict(exp.X.iloc[predict_rows])
    return out


def _fitted(prototype: Any, exp: Experiment, rows: NDArray[np.intp], split_seed: int) -> Any:
    model = clone(prototype)
    if "random_state" in model.get_params() and type(model).__name__ == "RandomUplift":
        # A new draw per split, so that random's spread over splits is the spread of chance.
        model.set_params(random_state=split_seed)
    return model.fit(exp.X.iloc[rows], exp.treatment[rows], exp.y[rows])


def _normalised(
    curve: tuple[NDArray[np.float64], NDArray[np.float64]], n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A Qini curve on shares: x the share of customers targeted, y incremental conversions per
    customer of the test part (so that curves of different sizes share axes)."""
    x, values = curve
    return x / n, values / n


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
