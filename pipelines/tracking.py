"""MLflow at the edges: where the tracking store is, one run per trained model, the registry.

Each model is registered under its own name (its definition's) with alias `challenger`; alias
`champion` moves to it only when it beats each of its baselines on the holdout and the current
champion on the same holdout (the champion is loaded from the registry and scored on this run's
holdout rows), each by the definition's `training.champion_margin` (default 0). Serving loads
``models:/<name>@champion``.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from nudge.settings import home_dir, tracking_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from models.evaluate import ModelResult

__all__ = [
    "BACKTEST_EXPERIMENT",
    "CHALLENGER",
    "CHAMPION",
    "EXPERIMENT_KIND_TAG",
    "MODEL_DEVELOPMENT",
    "TRAIN_EXPERIMENT",
    "Registration",
    "default_tracking_uri",
    "ensure_experiment",
    "git_commit",
    "log_backtest",
    "log_model_run",
    "use_tracking",
]

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow 3's tag for what an experiment is: without it the UI guesses, and opens a store without
traces in its GenAI mode (an empty traces and token-usage overview)."""
MODEL_DEVELOPMENT = "custom_model_development"
"""The value of ``mlflow.experimentKind`` that opens the runs table and charts (MLflow 3.17;
``genai_development`` is the other kind)."""

CHALLENGER = "challenger"
CHAMPION = "champion"
TRAIN_EXPERIMENT = "nudge-train"
BACKTEST_EXPERIMENT = "nudge-backtest"


@dataclass(frozen=True)
class Registration:
    """What logging one trained model did: its run, registered version, and champion decision."""

    model: str
    run_id: str
    version: str
    champion: bool
    reason: str
    metrics: dict[str, dict[str, float]]


def default_tracking_uri(home: Path | str | None = None) -> str:
    """The settings' one rule (`nudge.settings.tracking_uri`): ``MLFLOW_TRACKING_URI``, else
    ``NUDGE_MLFLOW_TRACKING_URI``, else the SQLite store ``<home>/mlflow.db``."""
    return tracking_uri(home)


def use_tracking(uri: str) -> None:
    """Point this process's MLflow client (tracking and registry) at `uri`."""
    import mlflow

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def ensure_experiment(
    name: str, home: Path | str | None = None, description: str | None = None
) -> str:
    """The experiment's id, created with its artifacts under ``$NUDGE_HOME/mlartifacts`` (MLflow's
    default for a SQLite store is ./mlartifacts in the current directory), tagged as model
    development (``mlflow.experimentKind``; an existing experiment without the tag gets it)."""
    import mlflow

    tags = {EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT}
    if description:
        tags["mlflow.note.content"] = description
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_DEVELOPMENT:
            mlflow.MlflowClient().set_experiment_tag(
                found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT
            )
        return found.experiment_id
    artifacts = home_dir(home) / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=artifacts.as_uri(), tags=tags)


def log_model_run(
    result: ModelResult,
    holdout: pd.DataFrame,
    context: Mapping[str, Any],
    experiment_id: str,
) -> Registration:
    """Log one model (params, metrics, plots, card, pyfunc), register it as challenger, and make
    it champion if it beats the current one on `holdout` (the rows `result` was scored on)."""
    import mlflow
    from mlflow.models import infer_signature

    from models.card import model_card
    from models.pyfunc import ScoringModel, pip_requirements

    spec = result.spec
    client = mlflow.MlflowClient()
    features = list(spec.features)
    example = holdout[features].head(5).astype(spec.features)
    wrapper = ScoringModel(spec.name, result.model, result.best_send_hour)
    description = (
        f"{spec.name}: {type(result.model).__name__} trained on {result.n_train:,} rows, judged on "
        f"the {result.holdout_snapshot:%Y-%m-%d} holdout against {', '.join(result.baselines)}"
    )
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"train-{spec.name}", description=description
    ) as run:
        mlflow.set_tags({"model": spec.name, "feature_service": spec.name, **_tags(context)})
        if spec.definitions is not None and spec.name in spec.definitions:
            mlflow.set_tag("definition", spec.definitions.where(spec.name).source)
        mlflow.log_params(_params(result, context))
        mlflow.log_metrics(_flat_metrics(result.metrics))
        _log_figures(result)
        mlflow.log_text(model_card(result, _card_context(context)), "model_card.md")
        mlflow.log_text(result.comparison().to_csv(), "holdout_comparison.csv")
        with warnings.catch_warnings():
            # "integer columns cannot hold missing values": by the feature contract an integer
            # feature is never null (features.schema), so int64 in the signature is right.
            warnings.filterwarnings("ignore", message=".*[Ii]nteger column", category=UserWarning)
            signature = infer_signature(example, wrapper.predict(None, example))
        info = mlflow.pyfunc.log_model(
            name=spec.name,
            python_model=wrapper,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
        version = mlflow.register_model(info.model_uri, spec.name).version
        client.set_registered_model_alias(spec.name, CHALLENGER, version)
        champion, reason = _challenge(client, result, holdout)
        if champion:
            client.set_registered_model_alias(spec.name, CHAMPION, version)
        mlflow.set_tag("champion_decision", reason)
        client.set_model_version_tag(spec.name, version, "champion_decision", reason)
    return Registration(spec.name, run.info.run_id, str(version), champion, reason, result.metrics)


def log_backtest(payload: Mapping[str, Any], params: Mapping[str, Any], experiment_id: str) -> str:
    """Log a backtest's metrics (model and every baseline) and its JSON; returns the run id."""
    import mlflow

    cutoff = str(params.get("cutoff", ""))[:10]
    description = f"Backtest at {cutoff}: the models and every baseline on the days after it"
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"backtest-{cutoff}", description=description
    ) as run:
        mlflow.log_params(dict(params))
        metrics = {}
        for model, block in payload.items():
            if not isinstance(block, Mapping) or "model" not in block:
                continue
            for name, values in {"model": block["model"], **block["baselines"]}.items():
                for metric, value in values.items():
                    if isinstance(value, float) and math.isfinite(value):
                        metrics[f"{model}.{name}.{metric}"] = value
        mlflow.log_metrics(metrics)
        mlflow.log_dict(dict(payload), "backtest.json")
    return run.info.run_id


def git_commit(path: Path | None = None) -> str:
    """The repository's HEAD commit (with ``-dirty`` when the tree has changes), or unknown."""
    where = path or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


# -- helpers ---------------------------------------------------------------------------------------


def _challenge(
    client: MlflowClient, result: ModelResult, holdout: pd.DataFrame
) -> tuple[bool, str]:
    """Whether the new version should become champion, and why: it must beat each of its
    baselines on the holdout and the current champion on the same rows, each by the
    definition's `champion_margin` on the primary metric."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from models.evaluate import metrics_for

    spec = result.spec
    metric, mine, margin = spec.primary_metric, result.primary, spec.champion_margin
    by = f" by {margin:g}" if margin else ""
    if math.isnan(mine):
        return False, f"not champion: its {metric} is undefined on the holdout"
    for baseline in result.baselines:
        theirs = result.metrics[baseline][metric]
        if not math.isnan(theirs) and not spec.better(mine, theirs, margin):
            return False, (
                f"not champion: {metric} {mine:.4f} does not beat baseline {baseline} "
                f"({theirs:.4f}){by}"
            )
    try:
        current = client.get_model_version_by_alias(spec.name, CHAMPION)
    except MlflowException:
        return True, f"first champion ({metric} {mine:.4f}, ahead of every baseline{by})"
    try:
        model = mlflow.pyfunc.load_model(f"models:/{spec.name}@{CHAMPION}")
        scores = model.predict(holdout[list(spec.features)].astype(spec.features))["score"]
        theirs = metrics_for(spec, holdout[spec.label], scores)[metric]
    except Exception as exc:  # a champion that cannot score today's features cannot stay
        return True, f"champion v{current.version} could not score the holdout ({exc})"
    if math.isnan(theirs) or spec.better(mine, theirs, margin):
        return True, f"beat champion v{current.version}{by}: {metric} {mine:.4f} vs {theirs:.4f}"
    return False, f"champion v{current.version} kept: {metric} {theirs:.4f} vs {mine:.4f}{by}"


def _params(result: ModelResult, context: Mapping[str, Any]) -> dict[str, Any]:
    spec = result.spec
    booster_params = {
        f"lgbm.{k}": v for k, v in result.model.booster_.params.items() if k != "verbose"
    }
    return {
        "model": spec.name,
        "estimator": type(result.model).__name__,
        "label": spec.label,
        "horizon_days": spec.horizon_days,
        "n_features": len(spec.features),
        "n_train_rows": result.n_train,
        "n_holdout_rows": len(result.holdout_scores),
        "train_snapshots": ",".join(f"{t:%Y-%m-%d}" for t in result.train_snapshots),
        "holdout_snapshot": f"{result.holdout_snapshot:%Y-%m-%d}",
        "best_iteration": result.model.best_iteration_,
        "baselines": ",".join(result.baselines),
        **booster_params,
        **{k: v for k, v in context.items() if k in {"data_range", "snapshot_step_days"}},
    }


def _tags(context: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in context.items()}


def _card_context(context: Mapping[str, Any]) -> dict[str, Any]:
    return {k.replace("_", " "): v for k, v in context.items()}


def _flat_metrics(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``model.roc_auc``, ``rfm_logistic.roc_auc``, ...; nan values are left out."""
    return {
        f"{scorer}.{name}": value
        for scorer, values in metrics.items()
        for name, value in values.items()
        if math.isfinite(value)
    }


def _log_figures(result: ModelResult) -> None:
    import mlflow

    from models.evaluate import MODEL_COLUMN
    from models.plots import (
        calibration_figure,
        decile_figure,
        gain_figure,
        importance_figure,
    )

    spec = result.spec
    scores = result.holdout_scores
    y = scores[spec.label]
    scorers = {name: scores[name] for name in [MODEL_COLUMN, *result.baselines]}
    figures = {"gain_lift.png": gain_figure(y, scorers)}
    if spec.task == "binary":
        figures["calibration.png"] = calibration_figure(y, scorers)
    else:
        figures["ltv_deciles.png"] = decile_figure(y, scorers)
    booster = result.model.booster_
    importance = pd.Series(
        booster.feature_importance(importance_type="gain"),
        index=booster.feature_name(),
        name="total gain",
    )
    figures["importance.png"] = importance_figure(importance)
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
    with tempfile.TemporaryDirectory() as tmp:
        deciles = Path(tmp) / "holdout_deciles.json"
        deciles.write_text(json.dumps(result.decile_table().to_dict(orient="list")))
        mlflow.log_artifact(str(deciles))
