"""engine.optimizer.experiment.analyse_experiment: every analysis of one experiment, the same
numbers as each analysis on its own."""

from __future__ import annotations

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from engine.optimizer.analyses import (
    ExposureError,
    analyse_experiment,
    funnel,
    holdout_incrementality,
    recommend,
    segmentation,
    timing,
)
from engine.optimizer.labels import HOLDOUT
from tests.engine.optimizer.test_analyses import simulate_exposures

SMALL = {"bargain_hunter": 2_000, "loyal": 2_000}


@pytest.fixture(scope="module")
def exposures() -> pd.DataFrame:
    return simulate_exposures(seed=7, customers=SMALL)


def test_one_analysis_holds_every_analysis_with_the_same_options(exposures):
    result = analyse_experiment(exposures, min_users_per_arm=300, alpha=0.1, correction="bh")
    assert result.exposures == len(exposures)
    assert_frame_equal(result.funnel, funnel(exposures))
    assert_frame_equal(result.timing, timing(exposures, alpha=0.1, correction="bh"))
    alone = segmentation(exposures, alpha=0.1, correction="bh")
    assert_frame_equal(result.segmentation.table, alone.table)
    assert_frame_equal(result.segmentation.heterogeneity, alone.heterogeneity)
    assert_frame_equal(result.segmentation.best, alone.best)
    assert result.holdout is not None
    assert_frame_equal(
        result.holdout, holdout_incrementality(exposures, alpha=0.1, correction="bh")
    )
    assert result.recommendations == recommend(
        exposures, min_users_per_arm=300, alpha=0.1, correction="bh"
    )
    assert {r.segment for r in result.recommendations} == set(SMALL)


def test_without_a_holdout_there_is_no_incrementality(exposures):
    result = analyse_experiment(exposures[exposures["variant"] != HOLDOUT])
    assert result.holdout is None
    assert all(r.variant is None for r in result.recommendations)  # 1,000 users per arm needed


def test_a_broken_frame_or_option_is_refused(exposures):
    with pytest.raises(ExposureError, match="lack column"):
        analyse_experiment(exposures.drop(columns=["sent"]))
    with pytest.raises(ValueError, match="alpha"):
        analyse_experiment(exposures, alpha=2.0)
