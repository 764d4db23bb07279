"""Metrics: agreement with scikit-learn / scipy and hand-computed worked examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from models.metrics import (
    classification_metrics,
    decile_calibration,
    lift_at,
    normalised_gini,
    oracle_roc_auc,
    regression_metrics,
)


@pytest.fixture
def labelled() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 5_000)
    return (rng.random(5_000) < p).astype(int), p


# -- classification --------------------------------------------------------------------------------


def test_classification_metrics_agree_with_sklearn(labelled):
    y, p = labelled
    metrics = classification_metrics(y, p)
    assert set(metrics) == {"roc_auc", "pr_auc", "log_loss", "brier", "lift_at_10"}
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(y, p), rel=1e-12)
    assert metrics["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert all(type(v) is float for v in metrics.values())


def test_lift_at_10_on_a_constructed_example():
    # 20 customers, 4 positive (rate 0.2); the top 2 by score hold 1 positive → rate 0.5, lift 2.5.
    score = np.arange(20, 0, -1, dtype=float)
    y = np.zeros(20, dtype=int)
    y[[0, 5, 10, 15]] = 1
    assert classification_metrics(y, score / 21)["lift_at_10"] == pytest.approx(2.5)
    # Both top spots positive: rate 1, lift 5 (the maximum for a 20 % base rate).
    y2 = np.zeros(20, dtype=int)
    y2[[0, 1, 2, 3]] = 1
    assert lift_at(y2, score, 0.10) == pytest.approx(5.0)


def test_lift_averages_over_ties_at_the_cut():
    # The top 10 % of 10 rows is 1 row, but 4 rows share the best score and 2 of them are positive:
    # random tie-breaking puts a positive there half of the time.
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert lift_at(y, score, 0.10) == pytest.approx(0.5 / 0.2)
    assert lift_at(y, np.full(10, 0.3), 0.10) == pytest.approx(1.0)
    assert lift_at(y[::-1], score[::-1], 0.10) == lift_at(y, score, 0.10)


def test_log_loss_stays_finite_for_confident_mistakes_and_single_classes_give_nan():
    metrics = classification_metrics([1, 0], [0.0, 0.0])
    assert metrics["log_loss"] == pytest.approx(-math.log(1e-15) / 2)
    assert metrics["brier"] == pytest.approx(0.5)
    assert metrics["roc_auc"] == 0.5
    one_class = classification_metrics([0, 0], [0.2, 0.4])
    assert math.isnan(one_class["roc_auc"]) and math.isnan(one_class["pr_auc"])
    assert math.isnan(one_class["lift_at_10"])


def test_classification_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="binary"):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities"):
        classification_metrics([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="lengths"):
        classification_metrics([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        classification_metrics([0, 1], [0.1, np.nan])


def test_oracle_auc_of_uniform_probabilities_is_five_sixths():
    # p ~ U(0, 1), y ~ Bernoulli(p): P(p_i > p_j | y_i = 1, y_j = 0) = ∫∫_{u>v} u(1-v) / (1/4) = 5/6.
    rng = np.random.default_rng(4)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert oracle_roc_auc(y, p) == pytest.approx(5 / 6, abs=0.004)
    assert oracle_roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))


# -- regression ------------------------------------------------------------------------------------


def test_regression_metrics_on_a_worked_example():
    y = np.array([0.0, 10.0, 20.0, 30.0])
    pred = np.array([5.0, 5.0, 25.0, 45.0])
    metrics = regression_metrics(y, pred)
    assert metrics["mae"] == pytest.approx((5 + 5 + 5 + 15) / 4)
    assert metrics["rmse"] == pytest.approx(math.sqrt((25 + 25 + 25 + 225) / 4))
    assert metrics["spearman"] == pytest.approx(spearmanr(y, pred).statistic)
    # Mid-ranks of pred 1.5, 1.5, 3, 4 against ranks of y 1, 2, 3, 4:
    # Gini(pred) = (0·1.5 + 10·1.5 + 20·3 + 30·4)/(4·60) - 5/8, Gini(y) = 200/240 - 5/8.
    gini_pred, gini_y = 195 / 240 - 5 / 8, 200 / 240 - 5 / 8
    assert metrics["normalised_gini"] == pytest.approx(gini_pred / gini_y)


def test_normalised_gini_is_one_for_perfect_minus_one_for_reversed_rankings():
    rng = np.random.default_rng(6)
    y = rng.gamma(0.5, 100.0, 1_000) * (rng.random(1_000) < 0.4)  # many zeros, as LTV
    assert normalised_gini(y, 3 * y + 1) == pytest.approx(1.0)
    assert normalised_gini(y, -y) == pytest.approx(-1.0)
    assert abs(normalised_gini(y, rng.random(1_000))) < 0.1


def test_normalised_gini_matches_the_classic_lorenz_computation_without_ties():
    rng = np.random.default_rng(7)
    y = rng.gamma(1.0, 50.0, 500)
    pred = y + rng.normal(0, 40, 500)

    def gini(actual: np.ndarray, score: np.ndarray) -> float:
        ordered = actual[np.argsort(-score)]
        lorenz = np.cumsum(ordered) / ordered.sum()
        return float(np.sum(lorenz - np.arange(1, len(actual) + 1) / len(actual)) / len(actual))

    assert normalised_gini(y, pred) == pytest.approx(gini(y, pred) / gini(y, y), rel=1e-10)


def test_regression_metrics_with_constant_inputs_give_nan_where_undefined():
    metrics = regression_metrics([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert math.isnan(metrics["spearman"])
    assert metrics["normalised_gini"] == pytest.approx(0.0)
    assert math.isnan(regression_metrics([0.0, 0.0], [1.0, 2.0])["normalised_gini"])


# -- decile calibration ----------------------------------------------------------------------------


def test_decile_calibration_cuts_ten_equal_groups_by_prediction():
    pred = np.arange(100, dtype=float)[::-1]
    actual = pred * 2
    table = decile_calibration(actual, pred)
    assert list(table.columns) == ["decile", "mean_predicted", "mean_actual", "count"]
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["count"].tolist() == [10] * 10
    np.testing.assert_allclose(table["mean_predicted"], np.arange(10) * 10 + 4.5)
    np.testing.assert_allclose(table["mean_actual"], 2 * table["mean_predicted"])


def test_decile_calibration_of_small_and_uneven_sets():
    table = decile_calibration(np.ones(25), np.linspace(0, 1, 25))
    assert table["count"].sum() == 25
    assert set(table["count"]) == {2, 3}
    tiny = decile_calibration([0.0, 1.0, 0.0], [0.3, 0.9, 0.1])
    pd.testing.assert_frame_equal(
        tiny,
        pd.DataFrame(
            {
                "decile": [1, 4, 7],
                "mean_predicted": [0.1, 0.3, 0.9],
                "mean_actual": [0.0, 0.0, 1.0],
                "count": [1, 1, 1],
            }
        ),
    )
