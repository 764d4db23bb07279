"""The LightGBM estimators on synthetic data: they learn, calibrate, keep their feature contract,
and explain themselves additively."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.lgbm import (
    BestSendHour,
    CalibratedLGBMClassifier,
    LGBMSpendRegressor,
    feature_contributions,
    top_reasons,
)
from models.metrics import classification_metrics


def _data(n: int = 4_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "count": rng.poisson(3, size=n).astype("int64"),
            "noise": rng.normal(size=n),
            "gappy": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        }
    )
    logit = 1.5 * X["signal"] - 0.4 * X["count"] + 0.8
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    customers = np.array([f"c{i % (n // 4)}" for i in range(n)])  # 4 rows per customer
    return X, y.to_numpy(), customers


@pytest.fixture(scope="module")
def classifier() -> tuple[CalibratedLGBMClassifier, pd.DataFrame, np.ndarray]:
    X, y, customers = _data()
    model = CalibratedLGBMClassifier(max_rounds=300).fit(X, y, groups=customers)
    return model, X, y


def test_the_classifier_learns_and_its_probabilities_are_calibrated(classifier):
    model, _, _ = classifier
    X, y, _ = _data(seed=1)
    p = model.predict_proba(X)
    assert p.shape == (len(X), 2) and np.allclose(p.sum(axis=1), 1)
    metrics = classification_metrics(y, p[:, 1])
    assert metrics["roc_auc"] > 0.8
    # Calibrated: the mean probability matches the positive rate, per half of the scores too.
    assert abs(p[:, 1].mean() - y.mean()) < 0.02
    high = p[:, 1] > np.median(p[:, 1])
    assert abs(p[high, 1].mean() - y[high].mean()) < 0.03
    assert 1 < model.best_iteration_ < 400
    assert set(model.predict(X)) <= {0, 1}


def test_predictions_follow_the_training_columns_not_the_input_order(classifier):
    model, X, _ = classifier
    shuffled = X[["gappy", "noise", "count", "signal"]].assign(extra=1.0)
    as_floats = X.astype({"count": "float64"})  # online rows may arrive as floats
    expected = model.predict_proba(X)
    assert np.array_equal(model.predict_proba(shuffled), expected)
    assert np.array_equal(model.predict_proba(as_floats), expected)
    with pytest.raises(ValueError, match="lacks feature"):
        model.predict_proba(X.drop(columns="signal"))


def test_contributions_add_up_to_the_raw_score_and_name_the_signal(classifier):
    model, X, _ = classifier
    contributions = feature_contributions(model, X.head(200))
    assert list(contributions.columns) == [*X.columns, "bias"]
    assert np.allclose(contributions.sum(axis=1), model.raw_score(X.head(200)))
    strongest = contributions.drop(columns="bias").abs().mean().idxmax()
    assert strongest == "signal"
    reasons = top_reasons(contributions, k=2)
    assert len(reasons) == 200 and all(len(r) <= 2 for r in reasons)
    assert all(value > 0 for row in reasons for _, value in row)
    # The booster itself gives the same numbers.
    raw = feature_contributions(model.booster_, X.head(5))
    assert np.allclose(raw.to_numpy(), contributions.head(5).to_numpy())


def test_folds_hold_whole_customers():
    from models.lgbm import _group_folds

    groups = np.array(["a", "b", "c", "a", "b", "c", "d", "d"])
    folds = _group_folds(groups, 3)
    assert len(folds) == 3
    assert np.array_equal(np.sum(folds, axis=0), np.ones(len(groups)))  # each row held out once
    for fold in folds:
        held = set(groups[fold])
        assert not held & set(groups[~fold])
    assert _group_folds(None, 3) == [] and _group_folds(["a", "a"], 3) == []


def test_the_classifier_refuses_labels_it_cannot_learn():
    X, _, _ = _data(200)
    with pytest.raises(ValueError, match="binary"):
        CalibratedLGBMClassifier().fit(X, np.full(200, 2))
    with pytest.raises(ValueError, match="single class"):
        CalibratedLGBMClassifier().fit(X, np.zeros(200))
    with pytest.raises(RuntimeError, match="not fitted"):
        CalibratedLGBMClassifier().predict_proba(X)


def test_the_spend_regressor_predicts_non_negative_expected_values():
    rng = np.random.default_rng(3)
    n = 3_000
    X = pd.DataFrame({"past_spend": rng.gamma(2, 50, size=n), "noise": rng.normal(size=n)})
    buys = rng.random(n) < 0.4
    y = np.where(buys, X["past_spend"] * rng.gamma(5, 0.2, size=n), 0.0)
    model = LGBMSpendRegressor(max_rounds=300).fit(X, y, groups=np.arange(n) % 700)
    pred = model.predict(X)
    assert (pred >= 0).all()
    assert abs(pred.mean() - y.mean()) / y.mean() < 0.1
    assert np.corrcoef(pred, X["past_spend"])[0, 1] > 0.9
    with pytest.raises(ValueError, match="non-negative"):
        model.fit(X, -y - 1)


def test_best_send_hour_trusts_only_supported_preferences():
    frame = pd.DataFrame(
        {
            "preferred_send_hour": [9, 9, 20, -1, 14, 9],
            "preferred_send_hour_opens": [3, 5, 1, 0, 2, 4],
        }
    )
    rule = BestSendHour(min_opens=2).fit(frame)
    assert rule.population_hour_ == 9
    assert rule.predict(frame).tolist() == [9, 9, 9, 9, 14, 9]
    nobody = BestSendHour(fallback_hour=11).fit(frame.iloc[[3]])
    assert nobody.population_hour_ == 11
