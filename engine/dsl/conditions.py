"""Conditions of the trigger DSL: compiled once at load time, evaluated per event.

Outcomes are three-valued: PASSED, FAILED, or MISSING (an input such as a score was not there and
the condition says to skip). `all` fails on any failure, else is missing on any missing input;
`any` passes on any pass, else is missing on any missing input; `not` swaps pass and fail.

Each condition has two evaluators: `check` (fast, used for every event) and `explain` (builds the
trace of every leaf with the values it saw — used for decisions that are logged, and for
`nudge engine explain`). Both are pure: they read an `EvaluationContext` and change nothing.

One module (~700 lines) on purpose: every condition kind is a compile function and a node class
with its two evaluators, and they share the compile-time error reporting; split, each piece would
import all the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any
from zoneinfo import ZoneInfo

from engine.decisions.state import CustomerState
from engine.dsl.durations import parse_duration
from engine.dsl.operators import Predicate, compile_predicate

__all__ = [
    "NAMED_PATTERNS",
    "Condition",
    "ConditionError",
    "EvaluationContext",
    "Outcome",
    "ScoreValue",
    "compile_condition",
]

DAYS_OF_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Outcome(IntEnum):
    FAILED = 0
    PASSED = 1
    MISSING = 2

    @property
    def label(self) -> str:
        return _LABEL[self]


# Outcome of a boolean test without the cost of calling the enum: _OF[True] is PASSED; its
# label without the enum's name lookup: _LABEL[True] is "passed" (traces are made per decision).
_OF = (Outcome.FAILED, Outcome.PASSED)
_LABEL = ("failed", "passed", "missing")


@dataclass(frozen=True)
class ScoreValue:
    """A model score as the scoring service gave it."""

    value: float
    model_version: str
    computed_at: float  # epoch seconds when the engine received it
    known: bool = True
    # When the features behind the score were computed (the scoring service's snapshot time,
    # epoch seconds); None when the service does not say. `max_age` is measured from it.
    features_at: float | None = None
    # The engagement model's best local send hour (0-23), when the service gives one.
    best_send_hour: int | None = None


@dataclass(slots=True)
class EvaluationContext:
    """Everything a condition may read about one event (conditions read it, never assign).

    Not frozen: one is made per event, and a frozen dataclass's `__init__` (a guarded set per
    field) was 5 % of `decide` at 1,000 triggers; slots make it ~3× cheaper to build.
    """

    event_type: str
    event: Mapping[str, Any]  # the event as a dict: properties, session_id, source, ...
    profile: Mapping[str, Any]
    state: CustomerState
    scores: Mapping[str, ScoreValue | None]
    now: float  # the event's time, epoch seconds
    zone: ZoneInfo
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # per-event answers

    def local_time(self) -> datetime:
        return datetime.fromtimestamp(self.now, self.zone)


@dataclass(frozen=True)
class ConditionError:
    """A problem found while compiling: where (path inside the trigger) and what."""

    path: tuple[str | int, ...]
    message: str


class Condition:
    """A compiled condition."""

    kind: str = "condition"

    def check(self, ctx: EvaluationContext) -> Outcome:
        raise NotImplementedError

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        """The trace: this node's outcome, what it looked at, and its children's traces."""
        raise NotImplementedError

    def score_models(self) -> set[str]:
        """Models whose scores this condition reads."""
        return set()

    def longest_window(self) -> float:
        """How far back (seconds) this condition looks into the customer's history."""
        return 0.0

    def event_types(self) -> set[str]:
        """Event types whose history this condition reads from the customer's state."""
        return set()


# -- combinators ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllOf(Condition):
    children: tuple[Condition, ...]
    kind = "all"

    def check(self, ctx: EvaluationContext) -> Outcome:
        missing = False
        for child in self.children:
            outcome = child.check(ctx)
            if outcome is Outcome.FAILED:
                return Outcome.FAILED
            missing |= outcome is Outcome.MISSING
        return Outcome.MISSING if missing else Outcome.PASSED

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        # The outcome from the children's traces, as `check` would find it (not evaluated again).
        traces = [c.explain(ctx) for c in self.children]
        labels = {t["outcome"] for t in traces}
        outcome = "failed" if "failed" in labels else "missing" if "missing" in labels else "passed"
        return {"kind": "all", "outcome": outcome, "children": traces}

    def score_models(self) -> set[str]:
        return set().union(*(c.score_models() for c in self.children))

    def longest_window(self) -> float:
        return max((c.longest_window() for c in self.children), default=0.0)

    def event_types(self) -> set[str]:
        return set().union(*(c.event_types() for c in self.children))


@dataclass(frozen=True)
class AnyOf(AllOf):
    kind = "any"

    def check(self, ctx: EvaluationContext) -> Outcome:
        missing = False
        for child in self.children:
            outcome = child.check(ctx)
            if outcome is Outcome.PASSED:
                return Outcome.PASSED
            missing |= outcome is Outcome.MISSING
        return Outcome.MISSING if missing else Outcome.FAILED

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        traces = [c.explain(ctx) for c in self.children]
        labels = {t["outcome"] for t in traces}
        outcome = "passed" if "passed" in labels else "missing" if "missing" in labels else "failed"
        return {"kind": "any", "outcome": outcome, "children": traces}


@dataclass(frozen=True)
class Not(Condition):
    child: Condition
    kind = "not"

    def check(self, ctx: EvaluationContext) -> Outcome:
        outcome = self.child.check(ctx)
        if outcome is Outcome.MISSING:
            return outcome
        return Outcome.FAILED if outcome is Outcome.PASSED else Outcome.PASSED

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        trace = self.child.explain(ctx)
        outcome = _NEGATED[trace["outcome"]]
        return {"kind": "not", "outcome": outcome, "children": [trace]}

    def score_models(self) -> set[str]:
        return self.child.score_models()

    def longest_window(self) -> float:
        return self.child.longest_window()

    def event_types(self) -> set[str]:
        return self.child.event_types()


_NEGATED = {"passed": "failed", "failed": "passed", "missing": "missing"}


# -- leaves --------------------------------------------------------------------------------------


def lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Follow a dot path through nested mappings; None when any step is absent."""
    value: Any = data
    for step in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(step)
        if value is None:
            return None
    return value


@dataclass(frozen=True)
class FieldTests(Condition):
    """Predicates on fields of the event (`event`) or of the customer profile (`attribute`)."""

    source: str  # "event" or "attribute"
    event_type: str | None
    tests: tuple[tuple[tuple[str, ...], Predicate], ...]

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.source

    def _data(self, ctx: EvaluationContext) -> Mapping[str, Any]:
        return ctx.event if self.source == "event" else ctx.profile

    def check(self, ctx: EvaluationContext) -> Outcome:
        if self.event_type is not None and ctx.event_type != self.event_type:
            return Outcome.FAILED
        data = self._data(ctx)
        for path, predicate in self.tests:
            if not predicate.holds(lookup(data, path)):
                return Outcome.FAILED
        return Outcome.PASSED

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        data = self._data(ctx)
        leaves: list[dict[str, Any]] = []
        if self.event_type is not None:
            leaves.append(
                {"field": "event_type", "expected": self.event_type, "actual": ctx.event_type,
                 "outcome": _LABEL[ctx.event_type == self.event_type]}
            )  # fmt: skip
        for path, predicate in self.tests:
            actual = lookup(data, path)
            leaves.append(
                {"field": ".".join(path), "test": predicate.describe(), "actual": _jsonable(actual),
                 "outcome": _LABEL[predicate.holds(actual)]}
            )  # fmt: skip
        # `check`'s outcome: passed when every leaf passed (not evaluated again)
        passed = all(leaf["outcome"] == "passed" for leaf in leaves)
        return {"kind": self.source, "outcome": "passed" if passed else "failed", "fields": leaves}


@dataclass(frozen=True)
class Behavior(Condition):
    """Count or sum of one event type in a window back from the event, compared."""

    event_type: str
    window_start: float  # seconds back where the window starts (older edge)
    window_end: float  # seconds back where it ends (0 = now)
    measure: str  # "count" or "sum"
    predicate: Predicate
    name: str | None = None  # the named pattern it came from
    kind = "behavior"

    def value(self, ctx: EvaluationContext) -> float:
        # Many triggers ask the same question of one event: answer it once per event.
        key = (self.event_type, self.window_start, self.window_end, self.measure)
        memo = ctx.memo
        value = memo.get(key)
        if value is None:
            since, until = ctx.now - self.window_start, ctx.now - self.window_end
            if self.measure == "count":
                value = ctx.state.count(self.event_type, since, until)
            else:
                value = ctx.state.total(self.event_type, since, until)
            memo[key] = value
        return value

    def check(self, ctx: EvaluationContext) -> Outcome:
        return _OF[self.predicate.holds(self.value(ctx))]

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        value = self.value(ctx)
        return {
            "kind": "behavior", "pattern": self.name, "event": self.event_type, "measure": self.measure,
            "window": [self.window_start, self.window_end], "test": self.predicate.describe(),
            "actual": value, "outcome": _LABEL[self.predicate.holds(value)],
        }  # fmt: skip

    def longest_window(self) -> float:
        return self.window_start

    def event_types(self) -> set[str]:
        return {self.event_type}


@dataclass(frozen=True)
class TimeTest(Condition):
    """Time since the last event of a type, or the local day of week / hour of the event."""

    measure: str  # "since_last", "day_of_week" or "hour"
    predicate: Predicate
    event_type: str | None = None
    kind = "time"

    def value(self, ctx: EvaluationContext) -> Any:
        if self.measure == "since_last":
            last = ctx.state.last(self.event_type or "", ctx.now)
            return math.inf if last is None else ctx.now - last  # never counts as long ago
        local = ctx.local_time()
        return DAYS_OF_WEEK[local.weekday()] if self.measure == "day_of_week" else local.hour

    def check(self, ctx: EvaluationContext) -> Outcome:
        return _OF[self.predicate.holds(self.value(ctx))]

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        value = self.value(ctx)
        return {
            "kind": "time", "measure": self.measure, "event": self.event_type, "zone": ctx.zone.key,
            "test": self.predicate.describe(), "actual": _jsonable(value),
            "outcome": _LABEL[self.predicate.holds(value)],
        }  # fmt: skip

    def event_types(self) -> set[str]:
        return {self.event_type} if self.event_type else set()


@dataclass(frozen=True)
class Sequence_(Condition):
    """Steps in order within a window ending now, optionally followed by the absence of an event."""

    steps: tuple[str, ...]
    within: float
    absent_event: str | None = None
    absent_within: float = 0.0
    kind = "sequence"

    def matched_at(self, ctx: EvaluationContext) -> float | None:
        """Time of the last step of the earliest complete match in the window, or None."""
        start = ctx.now - self.within
        t = start
        for step in self.steps:
            nxt = next((x for x in ctx.state.times(step) if t <= x <= ctx.now), None)
            if nxt is None:
                return None
            t = nxt
        return t

    def check(self, ctx: EvaluationContext) -> Outcome:
        return self._holds(ctx)[0]

    def _holds(self, ctx: EvaluationContext) -> tuple[Outcome, float | None, float | None]:
        """Passed, failed, or — while an absence window is still open without its event —
        missing: not known yet, never passed early (the event may still come)."""
        last_step = self.matched_at(ctx)
        if last_step is None:
            return Outcome.FAILED, None, None
        if self.absent_event is None:
            return Outcome.PASSED, last_step, None
        closes = last_step + self.absent_within
        until = min(closes, ctx.now)
        spoiler = next(
            (x for x in ctx.state.times(self.absent_event) if last_step < x <= until), None
        )
        if spoiler is not None:
            return Outcome.FAILED, last_step, spoiler
        return (Outcome.PASSED if ctx.now >= closes else Outcome.MISSING), last_step, None

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        holds, last_step, spoiler = self._holds(ctx)
        return {
            "kind": "sequence", "steps": list(self.steps), "within": self.within,
            "absent": self.absent_event, "completed_at": last_step, "absent_event_at": spoiler,
            "outcome": holds.label,
        }  # fmt: skip

    def longest_window(self) -> float:
        return self.within + self.absent_within

    def event_types(self) -> set[str]:
        return set(self.steps) | ({self.absent_event} if self.absent_event else set())


@dataclass(frozen=True)
class ScoreTest(Condition):
    """A model score compared, if it is fresh enough; `on_missing` says what absence means.

    Fresh enough: the score's age at the event — from the snapshot its features describe
    (`ScoreValue.features_at`, what the scoring service says), or from when the engine fetched
    it when the service does not say (an older service) — is at most `max_age`. A score without
    features (the service's population prior for a customer it does not know, ``known: false``,
    whose `features_at` is None) is missing whatever its age: `on_missing` decides, as when the
    service could not answer at all. Features snapshotted after the event (replaying history
    against today's store) have a negative age and count as fresh, as fetched scores always did.
    """

    model: str
    predicate: Predicate
    max_age: float
    on_missing: str  # "skip", "pass" or "fail"
    kind = "score"

    def _score(self, ctx: EvaluationContext) -> ScoreValue | None:
        score = ctx.scores.get(self.model)
        if score is None or not score.known or _age(score, ctx.now) > self.max_age:
            return None
        return score

    def check(self, ctx: EvaluationContext) -> Outcome:
        score = self._score(ctx)
        if score is None:
            return _ON_MISSING[self.on_missing]
        return _OF[self.predicate.holds(score.value)]

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        """The trace also says how old the score was (`age`, seconds, measured from `age_from`:
        ``features`` or ``fetched``) against `max_age`, so a stale score is told from an absent one."""
        raw = ctx.scores.get(self.model)
        score = self._score(ctx)
        return {
            "kind": "score", "model": self.model, "test": self.predicate.describe(),
            "actual": None if score is None else score.value,
            "model_version": None if score is None else score.model_version,
            "missing": score is None, "on_missing": self.on_missing, "outcome": self.check(ctx).label,
            "known": None if raw is None else raw.known,
            "age": None if raw is None or not raw.known else _age(raw, ctx.now),
            "age_from": None if raw is None else ("fetched" if raw.features_at is None else "features"),
            "max_age": self.max_age,
        }  # fmt: skip

    def score_models(self) -> set[str]:
        return {self.model}


def _age(score: ScoreValue, now: float) -> float:
    """Seconds between the score's features (else its fetch) and `now`."""
    return now - (score.computed_at if score.features_at is None else score.features_at)


_ON_MISSING = {"skip": Outcome.MISSING, "pass": Outcome.PASSED, "fail": Outcome.FAILED}


@dataclass(frozen=True)
class SegmentTest(Condition):
    """Membership of the customer in segments (``segment: {in: vip}``, ``{not_in: [a, b]}``):
    the processor puts the customer's segments in the profile as ``segments``."""

    segments: tuple[str, ...]
    member: bool  # True: in any of them; False: in none of them
    kind = "segment"

    def _members(self, ctx: EvaluationContext) -> list[str]:
        found = ctx.profile.get("segments") or ()
        return [s for s in self.segments if s in found]

    def check(self, ctx: EvaluationContext) -> Outcome:
        return _OF[bool(self._members(ctx)) == self.member]

    def explain(self, ctx: EvaluationContext) -> dict[str, Any]:
        return {"kind": "segment", "test": "in" if self.member else "not_in",
                "segments": list(self.segments), "member_of": self._members(ctx),
                "outcome": self.check(ctx).label}  # fmt: skip


# -- compiling -----------------------------------------------------------------------------------

NAMED_PATTERNS: dict[str, dict[str, Any]] = {
    # Opened emails last month, none this month.
    "engagement_decline": {
        "all": [
            {"behavior": {"event": "email_opened", "between": ["60d", "30d"], "count": {"gte": 2}}},
            {"behavior": {"event": "email_opened", "within": "30d", "count": {"equals": 0}}},
        ]
    },
    "purchase_frequency": {
        "behavior": {"event": "purchase_completed", "within": "90d", "count": {"gte": 3}}
    },
    "browsing_intensity": {
        "behavior": {"event": "product_view", "within": "24h", "count": {"gte": 5}}
    },
}

Path = tuple[str | int, ...]


def compile_condition(raw: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    """Compile one DSL condition; problems are appended to `errors` (all of them, not the first)."""
    if isinstance(raw, list):
        return _combine(AllOf, raw, path, errors)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        errors.append(
            ConditionError(
                path, f"expected one of {', '.join(_KINDS)} as the single key of a mapping"
            )
        )
        return None
    [(kind, body)] = raw.items()
    here = (*path, kind)
    compiler = _KINDS.get(kind)
    if compiler is None:
        errors.append(
            ConditionError(here, f"unknown condition {kind!r}; conditions are {', '.join(_KINDS)}")
        )
        return None
    return compiler(body, here, errors)


def _combine(
    cls: type[AllOf], body: Any, path: Path, errors: list[ConditionError]
) -> Condition | None:
    if not isinstance(body, list) or not body:
        errors.append(ConditionError(path, "expected a non-empty list of conditions"))
        return None
    children = [compile_condition(item, (*path, i), errors) for i, item in enumerate(body)]
    if any(c is None for c in children):
        return None
    return cls(tuple(children))  # type: ignore[arg-type]


def _not(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    child = compile_condition(body, path, errors)
    return Not(child) if child is not None else None


EVENT_FIELDS = {"event_id", "customer_id", "event_type", "timestamp", "properties", "session_id",
                "source", "device", "location"}  # fmt: skip
PROFILE_FIELDS = {"customer_id", "email", "first_name", "last_name", "timezone", "country", "language",
                  "consent_email", "consent_sms", "consent_push", "signup_at", "acquisition_channel",
                  "segments", "traits"}  # fmt: skip


def compile_field_tests(
    source: str, where: Any, path: Path, errors: list[ConditionError], event_type: str | None = None
) -> FieldTests | None:
    """``{dot.path: predicate, ...}`` on the event or the profile."""
    if not isinstance(where, Mapping) or not where:
        errors.append(ConditionError(path, "expected a mapping of field paths to tests"))
        return None
    known = EVENT_FIELDS if source == "event" else PROFILE_FIELDS
    tests, ok = [], True
    for field_path, raw_test in where.items():
        parts = tuple(str(field_path).split("."))
        if parts[0] not in known:
            hint = "properties.<name>" if source == "event" else "traits.<name>"
            errors.append(ConditionError((*path, str(field_path)),
                          f"unknown field {parts[0]!r}; fields are {', '.join(sorted(known))} (custom: {hint})"))  # fmt: skip
            ok = False
            continue
        try:
            tests.append((parts, compile_predicate(raw_test)))
        except ValueError as exc:
            errors.append(ConditionError((*path, str(field_path)), str(exc)))
            ok = False
    return FieldTests(source, event_type, tuple(tests)) if ok else None


def _event(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    if isinstance(body, str):
        return FieldTests("event", body, ())
    if not isinstance(body, Mapping):
        errors.append(ConditionError(path, "expected an event type or {type: ..., where: {...}}"))
        return None
    unknown = set(body) - {"type", "where"}
    if unknown:
        errors.append(
            ConditionError(path, f"unknown key(s) {sorted(unknown)}; expected type and/or where")
        )
        return None
    if "where" not in body:
        return FieldTests("event", body.get("type"), ())
    return compile_field_tests("event", body["where"], (*path, "where"), errors, body.get("type"))


def _attribute(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    return compile_field_tests("attribute", body, path, errors)


def _behavior(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    if not isinstance(body, Mapping):
        errors.append(
            ConditionError(path, "expected {event: TYPE, within: DURATION, count|sum: TEST}")
        )
        return None
    if "pattern" in body:
        name = body["pattern"]
        if name not in NAMED_PATTERNS:
            errors.append(ConditionError((*path, "pattern"),
                          f"unknown pattern {name!r}; patterns are {', '.join(NAMED_PATTERNS)}"))  # fmt: skip
            return None
        overrides = {k: v for k, v in body.items() if k != "pattern"}
        template = NAMED_PATTERNS[name]
        if overrides and "behavior" in template:
            template = {"behavior": {**template["behavior"], **overrides}}
        elif overrides:
            errors.append(ConditionError(path, f"pattern {name!r} takes no overrides"))
            return None
        compiled = compile_condition(template, path[:-1], errors)
        if isinstance(compiled, Behavior):
            return Behavior(**{**compiled.__dict__, "name": name})
        return compiled
    allowed = {"event", "within", "between", "count", "sum"}
    unknown = set(body) - allowed
    if unknown:
        errors.append(
            ConditionError(path, f"unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}")
        )
        return None
    if "event" not in body:
        errors.append(ConditionError(path, "missing 'event': which event type to count"))
        return None
    if ("within" in body) == ("between" in body):
        errors.append(
            ConditionError(path, "give the window as within: DURATION or between: [OLDER, NEWER]")
        )
        return None
    try:
        if "within" in body:
            start, end = parse_duration(body["within"]).total_seconds(), 0.0
        else:
            older, newer = body["between"]
            start, end = (
                parse_duration(older).total_seconds(),
                parse_duration(newer).total_seconds(),
            )
            if end >= start:
                raise ValueError(
                    "between: the first duration must reach further back than the second"
                )
    except (ValueError, TypeError) as exc:
        errors.append(ConditionError(path, str(exc)))
        return None
    if "count" in body and "sum" in body:
        errors.append(ConditionError(path, "give count or sum, not both"))
        return None
    measure = "sum" if "sum" in body else "count"
    try:
        predicate = compile_predicate(body.get(measure, {"gte": 1}))
    except ValueError as exc:
        errors.append(ConditionError((*path, measure), str(exc)))
        return None
    return Behavior(str(body["event"]), start, end, measure, predicate)


def _time(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    if not isinstance(body, Mapping):
        errors.append(
            ConditionError(path, "expected {since_last: TYPE, gte: DURATION} or day_of_week / hour")
        )
        return None
    if "since_last" in body:
        tests = {k: v for k, v in body.items() if k != "since_last"}
        try:
            predicate = compile_predicate({k: _duration_operand(v) for k, v in tests.items()})
        except ValueError as exc:
            errors.append(ConditionError(path, str(exc)))
            return None
        return TimeTest("since_last", predicate, str(body["since_last"]))
    if len(body) != 1 or next(iter(body)) not in {"day_of_week", "hour"}:
        errors.append(ConditionError(path, "expected one of since_last, day_of_week, hour"))
        return None
    [(measure, raw)] = body.items()
    try:
        predicate = compile_predicate(raw)
    except ValueError as exc:
        errors.append(ConditionError((*path, measure), str(exc)))
        return None
    if measure == "day_of_week":
        values = [v for _, e in predicate.tests for v in (e if isinstance(e, tuple) else (e,))]
        bad = [v for v in values if v not in DAYS_OF_WEEK]
        if bad:
            errors.append(
                ConditionError(
                    (*path, measure), f"unknown day(s) {bad}; days are {', '.join(DAYS_OF_WEEK)}"
                )
            )
            return None
    return TimeTest(measure, predicate)


def _duration_operand(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_duration_operand(v) for v in value]
    if isinstance(value, Mapping):
        return value
    return parse_duration(value).total_seconds()


def _sequence(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    if (
        not isinstance(body, Mapping)
        or not isinstance(body.get("steps"), list)
        or not body["steps"]
    ):
        errors.append(ConditionError(path, "expected {steps: [TYPE, ...], within: DURATION}"))
        return None
    unknown = set(body) - {"steps", "within", "then_absent"}
    if unknown:
        errors.append(
            ConditionError(
                path, f"unknown key(s) {sorted(unknown)}; expected steps, within, then_absent"
            )
        )
        return None
    try:
        within = parse_duration(body.get("within", "30d")).total_seconds()
        absent = body.get("then_absent")
        absent_event, absent_within = None, 0.0
        if absent is not None:
            if not isinstance(absent, Mapping) or "event" not in absent or "within" not in absent:
                raise ValueError("then_absent: expected {event: TYPE, within: DURATION}")
            absent_event = str(absent["event"])
            absent_within = parse_duration(absent["within"]).total_seconds()
    except ValueError as exc:
        errors.append(ConditionError(path, str(exc)))
        return None
    return Sequence_(tuple(str(s) for s in body["steps"]), within, absent_event, absent_within)


def _score(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    if not isinstance(body, Mapping) or "model" not in body:
        errors.append(ConditionError(path, "expected {model: NAME, <operator>: VALUE, max_age: DURATION, on_missing: skip|pass|fail}"))  # fmt: skip
        return None
    tests = {k: v for k, v in body.items() if k not in {"model", "max_age", "on_missing"}}
    on_missing = body.get("on_missing", "skip")
    if on_missing not in _ON_MISSING:
        errors.append(
            ConditionError(
                (*path, "on_missing"), f"expected skip, pass or fail (got {on_missing!r})"
            )
        )
        return None
    try:
        predicate = compile_predicate(tests)
        max_age = parse_duration(body.get("max_age", "1d")).total_seconds()
    except ValueError as exc:
        errors.append(ConditionError(path, str(exc)))
        return None
    return ScoreTest(str(body["model"]), predicate, max_age, on_missing)


def _segment(body: Any, path: Path, errors: list[ConditionError]) -> Condition | None:
    if not isinstance(body, Mapping) or len(body) != 1 or next(iter(body)) not in ("in", "not_in"):
        errors.append(
            ConditionError(path, "expected {in: SEGMENT} or {not_in: SEGMENT} (or a list)")
        )
        return None
    [(test, names)] = body.items()
    listed = [names] if isinstance(names, str) else names
    if (
        not isinstance(listed, list)
        or not listed
        or not all(isinstance(n, str) and n.strip() for n in listed)
    ):
        errors.append(ConditionError((*path, test), "expected a segment name or a list of them"))
        return None
    return SegmentTest(tuple(listed), test == "in")


_KINDS = {
    "all": lambda body, path, errors: _combine(AllOf, body, path, errors),
    "any": lambda body, path, errors: _combine(AnyOf, body, path, errors),
    "not": _not,
    "event": _event,
    "attribute": _attribute,
    "behavior": _behavior,
    "time": _time,
    "sequence": _sequence,
    "score": _score,
    "segment": _segment,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isinf(value):
        return "never"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return value
