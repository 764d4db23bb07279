"""`nudge pipeline ...`, `nudge backtest` and `nudge mlflow ui`: clear errors, the backtest on the
real CDNOW sample, and deployments on a real `prefect server start`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from nudge.cli import app
from nudge.local_server import free_port, wait_until_ready

runner = CliRunner()


@pytest.fixture(scope="module")
def cdnow_home(tmp_path_factory: pytest.TempPathFactory, cdnow_sample: Path) -> Path:
    """A $NUDGE_HOME whose lake holds the real CDNOW sample."""
    from engine.lake import EventLake
    from pipelines.ingest import PRESETS, import_events

    home = tmp_path_factory.mktemp("cdnow_home")
    preset = PRESETS["cdnow"]
    import_events(
        EventLake(home / "lake"),
        cdnow_sample,
        preset.column_map,
        timezone=preset.timezone,
        timestamp_format=preset.timestamp_format,
        rejects_dir=home / "rejects",
        preset=preset,
    )
    return home


def _nudge(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300):
    environ = {**os.environ, "NUDGE_HOME": str(home), **(env or {})}
    environ.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "nudge.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["pipeline", "features"],
        ["pipeline", "train"],
        ["pipeline", "deploy"],
        ["backtest"],
        ["mlflow", "ui"],
    ],
)
def test_every_pipeline_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["pipeline", "features"],
        ["pipeline", "train"],
        ["backtest", "--cutoff", "2025-06-30", "--horizon-days", "30"],
    ],
)
def test_an_empty_lake_is_one_line_and_exit_2(nudge_home, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "event lake" in result.output and "empty" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1e400"])
@pytest.mark.parametrize("args", [["pipeline", "train"], ["pipeline", "features"]])
def test_an_invalid_setting_is_one_line_naming_it_and_exit_2(nudge_home, monkeypatch, args, value):
    monkeypatch.setenv("NUDGE_TRAIN_MAX_CUSTOMERS", value)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "NUDGE_TRAIN_MAX_CUSTOMERS" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("cutoff", "horizon", "message"),
    [
        ("1996-06-30", "30", "outside the data"),
        ("1999-01-01", "30", "outside the data"),
        ("1998-03-31", "181", "horizon too long"),
        ("1997-02-15", "30", "horizon too long for the history"),
        ("31/12/1997", "30", "not an ISO date"),
    ],
)
def test_backtest_mistakes_are_one_line_and_exit_2(
    cdnow_home, monkeypatch, cutoff, horizon, message
):
    monkeypatch.setenv("NUDGE_HOME", str(cdnow_home))
    result = runner.invoke(app, ["backtest", "--cutoff", cutoff, "--horizon-days", horizon])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_deploy_without_a_server_says_how_to_start_one(nudge_home, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(app, ["pipeline", "deploy"])
    assert result.exit_code == 2 and "prefect server start" in result.output


def test_unknown_models_are_refused(nudge_home):
    result = runner.invoke(app, ["pipeline", "train", "--models", "churn,upsell"])
    assert result.exit_code == 2 and "upsell" in result.output


@pytest.mark.slow
def test_backtest_on_cdnow_prints_models_and_baselines_as_json(cdnow_home):
    done = _nudge(
        cdnow_home, "backtest", "--cutoff", "1997-12-31", "--horizon-days", "181", "--json"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)
    # Every definition; engagement reads email events CDNOW does not have: skipped, saying why.
    assert set(payload) == {"churn", "ltv", "customers", "skipped"}
    assert "unknown event 'email_opened'" in payload["skipped"]["engagement"]
    assert payload["customers"] == 2_357
    churn, ltv = payload["churn"], payload["ltv"]
    assert set(churn["model"]) == {"roc_auc", "log_loss"}
    assert set(churn["baselines"]) == {"bgnbd", "rfm_logistic"}
    assert set(ltv["model"]) == {"mae", "rmse", "spearman"}
    assert set(ltv["baselines"]) == {"bgnbd_gg", "historical_average"}
    print(f"\nCDNOW backtest 1997-12-31 + 181 d: {json.dumps(payload, indent=1)}")
    # The quality bar on real data: the churn model beats every baseline in the same run.
    for baseline in ("bgnbd", "rfm_logistic"):
        assert churn["model"]["roc_auc"] > churn["baselines"][baseline]["roc_auc"]
    assert churn["model"]["log_loss"] < churn["baselines"]["rfm_logistic"]["log_loss"]
    assert ltv["model"]["spearman"] > ltv["baselines"]["historical_average"]["spearman"]
    # Issue 17 item 7: the LTV model beats BG/NBD x Gamma-Gamma on RMSE and rank correlation.
    assert ltv["model"]["rmse"] < ltv["baselines"]["bgnbd_gg"]["rmse"]
    assert ltv["model"]["spearman"] > ltv["baselines"]["bgnbd_gg"]["spearman"]
    assert (cdnow_home / "mlflow.db").exists()  # logged to the store under NUDGE_HOME


@pytest.mark.slow
def test_backtest_of_one_model_on_its_own_horizon(cdnow_home, monkeypatch):
    done = _nudge(cdnow_home, "backtest", "--model", "ltv", "--cutoff", "1997-09-30", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(done.stdout)
    assert set(payload) == {"ltv", "customers"} and payload["ltv"]["horizon_days"] == 90
    assert set(payload["ltv"]["model"]) == {"mae", "rmse", "spearman"}
    monkeypatch.setenv("NUDGE_HOME", str(cdnow_home))
    unknown = runner.invoke(app, ["backtest", "--model", "upsel", "--cutoff", "1997-09-30"])
    assert unknown.exit_code == 2 and "unknown model 'upsel'" in unknown.output


@pytest.mark.slow
def test_deploy_registers_scheduled_deployments_on_a_real_server(tmp_path):
    port = free_port()
    server_env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "server_home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_ready(f"{api}/health", server, 90, "prefect server")
        done = _nudge(
            tmp_path / "home",
            "pipeline",
            "deploy",
            "--features-cron",
            "*/5 * * * *",
            env={"PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client_home")},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "build-features/nudge-features" in done.stdout and "train/nudge-train" in done.stdout
        assert "optimize/nudge-optimize" in done.stdout
        deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
        by_name = {d["name"]: d for d in deployments}
        assert set(by_name) == {"nudge-features", "nudge-train", "nudge-optimize",
                                "nudge-score-batch"}  # fmt: skip
        crons = {n: [s["schedule"]["cron"] for s in d["schedules"]] for n, d in by_name.items()}
        assert crons == {"nudge-features": ["*/5 * * * *"], "nudge-train": ["0 3 * * 1"],
                         "nudge-optimize": ["0 4 * * *"], "nudge-score-batch": ["0 5 * * *"]}  # fmt: skip
        assert (
            by_name["nudge-score-batch"]["parameters"] == {}
        )  # it reads the settings where it runs
        params = by_name["nudge-train"]["parameters"]
        assert params["home"] == str((tmp_path / "home").resolve())
        # The daily review logs to the MLflow store of the settings; the engine database's URL
        # (it may hold a password) is not stored on the server: the flow reads NUDGE_ENGINE_DB.
        review = by_name["nudge-optimize"]["parameters"]
        home = (tmp_path / "home").resolve()
        assert review == {"home": str(home), "tracking_uri": f"sqlite:///{home}/mlflow.db",
                          "window_hours": 72.0, "days": 30}  # fmt: skip
        # The real server's scheduler turns the schedules into scheduled flow runs.
        deadline = time.monotonic() + 30
        runs: list[dict] = []
        while time.monotonic() < deadline and not runs:
            runs = httpx.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}},
            ).json()
            time.sleep(1)
        assert {r["deployment_id"] for r in runs} >= {by_name["nudge-features"]["id"]}
        deadline = time.monotonic() + 30
        daily: list[dict] = []
        while time.monotonic() < deadline and not daily:
            daily = httpx.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"deployment_id": {"any_": [by_name["nudge-optimize"]["id"]]}}},
            ).json()
            time.sleep(1)
        assert daily and {r["state"]["type"] for r in daily} == {"SCHEDULED"}
        assert all(r["expected_start_time"][11:16] == "04:00" for r in daily), "daily at 04:00"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_ui_serves_the_store_under_nudge_home(tmp_path):
    import signal

    port = free_port()
    environ = {**os.environ, "NUDGE_HOME": str(tmp_path / "home")}
    environ.pop("MLFLOW_TRACKING_URI", None)
    ui = subprocess.Popen(
        [sys.executable, "-m", "nudge.cli", "mlflow", "ui", "--port", str(port)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the server's workers stop with it
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health", ui, 90, "nudge mlflow ui")
        experiments = httpx.get(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            params={"max_results": 10},
        ).json()
        assert any(e["name"] == "Default" for e in experiments["experiments"])
        assert (tmp_path / "home" / "mlflow.db").exists()  # the store under NUDGE_HOME
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    printed = "".join(ui.stdout.read().split())  # rich wraps long lines
    assert f"sqlite:///{(tmp_path / 'home').resolve()}/mlflow.db" in printed


def test_train_before_features_says_what_to_run(cdnow_home, monkeypatch):
    monkeypatch.setenv("NUDGE_HOME", str(cdnow_home))
    result = runner.invoke(app, ["pipeline", "train"])
    assert result.exit_code == 2 and "nudge pipeline features" in result.output
