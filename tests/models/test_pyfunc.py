"""The pyfunc wrapper without MLflow's registry: scores, send hours, reasons, requirements."""

from __future__ import annotations

import numpy as np
import pytest

from models.pyfunc import SCORE_COLUMN, ScoringModel, pip_requirements

pytestmark = pytest.mark.slow


def test_the_wrapper_returns_probabilities_and_for_engagement_the_send_hour(
    sim_results, sim_frames
):
    churn = sim_results["churn"]
    _, holdout = sim_frames["churn"]
    wrapper = ScoringModel("churn", churn.model)
    out = wrapper.predict(None, holdout.head(50))
    assert list(out.columns) == [SCORE_COLUMN]
    assert np.allclose(out[SCORE_COLUMN], churn.holdout_scores["model"].head(50))
    contributions = wrapper.contributions(holdout.head(50))
    assert np.allclose(contributions.sum(axis=1), churn.model.raw_score(holdout.head(50)))

    engagement = sim_results["engagement"]
    _, rows = sim_frames["engagement"]
    hours = ScoringModel("engagement", engagement.model, engagement.best_send_hour).predict(
        None, rows.head(50)
    )
    assert list(hours.columns) == [SCORE_COLUMN, "best_send_hour"]
    assert hours["best_send_hour"].between(0, 23).all()

    ltv = sim_results["ltv"]
    spend = ScoringModel("ltv", ltv.model).predict(None, sim_frames["ltv"][1].head(50))
    assert (spend[SCORE_COLUMN] >= 0).all()


def test_requirements_are_pinned_to_the_installed_versions():
    requirements = pip_requirements()
    names = {r.split("==")[0] for r in requirements}
    assert {"lightgbm", "pandas", "numpy", "scikit-learn", "mlflow"} <= names
    assert all("==" in r for r in requirements)
