"""`nudge pipeline deploy` retrains each model on its definition's cadence."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from models.definitions import DEFAULT_DIR, load_definitions


def _model(folder: Path, name: str, retrain: str | None) -> None:
    text = f"name: {name}\ntask: classification\nlabel: {{event: refund, horizon: 30d}}\n"
    (folder / f"{name}.yaml").write_text(text + (f"retrain: {retrain}\n" if retrain else ""))


def test_one_train_deployment_per_cadence(tmp_path: Path):
    from pipelines.flows.deploy import Schedules, train_deployments

    _model(tmp_path, "a", None)
    _model(tmp_path, "b", "weekly")
    _model(tmp_path, "c", "14d")
    _model(tmp_path, "d", "30 1 * * *")
    made = train_deployments("/h", Schedules(train_cron="0 5 * * 2"), {"n_train": 4},
                             load_definitions(tmp_path))  # fmt: skip
    by_name = {d.name: d for d in made}
    assert set(by_name) == {"nudge-train", "nudge-train-14d", "nudge-train-30-1"}
    weekly = by_name["nudge-train"]
    assert weekly.parameters == {"home": "/h", "n_train": 4, "models": ["a", "b"]}
    assert weekly.schedules[0].schedule.cron == "0 5 * * 2"  # NUDGE_TRAIN_CRON for weekly ones
    assert by_name["nudge-train-14d"].schedules[0].schedule.interval == timedelta(days=14)
    assert by_name["nudge-train-30-1"].schedules[0].schedule.cron == "30 1 * * *"
    assert by_name["nudge-train-14d"].parameters["models"] == ["c"]


def test_the_shipped_models_share_one_weekly_deployment_that_trains_them_all():
    from pipelines.flows.deploy import Schedules, train_deployments

    (only,) = train_deployments("/h", Schedules(), {}, load_definitions(DEFAULT_DIR))
    assert only.name == "nudge-train" and "models" not in only.parameters
