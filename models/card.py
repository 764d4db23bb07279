"""A short model card in Markdown: what the model predicts, on what data, and how it compares
with its baselines on the holdout — written from a `ModelResult` and the run's context."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models.evaluate import MODEL_COLUMN, ModelResult

__all__ = ["model_card"]

_PREDICTS = {
    "churn": "the probability that the customer makes no purchase in the next {h} days",
    "ltv": "the customer's purchase spend (gross) in the next {h} days",
    "engagement": "the probability that the customer opens or clicks an email in the next {h} "
    "days, and the local hour to send at",
}


def _predicts(spec: Any) -> str:
    """What the model predicts: its definition's description, else the built-in wording."""
    text = spec.description or _PREDICTS.get(spec.name) or f"{spec.label} ({spec.task})"
    return str(text)


def model_card(result: ModelResult, context: Mapping[str, Any] | None = None) -> str:
    """The card as Markdown; `context` adds lines such as data range, git commit, run id."""
    spec = result.spec
    horizon = f"{spec.horizon_days:g}"
    train = result.train_snapshots
    lines = [
        f"# Model card: {spec.name}",
        "",
        f"**Predicts** {_predicts(spec).replace('{h}', horizon)}.",
        "",
        f"- Estimator: {type(result.model).__name__} (LightGBM, {result.model.best_iteration_} "
        "rounds chosen on held-out customers at the latest training snapshot), objective "
        f"{dict(spec.objective)}"
        + (
            f", boosted from a logit on log1p({', '.join(spec.linear_base)})"
            if spec.linear_base
            else ""
        ),
        f"- Features: Feast feature service `{spec.name}` ({len(spec.features)} features)",
        f"- Training rows: {result.n_train:,} over {len(train)} snapshots "
        f"({_day(train[0])} → {_day(train[-1])})"
        if train
        else "- Training rows: none",
        f"- Holdout: the latest snapshot {_day(result.holdout_snapshot)} "
        f"({len(result.holdout_scores):,} customers), never a random split",
        f"- Primary metric: {spec.primary_metric} "
        f"({'higher' if spec.higher_is_better else 'lower'} is better)",
    ]
    for key, value in (context or {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "## Holdout: model vs baselines", "", *_table(result), ""]
    winner = _best(result)
    lines.append(
        f"On {spec.primary_metric} the model is "
        + ("ahead of every baseline." if winner == MODEL_COLUMN else f"behind `{winner}`.")
    )
    lines += [
        "",
        "## Limits",
        "",
        "- Scores describe customers at a snapshot; they age as new events arrive.",
        "- Trained on the population with at least one event; a new customer without history "
        "gets the population's typical score.",
        "- Reason codes are LightGBM per-feature contributions to the raw score (log-odds or "
        "log-spend), not causal effects.",
    ]
    return "\n".join(lines) + "\n"


def _table(result: ModelResult) -> list[str]:
    table = result.comparison()
    header = ["scorer", *table.columns]
    rows = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for scorer, values in table.iterrows():
        cells = [f"**{scorer}**" if scorer == MODEL_COLUMN else str(scorer)]
        cells += [_number(v) for v in values]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _best(result: ModelResult) -> str:
    spec = result.spec
    values = {
        name: m[spec.primary_metric]
        for name, m in result.metrics.items()
        if not math.isnan(m[spec.primary_metric])
    }
    pick = max if spec.higher_is_better else min
    return pick(values, key=values.__getitem__) if values else MODEL_COLUMN


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _day(stamp: Any) -> str:
    return "?" if stamp is None else f"{stamp:%Y-%m-%d}"
