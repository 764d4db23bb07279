"""The one base class of the mistakes a person can fix: a file, an option, a setting, an input.

A ``UserError``'s message says what is wrong and where, in one line (or a short list after a
colon), so that the command line can show it as ``error: <message>`` and exit 2 — in one place,
``nudge.cli.user_errors`` — instead of each command catching ``ValueError``: a ``ValueError``
that is *not* a ``UserError`` is a bug and keeps its traceback. It derives from ``ValueError`` so
that code catching the narrower errors as ``ValueError`` keeps working.

Derived: ``engine.lake.LakeError``, ``engine.runtime.replay.EventFileError``,
``engine.runtime.explain.InvalidEvent``, ``engine.dsl.bounded_yaml.YamlProblem``,
``engine.dsl.triggers.VariantError``, ``engine.events.InvalidProfileChange``,
``engine.optimizer.arms.ArmInputError`` and ``pipelines.ingest.IngestError``.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake in what a person gave nudge; the message names it and what was expected."""
