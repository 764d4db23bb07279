"""The model card and the evaluation plots, from the session's fitted models."""

from __future__ import annotations

import pytest

from models.card import model_card
from models.evaluate import MODEL_COLUMN
from models.plots import calibration_figure, decile_figure, gain_figure, importance_figure
from models.specs import BASELINES

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["churn", "ltv", "engagement"])
def test_the_card_states_the_task_data_and_the_comparison(sim_results, name):
    result = sim_results[name]
    card = model_card(result, {"git_commit": "abc123", "data_range": "2025-01-01 → 2025-12-31"})
    assert card.startswith(f"# Model card: {name}")
    assert f"Feast feature service `{name}`" in card
    assert "never a random split" in card and "git_commit: abc123" in card
    for scorer in (MODEL_COLUMN, *BASELINES[name]):
        assert f"| {scorer} |" in card or f"| **{scorer}** |" in card
    assert "ahead of every baseline" in card  # true on the simulation for all three models


def test_the_plots_draw_the_model_and_every_baseline(sim_results):
    churn = sim_results["churn"]
    scores = churn.holdout_scores
    scorers = {name: scores[name] for name in [MODEL_COLUMN, *churn.baselines]}
    calibration = calibration_figure(scores["churned"], scorers)
    assert len(calibration.axes[0].lines) == len(scorers) + 1  # + the diagonal
    gain = gain_figure(scores["churned"], scorers)
    assert [len(ax.lines) for ax in gain.axes] == [len(scorers) + 1, len(scorers) + 1]
    ltv = sim_results["ltv"].holdout_scores
    deciles = decile_figure(
        ltv["future_spend"], {"model": ltv["model"], "bgnbd_gg": ltv["bgnbd_gg"]}
    )
    assert len(deciles.axes) == 2 and len(deciles.axes[0].patches) == 20
    booster = churn.model.booster_
    import pandas as pd

    importance = pd.Series(booster.feature_importance("gain"), index=booster.feature_name())
    figure = importance_figure(importance, top=10)
    assert len(figure.axes[0].patches) == 10
