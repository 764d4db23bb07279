"""The champion gate: a first model that loses to a baseline does not become champion."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.evaluate import ModelResult
from models.specs import SPECS
from pipelines.tracking import _challenge


def _result(model: float, baselines: dict[str, float], margin: float = 0.0) -> ModelResult:
    spec = replace(SPECS["churn"], champion_margin=margin)
    metrics = {"model": {"roc_auc": model}, **{b: {"roc_auc": v} for b, v in baselines.items()}}
    return ModelResult(
        spec,
        None,
        dict.fromkeys(baselines),
        metrics,
        None,
        [],
        None,
        0,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("model", "baselines", "margin", "reason"),
    [
        (0.70, {"rfm_logistic": 0.72, "bgnbd": 0.60}, 0.0, "does not beat baseline rfm_logistic"),
        (0.73, {"rfm_logistic": 0.72, "bgnbd": 0.60}, 0.02, "does not beat baseline rfm_logistic"),
        (float("nan"), {"rfm_logistic": 0.72}, 0.0, "undefined on the holdout"),
    ],
)
def test_a_model_behind_a_baseline_is_not_champion(model, baselines, margin, reason):
    # Decided before the registry is asked: no client is needed to refuse.
    champion, why = _challenge(None, _result(model, baselines, margin), None)  # type: ignore[arg-type]
    assert not champion and reason in why
