"""The uplift metrics against scikit-uplift (random data, ties included) and hand-computed cases."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from models.uplift.metrics import (
    average_treatment_effect,
    perfect_qini_curve,
    qini_auc_score,
    qini_curve,
    uplift_at_k,
)

sklift = pytest.importorskip("sklift.metrics")


def _random_case(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    t = rng.integers(0, 2, n)
    u = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
    return y, u, t


@pytest.fixture(autouse=True)
def _quiet_sklift():
    # scikit-uplift 0.5.1 calls a helper scikit-learn 1.8 deprecated; the warning is not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_qini_matches_scikit_uplift(seed, ties):
    y, u, t = _random_case(seed, 500 + 37 * seed, ties)
    x_ours, v_ours = qini_curve(y, u, t)
    x_ref, v_ref = sklift.qini_curve(y, u, t)
    np.testing.assert_allclose(x_ours, x_ref)
    np.testing.assert_allclose(v_ours, v_ref)
    np.testing.assert_allclose(perfect_qini_curve(y, t), sklift.perfect_qini_curve(y, t))
    assert qini_auc_score(y, u, t) == pytest.approx(sklift.qini_auc_score(y, u, t), rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [0.1, 0.3, 0.55])
def test_uplift_at_k_matches_scikit_uplift_overall(seed, k):
    y, u, t = _random_case(seed, 400 + 11 * seed, ties=seed % 2 == 0)
    expected = sklift.uplift_at_k(y, u, t, strategy="overall", k=k)
    assert uplift_at_k(y, u, t, k=k) == pytest.approx(expected, rel=1e-12)


def test_qini_curve_by_hand():
    # Ranked: (t=1,y=1) (t=0,y=0) (t=1,y=0) (t=0,y=1)
    y, t, u = [1, 0, 0, 1], [1, 0, 1, 0], [0.9, 0.7, 0.5, 0.1]
    x, v = qini_curve(y, u, t)
    # k=1: 1 − 0·(1/0→0) = 1; k=2: 1 − 0·1 = 1; k=3: 1 − 0·2 = 1; k=4: 1 − 1·(2/2) = 0
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(v, [0, 1, 1, 1, 0])
    # This ranking is the perfect one: a Qini AUC of 1, and its reverse is worse than random.
    assert qini_auc_score(y, u, t) == pytest.approx(1.0)
    assert qini_auc_score(y, [-s for s in u], t) < 0


def test_uplift_at_k_by_hand_and_empty_group():
    y, t, u = [1, 0, 1, 0, 0, 1], [1, 0, 1, 0, 1, 0], [6, 5, 4, 3, 2, 1]
    # top int(6·0.5) = 3: treated {1, 1}, control {0} → 1.0
    assert uplift_at_k(y, u, t, k=0.5) == pytest.approx(1.0)
    # top 1 holds only a treated customer: no control rate to compare with
    assert math.isnan(uplift_at_k(y, u, t, k=0.2))
    with pytest.raises(ValueError, match="k must"):
        uplift_at_k(y, u, t, k=1.0)


def test_binary_inputs_are_checked():
    with pytest.raises(ValueError, match="y must be binary"):
        qini_auc_score([0, 2], [0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="lengths differ"):
        qini_auc_score([0, 1, 1], [0.1, 0.2], [0, 1])


def test_ate_is_welch_difference_in_means():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, 2_000)
    y = (rng.random(2_000) < np.where(t == 1, 0.3, 0.2)).astype(int)
    ate = average_treatment_effect(y, t)
    treated, control = y[t == 1], y[t == 0]
    assert ate.estimate == pytest.approx(treated.mean() - control.mean())
    welch = stats.ttest_ind(treated, control, equal_var=False)
    se = ate.estimate / welch.statistic  # the t statistic is the estimate over Welch's se
    assert ate.ci_high - ate.estimate == pytest.approx(1.959964 * se, rel=1e-5)
    assert ate.ci_low < ate.estimate < ate.ci_high
