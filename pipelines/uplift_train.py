"""Uplift per trigger from nudge's own execution log (issue 18, items 2 and 3).

A trigger's experiment randomizes each customer to a variant or to the holdout; that is the
randomized data an uplift model needs. ``trigger_experiment`` turns the log into it:

- treatment = assigned a sending variant, control = assigned the holdout (the first assignment
  per customer, as ``engine.store.exposures.load_exposures`` takes it);
- outcome = converted (a ``purchase_completed`` within the attribution window after the
  triggering event, whether or not mail went out — the optimizer's definition);
- features = the customer's feature rows *at decision time*: a point-in-time join of the
  decision timestamps onto the feature tables the pipeline writes (``$NUDGE_HOME/features``),
  each decision taking the latest snapshot at or before it — the semantics of Feast's
  ``get_historical_features`` over the same FileSources, done with ``pandas.merge_asof`` so that
  no registry or Feast store is needed to read a log.

``train_trigger`` then checks the guardrail (conversions per arm), lets the backtest choose the
learner, fits it on every row, and logs it to MLflow: experiment ``uplift/<trigger>``, params,
Qini AUC metrics, Qini-curve PNGs, the policy table, a pyfunc registered as ``uplift_<trigger>``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from numpy.typing import NDArray
from sklearn.base import clone
from sqlalchemy.engine import Connection

from engine.dsl.score_models import UPLIFT_MODEL_PREFIX, uplift_model_name
from engine.errors import UserError
from engine.optimizer.labels import HOLDOUT
from engine.store.schema import decisions, inbox
from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN, VIEW_NAMES
from models.uplift.backtest import (
    MIN_ROWS_PER_ARM,
    BacktestRun,
    Experiment,
    cross_fitted_uplift,
    prepare_experiment,
    run_backtest,
)
from models.uplift.guardrails import MIN_CONVERSIONS_PER_ARM, enough_conversions
from models.uplift.learners import make_candidates
from models.uplift.policy import policy_table

__all__ = [
    "MODEL_PREFIX",
    "TrainedUplift",
    "TriggerExperiment",
    "UpliftReport",
    "decision_rows",
    "experiment_name",
    "features_at",
    "fitted_policy",
    "importances",
    "model_name",
    "read_feature_tables",
    "train_trigger",
    "trained_through",
    "trigger_experiment",
]

MODEL_PREFIX: Final = UPLIFT_MODEL_PREFIX
ARM, SEND = "arm", "send"
TRAINED_THROUGH_TAG: Final = "trained_through"
"""The run tag of the last decision time a registered uplift model learned from."""
CHURN_SCORE: Final = "churn"
"""The decisions' ``scores`` entry that churn-score targeting ranks by, when present."""


def model_name(trigger: str) -> str:
    """The registered model of a trigger's uplift: ``uplift_<trigger>``."""
    return uplift_model_name(trigger)


def experiment_name(trigger: str) -> str:
    """The MLflow experiment of a trigger's uplift runs: ``uplift/<trigger>``."""
    return f"uplift/{trigger}"


def decision_rows(conn: Connection, trigger_id: str) -> pd.DataFrame:
    """Per customer, the first experiment decision of the trigger: customer_id, the decision
    time (the triggering event's ``event_timestamp``, UTC) and its recorded model scores."""
    query = (
        sa.select(decisions.c.customer_id, inbox.c.occurred_at, decisions.c.scores)
        .select_from(decisions.outerjoin(inbox, inbox.c.event_id == decisions.c.event_id))
        .where(decisions.c.trigger_id == trigger_id, decisions.c.variant.is_not(None))
        .order_by(decisions.c.id)
    )
    frame = pd.DataFrame(conn.execute(query).all(), columns=[ENTITY_KEY, "occurred_at", "scores"])
    if frame.empty:
        return pd.DataFrame(columns=[ENTITY_KEY, TIMESTAMP_COLUMN, "scores"])
    # The same first assignment as exposures_from_log: earliest triggering event per customer.
    frame["occurred_at"] = frame["occurred_at"].astype("float64")
    frame = frame.sort_values("occurred_at", kind="mergesort").drop_duplicates(ENTITY_KEY)
    frame[TIMESTAMP_COLUMN] = pd.to_datetime(frame.pop("occurred_at"), unit="s", utc=True)
    return frame.reset_index(drop=True)


def features_at(rows: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """`rows` (customer_id, event_timestamp, …) with each table's features as of that time: the
    latest snapshot at or before it (none before it: the features are null)."""
    out = rows.reset_index(drop=True).assign(_row=lambda df: range(len(df)))
    out[TIMESTAMP_COLUMN] = pd.to_datetime(out[TIMESTAMP_COLUMN], utc=True)
    out = out.sort_values(TIMESTAMP_COLUMN, kind="mergesort")
    for view, table in tables.items():
        right = table.copy()
        right[TIMESTAMP_COLUMN] = pd.to_datetime(right[TIMESTAMP_COLUMN], utc=True)
        clash = (set(right.columns) & set(out.columns)) - {ENTITY_KEY, TIMESTAMP_COLUMN}
        if clash:
            raise ValueError(f"feature view {view!r} repeats column(s) {sorted(clash)}")
        right = right.sort_values(TIMESTAMP_COLUMN, kind="mergesort")
        # merge_asof needs the key's dtype to agree on both sides (datetime64[ns/us, UTC]).
        right[TIMESTAMP_COLUMN] = right[TIMESTAMP_COLUMN].astype(out[TIMESTAMP_COLUMN].dtype)
        out = pd.merge_asof(out, right, on=TIMESTAMP_COLUMN, by=ENTITY_KEY, direction="backward")
    return out.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def read_feature_tables(home: Path | str | None = None) -> dict[str, pd.DataFrame]:
    """The standard views' tables as the pipeline wrote them; a ``UserError`` when none is."""
    from features.compute.tables import read_feature_table
    from features.paths import feature_table_path

    found = {v: read_feature_table(v, home) for v in VIEW_NAMES if feature_table_path(v, home).exists()}  # fmt: skip
    if not found:
        where = feature_table_path(VIEW_NAMES[0], home).parent
        raise UserError(f"no feature tables under {where}: run `nudge pipeline features` first")
    return found


@dataclass(frozen=True)
class TriggerExperiment:
    """A trigger's randomized assignments, ready for the learners, with what the report needs."""

    trigger: str
    experiment: Experiment
    frame: pd.DataFrame
    """One row per assigned customer: customer_id, event_timestamp, arm, variant, converted,
    sent, the joined features and (when recorded) the churn score."""
    churn: pd.Series | None


def trigger_experiment(
    exposures: pd.DataFrame,
    times: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    trigger: str,
) -> TriggerExperiment:
    """The uplift data set of one trigger from its exposures (``load_exposures``), decision rows
    (``decision_rows``) and feature tables. A ``UserError`` when the trigger has no holdout."""
    if exposures.empty:
        raise UserError(f"no experiment decisions of trigger {trigger!r} in the execution log")
    if not exposures["variant"].eq(HOLDOUT).any():
        raise UserError(
            f"trigger {trigger!r} has no holdout in the log: uplift needs customers held out"
        )
    frame = exposures[[ENTITY_KEY, "variant", "sent", "converted"]].merge(
        times, on=ENTITY_KEY, how="inner"
    )
    frame[ARM] = np.where(frame["variant"].eq(HOLDOUT), HOLDOUT, SEND)
    frame["converted"] = frame["converted"].astype(int)
    churn = frame.pop("scores").map(_churn_score)
    joined = features_at(frame, tables)
    features = [c for t in tables.values() for c in t.columns if c not in (ENTITY_KEY, TIMESTAMP_COLUMN)]  # fmt: skip
    # A feature null for every row (no snapshot before any decision) teaches nothing.
    features = [c for c in features if joined[c].notna().any()]
    if not features:
        raise UserError(
            f"trigger {trigger!r}: no feature snapshot precedes its decisions; build the feature "
            "tables over the experiment's period (`nudge pipeline features`)"
        )
    experiment = prepare_experiment(
        joined, treatment_column=ARM, control=HOLDOUT, treatment=SEND, outcome="converted",
        features=features,
    )  # fmt: skip
    has_churn = churn.notna().any()
    return TriggerExperiment(trigger, experiment, joined, churn if has_churn else None)


def _churn_score(raw: str | None) -> float:
    if not raw:
        return math.nan
    value = json.loads(raw).get(CHURN_SCORE)
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass(frozen=True)
class TrainedUplift:
    """What ``train_trigger`` did."""

    model: str
    chosen: str
    run_id: str
    version: str
    backtest: BacktestRun
    estimator: Any
    """The chosen learner, fitted on every row of the log (what was registered)."""
    policy: pd.DataFrame
    importances: pd.Series
    """What the model learned: the chosen estimator's gain per feature (summed over its
    boosters), or empty for a baseline without one."""


def importances(estimator: Any, features: Sequence[str]) -> pd.Series:
    """The total gain per feature over every LightGBM booster the estimator holds."""
    import lightgbm as lgb

    total = pd.Series(0.0, index=list(features), name="total gain")
    for value in vars(estimator).values():
        if isinstance(value, lgb.LGBMModel) and hasattr(value, "booster_"):
            booster = value.booster_
            gain = booster.feature_importance(importance_type="gain")
            total = total.add(pd.Series(gain, index=list(features)), fill_value=0.0)
    return total.sort_values(ascending=False)


def fitted_policy(
    data: TriggerExperiment,
    prototype: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    thresholds: Sequence[float] = (0.0, 0.01, 0.02, 0.05),
) -> pd.DataFrame:
    """The inverse-propensity policy table of the chosen learner on the trigger's rows, each
    row's uplift predicted by a model fitted without it (``cross_fitted_uplift``): send-to-all,
    churn-score targeting (when the decisions recorded churn scores), uplift targeting at top
    shares and thresholds. Judging the registered model on the rows it learned would flatter it."""
    exp = data.experiment
    uplift = cross_fitted_uplift(prototype, exp, folds=folds, seed=seed)
    scores = None if data.churn is None else {"churn score": data.churn.fillna(-1.0).to_numpy()}
    return policy_table(exp.y, exp.treatment, uplift=uplift, scores=scores, thresholds=thresholds)


def trained_through(data: TriggerExperiment) -> pd.Timestamp:
    """The last decision time the model learned from: decisions after it are held out."""
    return pd.Timestamp(data.frame[TIMESTAMP_COLUMN].max())


def train_trigger(
    data: TriggerExperiment,
    *,
    home: Path | str | None = None,
    min_conversions: int = MIN_CONVERSIONS_PER_ARM,
    splits: int = 5,
    seed: int = 0,
    n_estimators: int = 100,
) -> TrainedUplift:
    """Guardrail, backtest (the choice), fit on every row, log and register in MLflow (the
    tracking URI the process uses: see ``pipelines.tracking.use_tracking``)."""
    exp = data.experiment
    check = enough_conversions(exp.y, exp.treatment, min_conversions)
    if not check.ok:
        raise UserError(f"trigger {data.trigger!r}: not training an uplift model: {check.reason}")
    run = run_backtest(exp, splits=splits, seed=seed, n_estimators=n_estimators)
    chosen = run.report.chosen
    prototype = make_candidates(n_estimators=n_estimators, random_state=seed)[chosen]
    policy = fitted_policy(data, prototype, folds=max(2, min(5, splits)), seed=seed)
    estimator = clone(prototype).fit(exp.X, exp.treatment, exp.y)
    learned = importances(estimator, exp.features)
    name = model_name(data.trigger)
    run_id, version = _log(data, name, estimator, run, policy, learned, home)
    return TrainedUplift(name, chosen, run_id, version, run, estimator, policy, learned)


def _log(
    data: TriggerExperiment,
    name: str,
    estimator: Any,
    run: BacktestRun,
    policy: pd.DataFrame,
    learned: pd.Series,
    home: Path | str | None,
) -> tuple[str, str]:
    import mlflow
    from mlflow.models import infer_signature

    from models.pyfunc import pip_requirements
    from models.uplift.plots import qini_figure
    from models.uplift.pyfunc import UpliftScoringModel
    from pipelines.tracking import CHALLENGER, CHAMPION, ensure_experiment, git_commit

    report = run.report
    exp = data.experiment
    experiment_id = ensure_experiment(
        experiment_name(data.trigger), home,
        description=f"Uplift of trigger {data.trigger} from its randomized holdout",
    )  # fmt: skip
    reference = exp.X[exp.features].astype(float).median().fillna(0.0).tolist()
    wrapper = UpliftScoringModel(name, estimator, exp.features, reference)
    example = exp.X.head(5).astype(float)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{name}") as active:
        mlflow.set_tags({
            "model": name, "trigger": data.trigger, "git_commit": git_commit(),
            TRAINED_THROUGH_TAG: trained_through(data).isoformat(),
        })  # fmt: skip
        mlflow.log_params({
            "trigger": data.trigger, "chosen": report.chosen, "rows": report.rows,
            "treated": report.treated, "control": report.control, "splits": report.splits,
            "n_features": len(exp.features), "seed": report.seed,
        })  # fmt: skip
        metrics = {"ate": report.ate.estimate}
        for candidate, scores in report.models.items():
            if scores.qini_auc.mean is not None:
                metrics[f"{candidate}.qini_auc"] = scores.qini_auc.mean
            if scores.uplift_at_30.mean is not None:
                metrics[f"{candidate}.uplift_at_30"] = scores.uplift_at_30.mean
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        for candidate, curves in run.curves.items():
            mlflow.log_figure(qini_figure(candidate, curves, run.perfect), f"plots/qini_{candidate}.png")  # fmt: skip
        mlflow.log_text(policy.to_csv(index=False), "policy_table.csv")
        mlflow.log_text(learned.to_csv(), "importances.csv")
        mlflow.log_text(report.model_dump_json(indent=2), "backtest.json")
        mlflow.set_tag("recommendation", report.recommendation.reason)
        signature = infer_signature(example, wrapper.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name=name, python_model=wrapper, signature=signature, input_example=example,
            pip_requirements=pip_requirements(),
        )  # fmt: skip
        version = str(mlflow.register_model(info.model_uri, name).version)
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(name, CHALLENGER, version)
        # An uplift model has no incumbent to beat on a shared holdout: the latest one trained on
        # the whole log is the one to serve, and the recommendation tag says whether to use it.
        client.set_registered_model_alias(name, CHAMPION, version)
    return active.info.run_id, version


def load_trigger_experiment(
    store: Any, trigger: str, *, attribution_hours: float, home: Path | str | None = None
) -> TriggerExperiment:
    """`trigger_experiment` from an ``EngineDB`` and the feature tables under `home`."""
    from engine.store.exposures import load_exposures

    exposures = store.read(load_exposures, trigger, attribution_window=attribution_hours * 3600)
    times = store.read(decision_rows, trigger)
    return trigger_experiment(exposures, times, read_feature_tables(home), trigger)


class UpliftReport(NamedTuple):
    """What ``report_trigger`` judged, on which rows, and where it logged it."""

    table: pd.DataFrame
    version: str
    run_id: str
    evaluated_on: str
    """``decisions after training`` (held out) or ``the training log (in-sample)``."""
    rows: int


HELD_OUT, IN_SAMPLE = "decisions after training", "the training log (in-sample)"


def report_trigger(data: TriggerExperiment, *, home: Path | str | None = None) -> UpliftReport:
    """The policy table of the registered ``uplift_<trigger>`` (its champion) on the trigger's
    log, logged as a ``report-…`` run of ``uplift/<trigger>``.

    Judged on the decisions made after the model's training data ends (its run's
    ``trained_through`` tag) when each arm has at least ``MIN_ROWS_PER_ARM`` of them — those
    the model never saw; else on the whole log, labelled in-sample.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.tracking import CHAMPION, ensure_experiment

    name = model_name(data.trigger)
    client = mlflow.MlflowClient()
    try:
        registered = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise UserError(
            f"no model {name!r} in the registry: run `nudge uplift train {data.trigger}` first"
        ) from None
    version = registered.version
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    wanted = list(model.metadata.get_input_schema().input_names())
    missing = [c for c in wanted if c not in data.experiment.X.columns]
    if missing:
        raise UserError(f"{name} v{version} needs feature(s) {missing} that the log's rows lack")
    rows, evaluated_on = _report_rows(data, _trained_through_of(client, registered.run_id))
    exp = data.experiment
    X, y, t = exp.X.loc[rows, wanted], exp.y[rows], exp.treatment[rows]
    uplift = model.predict(X.astype(float))["score"].to_numpy()
    churn = None if data.churn is None else data.churn.to_numpy()[rows]
    scores = None if churn is None else {"churn score": np.nan_to_num(churn, nan=-1.0)}
    table = policy_table(y, t, uplift=uplift, scores=scores)
    experiment_id = ensure_experiment(experiment_name(data.trigger), home)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"report-{name}") as run:
        mlflow.set_tags({"model": name, "trigger": data.trigger, "model_version": str(version),
                         "evaluated_on": evaluated_on})  # fmt: skip
        mlflow.log_param("rows", int(rows.sum()))
        mlflow.log_text(table.to_csv(index=False), "policy_table.csv")
        for row in table.itertuples():
            if math.isfinite(row.per_1000_sends):
                mlflow.log_metric(f"per_1000_sends.{_metric_key(str(row.policy))}", row.per_1000_sends)  # fmt: skip
    return UpliftReport(table, str(version), run.info.run_id, evaluated_on, int(rows.sum()))


def _trained_through_of(client: Any, run_id: str | None) -> pd.Timestamp | None:
    if not run_id:
        return None
    try:
        tag = client.get_run(run_id).data.tags.get(TRAINED_THROUGH_TAG)
    except Exception:  # the run may be gone: the version still reports, in-sample
        return None
    return pd.Timestamp(tag) if tag else None


def _report_rows(
    data: TriggerExperiment, through: pd.Timestamp | None
) -> tuple[NDArray[np.bool_], str]:
    everything = np.ones(len(data.experiment.y), dtype=bool)
    if through is None or len(data.frame) != len(everything):
        return everything, IN_SAMPLE
    later = (pd.to_datetime(data.frame[TIMESTAMP_COLUMN], utc=True) > through).to_numpy()
    treated = data.experiment.treatment[later] == 1
    if min(int(treated.sum()), int((~treated).sum())) < MIN_ROWS_PER_ARM:
        return everything, IN_SAMPLE
    return later, HELD_OUT


def _metric_key(policy: str) -> str:
    """An MLflow metric name of a policy label (``uplift > 0.01`` → ``uplift_gt_0.01``)."""
    cleaned = policy.replace(">", "gt").replace("%", "pct").replace(":", "")
    return "_".join(cleaned.split())
