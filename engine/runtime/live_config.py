"""The engine's configuration while it runs — triggers, templates, suppression policy — and its
reload (``SIGHUP``, ``POST /v1/admin/reload``), validated before the swap.

`EngineConfig` is one loaded, validated set: the trigger index, the suppression policy, the
templates folder the triggers were checked against, and the warnings of that check (event types
no input has had). `load_engine_config` builds one or raises `ConfigRefused` with every problem
(file:line, as ``nudge triggers validate`` prints them); the policy comes from a `PolicyLoader`
(a callable that returns a `SuppressionPolicy` or raises a `UserError`; default: the built-in
policy).

`LiveConfig` holds the current set and hands it to the processor and dispatcher it is bound to
(their ``index`` and ``policy`` attributes). `LiveConfig.reload` loads and validates a new set
first — an invalid one is refused and the running set stays — then swaps it while holding
`LiveConfig.guard`, the lock the engine loop holds for each batch (``EngineLoop(guard=…)``): a
batch runs on one set from start to end, and a batch that starts after ``reload`` returns runs
on the new one. Each decision records its trigger's version (``decisions.trigger_version``), so
decisions before and after a reload say which version made them.

Templates are rendered from their folder by Jinja, which re-reads a file that changed; what a
reload adds is the check that every template the new triggers send exists and compiles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.triggers import Trigger, TriggerIndex, TriggerIssue, load_trigger_dir
from engine.errors import UserError

__all__ = [
    "ConfigRefused",
    "EngineConfig",
    "LiveConfig",
    "PolicyLoader",
    "WarningCheck",
    "load_engine_config",
]

log = logging.getLogger(__name__)

PolicyLoader = Callable[[], SuppressionPolicy]
"""Loads the suppression policy; raises a `UserError` (its ``issues``, or its message) if the
policy file is invalid."""

WarningCheck = Callable[[list[Trigger]], list[TriggerIssue]]
"""Warnings of a trigger set that do not refuse it (e.g. `event_vocabulary.event_type_warnings`)."""


class ConfigRefused(UserError):
    """A trigger, template or policy set that cannot run; ``issues`` lists every problem."""

    def __init__(self, issues: list[str], source: Path | str) -> None:
        self.issues = issues
        super().__init__(f"{len(issues)} problem(s) in the configuration of {source}")


@dataclass(frozen=True, eq=False)
class EngineConfig:
    """One validated configuration: what the processor and dispatcher decide and send with."""

    index: TriggerIndex
    policy: SuppressionPolicy
    templates_dir: Path
    warnings: tuple[TriggerIssue, ...] = ()
    loaded_at: float = 0.0

    def versions(self) -> dict[str, str]:
        """The version of every enabled trigger, by id."""
        return {trigger.id: trigger.version for trigger in self.index.triggers}


def load_engine_config(
    triggers_dir: Path,
    templates_dir: Path,
    *,
    models: Collection[str] | None = None,
    load_policy: PolicyLoader | None = None,
    warnings: WarningCheck | None = None,
) -> EngineConfig:
    """The triggers of `triggers_dir` checked against `templates_dir` (and `models`, the model
    definitions' names, when given), the policy of `load_policy`, and the `warnings` of the
    triggers; raises `ConfigRefused` listing every problem of the triggers and the policy."""
    if not triggers_dir.is_dir():
        raise ConfigRefused([f"{triggers_dir}: no such folder of triggers"], triggers_dir)
    result = load_trigger_dir(triggers_dir, templates_dir=templates_dir, models=models)
    issues = [str(issue) for issue in result.issues]
    policy = SuppressionPolicy()
    if load_policy is not None:
        try:
            policy = load_policy()
        except UserError as exc:
            listed = getattr(exc, "issues", None)
            issues.extend(str(item) for item in listed) if listed else issues.append(str(exc))
    if issues:
        raise ConfigRefused(issues, triggers_dir)
    found = warnings(result.triggers) if warnings is not None else []
    return EngineConfig(
        TriggerIndex(result.triggers), policy, templates_dir, tuple(found), time.time()
    )


class LiveConfig:
    """The current `EngineConfig` of a running engine, swapped by `reload` between batches.

    `load` builds a validated set (typically `load_engine_config` with the settings' folders) and
    raises `ConfigRefused`; it is called once here, so an invalid set at start raises too.
    `report` is told every warning of a loaded set and every problem of a refused one, one line
    each (default: logged).
    """

    def __init__(
        self, load: Callable[[], EngineConfig], *, report: Callable[[str], None] | None = None
    ) -> None:
        self._load = load
        self._report = report or (lambda line: log.warning("%s", line))
        # Held by the engine loop for each batch, and by `reload` for the swap.
        self.guard = threading.RLock()
        self._reloading = threading.Lock()  # one reload at a time
        self._targets: list[Any] = []
        self.current = load()
        self._tell_warnings(self.current)

    def bind(self, *targets: Any) -> None:
        """Hand the current set to `targets` (a Processor, a Dispatcher; None is skipped) now
        and at every reload."""
        with self.guard:
            for target in targets:
                if target is not None:
                    _apply(target, self.current)
                    self._targets.append(target)

    def reload(self) -> EngineConfig:
        """Load and validate a new set, then swap it in between two batches; returns it.

        Raises `ConfigRefused` (after reporting its problems) when the new set is invalid: the
        running set stays."""
        with self._reloading:
            try:
                new = self._load()
            except ConfigRefused as refused:
                for issue in refused.issues:
                    self._report(f"reload refused: {issue}")
                raise
            with self.guard:  # waits for the batch in progress, if any
                for target in self._targets:
                    _apply(target, new)
                self.current = new
        self._tell_warnings(new)
        return new

    def _tell_warnings(self, config: EngineConfig) -> None:
        for warning in config.warnings:
            self._report(f"warning: {warning}")


def _apply(target: Any, config: EngineConfig) -> None:
    """Point a processor or dispatcher at `config` (only the attributes it has)."""
    target.index = config.index
    if hasattr(target, "policy"):
        target.policy = config.policy
    limits = getattr(target, "limits", None)
    if limits is not None and hasattr(limits, "retention"):
        # A new trigger may look further back: the state keeps at least its longest window.
        longest = config.index.longest_window()
        if longest > limits.retention:
            target.limits = replace(limits, retention=longest)
