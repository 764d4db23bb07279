"""Trigger definitions: YAML in, validated and compiled triggers out, every mistake reported.

A trigger file holds one trigger (a mapping) or several (a list, or YAML documents separated by
``---``). Loading reports *every* problem with file, path and line; a trigger that loads carries a
version so that each decision can say which version made it: the first 12 hex digits of the SHA-256
of the trigger's own YAML text (its mapping as written; for a file holding one trigger, the document
without comments before it), plus the text of any anchor elsewhere in the file that it uses through
an alias. Editing a trigger's text makes a new version; editing its neighbour in the file does not.

Trigger files are input from people and tools, so loading is bounded (parsing uses libyaml when
PyYAML has it, composing and constructing stay in PyYAML's safe Python code):

- a file may hold at most 256 KiB (`MAX_FILE_BYTES`); a larger one is refused unread;
- nesting is limited to 64 levels (`MAX_DEPTH`), checked while composing, so deep YAML is an issue
  with its line, never a RecursionError;
- aliases are allowed (a shared ``cancel_if`` is a fair use) but their expansion is budgeted: the
  composed node graph is walked as if expanded, and a file whose aliases revisit more than
  10,000 nodes (`MAX_ALIAS_NODES`), or refer to the node that holds them, is refused before any of
  it is constructed or validated. A budget rather than a ban keeps small legitimate reuse working;
  counting revisits (not all nodes) keeps big alias-free files working.

`check_templates` checks that every template the triggers send (actions and experiment variant
overrides) exists in the templates folder and compiles.

Ending an experiment with one variant makes a new version of the trigger's file
(`variant_version` builds it, `write_variant_version` writes it and keeps the old text beside it).

One module (~700 lines) on purpose: the pydantic models of a trigger, the loader that maps their
errors back to YAML lines, and the index the engine queries share the node positions and the
version; the generic bounded parsing lives apart in `engine.dsl.bounded_yaml`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.channels.channel_templates import load_channel_template
from engine.channels.email import TemplateError, load_template, template_name_problem
from engine.decisions.cron import cron_problem
from engine.decisions.timezones import WEEKDAYS, is_zone
from engine.dsl.bounded_yaml import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    BoundedLoader,
    Expansion,
    TooBig,
    YamlIssue,
    validation_issues,
    walk_expanded,
    yaml_line,
    yaml_message,
)
from engine.dsl.bounded_yaml import node_line as _line_of
from engine.dsl.bounded_yaml import yaml_path as _dotted
from engine.dsl.conditions import (
    Condition,
    ConditionError,
    FieldTests,
    compile_condition,
    compile_field_tests,
)
from engine.dsl.durations import parse_duration
from engine.dsl.matcher import Matcher, compile_matcher
from engine.dsl.policy import TriggerPolicy
from engine.dsl.score_models import uplift_trigger
from engine.errors import UserError

if TYPE_CHECKING:
    from engine.decisions.suppression import SuppressionPolicy

__all__ = [
    "Action",
    "Category",
    "LoadResult",
    "Trigger",
    "TriggerIndex",
    "TriggerIssue",
    "VariantError",
    "VariantVersion",
    "apply_experiment_variant",
    "check_score_models",
    "check_templates",
    "load_trigger_dir",
    "load_trigger_text",
    "variant_version",
    "write_variant_version",
]

# `at: best_send_hour`: the next occurrence of the customer's best hour from this model.
BEST_SEND_HOUR = "best_send_hour"
BEST_HOUR_MODEL = "engagement"
PRIORITIES = {"critical": 3, "high": 2, "normal": 1, "low": 0}
ACTION_KINDS = (
    "send_email",
    "send_sms",
    "send_push",
    "webhook",
    "add_to_segment",
    "remove_from_segment",
    "update_profile",
    "create_task",
)
# Event types the suppression rules read from state (engagement-based suppression).
SUPPRESSION_EVENT_TYPES = frozenset({"email_sent", "email_opened", "email_clicked"})
ACTION_CHANNELS = {
    "send_email": "email",
    "send_sms": "sms",
    "send_push": "push",
    "webhook": "webhook",
}


class Category(StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


def _duration(value: Any) -> timedelta | None:
    return None if value is None else parse_duration(value)


class Action(BaseModel):
    """One thing to do when a trigger fires: exactly one action kind plus timing options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    send_email: dict[str, Any] | None = None
    send_sms: dict[str, Any] | None = None
    send_push: dict[str, Any] | None = None
    webhook: dict[str, Any] | None = None
    add_to_segment: dict[str, Any] | None = None
    remove_from_segment: dict[str, Any] | None = None
    update_profile: dict[str, Any] | None = None
    create_task: dict[str, Any] | None = None
    delay: timedelta | None = None
    at: dict[str, Any] | None = None  # {local_time, days} or {best_send_hour: true, …}
    cancel_if: dict[str, Any] | None = None

    _delay = field_validator("delay", mode="before")(lambda v: _duration(v))

    @field_validator("send_email", "send_sms", "send_push", mode="after")
    @classmethod
    def _template_name(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # A missing template is reported by _one_kind; a present one must be a plain name.
        if value is not None and "template" in value:
            problem = template_name_problem(value["template"])
            if problem:
                raise ValueError(f"template: {problem}")
        return value

    @field_validator("at", mode="before")
    @classmethod
    def _best_hour_shorthand(cls, value: Any) -> Any:
        return {"best_send_hour": True} if value == BEST_SEND_HOUR else value

    @field_validator("at", mode="after")
    @classmethod
    def local_schedule(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if "best_send_hour" in value:
            unknown = set(value) - {"best_send_hour", "fallback_hour", "days"}
            fallback = value.get("fallback_hour")
            if (
                unknown
                or value["best_send_hour"] is not True
                or not (fallback is None or (type(fallback) is int and 0 <= fallback <= 23))
            ):
                raise ValueError(
                    "at: expected best_send_hour, or {best_send_hour: true, fallback_hour: 0-23, "
                    "days: [mon, ...]}"
                )
        else:
            unknown = set(value) - {"local_time", "days"}
            if unknown or "local_time" not in value:
                raise ValueError(
                    'at: expected {local_time: "HH:MM", days: [mon, ...]} or best_send_hour'
                )
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", str(value["local_time"])):
                raise ValueError(f"at.local_time: expected HH:MM (got {value['local_time']!r})")
        bad = [d for d in value.get("days") or [] if d not in WEEKDAYS]
        if bad:
            raise ValueError(f"at.days: unknown day(s) {bad}; days are {', '.join(WEEKDAYS)}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Action:
        kinds = [k for k in ACTION_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"an action needs exactly one of {', '.join(ACTION_KINDS)} (got {kinds or 'none'})"
            )
        params = getattr(self, kinds[0])
        required = {"send_email": "template", "send_sms": "template", "send_push": "template",
                    "webhook": "url", "add_to_segment": "segment",
                    "remove_from_segment": "segment", "create_task": "title"}.get(kinds[0])  # fmt: skip
        if required and required not in params:
            raise ValueError(f"{kinds[0]} needs '{required}'")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ACTION_KINDS if getattr(self, k) is not None)

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = getattr(self, self.kind)
        return params

    @property
    def channel(self) -> str | None:
        """The customer-facing channel this action uses (caps apply per channel)."""
        return ACTION_CHANNELS.get(self.kind)


class Experiment(BaseModel):
    """Variants that override action timing, with a deterministic holdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variants: dict[str, dict[str, Any]] = Field(min_length=1)
    weights: dict[str, float] | None = None
    holdout: float = Field(default=0.0, ge=0, lt=1)

    @field_validator("variants", mode="after")
    @classmethod
    def _variant_overrides(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, override in value.items():
            unknown = set(override) - {"delay", "template", "at"}
            if unknown:
                raise ValueError(
                    f"variant {name!r}: unknown override(s) {sorted(unknown)}; expected delay, template, at"
                )
            if "delay" in override:
                parse_duration(override["delay"])
            if "template" in override:
                problem = template_name_problem(override["template"])
                if problem:
                    raise ValueError(f"variant {name!r}: template: {problem}")
        return value

    @model_validator(mode="after")
    def _weights_match(self) -> Experiment:
        if self.weights is not None and set(self.weights) != set(self.variants):
            raise ValueError("weights must name exactly the variants")
        return self


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cooldown: timedelta | None = None
    max_per_customer: int | None = Field(default=None, ge=1)

    _cooldown = field_validator("cooldown", mode="before")(lambda v: _duration(v))


EVENT_TYPE = r"^[a-z][a-z0-9_.:-]{0,63}$"
# An absence window is a durable timer in the engine database; a year is the longest that
# state retention can still answer for.
MAX_ABSENCE_WINDOW = timedelta(days=366)


class ThenAbsent(BaseModel):
    """`then_absent: {event, within}`: fire when `within` passes without `event`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(pattern=EVENT_TYPE)
    within: timedelta

    @field_validator("within", mode="before")
    @classmethod
    def _window(cls, value: Any) -> timedelta:
        window = parse_duration(value)
        if not timedelta(0) < window <= MAX_ABSENCE_WINDOW:
            raise ValueError(f"expected a duration above 0 and at most 366d (got {value!r})")
        return window


class Schedule(BaseModel):
    """`schedule: {cron, timezone}`: an audience of every known customer at each cron time.

    Without `timezone` the cron runs in each customer's own zone (10:00 in Paris, then 10:00 in
    New York); `timezone: UTC` (or any zone) runs it once for everybody at that zone's time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    timezone: str | None = None

    @field_validator("cron", mode="after")
    @classmethod
    def _cron(cls, value: str) -> str:
        problem = cron_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("timezone", mode="after")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not is_zone(value):
            raise ValueError(
                f"expected an IANA time zone such as UTC or Europe/Paris (got {value!r})"
            )
        return value


class ScoreCrosses(BaseModel):
    """`score_crosses: {model, above | below}`: fire when a refreshed score crosses the line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_side(self) -> ScoreCrosses:
        if (self.above is None) == (self.below is None):
            raise ValueError("score_crosses needs exactly one of above or below")
        return self

    def crossed(self, previous: float | None, current: float) -> bool:
        """Whether going from `previous` to `current` crosses the line (a first score that is
        already past it counts: the customer was never seen on the other side)."""
        if self.above is not None:
            return current > self.above and (previous is None or previous <= self.above)
        assert self.below is not None
        return current < self.below and (previous is None or previous >= self.below)


class When(BaseModel):
    """What starts a trigger: an event (optionally followed by an absence), a schedule, or a
    score crossing — exactly one of `event`, `schedule`, `score_crosses`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str | None = Field(default=None, pattern=EVENT_TYPE)
    where: dict[str, Any] | None = None
    then_absent: ThenAbsent | None = None
    schedule: Schedule | None = None
    score_crosses: ScoreCrosses | None = None

    @model_validator(mode="after")
    def _one_start(self) -> When:
        starts = [k for k in ("event", "schedule", "score_crosses") if getattr(self, k) is not None]
        if len(starts) != 1:
            raise ValueError(
                "when needs exactly one of event, schedule or score_crosses "
                f"(got {', '.join(starts) or 'none'})"
            )
        if self.event is None and (self.where is not None or self.then_absent is not None):
            raise ValueError("where and then_absent go with when.event")
        return self

    @property
    def kind(self) -> str:
        """event | absence | schedule | score_crosses"""
        if self.schedule is not None:
            return "schedule"
        if self.score_crosses is not None:
            return "score_crosses"
        return "absence" if self.then_absent is not None else "event"


class TriggerSpec(BaseModel):
    """The YAML shape of a trigger, before its conditions are compiled."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str
    description: str | None = None
    enabled: bool = True
    priority: Literal["critical", "high", "normal", "low"] = "normal"
    category: Category = Category.MARKETING
    when: When
    if_: Any = Field(default=None, alias="if")
    actions: list[Action] = Field(min_length=1)
    experiment: Experiment | None = None
    limits: Limits = Field(default_factory=Limits)
    quiet_hours: Literal["defer", "drop", "ignore"] = "defer"
    # Open pixel and tracked links in this trigger's HTML email (issue 14); NUDGE_TRACKING=false
    # turns them off everywhere.
    tracking: StrictBool = True
    # This trigger's suppression policy over the global one (engine.dsl.policy; issue 16).
    policy: TriggerPolicy | None = None

    @field_validator("id", mode="after")
    @classmethod
    def _id_form(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", value):
            raise ValueError(
                "expected a lower-case name such as cart_recovery (letters, digits, _ or -)"
            )
        return value


class PlannedStep(NamedTuple):
    kind: str
    params: dict[str, Any]
    channel: str | None
    delay: float  # seconds
    cancel_if: dict[str, Any] | None
    at: tuple[time, tuple[str, ...]] | None  # local wall time and allowed days
    # `at: best_send_hour`: (fallback hour or None for the engine's default, allowed days)
    best_hour: tuple[int | None, tuple[str, ...]] | None = None


def local_schedule(at: dict[str, Any] | None) -> tuple[time, tuple[str, ...]] | None:
    if at is None or "best_send_hour" in at:
        return None
    hours, minutes = (int(x) for x in str(at["local_time"]).split(":"))
    return time(hours, minutes), tuple(at.get("days") or WEEKDAYS)


def best_hour_schedule(at: dict[str, Any] | None) -> tuple[int | None, tuple[str, ...]] | None:
    """`at: best_send_hour` as (fallback hour, allowed days); None for other `at`s."""
    if at is None or "best_send_hour" not in at:
        return None
    return at.get("fallback_hour"), tuple(at.get("days") or WEEKDAYS)


class TemplateRef(NamedTuple):
    """A template a trigger sends, and where in its file it is named."""

    name: str
    path: str  # e.g. actions[0].send_email.template
    line: int | None
    channel: str = "email"  # sms / push templates are <name>.sms.j2 / <name>.push.j2


@dataclass(frozen=True)
class Trigger:
    """A loaded trigger: its spec, compiled conditions, and its version."""

    spec: TriggerSpec
    where: FieldTests | None
    condition: Condition | None
    version: str
    source: str
    templates: tuple[TemplateRef, ...] = ()
    # Every `score: {model: NAME}` of the trigger, where it is written (checked by
    # `check_score_models` against the model definitions' names).
    score_refs: tuple[TemplateRef, ...] = ()
    # Every event type the trigger names, where (`engine.dsl.event_refs`: the warnings for
    # types no input has had), collected from the node the trigger was loaded from.
    event_refs: tuple[TemplateRef, ...] = ()
    # The global policies `policy_for` merged the trigger's `policy:` over (kept alive, so that
    # their ids stay theirs), and the results: the processor's and the dispatcher's.
    _merged: dict[int, tuple[SuppressionPolicy, SuppressionPolicy]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def policy_for(self, base: SuppressionPolicy) -> SuppressionPolicy:
        """The suppression policy this trigger acts under: its `policy:` merged over `base`."""
        override = self.spec.policy
        if override is None:
            return base
        merged = self._merged.get(id(base))
        if merged is None:  # merged once per global policy
            if len(self._merged) >= 4:
                self._merged.clear()
            merged = self._merged[id(base)] = (base, override.apply(base))
        return merged[1]

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def event_type(self) -> str | None:
        """The event that starts the trigger (None for schedules and score crossings)."""
        return self.spec.when.event

    @property
    def kind(self) -> str:
        """event | absence | schedule | score_crosses (see `When.kind`)."""
        return self.spec.when.kind

    @property
    def starts_on(self) -> str:
        """What starts the trigger, for listings: the event, the cron, or the crossing."""
        when = self.spec.when
        if when.schedule is not None:
            zone = when.schedule.timezone or "customer zone"
            return f"schedule {when.schedule.cron} ({zone})"
        if when.score_crosses is not None:
            cross = when.score_crosses
            side = f"above {cross.above}" if cross.above is not None else f"below {cross.below}"
            return f"{cross.model} crosses {side}"
        if when.then_absent is not None:
            return f"{when.event} then no {when.then_absent.event} within {when.then_absent.within}"
        return str(when.event)

    @property
    def rank(self) -> int:
        return PRIORITIES[self.spec.priority]

    @cached_property
    def transactional(self) -> bool:
        return self.spec.category is Category.TRANSACTIONAL

    @cached_property
    def channels(self) -> frozenset[str]:
        return frozenset(a.channel for a in self.spec.actions if a.channel)

    @cached_property
    def channel_order(self) -> tuple[str, ...]:
        """`channels` sorted: the order suppression checks them in (made once, not per decision)."""
        return tuple(sorted(self.channels))

    @cached_property
    def cooldown_seconds(self) -> float | None:
        cooldown = self.spec.limits.cooldown
        return None if cooldown is None else cooldown.total_seconds()

    @cached_property
    def plan(self) -> tuple[PlannedStep, ...]:
        """The actions as plain tuples, computed once: what a fire schedules."""
        return tuple(
            PlannedStep(
                a.kind,
                a.params,
                a.channel,
                a.delay.total_seconds() if a.delay else 0.0,
                a.cancel_if,
                local_schedule(a.at),
                best_hour_schedule(a.at),
            )
            for a in self.spec.actions
        )

    @cached_property
    def _score_models(self) -> frozenset[str]:
        models = frozenset(self.condition.score_models()) if self.condition else frozenset()
        if any(step.best_hour is not None for step in self.plan):
            models |= {BEST_HOUR_MODEL}  # its best send hour times the action
        return models

    def score_models(self) -> frozenset[str]:
        return self._score_models

    @cached_property
    def score_model_order(self) -> tuple[str, ...]:
        """`score_models` sorted: the order a decision records the scores it used in."""
        return tuple(sorted(self._score_models))

    def longest_window(self) -> float:
        return self.condition.longest_window() if self.condition else 0.0

    @cached_property
    def state_event_types(self) -> frozenset[str]:
        """Event types whose history `if` and every action's `cancel_if` read from the state."""
        found = set(self.condition.event_types()) if self.condition else set()
        for step in self.plan:
            if step.cancel_if is not None:
                cancel = compile_condition(step.cancel_if, ("cancel_if",), [])  # loaded: valid
                found |= cancel.event_types() if cancel is not None else set()
        return frozenset(found)


TriggerIssue = YamlIssue  # one problem in a trigger file: file, path, line, message


@dataclass
class LoadResult:
    triggers: list[Trigger] = field(default_factory=list)
    issues: list[TriggerIssue] = field(default_factory=list)


class TriggerIndex:
    """Triggers by event type, highest priority first (ties by id): only these are evaluated."""

    def __init__(self, triggers: Iterable[Trigger]) -> None:
        self.triggers = sorted(
            (t for t in triggers if t.spec.enabled), key=lambda t: (-t.rank, t.id)
        )
        self.by_event_type: dict[str, list[Trigger]] = {}
        # `when: {event, then_absent}` triggers by their first event: a timer, decided later.
        self.absences_by_event_type: dict[str, list[Trigger]] = {}
        self.schedules: list[Trigger] = []
        self.crossings_by_model: dict[str, list[Trigger]] = {}
        for trigger in self.triggers:
            when = trigger.spec.when
            if when.schedule is not None:
                self.schedules.append(trigger)
            elif when.score_crosses is not None:
                self.crossings_by_model.setdefault(when.score_crosses.model, []).append(trigger)
            elif when.then_absent is not None:
                self.absences_by_event_type.setdefault(str(when.event), []).append(trigger)
            else:
                self.by_event_type.setdefault(str(when.event), []).append(trigger)
        self.by_id = {t.id: t for t in self.triggers}
        self._matchers: dict[str, Matcher] = {}
        # Only these event types are kept in customer state: what conditions and suppression
        # read, and the events an absence waits for.
        absent = {t.spec.when.then_absent.event for t in self.triggers if t.spec.when.then_absent}
        self.tracked_event_types = frozenset(
            SUPPRESSION_EVENT_TYPES.union(absent, *(t.state_event_types for t in self.triggers))
        )

    def for_event(self, event_type: str) -> list[Trigger]:
        return self.by_event_type.get(event_type, [])

    def matcher(self, event_type: str) -> Matcher:
        """The generated matching function of an event type's triggers (built on first use)."""
        match = self._matchers.get(event_type)
        if match is None:
            match = self._matchers[event_type] = compile_matcher(self.for_event(event_type))
        return match

    def longest_window(self) -> float:
        return max((t.longest_window() for t in self.triggers), default=0.0)

    def __len__(self) -> int:
        return len(self.triggers)


def load_trigger_text(text: str, source: str = "<string>") -> LoadResult:
    """Load the triggers in one YAML text; problems are collected, not raised.

    The text is bounded (size, nesting, alias expansion: see the module docstring) before any of
    it is constructed, so a hostile file is one issue in milliseconds; the largest file allowed
    loads in about a second.
    """
    result = LoadResult()
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        result.issues.append(_too_big(source))
        return result
    try:
        _load_documents(text, source, result)
    except yaml.YAMLError as exc:
        result.issues.append(TriggerIssue(source, "", yaml_line(exc), yaml_message(exc)))
    except RecursionError:  # a safety net: the depth guards should make this unreachable
        result.issues.append(
            TriggerIssue(source, "", None, f"nested too deeply (more than {MAX_DEPTH} levels)")
        )
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        result.issues.append(TriggerIssue(source, "", None, f"not valid YAML: {exc}"))
    result.issues.sort(key=lambda i: (i.file, i.line or 0))
    return result


def load_trigger_dir(
    directory: Path, templates_dir: Path | None = None, models: Collection[str] | None = None
) -> LoadResult:
    """Load every ``*.yaml`` / ``*.yml`` below `directory`; duplicate ids are an error.

    With `templates_dir`, the templates that the triggers send are checked too (`check_templates`);
    with `models` (the model definitions' names), the models of score conditions
    (`check_score_models`).
    """
    result = LoadResult()
    files = sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")])
    if not files:
        result.issues.append(
            TriggerIssue(str(directory), "", None, "no trigger files (*.yaml) found")
        )
    seen: dict[str, str] = {}
    for path in files:
        text = _read_trigger_file(path, result.issues)
        if text is None:
            continue
        loaded = load_trigger_text(text, str(path))
        result.issues.extend(loaded.issues)
        for trigger in loaded.triggers:
            if trigger.id in seen:
                result.issues.append(
                    TriggerIssue(
                        str(path),
                        "id",
                        None,
                        f"trigger id {trigger.id!r} is also defined in {seen[trigger.id]}",
                    )
                )
                continue
            seen[trigger.id] = str(path)
            result.triggers.append(trigger)
    if templates_dir is not None:
        result.issues.extend(check_templates(result.triggers, templates_dir))
    if models is not None:
        result.issues.extend(check_score_models(result.triggers, models))
    return result


def check_score_models(
    triggers: Iterable[Trigger],
    models: Collection[str],
    *,
    known_as: str = "the model definitions are",
    uplift_of_triggers: bool = True,
) -> list[TriggerIssue]:
    """Every ``score: {model: NAME}`` must name a defined model (the names are passed in: the
    engine reads no model definitions itself); one issue per unknown name, at its line.
    `known_as` says where the names come from (e.g. the models a scoring service serves).

    With `uplift_of_triggers`, ``uplift_<id>`` of a trigger of the set is known too: no
    definition declares it (`nudge uplift train <id>` registers it). Against what a scoring
    service serves, it is known only when served, and the issue says how to train it.
    """
    triggers = list(triggers)
    ids = {trigger.id for trigger in triggers}
    known = ", ".join(sorted(models)) or "none"

    def issue(name: str) -> str | None:
        if name in models:
            return None
        trigger = uplift_trigger(name)
        if trigger is not None and trigger in ids:
            if uplift_of_triggers:
                return None
            return (
                f"unknown model {name!r}; {known_as} {known} "
                f"(train it with `nudge uplift train {trigger}`)"
            )
        return f"unknown model {name!r}; {known_as} {known}"

    return [
        TriggerIssue(trigger.source, ref.path, ref.line, message)
        for trigger in triggers
        for ref in trigger.score_refs
        if (message := issue(ref.name)) is not None
    ]


def _score_refs(raw: Any, node: yaml.Node) -> tuple[TemplateRef, ...]:
    """Where each score condition names its model, in `if` and in every action's cancel_if."""
    found: list[TemplateRef] = []

    def walk(value: Any, loc: tuple[str | int, ...]) -> None:
        if isinstance(value, Mapping):
            score = value.get("score")
            if isinstance(score, Mapping) and "model" in score:
                where = (*loc, "score", "model")
                found.append(
                    TemplateRef(str(score["model"]), _dotted(where), _line_of(node, where))
                )
            for key, child in value.items():
                if isinstance(key, str):
                    walk(child, (*loc, key))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, (*loc, index))

    if isinstance(raw, Mapping):
        when = raw.get("when")
        crossing = when.get("score_crosses") if isinstance(when, Mapping) else None
        if isinstance(crossing, Mapping) and "model" in crossing:
            cross_at: tuple[str | int, ...] = ("when", "score_crosses", "model")
            found.append(
                TemplateRef(str(crossing["model"]), _dotted(cross_at), _line_of(node, cross_at))
            )
        walk(raw.get("if"), ("if",))
        for index, action in enumerate(raw.get("actions") or []):
            if isinstance(action, Mapping):
                walk(action.get("cancel_if"), ("actions", index, "cancel_if"))
                at = action.get("at")
                if at == BEST_SEND_HOUR or (isinstance(at, Mapping) and "best_send_hour" in at):
                    at_loc: tuple[str | int, ...] = ("actions", index, "at")
                    found.append(
                        TemplateRef(BEST_HOUR_MODEL, _dotted(at_loc), _line_of(node, at_loc))
                    )
    return tuple(found)


def check_templates(triggers: Iterable[Trigger], templates_dir: Path) -> list[TriggerIssue]:
    """Every template the triggers name — in send_email, send_sms (`<name>.sms.j2`) and send_push
    (`<name>.push.j2`) actions and in experiment variant overrides — must be a plain name, exist in `templates_dir` and compile; one issue per problem,
    at the trigger file's line that names the template."""
    if not templates_dir.is_dir():
        return [TriggerIssue(str(templates_dir), "", None, "no such folder of email templates")]
    issues: list[TriggerIssue] = []
    for trigger in triggers:
        for ref in trigger.templates:
            try:
                if ref.channel == "email":
                    load_template(templates_dir, ref.name)
                else:
                    load_channel_template(templates_dir, ref.name, ref.channel)
            except TemplateError as exc:
                issues.append(TriggerIssue(trigger.source, ref.path, ref.line, str(exc)))
    return issues


# -- internals -----------------------------------------------------------------------------------


def _load_documents(text: str, source: str, result: LoadResult) -> None:
    loader = BoundedLoader(text)
    expansion = Expansion()
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            items = node.value if isinstance(node, yaml.SequenceNode) else [node]
            expansion.seen = set()
            try:
                anchored = [
                    walk_expanded(item, expansion, 2 if item is not node else 1) for item in items
                ]
            except TooBig as exc:
                result.issues.append(TriggerIssue(source, "", exc.line, exc.message))
                return  # a bomb in one document: the rest of the file is not worth reading
            document = loader.construct_document(node)
            if document is None:
                continue
            raws = document if isinstance(node, yaml.SequenceNode) else [document]
            for item, raw, spans in zip(items, raws, anchored, strict=True):
                own = text[item.start_mark.index : item.end_mark.index]
                version_text = "\0".join([own, *(text[a:b] for a, b in spans)])
                version = hashlib.sha256(version_text.encode("utf-8", "surrogatepass")).hexdigest()
                trigger = _load_one(raw, item, source, result.issues, version[:12])
                if trigger is not None:
                    result.triggers.append(trigger)
    finally:
        loader.dispose()


def _read_trigger_file(path: Path, issues: list[TriggerIssue]) -> str | None:
    """The text of a trigger file, or None with an issue (too big, not a file, not UTF-8)."""
    try:
        if not path.is_file():
            issues.append(TriggerIssue(str(path), "", None, "not a regular file"))
            return None
        if path.stat().st_size > MAX_FILE_BYTES:  # refused unread
            issues.append(_too_big(str(path)))
            return None
        data = path.read_bytes()
    except OSError as exc:
        issues.append(TriggerIssue(str(path), "", None, f"cannot be read: {exc.strerror or exc}"))
        return None
    if len(data) > MAX_FILE_BYTES:  # it grew between stat and read
        issues.append(_too_big(str(path)))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        issues.append(TriggerIssue(str(path), "", line, f"not UTF-8 text (byte {exc.start})"))
        return None


def _too_big(source: str) -> TriggerIssue:
    return TriggerIssue(
        source, "", None, f"file too large (over {MAX_FILE_BYTES // 1024} KiB); split it up"
    )


def _template_refs(spec: TriggerSpec, node: yaml.Node) -> tuple[TemplateRef, ...]:
    refs: list[TemplateRef] = []
    for index, action in enumerate(spec.actions):
        if action.send_email is not None:
            loc = ("actions", index, "send_email", "template")
            refs.append(
                TemplateRef(action.send_email["template"], _dotted(loc), _line_of(node, loc))
            )
        for kind, channel in (("send_sms", "sms"), ("send_push", "push")):
            params = getattr(action, kind)
            if params is not None:
                loc = ("actions", index, kind, "template")
                refs.append(
                    TemplateRef(params["template"], _dotted(loc), _line_of(node, loc), channel)
                )
    if spec.experiment is not None:
        for name, override in spec.experiment.variants.items():
            if "template" in override:
                where: tuple[str | int, ...] = ("experiment", "variants", name, "template")
                refs.append(
                    TemplateRef(override["template"], _dotted(where), _line_of(node, where))
                )
    return tuple(refs)


def _load_one(
    raw: Any, node: yaml.Node, source: str, issues: list[TriggerIssue], version: str
) -> Trigger | None:
    if not isinstance(raw, Mapping):
        issues.append(
            TriggerIssue(
                source,
                "",
                node.start_mark.line + 1,
                "expected a trigger (a mapping with id, when, actions)",
            )
        )
        return None
    before = len(issues)
    try:
        spec = TriggerSpec.model_validate(raw)
    except ValidationError as exc:
        issues.extend(validation_issues(exc, node, source))
        spec = None
    errors: list[ConditionError] = []
    where = None
    when_raw = raw.get("when")
    when: Mapping[str, Any] = when_raw if isinstance(when_raw, Mapping) else {}
    if when.get("where") is not None:
        where = compile_field_tests("event", when["where"], ("when", "where"), errors)
    condition = compile_condition(raw["if"], ("if",), errors) if raw.get("if") is not None else None
    for action_index, action in enumerate(raw.get("actions") or []):
        if isinstance(action, Mapping) and action.get("cancel_if") is not None:
            compile_condition(action["cancel_if"], ("actions", action_index, "cancel_if"), errors)
    for error in errors:
        issues.append(
            TriggerIssue(source, _dotted(error.path), _line_of(node, error.path), error.message)
        )
    if spec is None or len(issues) > before:
        return None
    from engine.dsl.event_refs import event_refs  # it imports this module: imported late

    return Trigger(
        spec, where, condition, version, source, _template_refs(spec, node),
        _score_refs(raw, node), event_refs(raw, node),
    )  # fmt: skip


def apply_experiment_variant(raw: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The trigger with the winning variant's overrides written into its actions, experiment removed."""
    experiment = raw.get("experiment") or {}
    variants = experiment.get("variants") or {}
    if variant not in variants:
        known = ", ".join(variants) or "none"
        raise VariantError(
            f"trigger {raw.get('id')!r} has no variant {variant!r} (variants: {known})"
        )
    overrides = variants[variant]
    updated = {k: v for k, v in raw.items() if k != "experiment"}
    actions = []
    for action in raw.get("actions") or []:
        action = dict(action)
        if "send_email" in action or "delay" in overrides:
            if "delay" in overrides:
                action["delay"] = overrides["delay"]
            if "at" in overrides:
                action["at"] = overrides["at"]
            if "template" in overrides and "send_email" in action:
                action["send_email"] = {**action["send_email"], "template": overrides["template"]}
        actions.append(action)
    updated["actions"] = actions
    note = f"variant {variant} applied from its experiment"
    updated["description"] = (
        f"{raw['description']} ({note})" if raw.get("description") else note.capitalize()
    )
    return updated


class VariantError(UserError):
    """An experiment variant that cannot end its trigger's experiment; the message says why."""


@dataclass(frozen=True)
class VariantVersion:
    """The next version of a trigger's file, with one experiment variant for everyone (unwritten).

    ``previous`` is the file's text as read, ``text`` the new one; ``current`` and ``new`` the
    trigger before and after; ``changed_actions`` each action (as written) that changes, before
    and after; ``backup`` where the previous text goes, named after its version.
    """

    path: Path
    previous: str
    text: str
    current: Trigger
    new: Trigger
    changed_actions: tuple[tuple[dict[str, Any], dict[str, Any]], ...]

    @property
    def backup(self) -> Path:
        return self.path.with_name(f"{self.path.name}.{self.current.version}.bak")


def variant_version(trigger: Trigger, variant: str) -> VariantVersion:
    """The new version of ``trigger``'s file with ``variant`` applied and the experiment removed.

    Raises VariantError when the file holds more than one trigger, the trigger has no such
    variant, or the new version would not load. Nothing is written.
    """
    path = Path(trigger.source)
    previous = path.read_text()
    documents = list(yaml.safe_load_all(previous))  # the file loaded, bounded, as `trigger`
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise VariantError(f"{path}: apply works on files that hold one trigger")
    before = documents[0]
    updated = apply_experiment_variant(before, variant)
    text = yaml.safe_dump(updated, sort_keys=False, allow_unicode=True)
    check = load_trigger_text(text, str(path))
    if check.issues:
        problems = "; ".join(str(issue) for issue in check.issues)
        raise VariantError(f"the new version would not load: {problems}")
    changed = tuple(
        (old, new)
        for old, new in zip(before.get("actions", []), updated["actions"], strict=True)
        if old != new
    )
    return VariantVersion(path, previous, text, trigger, check.triggers[0], changed)


def write_variant_version(version: VariantVersion) -> Path:
    """Write ``version`` in place of its file, the previous text kept as ``version.backup``
    (returned): the old version stays next to the new one, and decisions name either."""
    version.backup.write_text(version.previous)
    version.path.write_text(version.text)
    return version.backup
