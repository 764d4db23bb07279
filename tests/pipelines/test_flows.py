"""The flows for real: Prefect (test harness), Feast (embedded store), MLflow (SQLite registry)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from features.schema import MODEL_NAMES, VIEW_NAMES
from models.specs import BASELINES

TIMESTAMP = "event_timestamp"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


def test_build_features_writes_applies_and_materializes_the_latest_snapshot(built, pipeline_home):
    from features.store import online_features, open_store

    assert len(built["snapshots"]) == 12 and built["views"] == sorted(VIEW_NAMES)
    assert built["materialized"] == 1 and built["models_without_data"] == {}
    for view in VIEW_NAMES:
        assert (pipeline_home / "features" / f"{view}.parquet").exists()
    latest = pd.Timestamp(built["snapshots"][-1])
    online = online_features(open_store(pipeline_home), "churn", ["c0000001", "c0000002"])
    assert (online["event_timestamp"] == latest).all() and len(online) >= 1


def test_train_registers_every_model_as_first_champion(trained, tracking_uri):
    import mlflow

    assert sorted(trained) == sorted(MODEL_NAMES)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri, registry_uri=tracking_uri)
    for name, run in trained.items():
        assert run["version"] == "1" and run["champion"], run["reason"]
        assert list(run["metrics"]) == ["model", *BASELINES[name]]
        for alias in ("challenger", "champion"):
            assert str(client.get_model_version_by_alias(name, alias).version) == "1"
        logged = client.get_run(run["run_id"])
        tags, params = logged.data.tags, logged.data.params
        assert tags["feature_service"] == name and tags["git_commit"] != ""
        assert "→" in tags["data_range"]
        assert params["holdout_snapshot"] > params["train_snapshots"].split(",")[-1]
        assert len(params["train_snapshots"].split(",")) == run["train_snapshots"] >= 2
        assert "model.roc_auc" in logged.data.metrics or "model.normalised_gini" in (
            logged.data.metrics
        )
        artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
        assert {"model_card.md", "plots", "holdout_comparison.csv"} <= artifacts
        plots = {a.path for a in client.list_artifacts(run["run_id"], "plots")}
        assert "plots/importance.png" in plots and "plots/gain_lift.png" in plots
        assert ("plots/calibration.png" if name != "ltv" else "plots/ltv_deciles.png") in plots


def test_the_champion_scores_online_features_with_probabilities_and_reasons(
    trained, tracking_uri, pipeline_home
):
    import mlflow

    from features.store import online_features, open_store

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    # The signature holds the training dtypes; online rows must pass its enforcement as they are.
    online = online_features(
        open_store(pipeline_home), "churn", [f"c{i:07d}" for i in range(1, 40)]
    )
    features = online.drop(columns=["customer_id", "event_timestamp"])
    scores = model.predict(features)
    assert list(scores.columns) == ["score"] and len(scores) == len(online)
    assert ((scores["score"] > 0) & (scores["score"] < 1)).all()
    wrapper = model.unwrap_python_model()
    contributions = wrapper.contributions(features)
    raw = wrapper.estimator.raw_score(features)
    assert np.allclose(contributions.sum(axis=1), raw)
    engagement = mlflow.pyfunc.load_model("models:/engagement@champion")
    hours = engagement.predict(
        online_features(open_store(pipeline_home), "engagement", online["customer_id"]).drop(
            columns=["customer_id", "event_timestamp"]
        )
    )["best_send_hour"]
    assert hours.between(0, 23).all()


def test_a_weaker_challenger_does_not_take_champion(trained, pipeline_home, tmp_path):
    from pipelines.flows.train import train

    # A copy of the registry: this test's versions stay out of the session's store.
    shutil.copy(pipeline_home / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    again = train(home=str(pipeline_home), models=["churn"], tracking_uri=uri, max_rounds=1)
    run = again["churn"]
    assert run["version"] == "2" and not run["champion"]
    # One boosting round loses to the champion, or already to a baseline (the gate's first test).
    assert run["reason"].startswith(("champion v1 kept", "not champion")), run["reason"]

    import mlflow

    client = mlflow.MlflowClient(uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("churn", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("churn", "challenger").version) == "2"


def test_task_logic_runs_without_a_flow(built, pipeline_home):
    from pipelines.flows.train import fit_model, load_training_sets

    problems, data, skipped = load_training_sets.fn(str(pipeline_home), ["engagement"], 2)
    assert skipped == {}
    problem = problems["engagement"]
    assert problem.train["event_timestamp"].nunique() == 2
    assert problem.holdout["event_timestamp"].nunique() == 1
    assert problem.holdout["event_timestamp"].iloc[0] > problem.train["event_timestamp"].max()
    assert data.first < data.last
    result = fit_model.fn(problem, max_rounds=30)
    assert result.extra["fitted_on_pid"] == os.getpid()
    assert result.metrics["model"]["roc_auc"] > 0.5


def test_a_lake_larger_than_the_training_limit_is_sampled_by_customer(built, pipeline_home):
    from engine.lake import CustomerSlice, EventLake
    from pipelines.flows.train import load_training_sets, training_sample

    lake = EventLake(pipeline_home / "lake")
    assert training_sample(lake, max_customers=100_000) is None
    sample = training_sample(lake, max_customers=400)
    assert sample is not None and sample.fraction == pytest.approx(
        400 / lake.customer_count(), 0.01
    )
    problems, _, _ = load_training_sets.fn(str(pipeline_home), ["churn"], 2, max_customers=400)
    everyone, _, _ = load_training_sets.fn(str(pipeline_home), ["churn"], 2)
    churn, whole = problems["churn"], everyone["churn"]
    learnt = set(churn.train["customer_id"]) | set(churn.holdout["customer_id"])
    assert CustomerSlice.sample(sample.fraction).mask(sorted(learnt)).all()
    assert 250 < len(learnt) < 550 < len(set(whole.train["customer_id"]))
    # Every row of a sampled customer is kept: the rows are the full set's, restricted.
    kept = whole.train[whole.train["customer_id"].isin(learnt)]
    assert len(churn.train) == len(kept)
    assert churn.holdout[TIMESTAMP].max() == whole.holdout[TIMESTAMP].max()


def test_fit_models_runs_its_tasks_on_a_dask_cluster(built, pipeline_home, prefect_harness):
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from pipelines.flows.train import fit_models, load_training_sets

    problems, _, _ = load_training_sets.fn(str(pipeline_home), ["churn", "engagement"], 2)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        runner = fit_models.with_options(
            task_runner=DaskTaskRunner(address=cluster.scheduler_address)
        )
        results = runner(problems, max_rounds=30)
        worker_pids = {w.pid for w in cluster.workers.values() if hasattr(w, "pid")}
    pids = {r.extra["fitted_on_pid"] for r in results.values()}
    assert os.getpid() not in pids
    if worker_pids:
        assert pids <= worker_pids
    assert set(results) == {"churn", "engagement"}


def test_backtest_flow_reports_models_and_baselines(pipeline_home, prefect_harness, tmp_path):
    from pipelines.flows.backtest import backtest

    payload = backtest(
        cutoff="2025-09-30",
        horizon_days=60,
        home=str(pipeline_home),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    # Every definition, each on the given horizon.
    assert set(payload) == {"churn", "ltv", "engagement", "customers"}
    assert {payload[m]["horizon_days"] for m in ("churn", "ltv", "engagement")} == {60}
    assert set(payload["engagement"]["baselines"]) == {"open_rate"}
    assert set(payload["churn"]["baselines"]) == {"bgnbd", "rfm_logistic"}
    assert set(payload["ltv"]["baselines"]) == {"bgnbd_gg", "historical_average"}
    assert set(payload["churn"]["model"]) == {"roc_auc", "log_loss"}
    assert set(payload["ltv"]["model"]) == {"mae", "rmse", "spearman"}
    assert payload["customers"] > 900
    assert payload["churn"]["model"]["roc_auc"] > 0.7
