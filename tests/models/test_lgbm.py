"""The LightGBM estimators on synthetic data: they learn, calibrate, keep their feature contract,
and explain themselves additively."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

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
    with pytest.raises(NotFittedError, match="not fitted"):
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


def _aged(n: int, max_age: float, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Churn that keeps rising with the days since the last purchase, at any age."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "recency_days": rng.uniform(1, max_age, n),
            "purchases": rng.poisson(2, n).astype("int64"),
            "noise": rng.normal(size=n),
        }
    )
    logit = 1.2 * np.log1p(X["recency_days"]) - 0.6 * np.log1p(X["purchases"]) - 4.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return X, y, np.array([f"c{i}" for i in range(n)])


def test_a_linear_base_keeps_ranking_customers_older_than_any_seen_in_training():
    X, y, customers = _aged(4_000, max_age=180, seed=0)
    old, y_old, _ = _aged(4_000, max_age=360, seed=1)
    beyond = old["recency_days"].to_numpy() > 200  # no training row is this old
    plain = CalibratedLGBMClassifier(max_rounds=300).fit(X, y, groups=customers)
    based = CalibratedLGBMClassifier(max_rounds=300, linear_base=("recency_days", "purchases")).fit(
        X, y, groups=customers
    )
    auc = {
        name: classification_metrics(y_old[beyond], m.predict_proba(old[beyond])[:, 1])["roc_auc"]
        for name, m in (("plain", plain), ("based", based))
    }
    # Past the training range the trees see one recency; the base still orders by it.
    assert auc["based"] > auc["plain"] + 0.02
    p = based.predict_proba(old)[:, 1]
    assert np.corrcoef(old["recency_days"][beyond], p[beyond])[0, 1] > 0.3


def test_a_linear_base_stays_additive_and_the_matrix_path_agrees():
    X, y, customers = _aged(2_000, max_age=180, seed=2)
    X.loc[X.index[::7], "recency_days"] = np.nan  # never bought: the base's missing indicator
    model = CalibratedLGBMClassifier(max_rounds=200, linear_base=("recency_days",)).fit(
        X, y, groups=customers
    )
    contributions = feature_contributions(model, X)
    assert np.allclose(contributions.sum(axis=1), model.raw_score(X))
    # Centred terms: an older last purchase pushes churn up, a recent one down.
    by_recency = contributions["recency_days"].groupby(X["recency_days"] > 120).mean()
    assert by_recency[True] > 0 > by_recency[False]
    matrix = model.matrix_of(X)
    assert np.allclose(model.score_matrix(matrix), model.predict_proba(X)[:, 1], atol=1e-12)
    assert np.allclose(model.contributions_matrix(matrix), contributions.to_numpy(), atol=1e-12)
    # An explained request scores from the contributions it computed anyway: the same numbers.
    explained = model.score_from_contributions(model.contributions_matrix(matrix))
    assert np.allclose(explained, model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_a_linear_base_on_an_unknown_column_is_refused_by_name():
    X, y, customers = _aged(500, max_age=180, seed=3)
    with pytest.raises(ValueError, match="tenure_days"):
        CalibratedLGBMClassifier(linear_base=("tenure_days",)).fit(X, y, groups=customers)


def test_rounds_are_validated_forward_when_snapshot_times_are_given():
    # A pattern that held in the earlier snapshots and is gone in the latest: validating on
    # the latest snapshot stops adding trees for it; folds across all snapshots keep learning it.
    rng = np.random.default_rng(4)
    n = 6_000
    times = pd.to_datetime("2025-01-01") + pd.to_timedelta(rng.integers(0, 3, n) * 30, unit="D")
    X = pd.DataFrame({"fad": rng.normal(size=n), "steady": rng.normal(size=n)})
    faded = times == times.max()
    logit = 0.5 * X["steady"] + np.where(faded, 0.0, 2.0 * X["fad"])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    customers = np.array([f"c{i}" for i in range(n)])
    across = CalibratedLGBMClassifier(max_rounds=400).fit(X, y, groups=customers)
    forward = CalibratedLGBMClassifier(max_rounds=400).fit(X, y, groups=customers, times=times)
    assert forward.best_iteration_ < across.best_iteration_ / 2
    # Calibrated on the latest snapshot: its probabilities barely move with the faded feature.
    latest = X[faded]
    slope = np.polyfit(latest["fad"], forward.predict_proba(latest)[:, 1], 1)[0]
    assert abs(slope) < np.polyfit(latest["fad"], across.predict_proba(latest)[:, 1], 1)[0] / 2
