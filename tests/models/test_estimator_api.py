"""Every estimator follows scikit-learn's API: the mixin on the left (so `is_classifier` /
`is_regressor` and the tags are right) and NotFittedError before `fit`."""

import pandas as pd
import pytest
from sklearn.base import is_classifier, is_regressor
from sklearn.exceptions import NotFittedError

from models.baselines.on_features import (
    BGNBDChurn,
    BGNBDSpend,
    DecayedOpenRate,
    HistoricalSpend,
    RFMChurn,
    make_baselines,
)
from models.baselines.rfm import HistoricalAverageLTV, RFMLogisticRegression
from models.lgbm import CalibratedLGBMClassifier, LGBMSpendRegressor

CLASSIFIERS = [RFMChurn(), BGNBDChurn(), DecayedOpenRate(), RFMLogisticRegression(),
               CalibratedLGBMClassifier()]  # fmt: skip
REGRESSORS = [BGNBDSpend(), HistoricalSpend(), HistoricalAverageLTV(), LGBMSpendRegressor()]


@pytest.mark.parametrize("estimator", CLASSIFIERS, ids=lambda e: type(e).__name__)
def test_classifiers_are_classifiers(estimator):
    assert is_classifier(estimator) and not is_regressor(estimator)


@pytest.mark.parametrize("estimator", REGRESSORS, ids=lambda e: type(e).__name__)
def test_regressors_are_regressors(estimator):
    assert is_regressor(estimator) and not is_classifier(estimator)


@pytest.mark.parametrize("estimator", CLASSIFIERS + REGRESSORS, ids=lambda e: type(e).__name__)
def test_predicting_before_fit_raises_not_fitted(estimator):
    X = pd.DataFrame({"a": [1.0]})
    predict = getattr(estimator, "predict_proba", None) or estimator.predict
    with pytest.raises(NotFittedError):
        predict(X)


@pytest.mark.parametrize("model", ["churn", "ltv", "engagement"])
def test_every_baseline_is_of_its_models_kind(model):
    check = is_regressor if model == "ltv" else is_classifier
    assert all(check(b) for b in make_baselines(model, 90.0).values())
