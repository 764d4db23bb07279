"""Model definitions: the shipped three say what the built-in models always were; a broken file
is refused with its file and line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from features.schema import SERVICE_FEATURES
from models.definitions import (
    DEFAULT_DIR,
    DefinitionError,
    load_definition_text,
    load_definitions,
    retrain_schedule,
)
from models.specs import SPECS, spec_for

GOOD = """\
name: refund_30d
task: classification
label:
  event: refund
  horizon: 30d
"""


def test_the_shipped_definitions_are_the_built_in_models_unchanged():
    shipped = load_definitions(DEFAULT_DIR)
    assert sorted(shipped.names) == ["churn", "engagement", "ltv"]
    for name, parts in SERVICE_FEATURES.items():
        expected = [column for columns in parts.values() for column in columns]
        assert list(SPECS[name].features) == expected, name
    churn, ltv, engagement = SPECS["churn"], SPECS["ltv"], SPECS["engagement"]
    assert (churn.label, churn.horizon, churn.linear_base) == (
        "churned", timedelta(days=90), ("recency_days", "purchases_365d"))  # fmt: skip
    assert ltv.objective == {"objective": "tweedie", "tweedie_variance_power": 1.5}
    assert (ltv.primary_metric, ltv.higher_is_better) == ("normalised_gini", True)
    assert (engagement.label, engagement.horizon, engagement.best_send_hour) == (
        "engaged", timedelta(days=14), True)  # fmt: skip
    assert churn.baselines == ("rfm_logistic", "bgnbd")
    assert ltv.baselines == ("bgnbd_gg", "historical_average")


def test_defaults_of_a_minimal_definition():
    item = load_definition_text(GOOD, "refund.yaml")
    definition = item.definition
    assert definition.baseline_names == ("recency_frequency", "base_rate")
    assert [e.group for e in definition.feature_entries] == [  # type: ignore[union-attr]
        "activity", "value", "email", "label_history"]  # fmt: skip
    assert definition.primary_metric == "roc_auc" and definition.retrain == "weekly"
    assert retrain_schedule(definition.retrain) == ("cron", "0 3 * * 1")
    assert retrain_schedule("14d") == ("interval", timedelta(days=14))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("horizon: 30d", "horizon: 0d"), "refund.yaml:5: label.horizon: the horizon must be"),
        (("horizon: 30d", "horizon: 1000d"), "refund.yaml:5: label.horizon: the horizon must"),
        (("horizon: 30d", "horizon: 36h"), "refund.yaml:5: label.horizon: the horizon must be a"),
        (("task: classification", "task: ranking"), "refund.yaml:2: task: Input should be"),
        (
            ("  event: refund\n", "  event: refund\n  where: {amount: {bigger: 3}}\n"),
            "refund.yaml:5: label.where: Value error, unknown operator 'bigger'",
        ),
        (
            ("  event: refund\n", "  event: refund\n  where: {total: 3}\n"),
            "refund.yaml:5: label.where: Value error, where: expected amount or properties",
        ),
        (
            ("  event: refund\n", "  event: refund\n  value: amount\n"),
            "refund.yaml:1: (top): Value error, label.value: only a regression label",
        ),
        (("name: refund_30d", "name: Refund-30"), "refund.yaml:1: name: String should match"),
        (("label:", "colour: red\nlabel:"), "refund.yaml:3: colour: unknown key"),
    ],
)
def test_a_broken_definition_is_refused_at_its_file_and_line(change, where):
    with pytest.raises(DefinitionError) as caught:
        load_definition_text(GOOD.replace(*change), "refund.yaml")
    assert str(caught.value).startswith(where.replace("Value error, ", "")), str(caught.value)


def test_an_unknown_baseline_or_a_regression_without_value(tmp_path: Path):
    bad = GOOD + "baselines: [bgnbd_gg]\n"
    with pytest.raises(DefinitionError, match="bgnbd_gg scores regression, not classification"):
        load_definition_text(bad, "x.yaml")
    regression = GOOD.replace("classification", "regression")
    with pytest.raises(DefinitionError, match="a regression label needs a value"):
        load_definition_text(regression, "x.yaml")


def test_a_folder_refuses_duplicates_and_a_missing_folder(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD)
    with pytest.raises(DefinitionError, match=r"b\.yaml:1: name: model 'refund_30d' is also"):
        load_definitions(tmp_path)
    with pytest.raises(DefinitionError, match="no such folder"):
        load_definitions(tmp_path / "missing")
    (tmp_path / "b.yaml").write_text("name: [unclosed\n")
    with pytest.raises(DefinitionError, match=r"b\.yaml:2"):
        load_definitions(tmp_path)


def test_nudge_models_dir_selects_the_definitions(tmp_path: Path, monkeypatch):
    (tmp_path / "refund.yaml").write_text(GOOD)
    monkeypatch.setenv("NUDGE_MODELS_DIR", str(tmp_path))
    assert load_definitions().names == ("refund_30d",)
    spec = spec_for("refund_30d")
    assert spec.task == "binary" and spec.label == "label" and spec.horizon_days == 30
    assert "refund_30d_label_count_365d" in spec.features
    with pytest.raises(ValueError, match="unknown model 'churn'"):
        spec_for("churn")
