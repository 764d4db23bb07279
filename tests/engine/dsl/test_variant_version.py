"""Ending an experiment with one variant: a new version of the trigger's file, the old one kept."""

import shutil
from pathlib import Path

import pytest

from engine.dsl.triggers import (
    VariantError,
    load_trigger_dir,
    variant_version,
    write_variant_version,
)
from engine.errors import UserError

EXAMPLES = Path(__file__).resolve().parents[3] / "engine" / "examples"


@pytest.fixture
def cart_recovery(tmp_path):
    shutil.copy(EXAMPLES / "cart_recovery.yaml", tmp_path)
    [trigger] = load_trigger_dir(tmp_path).triggers
    return trigger


def test_the_new_version_is_built_then_written_beside_the_old(cart_recovery, tmp_path):
    path = tmp_path / "cart_recovery.yaml"
    before = path.read_text()
    version = variant_version(cart_recovery, "d4h")
    assert path.read_text() == before, "building writes nothing"
    assert version.current.version == cart_recovery.version != version.new.version
    assert version.new.spec.experiment is None and version.new.plan[0].delay == 4 * 3600
    [(old, new)] = version.changed_actions
    assert (old["delay"], new["delay"]) == ("1h", "4h")

    backup = write_variant_version(version)
    assert backup == tmp_path / f"cart_recovery.yaml.{cart_recovery.version}.bak"
    assert backup.read_text() == before
    [reloaded] = load_trigger_dir(tmp_path).triggers
    assert reloaded.version == version.new.version
    assert "variant d4h applied from its experiment" in reloaded.spec.description


def test_an_unknown_variant_or_a_file_of_several_triggers_is_a_user_error(cart_recovery, tmp_path):
    with pytest.raises(VariantError, match="no variant 'd9h' \\(variants: d1h, d4h, d24h\\)"):
        variant_version(cart_recovery, "d9h")
    (tmp_path / "two.yaml").write_text(
        "- id: a\n  when: {event: signup}\n  actions: [{add_to_segment: {segment: s}}]\n"
        "- id: b\n  when: {event: signup}\n  actions: [{add_to_segment: {segment: s}}]\n"
    )
    first = next(t for t in load_trigger_dir(tmp_path).triggers if t.id == "a")
    with pytest.raises(UserError, match=r"two\.yaml: apply works on files that hold one trigger"):
        variant_version(first, "x")
