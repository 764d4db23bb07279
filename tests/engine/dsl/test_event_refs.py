"""Event types a trigger names, at their lines, and the warnings for unknown ones."""

from __future__ import annotations

from pathlib import Path

import yaml

from engine.dsl.event_refs import check_event_types, event_refs, unknown_event_message
from engine.dsl.triggers import load_trigger_dir, load_trigger_text

TRIGGER = """\
id: every_place
when:
  event: cart_add
  then_absent: {event: checkout_startd, within: 1h}
if:
  all:
    - event: {type: cart_add, where: {properties.value: {gte: 1}}}
    - not: {behavior: {event: purchase_complete, within: 1h}}
    - sequence: {steps: [product_view, cart_ad], within: 24h, then_absent: {event: refund, within: 1h}}
    - any: [{time: {since_last: signupp, gte: 1d}}, {score: {model: churn, gte: 0.5}}]
actions:
  - add_to_segment: {segment: s}
    cancel_if: {any: [{event: refnd}, {event: purchase_completed}]}
"""


def test_every_place_a_trigger_names_an_event_type_is_found_with_its_line() -> None:
    loaded = load_trigger_text(TRIGGER, "every_place.yaml")
    assert not loaded.issues
    refs = loaded.triggers[0].event_refs
    assert [(r.name, r.path, r.line) for r in refs] == [
        ("cart_add", "when.event", 3),
        ("checkout_startd", "when.then_absent.event", 4),
        ("cart_add", "if.all[0].event.type", 7),
        ("purchase_complete", "if.all[1].not.behavior.event", 8),
        ("product_view", "if.all[2].sequence.steps[0]", 9),
        ("cart_ad", "if.all[2].sequence.steps[1]", 9),
        ("refund", "if.all[2].sequence.then_absent.event", 9),
        ("signupp", "if.all[3].any[0].time.since_last", 10),
        ("refnd", "actions[0].cancel_if.any[0].event", 13),
        ("purchase_completed", "actions[0].cancel_if.any[1].event", 13),
    ]


def test_forms_without_an_event_and_unknown_kinds_are_skipped() -> None:
    text = (
        "- id: scheduled\n  when: {schedule: {cron: '0 10 * * *'}}\n"
        "  if: {future_kind: {event: nope}}\n  actions: [{add_to_segment: {segment: s}}]\n"
        "- id: crossing\n  when: {score_crosses: {model: churn, above: 0.7}}\n"
        "  actions: [{add_to_segment: {segment: s}}]\n"
        "- id: no_when\n  actions: [{add_to_segment: {segment: s}}]\n"
    )
    documents = yaml.safe_load(text)
    nodes = yaml.compose(text).value
    assert [event_refs(raw, node) for raw, node in zip(documents, nodes, strict=True)] == [
        (),
        (),
        (),
    ]
    assert event_refs("not a mapping", yaml.compose("x")) == ()


def test_unknown_types_warn_at_their_line_with_a_close_match(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "id: typo\nwhen: {event: cart_abandonedd}\n"
        "actions:\n  - add_to_segment: {segment: s}\n    cancel_if: {event: our_own_type}\n"
    )
    loaded = load_trigger_dir(tmp_path)
    assert not loaded.issues
    known = {"cart_abandoned", "purchase_completed"}
    warnings = [str(w) for w in check_event_types(loaded.triggers, known)]
    source = tmp_path / "t.yaml"
    assert warnings == [
        f"{source}:2: when.event: unknown event type 'cart_abandonedd': not a standard type and "
        "no event of it in the lake or the inbox; did you mean 'cart_abandoned'?",
        f"{source}:5: actions[0].cancel_if.event: unknown event type 'our_own_type': not a "
        "standard type and no event of it in the lake or the inbox",
    ]
    assert check_event_types(loaded.triggers, known | {"cart_abandonedd", "our_own_type"}) == []


def test_the_hint_names_only_a_close_type() -> None:
    assert "did you mean 'refund'" in unknown_event_message("refnd", {"refund", "signup"})
    assert "did you mean" not in unknown_event_message("webinar_joined", {"refund", "signup"})
