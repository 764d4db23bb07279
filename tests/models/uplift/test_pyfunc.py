"""The uplift pyfunc returns the estimator's uplift in the `score` column score conditions read."""

import numpy as np
import pandas as pd

from models.uplift.learners import TLearner
from models.uplift.pyfunc import UpliftScoringModel


def test_score_is_the_estimators_uplift_on_the_named_columns():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    t = (rng.random(400) < 0.5).astype(float)
    y = (rng.random(400) < 0.2 + 0.3 * t * (X["a"] > 0)).astype(float)
    estimator = TLearner(n_estimators=20, random_state=0).fit(X, t, y)
    model = UpliftScoringModel("uplift_t", estimator, ["a", "b"])
    shuffled = X[["b", "a"]].assign(extra="ignored")  # columns by name, extra ones left out
    out = model.predict(None, shuffled)
    assert list(out.columns) == ["score"]
    np.testing.assert_allclose(out["score"], estimator.predict(X))
