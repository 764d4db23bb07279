"""The backtest: input checks with one clear error each, encoding, and a choice that never looks
at the test parts."""

import math
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedShuffleSplit

from engine.errors import UserError
from models.uplift.backtest import (
    MIN_ROWS_PER_ARM,
    TEST_SIZE,
    prepare_experiment,
    run_backtest,
)
from models.uplift.learners import RandomUplift, TLearner


def experiment_frame(n: int = 1_200, seed: int = 0) -> pd.DataFrame:
    """Three arms as text (as a CSV reads them), a planted effect on `tenure`, a text feature."""
    rng = np.random.default_rng(seed)
    arm = rng.choice(["No E-Mail", "Womens E-Mail", "Mens E-Mail"], n)
    tenure = rng.normal(size=n)
    channel = rng.choice(["web", "phone", None], n, p=[0.5, 0.4, 0.1])
    sent = arm == "Womens E-Mail"
    p = 0.2 + np.where(sent, np.where(tenure > 0, 0.35, -0.1), 0.0)
    visit = (rng.random(n) < p).astype(int)
    return pd.DataFrame({"segment": arm, "tenure": tenure.astype(str), "channel": channel,
                         "visit": visit.astype(str), "spend": visit * 10.5})  # fmt: skip


def prepared(frame=None, **overrides):
    options = {"treatment_column": "segment", "control": "No E-Mail",
               "treatment": "Womens E-Mail", "outcome": "visit",
               "features": ["tenure", "channel"]}  # fmt: skip
    options.update(overrides)
    return prepare_experiment(experiment_frame() if frame is None else frame, **options)


def test_prepare_keeps_two_arms_and_encodes_text():
    frame = experiment_frame()
    exp = prepared(frame)
    kept = frame["segment"].isin(["No E-Mail", "Womens E-Mail"])
    assert len(exp.y) == kept.sum()
    assert exp.treatment.sum() == (frame["segment"] == "Womens E-Mail").sum()
    assert list(exp.X.columns) == ["tenure", "channel=phone", "channel=web"]
    assert exp.X["tenure"].dtype == float  # numbers read as text become numbers again
    assert exp.encoded == {"channel": "one-hot, 2 values"}
    assert exp.X.loc[frame.loc[kept, "channel"].isna().to_numpy(), "channel=web"].isna().all()


def test_default_features_are_all_but_treatment_and_outcome():
    exp = prepared(features=None)
    assert exp.features == ["tenure", "channel", "spend"]


def test_numeric_arm_values_match_as_numbers():
    frame = experiment_frame()
    frame["flag"] = np.where(frame["segment"] == "Womens E-Mail", 1.0, 0.0)
    exp = prepared(frame, treatment_column="flag", control="0", treatment="1")
    assert exp.treatment.sum() == (frame["flag"] == 1.0).sum()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"treatment_column": "arm"},
            "--treatment-column 'arm': no such column; the file has: segment",
        ),
        ({"outcome": "bought"}, "--outcome 'bought': no such column"),
        ({"features": ["tenure", "age"]}, "--features 'age': no such column"),
        ({"features": ["visit"]}, "--features 'visit': the treatment or outcome"),
        (
            {"control": "No Mail"},
            "--control 'No Mail': no row has segment = 'No Mail'; its values: ",
        ),
        ({"treatment": "Kids"}, "--treatment 'Kids': no row has segment"),
        ({"treatment": "No E-Mail"}, "name the same value"),
        (
            {"outcome": "spend", "features": ["tenure"]},
            "--outcome 'spend': expected a binary outcome",
        ),
    ],
)
def test_mistakes_are_one_line_user_errors(overrides, message):
    with pytest.raises(UserError) as caught:
        prepared(**overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_outcomes_and_small_arms_are_refused():
    frame = experiment_frame()
    frame.loc[3, "visit"] = None
    with pytest.raises(UserError, match="1 rows have no value"):
        prepared(frame)
    small = experiment_frame(n=3 * MIN_ROWS_PER_ARM - 60)
    with pytest.raises(UserError, match=r"too few rows: \d+ with segment = '.*'; .* at least 100"):
        prepared(small)
    few_visits = experiment_frame()
    few_visits.loc[few_visits["segment"] == "No E-Mail", "visit"] = "0"
    with pytest.raises(UserError, match="visit = 1; the backtest needs at least 10"):
        prepared(few_visits)


def test_boolean_and_text_outcomes():
    frame = experiment_frame()
    frame["visit"] = frame["visit"].map({"1": "True", "0": "false"})
    assert (
        prepared(frame).y.sum()
        == (frame.loc[frame["segment"] != "Mens E-Mail", "visit"] == "True").sum()
    )


class Spy(TLearner):
    """A T-learner that records which rows it learned from and which it scored."""

    log: ClassVar[list[tuple[str, frozenset[int]]]] = []

    def fit(self, X, treatment, y):
        Spy.log.append(("fit", frozenset(X.index)))
        return super().fit(X, treatment, y)

    def predict(self, X):
        Spy.log.append(("predict", frozenset(X.index)))
        return super().predict(X)


def test_the_choice_never_sees_the_test_parts():
    exp = prepared()
    Spy.log = []
    run = run_backtest(exp, splits=2, seed=7, inner_folds=3,
                       candidates={"random": RandomUplift(), "spy": Spy(n_estimators=5)})  # fmt: skip
    outer = StratifiedShuffleSplit(n_splits=2, test_size=TEST_SIZE, random_state=7)
    tests = [frozenset(test) for _, test in outer.split(exp.X, 2 * exp.treatment + exp.y)]
    assert (
        len(Spy.log) == 2 * (3 + 1) * 2
    )  # per split: 3 inner folds and the final fit, fit+predict
    for number, test in enumerate(tests):
        calls = Spy.log[number * 8 : (number + 1) * 8]
        *inner, (_, final_fit), (_, final_predict) = calls
        for _, rows in inner:  # choosing: only rows of this split's training part
            assert not rows & test
        assert not final_fit & test
        assert final_predict == test
    report = run.report
    assert report.chosen == max(report.models, key=lambda n: report.models[n].cv_qini_auc)


def test_report_figures():
    exp = prepared()
    run = run_backtest(exp, splits=3, seed=1, n_estimators=20)
    report = run.report
    assert list(report.models) == ["random", "response", "t_learner", "x_learner", "dr_learner",
                                   "class_transformation"]  # fmt: skip
    treated, control = exp.y[exp.treatment == 1], exp.y[exp.treatment == 0]
    assert report.ate.estimate == pytest.approx(treated.mean() - control.mean())
    assert report.ate.ci_low < report.ate.estimate < report.ate.ci_high
    for scores in report.models.values():
        assert scores.qini_auc.std is not None and scores.qini_auc.std >= 0
    # The planted effect: the T-learner finds it, the random score does not.
    assert report.models["t_learner"].qini_auc.mean > report.models["random"].qini_auc.mean + 0.1
    assert len(run.curves["t_learner"]) == 3
    x, y = run.curves["t_learner"][0]
    assert x[0] == 0 and x[-1] == pytest.approx(1.0) and y[0] == 0
    assert not any(math.isnan(v) for v in (report.ate.estimate, report.ate.ci_low))
    # The policy rules of the best uplift learner by inner CV; send to all is the ATE per send.
    assert report.policy_model not in ("random", "response")
    rules = {row.policy: row for row in report.policy}
    assert rules["send to all"].share_sent == 1.0
    assert rules["send to all"].incremental_per_1000_sends.mean == pytest.approx(
        1000 * report.ate.estimate, abs=40
    )
    best = rules[f"{report.policy_model}: top 30%"].incremental_per_1000_sends.mean
    assert best > rules["send to all"].incremental_per_1000_sends.mean + 50
    assert report.recommendation.target_by_uplift == (
        report.chosen not in ("random", "response")
        and report.models[report.chosen].qini_auc.mean > report.models["response"].qini_auc.mean
    )
