"""The optimize flow: every running experiment analysed from the log and reported in MLflow."""

from pathlib import Path

import pytest

from engine.dsl.triggers import TriggerIndex, load_trigger_dir
from pipelines.closed_loop import run_closed_loop
from pipelines.simulator import simulate
from pipelines.simulator.responder import Responder
from tests.pipelines.test_closed_loop import ROOT, engine_parts, window_events


@pytest.mark.slow
def test_optimize_logs_each_experiment_to_mlflow(tmp_path: Path, monkeypatch, prefect_harness):
    import mlflow

    from pipelines.flows.optimize import optimize

    home = tmp_path / "home"
    monkeypatch.setenv("NUDGE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sim = simulate(1_500, 67, seed=9)
    sim.customers = sim.customers.assign(segment=sim.truth["segment"].to_numpy())
    index = TriggerIndex(load_trigger_dir(ROOT / "engine" / "examples").triggers)
    store, processor, dispatcher = engine_parts(tmp_path, sim, index)
    run_closed_loop(
        store, processor, dispatcher, Responder(sim.truth, sim.planted, 9), window_events(sim, 53)
    )

    outcome = optimize(
        home=str(home),
        engine_url=f"sqlite:///{tmp_path / 'engine.db'}",
        segment_by="segment",
        min_users=50,
    )
    [summary] = outcome["experiments"]
    assert summary["trigger_id"] == "cart_recovery" and summary["exposures"] > 0
    assert {r["segment"] for r in summary["recommendations"]} <= set(sim.truth["segment"])
    assert all(
        r["variant"] is None or r["reason"] == "recommended" for r in summary["recommendations"]
    )

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name("experiments/cart_recovery")
    run = mlflow.get_run(summary["run_id"])
    assert (
        run.info.experiment_id == experiment.experiment_id
        and run.data.metrics["exposures"] == summary["exposures"]
    )
    artifacts = {
        a.path
        for folder in ("tables", "plots")
        for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path=folder)
    }
    assert {
        "tables/funnel.csv",
        "tables/timing.csv",
        "tables/recommendations.csv",
        "plots/funnel.png",
    } <= artifacts
    assert any(tag.startswith("recommendation.") for tag in run.data.tags)
    # Readable runs, the operator's figures as metrics, MLflow's model-development mode.
    assert (
        run.info.run_name.startswith("cart_recovery ")
        and "customers assigned" in run.data.tags["mlflow.note.content"]
    )
    metrics = run.data.metrics
    assert metrics["arm.holdout.users"] > 0 and "arm.d1h.conversions" in metrics
    assert "arm.d4h.revenue" in metrics
    assert {"holdout.conversion.all_sends.lift", "holdout.conversion.all_sends.lift_ci_low",
            "holdout.conversion.all_sends.p_corrected", "holdout.revenue.all_sends.incremental"} <= set(metrics)  # fmt: skip
    assert any(k.startswith("timing.conversion.") and k.endswith(".p_value") for k in metrics)
    client = mlflow.MlflowClient()
    for name in ("experiments/cart_recovery", "nudge-triggers"):
        assert (
            client.get_experiment_by_name(name).tags["mlflow.experimentKind"]
            == "custom_model_development"
        )

    # Every trigger's daily performance: a run per trigger, a step per day, the HTML report.
    runs = outcome["trigger_runs"]
    assert {"cart_recovery", "welcome_series"} <= set(runs)
    cart = client.get_run(runs["cart_recovery"])
    assert cart.info.run_name == "trigger cart_recovery"
    fired = client.get_metric_history(cart.info.run_id, "fired")
    steps = [m.step for m in fired]
    assert len(steps) >= 10 and len(set(steps)) == len(steps) and steps == sorted(steps)
    assert sum(m.value for m in fired) > 0
    assert {
        "sent",
        "delivered",
        "opened",
        "converted",
        "revenue",
        "holdout.conversion.incremental",
    } <= set(cart.data.metrics)
    page = mlflow.artifacts.load_text(f"runs:/{cart.info.run_id}/report.html")
    assert "<h1>Trigger cart_recovery</h1>" in page and "data:image/png;base64," in page
    assert "Incrementality over the holdout" in page

    # A second review adds no day twice.
    optimize(home=str(home), engine_url=f"sqlite:///{tmp_path / 'engine.db'}", min_users=50)
    again = [m.step for m in client.get_metric_history(cart.info.run_id, "fired")]
    assert again == steps


@pytest.mark.slow
def test_the_experiment_review_notebook_shows_funnel_timing_and_segments(
    tmp_path: Path, monkeypatch, prefect_harness
):
    import nbformat
    from nbclient import NotebookClient

    from pipelines.flows.optimize import optimize

    home = tmp_path / "home"
    monkeypatch.setenv("NUDGE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sim = simulate(1_500, 67, seed=9)
    sim.customers = sim.customers.assign(segment=sim.truth["segment"].to_numpy())
    index = TriggerIndex(load_trigger_dir(ROOT / "engine" / "examples").triggers)
    store, processor, dispatcher = engine_parts(tmp_path, sim, index)
    run_closed_loop(
        store, processor, dispatcher, Responder(sim.truth, sim.planted, 9), window_events(sim, 53)
    )
    optimize(
        home=str(home),
        engine_url=f"sqlite:///{tmp_path / 'engine.db'}",
        segment_by="segment",
        min_users=50,
    )

    notebook = nbformat.read(ROOT / "notebooks" / "experiment_review.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", ""))
        + str(o.get("data", {}).get("text/plain", ""))
        + str(o.get("data", {}).get("text/markdown", ""))
        for o in outputs
    )
    assert "cart_recovery" in text and "triggered" in text and "d24h" in text
    assert any(segment in text for segment in ("bargain_hunter", "loyal", "browser", "at_risk"))
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 2


@pytest.mark.slow
def test_optimize_uses_the_engine_log_and_mlflow_store_of_the_settings(
    tmp_path: Path, monkeypatch, prefect_harness
):
    """Called without paths, the flow reads NUDGE_ENGINE_DB and logs to NUDGE_MLFLOW_TRACKING_URI
    (the stores of the engine and of training), not to files of its own under NUDGE_HOME."""
    from mlflow import MlflowClient

    from pipelines.flows.optimize import optimize

    home = tmp_path / "home"
    models_store = f"sqlite:///{tmp_path / 'models' / 'mlflow.db'}"
    monkeypatch.setenv("NUDGE_HOME", str(home))
    monkeypatch.setenv("NUDGE_ENGINE_DB", f"sqlite:///{tmp_path / 'engine.db'}")
    monkeypatch.setenv("NUDGE_MLFLOW_TRACKING_URI", models_store)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sim = simulate(600, 67, seed=9)
    sim.customers = sim.customers.assign(segment=sim.truth["segment"].to_numpy())
    index = TriggerIndex(load_trigger_dir(ROOT / "engine" / "examples").triggers)
    store, processor, dispatcher = engine_parts(tmp_path, sim, index)  # writes tmp_path/engine.db
    run_closed_loop(
        store, processor, dispatcher, Responder(sim.truth, sim.planted, 9), window_events(sim, 53)
    )

    [summary] = optimize(segment_by="segment", min_users=50)["experiments"]
    assert summary["trigger_id"] == "cart_recovery" and summary["exposures"] > 0

    client = MlflowClient(models_store, registry_uri=models_store)
    run = client.get_run(summary["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "experiments/cart_recovery"
    assert not (home / "mlflow.db").exists() and not (home / "engine.db").exists()
