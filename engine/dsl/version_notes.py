"""A note at the top of a new trigger version: who wrote it, when, and why.

``nudge experiment apply`` records in the file it writes what the recommendation said and, when
the guardrails were overridden, the person's reason. The note is YAML comments before the
trigger, so the trigger's version (the hash of its mapping's text, see `engine.dsl.triggers`) is
the same with or without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from engine.dsl.triggers import VariantVersion

__all__ = ["comment_line", "with_note"]

MAX_NOTE_LINE = 500
"""Characters of one note line (a longer reason is cut, with an ellipsis)."""


def comment_line(text: str) -> str:
    """`text` as one printable line for a YAML comment: whitespace runs (new lines too) become
    one space and characters YAML cannot hold are left out."""
    flat = " ".join("".join(ch for ch in text if ch.isprintable() or ch.isspace()).split())
    return flat if len(flat) <= MAX_NOTE_LINE else flat[: MAX_NOTE_LINE - 1] + "…"


def with_note(version: VariantVersion, lines: Sequence[str]) -> VariantVersion:
    """`version` whose new text starts with `lines`, each a ``# …`` comment line."""
    header = "".join(f"# {comment_line(line)}\n" for line in lines)
    return replace(version, text=header + version.text)
