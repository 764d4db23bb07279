"""Definitions checked against the lake: an unknown event or property is refused at its line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from models.definitions import DefinitionError, load_definitions
from pipelines.vocabulary import check_definitions, usable_definitions

EVENTS = pd.DataFrame(
    {
        "customer_id": ["a", "a", "b"],
        "event_type": ["purchase_completed", "refund", "purchase_completed"],
        "timestamp": pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"], utc=True),
        "amount": [10.0, 10.0, 60.0],
        "properties": [json.dumps({"items": 2}), "{}", json.dumps({"items": 1})],
    }
)


def _folder(tmp_path: Path, text: str) -> Path:
    (tmp_path / "m.yaml").write_text(text)
    return tmp_path


def test_an_unknown_event_is_refused_at_its_line(tmp_path: Path):
    text = "name: m\ntask: classification\nlabel:\n  event: refnd\n  horizon: 30d\n"
    definitions = load_definitions(_folder(tmp_path, text))
    with pytest.raises(DefinitionError, match=r"m\.yaml:4: label\.event: unknown event 'refnd'"):
        check_definitions(definitions, EVENTS)
    with pytest.raises(DefinitionError, match="unknown event"):
        usable_definitions(definitions, EVENTS, explicit=False)  # nothing left to train


def test_an_unknown_property_is_refused_at_its_line(tmp_path: Path):
    text = (
        "name: m\ntask: classification\nlabel:\n  event: purchase_completed\n"
        "  where: {properties.colour: red}\n  horizon: 30d\n"
    )
    definitions = load_definitions(_folder(tmp_path, text))
    with pytest.raises(DefinitionError, match=r"m\.yaml:5: label\.where\.properties\.colour: unk"):
        check_definitions(definitions, EVENTS)
    check_definitions(
        load_definitions(_folder(tmp_path, text.replace("colour: red", "items: 2"))), EVENTS
    )


def test_without_named_models_the_unusable_ones_are_skipped_with_the_reason(tmp_path: Path):
    (tmp_path / "a.yaml").write_text(
        "name: a\ntask: classification\nlabel: {event: refund, horizon: 30d}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "name: b\ntask: classification\nlabel: {event: email_opened, horizon: 14d}\n"
    )
    kept, skipped = usable_definitions(load_definitions(tmp_path), EVENTS, explicit=False)
    assert kept.names == ("a",) and "unknown event 'email_opened'" in skipped["b"]
    with pytest.raises(DefinitionError, match="email_opened"):
        usable_definitions(load_definitions(tmp_path), EVENTS, explicit=True)


def test_a_label_without_positives_is_refused_at_the_label_line(tmp_path: Path):
    from models.specs import spec_for
    from pipelines.datasets import PipelineError, check_label

    text = "name: m\ntask: classification\nlabel:\n  event: refund\n  horizon: 30d\n"
    definitions = load_definitions(_folder(tmp_path, text))
    spec = spec_for("m", definitions=definitions)
    rows = pd.DataFrame({"label": [0, 0, 0]})
    with pytest.raises(PipelineError, match=r"m\.yaml:3: label: the label has no positives in"):
        check_label(spec, rows)
    check_label(spec, pd.DataFrame({"label": [0, 1, 0]}))
    with pytest.raises(PipelineError, match="only positives"):
        check_label(spec, pd.DataFrame({"label": [1, 1]}))
