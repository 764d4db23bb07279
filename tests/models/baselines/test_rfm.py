"""RFM logistic regression, historical average LTV and recency-weighted open rate baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from models.baselines.rfm import (
    HistoricalAverageLTV,
    RecencyWeightedOpenRate,
    RFMLogisticRegression,
)

# -- RFM logistic regression -----------------------------------------------------------------------


def planted_rfm(n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Customers whose churn log-odds are linear in log1p(recency) and log1p(frequency)."""
    X = pd.DataFrame(
        {
            "days_since_last": rng.lognormal(3.0, 1.0, n),
            "orders": rng.poisson(3.0, n).astype(float),
            "spend": rng.lognormal(3.5, 0.8, n),
            "noise": rng.normal(size=n),
        }
    )
    logit = 1.2 * (np.log1p(X["days_since_last"]) - 3.0) - 0.8 * (np.log1p(X["orders"]) - 1.3)
    truth = expit(logit.to_numpy())
    return X, (rng.random(n) < truth).astype(int), truth


COLUMNS = ("days_since_last", "orders", "spend")


def test_rfm_logistic_regression_recovers_a_planted_relation():
    X, y, truth = planted_rfm(20_000, np.random.default_rng(1))
    model = RFMLogisticRegression(feature_columns=COLUMNS).fit(X, y)
    assert model.fit(X, y) is model
    proba = model.predict_proba(X)
    assert proba.shape == (len(X),)
    assert np.mean(np.abs(proba - truth)) < 0.02
    # The scaled coefficient of recency is positive, of frequency negative, of spend about 0.
    coef = model.pipeline_[-1].coef_[0]
    assert coef[0] > 0.5 and coef[1] < -0.2 and abs(coef[2]) < 0.1


def test_rfm_reads_its_columns_by_name_whatever_else_is_in_the_frame():
    X, y, _ = planted_rfm(2_000, np.random.default_rng(2))
    model = RFMLogisticRegression(feature_columns=COLUMNS).fit(X, y)
    shuffled = X[["noise", "spend", "orders", "days_since_last"]].assign(extra="x")
    np.testing.assert_array_equal(model.predict_proba(shuffled), model.predict_proba(X))
    assert clone(model).get_params()["feature_columns"] == COLUMNS


def test_rfm_rejects_what_log1p_or_a_binary_target_cannot_take():
    X, y, _ = planted_rfm(100, np.random.default_rng(3))
    model = RFMLogisticRegression(feature_columns=COLUMNS)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict_proba(X)
    with pytest.raises(ValueError, match="non-negative"):
        model.fit(X.assign(spend=-1.0), y)
    with pytest.raises(ValueError, match="binary"):
        model.fit(X, y * 2)


# -- historical average LTV ------------------------------------------------------------------------


def test_historical_average_ltv_extrapolates_each_rate_and_fills_the_unseen():
    train = pd.DataFrame({"total_spend": [100.0, 10.0, 0.0], "tenure": [50.0, 0.5, 20.0]})
    model = HistoricalAverageLTV(horizon=90.0).fit(train)
    # Rates 2, 10 (tenure floored to 1) and 0: the population mean is 4.
    assert model.population_rate_ == pytest.approx(4.0)
    test = pd.DataFrame(
        {"total_spend": [100.0, 10.0, np.nan, 0.0], "tenure": [50.0, 0.5, np.nan, 0.0]}
    )
    np.testing.assert_allclose(model.predict(test), [180.0, 900.0, 360.0, 360.0])


def test_historical_average_ltv_needs_someone_with_history():
    with pytest.raises(ValueError, match="history"):
        HistoricalAverageLTV().fit(pd.DataFrame({"total_spend": [5.0], "tenure": [0.0]}))


# -- recency-weighted open rate --------------------------------------------------------------------


def sends() -> pd.DataFrame:
    rows = [
        ("a", "2024-03-01", 1),
        ("a", "2024-03-11", 0),
        ("a", "2024-03-21", 1),
        ("b", "2024-03-21", 0),
        ("a", "2024-03-25", 0),  # after the snapshot: must not count
        ("c", "2024-03-25", 1),  # only sends after the snapshot
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "sent_at", "opened"])
    return frame.assign(sent_at=pd.to_datetime(frame["sent_at"]))


AS_OF = pd.Timestamp("2024-03-21")


def test_open_rate_decays_old_sends_and_shrinks_towards_the_prior():
    model = RecencyWeightedOpenRate(half_life_days=10.0, prior_strength=1.0).fit(sends(), AS_OF)
    # Weights on 21, 11 and 1 March: 1, 1/2, 1/4 (a) and 1 (b); opened weight 1 + 1/4.
    assert model.prior_rate_ == pytest.approx(1.25 / 2.75)
    rate = model.predict(sends(), AS_OF, customers=["a", "b", "c", "new"])
    prior = model.prior_rate_
    assert rate["a"] == pytest.approx((1.25 + prior) / (1.75 + 1))
    assert rate["b"] == pytest.approx(prior / 2)
    assert rate["c"] == rate["new"] == pytest.approx(prior)
    assert rate.index.name == "customer_id"


def test_open_rate_never_looks_past_the_snapshot():
    model = RecencyWeightedOpenRate(half_life_days=10.0).fit(sends(), AS_OF)
    changed_future = sends().assign(
        opened=lambda f: np.where(f["sent_at"] > AS_OF, 1 - f["opened"], f["opened"])
    )
    pd.testing.assert_series_equal(
        model.predict(sends(), AS_OF), model.predict(changed_future, AS_OF)
    )


def test_open_rate_without_prior_weight_is_the_decayed_rate():
    model = RecencyWeightedOpenRate(half_life_days=10.0, prior_strength=0.0).fit(sends())
    rate = model.predict(sends(), AS_OF)
    assert rate["a"] == pytest.approx(1.25 / 1.75)
    assert rate["b"] == 0.0
    assert rate["c"] == model.prior_rate_
