"""What the `feast` CLI sees when it scans the repo folder."""

from __future__ import annotations

import sys

import pytest

from features.paths import REPO_DIR

pytestmark = pytest.mark.slow
SCANNED = {"data_sources.py", "entities.py", "feature_services.py", "feature_views.py", "repo.py"}


@pytest.fixture
def as_the_cli(feast_store, feast_home, monkeypatch):
    """Feast's CLI changes into the repo folder and imports its files as top-level modules."""
    monkeypatch.chdir(REPO_DIR)
    monkeypatch.syspath_prepend(str(REPO_DIR))
    monkeypatch.setenv("NUDGE_HOME", str(feast_home))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in {path.removesuffix(".py") for path in SCANNED}:
            del sys.modules[name]


def test_feast_scans_the_definitions_and_not_the_computation(feast_store):
    from feast.repo_operations import get_repo_files

    assert {path.name for path in get_repo_files(REPO_DIR)} == SCANNED


def test_the_cli_finds_each_object_once_and_the_same_as_applied_in_process(feast_store, as_the_cli):
    from feast import Project
    from feast.repo_operations import parse_repo

    repo = parse_repo(REPO_DIR)
    repo.projects.append(Project(name=feast_store.project))  # the CLI takes it from the YAML
    assert sorted(e.name for e in repo.entities) == ["__dummy", "customer"]
    assert len(repo.data_sources) == len(repo.feature_views) == len(repo.feature_services) == 3
    registry_diff, _, _ = feast_store.plan(repo)
    assert "No changes to registry" in registry_diff.to_string()


def test_the_cli_refuses_a_relative_nudge_home(feast_store, as_the_cli, monkeypatch):
    import importlib

    monkeypatch.setenv("NUDGE_HOME", ".nudge")
    with pytest.raises(RuntimeError, match="absolute"):
        importlib.import_module("repo")
