"""The suppression policy as configuration: a YAML file (NUDGE_POLICY_FILE) and per-trigger overrides.

The file is read like a trigger file (bounded: `engine.dsl.bounded_yaml`), validated by pydantic,
and every mistake is reported with file, path and line. Everything in it is optional: what it does
not say keeps the built-in default of `engine.decisions.suppression.SuppressionPolicy`, so no file
(or an empty one) is exactly today's policy. Its shape::

    caps:                          # per channel: email, sms, push, webhook
      email: {per_local_day: 1, rolling: [{window: 7d, max: 3}]}
      sms: null                    # no cap at all on this channel
    consent: {email: consent_email, sms: consent_sms, push: consent_push}   # null: none needed
    quiet_hours: {start: "21:00", end: "08:00"}                            # null: none
    engagement_model: engagement
    engagement_floor: 0.02
    unengaged_sends: 8
    global_holdout: 0.05           # 0.0 … 0.5: share held out of every marketing trigger

A trigger's ``policy:`` has the same fields (all partial, ``global_holdout`` excepted: one holdout
for every trigger) and is merged over the global policy for that trigger only: a channel's cap
keeps what the override does not name (``rolling`` is replaced as a whole), ``consent`` and
``caps`` merge per channel, ``quiet_hours`` per bound.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from engine.decisions.suppression import ChannelCap, SuppressionPolicy
from engine.dsl.bounded_yaml import (
    YamlIssue,
    YamlProblem,
    compose_yaml,
    read_yaml_text,
    validation_issues,
)
from engine.dsl.durations import parse_duration
from engine.errors import UserError

__all__ = [
    "CHANNELS",
    "PolicyError",
    "PolicyLoad",
    "PolicySpec",
    "TriggerPolicy",
    "load_policy_file",
    "load_policy_text",
    "policy_from_file",
]

# The channels trigger actions use (engine.dsl.triggers.ACTION_CHANNELS; a test keeps them equal).
CHANNELS = ("email", "sms", "push", "webhook")
Channel = Literal["email", "sms", "push", "webhook"]
MAX_GLOBAL_HOLDOUT = 0.5
# No quiet hours: a window that starts where it ends holds no time (suppression.quiet_hours_end).
NO_QUIET = time(0, 0)


def _attribute_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value):
        raise ValueError(
            f"expected the name of a profile attribute such as consent_email (got {value!r})"
        )
    return value


ConsentField = Annotated[str, AfterValidator(_attribute_name)]


class RollingCap(BaseModel):
    """At most `max` sends in any `window` (a duration such as 7d)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: timedelta
    max: StrictInt = Field(ge=1)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> timedelta:
        window = parse_duration(value)
        if window.total_seconds() <= 0:
            raise ValueError("expected a duration longer than 0, such as 7d")
        return window


class CapSpec(BaseModel):
    """A channel's cap; what is not given keeps the cap it overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_local_day: StrictInt | None = Field(default=None, ge=1)  # null: no daily cap
    rolling: list[RollingCap] = Field(default_factory=list)

    def over(self, base: ChannelCap | None) -> ChannelCap:
        """This cap merged over `base` (a channel without a cap starts from none at all)."""
        start = base if base is not None else ChannelCap(per_local_day=None, rolling=())
        given = self.model_fields_set
        return ChannelCap(
            per_local_day=self.per_local_day if "per_local_day" in given else start.per_local_day,
            rolling=tuple((r.window.total_seconds(), r.max) for r in self.rolling)
            if "rolling" in given
            else start.rolling,
        )


class QuietHours(BaseModel):
    """The customer-local window (start inclusive, end exclusive) marketing does not send in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time | None = None
    end: time | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> time:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 21:00 as the base-60 number 1260.
            raise ValueError(f'write the time in quotes, e.g. "21:00" (YAML read {value!r})')
        if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f'expected a local time "HH:MM" (got {value!r})')
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))


class PolicySpec(BaseModel):
    """The YAML shape of the suppression policy; every field optional (absent: unchanged)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caps: dict[Channel, CapSpec | None] = Field(default_factory=dict)
    consent: dict[Channel, ConsentField | None] = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    engagement_model: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    engagement_floor: StrictFloat | None = Field(default=None, ge=0.0, le=1.0)
    unengaged_sends: StrictInt | None = Field(default=None, ge=1)
    global_holdout: StrictFloat | None = Field(default=None, ge=0.0, le=MAX_GLOBAL_HOLDOUT)

    def apply(self, base: SuppressionPolicy) -> SuppressionPolicy:
        """`base` with what this spec says written over it."""
        given = self.model_fields_set
        changes: dict[str, Any] = {}
        if "caps" in given:
            caps = dict(base.caps)
            for channel, cap in self.caps.items():
                if cap is None:
                    caps.pop(channel, None)
                else:
                    caps[channel] = cap.over(caps.get(channel))
            changes["caps"] = caps
        if "consent" in given:
            consent = dict(base.consent_fields)
            for channel, name in self.consent.items():
                if name is None:
                    consent.pop(channel, None)
                else:
                    consent[channel] = name
            changes["consent_fields"] = consent
        if "quiet_hours" in given:
            quiet = self.quiet_hours
            if quiet is None:
                changes["quiet_start"] = changes["quiet_end"] = NO_QUIET
            else:
                changes["quiet_start"] = (
                    quiet.start if quiet.start is not None else base.quiet_start
                )
                changes["quiet_end"] = quiet.end if quiet.end is not None else base.quiet_end
        for name in ("engagement_model", "engagement_floor", "unengaged_sends", "global_holdout"):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        return dataclasses.replace(base, **changes)


class TriggerPolicy(PolicySpec):
    """A trigger's ``policy:``: the policy's fields but the global holdout, merged over it."""

    @field_validator("global_holdout", mode="before")
    @classmethod
    def _one_holdout(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "the global holdout is one for every trigger: set it in the policy file"
            )
        return value


@dataclass
class PolicyLoad:
    """A policy file loaded: the policy (the defaults when there are issues), and the issues."""

    policy: SuppressionPolicy = field(default_factory=SuppressionPolicy)
    issues: list[YamlIssue] = field(default_factory=list)


class PolicyError(UserError):
    """A policy file with mistakes; `issues` holds every one (file, path, line, message)."""

    def __init__(self, issues: list[YamlIssue]) -> None:
        super().__init__("; ".join(str(issue) for issue in issues))
        self.issues = issues


def load_policy_text(text: str, source: str = "<string>") -> PolicyLoad:
    """The policy in a YAML text over the defaults; problems are collected, not raised."""
    try:
        node, raw = compose_yaml(text, source)
    except YamlProblem as exc:
        return PolicyLoad(issues=[YamlIssue(source, "", exc.line, exc.message)])
    if node is None or raw is None:
        return PolicyLoad()  # an empty file says nothing: the defaults
    if not isinstance(raw, dict):
        line = node.start_mark.line + 1
        message = "expected a policy (a mapping of caps, consent, quiet_hours, …)"
        return PolicyLoad(issues=[YamlIssue(source, "", line, message)])
    try:
        spec = PolicySpec.model_validate(raw)
    except ValidationError as exc:
        return PolicyLoad(issues=validation_issues(exc, node, source))
    return PolicyLoad(policy=spec.apply(SuppressionPolicy()))


def load_policy_file(path: Path) -> PolicyLoad:
    """`load_policy_text` of a file (too large, unreadable or not UTF-8: one issue)."""
    try:
        text = read_yaml_text(path)
    except YamlProblem as exc:
        return PolicyLoad(issues=[YamlIssue(str(path), "", exc.line, exc.message)])
    return load_policy_text(text, str(path))


def policy_from_file(path: Path | None) -> SuppressionPolicy:
    """The policy of `path` (None: the defaults); raises PolicyError listing every mistake."""
    if path is None:
        return SuppressionPolicy()
    loaded = load_policy_file(path)
    if loaded.issues:
        raise PolicyError(loaded.issues)
    return loaded.policy
