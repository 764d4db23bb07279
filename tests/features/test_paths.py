import subprocess
import sys
from pathlib import Path

import pytest

from features.paths import (
    REPO_DIR,
    feast_environment,
    feature_store_yaml,
    feature_table_path,
    nudge_home,
    redis_connection_string,
)


def test_paths_are_absolute_even_from_a_relative_home(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NUDGE_HOME", "rel")
    assert nudge_home() == tmp_path / "rel"
    assert (
        feature_table_path("churn_features")
        == tmp_path / "rel" / "features" / "churn_features.parquet"
    )
    assert feast_environment() == {
        "NUDGE_HOME": str(tmp_path / "rel"),
        "NUDGE_FEAST_DIR": str(tmp_path / "rel" / "feast"),
    }


def test_the_configuration_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.delenv("NUDGE_FEAST_CONFIG", raising=False)
    assert feature_store_yaml() == REPO_DIR / "feature_store.yaml"
    monkeypatch.setenv("NUDGE_FEAST_CONFIG", "production")
    assert feature_store_yaml() == REPO_DIR / "feature_store.production.yaml"
    assert feature_store_yaml(production=False) == REPO_DIR / "feature_store.yaml"


def test_production_needs_a_registry_url_and_defaults_redis(monkeypatch, tmp_path):
    monkeypatch.delenv("NUDGE_FEAST_REGISTRY_URL", raising=False)
    monkeypatch.delenv("NUDGE_REDIS_URL", raising=False)
    with pytest.raises(RuntimeError, match="NUDGE_FEAST_REGISTRY_URL"):
        feast_environment(tmp_path, production=True)
    monkeypatch.setenv("NUDGE_FEAST_REGISTRY_URL", "postgresql+psycopg://u@h:5432/db")
    env = feast_environment(tmp_path, production=True)
    assert env["NUDGE_REDIS_URL"] == "127.0.0.1:6379"
    assert env["NUDGE_FEAST_REGISTRY_URL"] == "postgresql+psycopg://u@h:5432/db"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (None, "127.0.0.1:6379"),
        ("redis.internal:6380,db=2", "redis.internal:6380,db=2"),
        ("redis://cache:6390/3", "cache:6390,db=3"),
        ("rediss://:s%40cret@cache/0", "cache:6379,db=0,password=s@cret,ssl=true"),
    ],
)
def test_redis_urls_become_feast_connection_strings(url, expected):
    assert redis_connection_string(url) == expected


def test_importing_features_and_their_computation_does_not_import_feast():
    code = "import sys, features, features.compute, features.store; print('feast' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(REPO_DIR).parent,
    )
    assert result.stdout.strip() == "False"


def test_the_cli_helper_exports_absolute_paths_and_creates_the_store_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "features.paths"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(REPO_DIR).parent,
        env={"NUDGE_HOME": str(tmp_path / "h"), "PATH": "/usr/bin:/bin"},
    )
    assert f"export NUDGE_FEAST_DIR={tmp_path / 'h' / 'feast'}" in result.stdout.splitlines()
    assert (tmp_path / "h" / "feast").is_dir()
