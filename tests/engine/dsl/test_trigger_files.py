"""Trigger files as hostile input (size, nesting, aliases), versions, and template checks."""

import hashlib
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.dsl.triggers import (
    MAX_FILE_BYTES,
    check_templates,
    load_trigger_dir,
    load_trigger_text,
)
from nudge.cli import app

TRIGGER = "id: t{n}\nwhen: {{event: signup}}\nactions: [{{send_email: {{template: {template}}}}}]\n"


def trigger(n: int = 1, template: str = "welcome") -> str:
    return TRIGGER.format(n=n, template=template)


def billion_laughs() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth + "\n"


def nested_maps(depth: int) -> str:
    return "{a: " * depth + "1" + "}" * depth + "\n"


def messages(text: str) -> list[str]:
    return [str(issue) for issue in load_trigger_text(text, "x.yaml").issues]


# -- YAML bounds ---------------------------------------------------------------------------------


def test_billion_laughs_is_refused_quickly():
    text = billion_laughs()
    assert len(text) < 700
    started = time.perf_counter()
    result = load_trigger_text(text, "bomb.yaml")
    assert time.perf_counter() - started < 0.5
    [issue] = result.issues
    assert issue.file == "bomb.yaml" and "aliases expand to more than 10,000" in issue.message
    assert result.triggers == []


def test_billion_laughs_inside_a_valid_trigger_is_refused_quickly():
    # send_email takes free-form parameters: the whole bomb would validate, then be expanded.
    bomb = billion_laughs().replace("\n", "\n      ")
    text = (
        "id: t\nwhen: {event: signup}\nactions:\n"
        f"  - send_email:\n      template: welcome\n      {bomb}extra: *i\n"
    )
    assert len(text) < 800
    started = time.perf_counter()
    [issue] = messages(text)
    assert time.perf_counter() - started < 0.5 and "aliases expand" in issue


@pytest.mark.parametrize("text", [nested_lists(600), nested_maps(600), nested_lists(100_000)])
def test_deep_nesting_is_an_issue_not_a_recursion_error(text):
    [issue] = messages(text)
    # libyaml refuses the 100,000-deep one itself ("exceeded maximum nesting depth")
    assert issue.startswith("x.yaml:1: (top): ") and re.search("nested deeper|nesting depth", issue)


def test_nesting_through_aliases_is_bounded_too():
    text = "a: &a " + nested_lists(40) + "b: &b " + "[" * 40 + "*a" + "]" * 40 + "\n"
    [issue] = messages(text)
    assert "nested deeper than 64 levels (through aliases)" in issue


def test_a_self_referring_alias_is_an_issue():
    [issue] = messages("id: t\nwhen: {event: signup}\nactions: &a [*a]\n")
    assert "an alias refers to the collection that holds it" in issue


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    (tmp_path / "big.yaml").write_text(trigger() + "#" * (1024 * 1024) + "\n")
    started = time.perf_counter()
    [issue] = load_trigger_dir(tmp_path).issues
    assert time.perf_counter() - started < 0.5
    assert (
        str(issue) == f"{tmp_path / 'big.yaml'}: (top): file too large (over 256 KiB); split it up"
    )
    assert "file too large" in messages("#" * (MAX_FILE_BYTES + 1))[0]


def test_small_aliases_and_big_alias_free_files_still_load():
    shared = (
        "- id: a\n  when: {event: signup}\n  actions:\n"
        "    - add_to_segment: {segment: s}\n      cancel_if: &stop {event: purchase_completed}\n"
        "- id: b\n  when: {event: signup}\n  actions:\n"
        "    - add_to_segment: {segment: s}\n      cancel_if: *stop\n"
    )
    result = load_trigger_text(shared)
    assert not result.issues and [t.id for t in result.triggers] == ["a", "b"]
    many = listed(*(trigger(n) for n in range(1500)))
    assert 100_000 < len(many) < MAX_FILE_BYTES
    result = load_trigger_text(many)
    assert not result.issues and len(result.triggers) == 1500
    documents = "---\n".join(trigger(n) for n in range(2000))
    result = load_trigger_text(documents)
    assert not result.issues and len(result.triggers) == 2000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: [unclosed\n", "expected ',' or ']'"),
        ("a: 1" + "0" * 5000 + "\n", "not valid YAML"),  # an integer Python will not convert
        ("{[1]: 2}\n", "x.yaml:1: (top): not valid YAML: found unhashable key"),
        ("x: !!python/object:os.system {}\n", "not valid YAML: could not determine a constructor"),
    ],
)
def test_other_bad_yaml_is_one_line_with_the_line(text, expected):
    [issue] = messages(text)
    assert expected in issue and "\n" not in issue
    assert issue.startswith("x.yaml:") and "(top): not valid YAML: " in issue


def test_unreadable_files_are_issues(tmp_path):
    (tmp_path / "latin.yaml").write_bytes(b"id: t\ndescription: caf\xe9\n")
    (tmp_path / "dir.yaml").mkdir()
    found = {Path(i.file).name: (i.line, i.message) for i in load_trigger_dir(tmp_path).issues}
    assert found == {
        "latin.yaml": (2, "not UTF-8 text (byte 22)"),
        "dir.yaml": (None, "not a regular file"),
    }


# -- versions ------------------------------------------------------------------------------------


def listed(*triggers: str) -> str:
    """Triggers as one YAML list."""
    return "".join("- " + t.rstrip("\n").replace("\n", "\n  ") + "\n" for t in triggers)


def test_the_version_is_the_hash_of_the_trigger_text():
    text = trigger()
    [loaded] = load_trigger_text(text).triggers
    assert loaded.version == hashlib.sha256(text.encode()).hexdigest()[:12]
    [edited] = load_trigger_text(trigger(1, "welcome_tips")).triggers
    assert edited.version != loaded.version
    before = load_trigger_text(listed(trigger(1), trigger(2))).triggers
    after = load_trigger_text(listed(trigger(1), trigger(2, "welcome_tips"))).triggers
    assert before[0].version == after[0].version, "a neighbour's edit is not a new version"
    assert before[1].version != after[1].version


def test_the_version_covers_anchors_borrowed_from_elsewhere():
    def versions(stop: str) -> list[str]:
        text = (
            f"- id: a\n  when: {{event: signup}}\n  actions:\n"
            f"    - add_to_segment: {{segment: s}}\n      cancel_if: &stop {{event: {stop}}}\n"
            "- id: b\n  when: {event: signup}\n  actions:\n"
            "    - add_to_segment: {segment: s}\n      cancel_if: *stop\n"
        )
        return [t.version for t in load_trigger_text(text).triggers]

    assert all(a != b for a, b in zip(versions("x"), versions("y"), strict=True))


# -- template names and check_templates ----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../etc/hostname", "/etc/hostname", "a/../b", "welcome.j2", "a//b", "[x]"]
)
def test_template_names_are_plain_names(name):
    [issue] = messages(
        f"id: t\nwhen: {{event: signup}}\nactions:\n  - send_email: {{template: {name!r}}}\n"
    )
    assert issue.startswith(
        "x.yaml:4: actions[0].send_email: template: expected a plain template name"
    )


def test_variant_template_names_are_plain_names():
    text = trigger() + "experiment: {variants: {a: {template: welcome}, b: {template: ../x}}}\n"
    [issue] = messages(text)
    assert "experiment.variants: variant 'b': template: expected a plain template name" in issue


def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "welcome.j2").write_text("subject: hi\n---\nhello\n")
    (folder / "broken.j2").write_text("subject: hi\n---\n\n{% if %}\n")
    (folder / "nested").mkdir()
    (folder / "nested" / "ok.j2").write_text("subject: {{ properties.total | money }}\n---\nx\n")
    return folder


def test_check_templates_reports_missing_and_broken_at_the_trigger_line(tmp_path):
    text = (
        "id: t\nwhen: {event: signup}\nactions:\n"
        "  - send_email: {template: welcome}\n"
        "  - send_email: {template: nested/ok}\n"
        "  - send_email: {template: broken}\n"
        "  - send_email: {template: missing}\n"
        "experiment: {variants: {a: {template: welcome}, b: {template: gone}}}\n"
    )
    [loaded] = load_trigger_text(text, "t.yaml").triggers
    folder = templates(tmp_path)
    found = [str(issue) for issue in check_templates([loaded], folder)]
    assert found == [
        "t.yaml:6: actions[2].send_email.template: template 'broken', line 4: "
        "Expected an expression, got 'end of statement block'",
        f"t.yaml:7: actions[3].send_email.template: template 'missing' not found in {folder}",
        f"t.yaml:8: experiment.variants.b.template: template 'gone' not found in {folder}",
    ]
    [issue] = check_templates([loaded], tmp_path / "nope")
    assert issue.message == "no such folder of email templates"


def test_the_shipped_examples_and_templates_agree():
    from nudge.settings import Settings

    s = Settings()
    loaded = load_trigger_dir(s.trigger_folder)
    assert not loaded.issues and not check_templates(loaded.triggers, s.template_folder)


# -- the same through `nudge triggers validate` --------------------------------------------------


def validate(folder: Path, templates_dir: Path | None = None):
    env = {"NUDGE_TEMPLATES_DIR": str(templates_dir)} if templates_dir else {}
    return CliRunner().invoke(app, ["triggers", "validate", str(folder)], env=env)


def test_validate_reports_template_problems(tmp_path):
    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "a.yaml").write_text(trigger(1, "welcome"))
    (folder / "b.yaml").write_text(trigger(2, "broken"))
    (folder / "c.yaml").write_text(trigger(3, "missing"))
    (folder / "d.yaml").write_text(trigger(4, "../../etc/hostname"))
    result = validate(folder, templates(tmp_path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.startswith("✗")]
    assert lines == [
        f"✗ {folder / 'd.yaml'}:3: actions[0].send_email: template: expected a plain template "
        "name such as cart_reminder (letters, digits, _ - and /, without .j2, no '..' and no "
        "leading '/'), got '../../etc/hostname'",
        f"✗ {folder / 'b.yaml'}:3: actions[0].send_email.template: template 'broken', line 4: "
        "Expected an expression, got 'end of statement block'",
        f"✗ {folder / 'c.yaml'}:3: actions[0].send_email.template: template 'missing' not found in "
        f"{tmp_path / 'templates'}",
    ]
    assert "3 problem(s)" in result.output and "Traceback" not in result.output


def test_validate_passes_with_good_templates(tmp_path):
    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "a.yaml").write_text(trigger(1, "welcome"))
    result = validate(folder, templates(tmp_path))
    assert result.exit_code == 0, result.output
    assert "1 trigger(s)" in result.output


def test_validate_reports_hostile_yaml_one_line_each(tmp_path):
    (tmp_path / "bomb.yaml").write_text(billion_laughs())
    (tmp_path / "deep_lists.yaml").write_text(nested_lists(600))
    (tmp_path / "deep_maps.yaml").write_text(nested_maps(600))
    (tmp_path / "huge.yaml").write_text("#" * (1024 * 1024))
    started = time.perf_counter()
    result = validate(tmp_path)
    assert time.perf_counter() - started < 2
    assert result.exit_code == 1 and not isinstance(result.exception, RecursionError)
    lines = [line for line in result.output.splitlines() if line.startswith("✗")]
    assert [line.split(": ", 1)[0].rsplit("/", 1)[1] for line in lines] == [
        "bomb.yaml:1", "deep_lists.yaml:1", "deep_maps.yaml:1", "huge.yaml",
    ]  # fmt: skip
    assert "4 problem(s)" in result.output and "Traceback" not in result.output
