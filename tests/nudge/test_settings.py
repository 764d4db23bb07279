"""One settings module: every NUDGE_* variable in `nudge.settings`, a leaf, with one rule each
for the home and the MLflow store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from nudge.settings import (
    DEFAULT_HOME,
    ServingSettings,
    Settings,
    SharedSettings,
    home_dir,
    tracking_uri,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"bench", "engine", "features", "models", "nudge", "pipelines", "serving"}
CLASSES = (SharedSettings, Settings, ServingSettings)


@pytest.fixture
def clean_env(monkeypatch):
    """No NUDGE_* variable and no MLFLOW_TRACKING_URI from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("NUDGE_") or name == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(name)
    return monkeypatch


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(','.join(sorted(sys.modules)))"
    # Without PYTHONPATH: a test run's own additions there would load project modules.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    return set(done.stdout.strip().split(","))


@pytest.mark.parametrize(
    ("module", "allowed"), [("nudge.settings", set()), ("nudge.security", {"fastapi", "starlette"})]
)
def test_the_settings_and_security_modules_are_leaves(module, allowed):
    loaded = _loaded_after(f"import {module}")
    ours = {m for m in loaded if m.split(".")[0] in PROJECT}
    assert ours == {"nudge", module}
    heavy = {"fastapi", "starlette", "feast", "mlflow", "prefect", "lightgbm", "pandas"} - allowed
    assert not {m.split(".")[0] for m in loaded} & heavy


def test_every_field_is_described_and_every_variable_is_defined_once():
    for cls in CLASSES:
        for name, field in cls.model_fields.items():
            assert field.description and len(field.description) > 15, f"{cls.__name__}.{name}"
    shared = set(SharedSettings.model_fields)
    # The two groups share the base's fields and nothing else.
    assert set(Settings.model_fields) & set(ServingSettings.model_fields) == shared


READS = re.compile(
    r"""(environ\.get|getenv|environ\.setdefault)\(\s*["']NUDGE_|environ\[\s*["']NUDGE_\w*["']\s*\](?!\s*=[^=])"""
)


def test_no_module_reads_a_nudge_variable_from_the_environment_itself():
    readers = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in sorted(PROJECT)
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "nudge" / "settings.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if READS.search(line)
    ]
    assert readers == []


def test_the_home_has_one_default_made_absolute_everywhere(clean_env, tmp_path):
    from features.paths import nudge_home

    clean_env.chdir(tmp_path)
    expected = tmp_path / DEFAULT_HOME
    assert expected == tmp_path / ".nudge"
    assert home_dir() == nudge_home() == expected
    assert Settings().home_dir == ServingSettings().home_dir == expected
    assert Settings().lake_dir == expected / "lake"
    assert Settings().engine_url == f"sqlite:///{expected / 'engine.db'}"
    clean_env.setenv("NUDGE_HOME", "rel")
    assert home_dir() == Settings().home_dir == tmp_path / "rel"
    assert home_dir("/elsewhere") == Path("/elsewhere")


def test_the_mlflow_store_rule_is_the_same_for_everyone(clean_env, tmp_path):
    from pipelines.tracking import default_tracking_uri

    def everyone() -> set[str]:
        return {
            tracking_uri(),
            default_tracking_uri(),
            Settings().tracking_uri,
            ServingSettings().tracking_uri,
        }

    clean_env.setenv("NUDGE_HOME", str(tmp_path))
    assert everyone() == {f"sqlite:///{tmp_path}/mlflow.db"}
    assert tracking_uri(tmp_path / "other") == f"sqlite:///{tmp_path}/other/mlflow.db"
    clean_env.setenv("NUDGE_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert everyone() == {"http://mlflow.internal:5000"}
    assert tracking_uri(tmp_path / "other") == "http://mlflow.internal:5000"
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow.wins:5000")
    assert everyone() == {"http://mlflow.wins:5000"}


def test_the_feast_store_is_selected_once_for_the_scoring_service(clean_env):
    assert not SharedSettings().feast_production_selected
    assert ServingSettings().feast_production is False
    clean_env.setenv("NUDGE_FEAST_CONFIG", " Production ")
    assert SharedSettings().feast_production_selected
    assert ServingSettings().feast_production is True
    clean_env.setenv("NUDGE_FEAST_PRODUCTION", "false")  # the service's own switch wins
    assert ServingSettings().feast_production is False


@pytest.mark.parametrize(
    "value", ["30s", "15m", "2h", "7d", "2w", "1.5h", " 3 h ", 3600, 1.5, timedelta(hours=2)]
)
def test_durations_read_from_the_environment_are_those_of_trigger_files(value):
    """The leaf cannot import engine.dsl.durations: its reading must agree with it."""
    from engine.dsl.durations import parse_duration

    assert Settings(max_future=value).max_future == parse_duration(value)


@pytest.mark.parametrize("value", ["soon", "-5", "", "5x", "1h30m", -1])
def test_what_trigger_files_refuse_as_a_duration_the_settings_refuse_too(value):
    from pydantic import ValidationError

    from engine.dsl.durations import parse_duration

    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)
    with pytest.raises(ValidationError, match="duration"):
        Settings(max_future=value)


def test_uplift_models_get_bands_of_a_difference_of_probabilities(clean_env):
    """The leaf cannot import engine.dsl.score_models: its uplift prefix must be the same."""
    from engine.dsl.score_models import UPLIFT_MODEL_PREFIX, uplift_model_name
    from nudge.settings import UPLIFT_BANDS
    from nudge.settings import UPLIFT_MODEL_PREFIX as leaf_prefix

    assert leaf_prefix == UPLIFT_MODEL_PREFIX
    serving = ServingSettings()
    assert serving.bands_for(uplift_model_name("cart_recovery")) == UPLIFT_BANDS
    assert serving.bands_for("churn") == (0.3, 0.6)
    own = ServingSettings(score_bands={"uplift_cart_recovery": (0.01, 0.1)})
    assert own.bands_for("uplift_cart_recovery") == (0.01, 0.1)


def test_the_email_group_commit_reaches_the_dispatcher(clean_env, tmp_path):
    from engine.dsl.triggers import TriggerIndex
    from engine.store import EngineDB
    from nudge.engine_cli import build_dispatcher

    store = EngineDB.open(f"sqlite:///{tmp_path / 'engine.db'}")
    try:
        assert build_dispatcher(Settings(), store, TriggerIndex([])).group_size == 50
        clean_env.setenv("NUDGE_EMAIL_GROUP_COMMIT", "1")
        assert build_dispatcher(Settings(), store, TriggerIndex([])).group_size == 1
        clean_env.setenv("NUDGE_EMAIL_GROUP_COMMIT", "0")
        with pytest.raises(ValueError, match="email_group_commit"):
            Settings()
    finally:
        store.dispose()
