"""Uplift per trigger from the execution log: the point-in-time join, the data set, the
guardrail, and (slow) the real engine's log through `nudge uplift train` and `report`."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from engine.errors import UserError
from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
from pipelines.uplift_train import (
    HELD_OUT,
    IN_SAMPLE,
    _churn_score,
    _report_rows,
    features_at,
    fitted_policy,
    model_name,
    train_trigger,
    trigger_experiment,
)


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_features_are_the_latest_snapshot_at_or_before_each_decision():
    rows = pd.DataFrame({
        ENTITY_KEY: ["a", "a", "b", "c"],
        TIMESTAMP_COLUMN: [_ts("2025-01-02 12:00"), _ts("2025-01-03"), _ts("2025-01-02"), _ts("2025-01-05")],
    })  # fmt: skip
    table = pd.DataFrame({
        ENTITY_KEY: ["a", "a", "a", "b", "c"],
        TIMESTAMP_COLUMN: [_ts("2025-01-01"), _ts("2025-01-02"), _ts("2025-01-03"), _ts("2025-01-03"), _ts("2025-01-01")],
        "recency_days": [1.0, 2.0, 3.0, 9.0, 5.0],
    })  # fmt: skip
    out = features_at(rows, {"churn": table})
    assert list(out[ENTITY_KEY]) == ["a", "a", "b", "c"], "the rows keep their order"
    # a at noon on the 2nd: the 2nd's snapshot, not the 3rd's (no look-ahead); at the 3rd: the
    # 3rd's (at or before); b before its only snapshot: nothing; c: its older snapshot.
    assert out["recency_days"].tolist()[:2] == [2.0, 3.0]
    assert np.isnan(out["recency_days"].iloc[2])
    assert out["recency_days"].iloc[3] == 5.0


def test_a_view_repeating_a_column_is_refused():
    rows = pd.DataFrame({ENTITY_KEY: ["a"], TIMESTAMP_COLUMN: [_ts("2025-01-02")]})
    table = pd.DataFrame({ENTITY_KEY: ["a"], TIMESTAMP_COLUMN: [_ts("2025-01-01")], "x": [1.0]})
    with pytest.raises(ValueError, match="repeats column"):
        features_at(rows, {"one": table, "two": table})


def _synthetic(n: int = 600, seed: int = 0, holdout: bool = True):
    rng = np.random.default_rng(seed)
    ids = [f"c{i:04d}" for i in range(n)]
    x = rng.normal(size=n)
    sent = rng.random(n) < 0.5
    converted = rng.random(n) < 0.2 + 0.2 * sent * (x > 0)
    exposures = pd.DataFrame({
        ENTITY_KEY: ids, "variant": np.where(sent, "d1h", "holdout" if holdout else "d4h"),
        "sent": sent, "converted": converted,
    })  # fmt: skip
    times = pd.DataFrame({
        ENTITY_KEY: ids, TIMESTAMP_COLUMN: _ts("2025-02-01"),
        "scores": [json.dumps({"churn": float(v)}) for v in rng.random(n)],
    })  # fmt: skip
    table = pd.DataFrame({ENTITY_KEY: ids, TIMESTAMP_COLUMN: _ts("2025-01-31"), "x": x})
    return exposures, times, {"churn": table}


def test_the_data_set_is_sent_against_held_out_with_features_and_churn_scores():
    exposures, times, tables = _synthetic()
    data = trigger_experiment(exposures, times, tables, "t")
    exp = data.experiment
    assert exp.features == ["x"]
    assert exp.treatment.sum() == exposures["variant"].ne("holdout").sum()
    assert exp.y.sum() == exposures["converted"].sum()
    assert data.churn is not None and data.churn.between(0, 1).all()
    np.testing.assert_allclose(exp.X["x"].to_numpy(), tables["churn"]["x"].to_numpy())


def test_no_holdout_or_no_decisions_is_one_clear_error():
    exposures, times, tables = _synthetic(holdout=False)
    with pytest.raises(UserError, match="no holdout"):
        trigger_experiment(exposures, times, tables, "t")
    with pytest.raises(UserError, match="no experiment decisions"):
        trigger_experiment(pd.DataFrame(), times, tables, "t")


def test_features_from_after_every_decision_are_refused():
    exposures, times, tables = _synthetic()
    tables["churn"][TIMESTAMP_COLUMN] = _ts("2025-03-01")
    with pytest.raises(UserError, match="no feature snapshot precedes"):
        trigger_experiment(exposures, times, tables, "t")


def test_too_few_conversions_refuse_training_before_any_model():
    exposures, times, tables = _synthetic()
    data = trigger_experiment(exposures, times, tables, "t")
    with pytest.raises(UserError, match="at least 10,000 of each are needed"):
        train_trigger(data, min_conversions=10_000)


def test_churn_scores_are_read_from_the_decisions_scores():
    assert _churn_score(json.dumps({"churn": 0.25, "ltv": 3})) == 0.25
    assert np.isnan(_churn_score(None)) and np.isnan(_churn_score(json.dumps({"ltv": 1})))
    assert model_name("cart_recovery") == "uplift_cart_recovery"


def test_the_training_policy_table_is_cross_fitted_not_flattering():
    """Mail that changes nothing: an overfit learner judged on the rows it learned finds
    incremental conversions in its top 30 %; judged cross-fitted, it finds about none."""
    from models.uplift.learners import TLearner

    exposures, times, tables = _synthetic(n=3_000, seed=4)
    exposures["converted"] = np.random.default_rng(9).random(len(exposures)) < 0.2
    data = trigger_experiment(exposures, times, tables, "t")
    exp = data.experiment
    greedy = TLearner(n_estimators=300, num_leaves=63, min_child_samples=5, learning_rate=0.1)
    rule = "uplift: top 30%"

    def value(table: pd.DataFrame) -> float:
        return float(table.set_index("policy").loc[rule, "per_1000_sends"])

    from models.uplift.policy import policy_table

    fitted = greedy.fit(exp.X, exp.treatment, exp.y)
    in_sample = policy_table(exp.y, exp.treatment, uplift=fitted.predict(exp.X))
    held_out = fitted_policy(data, greedy, folds=5)
    assert value(in_sample) > 100  # > 0.1 "incremental" conversions a send, all noise
    assert abs(value(held_out)) < 60 and value(held_out) < value(in_sample) - 80
    assert "churn score: top 30%" in set(held_out["policy"])


def test_the_report_judges_decisions_after_training_when_there_are_enough():
    exposures, times, tables = _synthetic(n=600, seed=2)
    times.loc[300:, TIMESTAMP_COLUMN] = _ts("2025-03-01")
    data = trigger_experiment(exposures, times, tables, "t")
    rows, judged = _report_rows(data, _ts("2025-02-15"))
    assert judged == HELD_OUT and rows.sum() == 300
    assert (pd.to_datetime(data.frame[TIMESTAMP_COLUMN])[rows] > _ts("2025-02-15")).all()
    for through in (None, _ts("2025-03-01")):  # nothing after the last decision
        rows, judged = _report_rows(data, through)
        assert judged == IN_SAMPLE and rows.all()
    few = times.copy()
    few.loc[:549, TIMESTAMP_COLUMN] = _ts("2025-02-01")  # 50 later decisions: < 100 per arm
    rows, judged = _report_rows(trigger_experiment(exposures, few, tables, "t"), _ts("2025-02-15"))
    assert judged == IN_SAMPLE and rows.all()


@pytest.fixture(scope="module")
def sample_log(tmp_path_factory):
    from pipelines.uplift_sample import sample_trigger_log

    home = tmp_path_factory.mktemp("uplift_home")
    return home, sample_trigger_log(home)


@pytest.mark.slow
def test_train_and_report_from_the_engines_log(sample_log, monkeypatch):
    from nudge.uplift_cli import uplift_app
    from pipelines.uplift_sample import SAMPLE_TRIGGER

    home, log = sample_log
    monkeypatch.setenv("NUDGE_HOME", str(home))
    monkeypatch.setenv("NUDGE_ENGINE_DB", log.engine_url)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("NUDGE_MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    refused = runner.invoke(uplift_app, ["train", SAMPLE_TRIGGER])  # the default 200 per arm
    assert refused.exit_code == 2 and "at least 200 of each are needed" in refused.output
    assert "Traceback" not in refused.output
    trained = runner.invoke(
        uplift_app, ["train", SAMPLE_TRIGGER, "--min-conversions", "10", "--splits", "2",
                     "--estimators", "30"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    name = model_name(SAMPLE_TRIGGER)
    assert f"{name} v1" in trained.output
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{home / 'mlflow.db'}")
    run = mlflow.get_run(mlflow.MlflowClient().get_model_version_by_alias(name, "champion").run_id)
    assert run.data.params["trigger"] == SAMPLE_TRIGGER
    assert any(k.endswith(".qini_auc") for k in run.data.metrics)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"policy_table.csv", "plots", "backtest.json"} <= artifacts
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    columns = model.metadata.get_input_schema().input_names()
    scored = model.predict(pd.DataFrame(np.zeros((3, len(columns))), columns=columns))
    assert len(scored["score"]) == 3 and scored["score"].between(-1, 1).all()

    # What `train` registered is servable: the scoring service's champions load it, read its
    # columns from the standard views, probe it on the feature tables, explain it.
    from serving.champions import Champions, population_from_tables
    from serving.settings import ServingSettings

    serving = ServingSettings(home=home, api_key="k-0123456789",
                              mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")  # fmt: skip
    champion = Champions(serving, population=population_from_tables(serving)).load(name, "1")
    assert [r.split(":", 1)[1] for r in champion.refs] == list(columns)
    assert -1.0 < champion.prior < 1.0
    matrix = champion.model.matrix(pd.DataFrame(np.zeros((2, len(columns))), columns=columns))
    assert champion.contributions(matrix).shape == (2, len(columns) + 1)

    reported = runner.invoke(uplift_app, ["report", SAMPLE_TRIGGER, "--json"])
    assert reported.exit_code == 0, reported.output
    body = json.loads(reported.output)
    policies = {p["policy"]: p for p in body["policies"]}
    assert policies["send to all"]["share_sent"] == 1.0
    assert {"uplift: top 30%", "uplift > 0"} <= set(policies)
    # Send-to-all by inverse propensity is the holdout contrast of the optimizer's exposures
    # (conversion within NUDGE_ATTRIBUTION_HOURS, default 72 h): the log was read as it sees it.
    from engine.store import EngineDB
    from engine.store.exposures import load_exposures

    store = EngineDB.open(log.engine_url)
    exposures = store.read(load_exposures, SAMPLE_TRIGGER, attribution_window=72 * 3600)
    store.dispose()
    held = exposures["variant"].eq("holdout")
    contrast = exposures.loc[~held, "converted"].mean() - exposures.loc[held, "converted"].mean()
    assert policies["send to all"]["per_1000_sends"] == pytest.approx(1000 * contrast)
    assert body["model"] == name and body["version"] == "1"
    # Every decision of the log precedes the training: judged in-sample, and said so.
    assert body["evaluated_on"] == "the training log (in-sample)" and body["rows"] == len(exposures)
    text = runner.invoke(uplift_app, ["report", SAMPLE_TRIGGER])
    assert text.exit_code == 0 and "send to all" in text.output and "uplift > 0" in text.output
    missing = runner.invoke(uplift_app, ["report", "no_such_trigger"])
    assert missing.exit_code == 2 and "no experiment decisions" in missing.output
