"""The note at the top of a trigger version written by `experiment apply`."""

from __future__ import annotations

from pathlib import Path

from engine.dsl.triggers import load_trigger_dir, load_trigger_text, variant_version
from engine.dsl.version_notes import MAX_NOTE_LINE, comment_line, with_note

TRIGGER = """\
id: t
when: {event: signup}
actions: [{send_email: {template: welcome}, delay: 1h}]
experiment: {variants: {a: {delay: 1h}, b: {delay: 2h}}}
"""


def test_a_note_is_comments_before_the_trigger_and_keeps_its_version(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TRIGGER)
    [trigger] = load_trigger_dir(tmp_path).triggers
    version = variant_version(trigger, "b")
    noted = with_note(version, ["by me\nat noon", "reason: \x00bell\x07 rang"])
    assert noted.text.startswith("# by me at noon\n# reason: bell rang\n")
    [loaded] = load_trigger_text(noted.text, "t.yaml").triggers
    assert loaded.version == version.new.version
    assert version.text == noted.text.split("\n", 2)[2], "only the comments are added"


def test_a_long_line_is_cut() -> None:
    line = comment_line("x" * 2_000)
    assert len(line) == MAX_NOTE_LINE and line.endswith("…")
