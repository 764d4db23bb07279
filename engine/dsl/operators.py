"""The comparison operators of the trigger DSL, and predicates built from them.

A predicate is written ``{op: expected, ...}`` (several operators must all hold). Operators are
checked when a trigger is loaded, so an unknown one is an error there, never a silent False.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERATORS", "Predicate", "compile_predicate"]

_MISSING = object()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(actual: Any, expected: Any, test: Callable[[Any, Any], bool]) -> bool:
    a, e = _number(actual), _number(expected)
    if a is not None and e is not None:
        return test(a, e)
    if isinstance(actual, str) and isinstance(expected, str):
        return test(actual, expected)  # ISO dates and other strings compare lexically
    return False


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list | tuple | set | frozenset):
        return expected in actual
    if isinstance(actual, Mapping):
        return expected in actual
    return False


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda a, e: a == e or (_number(a) is not None and _number(a) == _number(e)),
    "not_equals": lambda a, e: (
        not (a == e or (_number(a) is not None and _number(a) == _number(e)))
    ),
    "gt": lambda a, e: _compare(a, e, lambda x, y: x > y),
    "gte": lambda a, e: _compare(a, e, lambda x, y: x >= y),
    "lt": lambda a, e: _compare(a, e, lambda x, y: x < y),
    "lte": lambda a, e: _compare(a, e, lambda x, y: x <= y),
    "between": lambda a, e: (
        _compare(a, e[0], lambda x, y: x >= y) and _compare(a, e[1], lambda x, y: x <= y)
    ),
    "in": lambda a, e: a in e or (_number(a) is not None and _number(a) in {_number(x) for x in e}),
    "not_in": lambda a, e: (
        not (a in e or (_number(a) is not None and _number(a) in {_number(x) for x in e}))
    ),
    "contains": _contains,
    "not_contains": lambda a, e: not _contains(a, e),
    "starts_with": lambda a, e: isinstance(a, str) and a.startswith(e),
    "ends_with": lambda a, e: isinstance(a, str) and a.endswith(e),
    "matches": lambda a, e: isinstance(a, str) and e.search(a) is not None,
    "exists": lambda a, e: (a is not None) == bool(e),
    "not_exists": lambda a, e: (a is None) == bool(e),
}
# Operators that are meaningful when the value is absent; the others fail on a missing value.
_ABOUT_PRESENCE = {"exists", "not_exists", "not_equals", "not_in", "not_contains"}


@dataclass(frozen=True)
class Predicate:
    """All of `(operator, expected)` must hold for a value."""

    tests: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "holds", _compile(self.tests))
        # What `describe` gives, made once: every decision's trace describes its predicates.
        described = {op: (e.pattern if isinstance(e, re.Pattern) else e) for op, e in self.tests}
        object.__setattr__(self, "_described", described)

    @property
    def numeric_comparison(self) -> tuple[str, float] | None:
        """``(python operator, number)`` when the predicate is one numeric comparison."""
        if len(self.tests) == 1:
            op, expected = self.tests[0]
            if (
                op in _PYTHON_OPS
                and _number(expected) is not None
                and not isinstance(expected, str)
            ):
                return _PYTHON_OPS[op], float(expected)
        return None

    def holds(self, actual: Any) -> bool:  # replaced per instance by a compiled test
        """Whether `actual` satisfies every operator (None means the value is absent)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The operators and their expected values, as a trace shows them (a copy)."""
        described: dict[str, Any] = self._described  # type: ignore[attr-defined]
        return described.copy()


_PYTHON_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "equals": "=="}
_FAST_NUMERIC: dict[str, Callable[[float], Callable[[float], bool]]] = {
    "gt": lambda e: lambda a: a > e,
    "gte": lambda e: lambda a: a >= e,
    "lt": lambda e: lambda a: a < e,
    "lte": lambda e: lambda a: a <= e,
    "equals": lambda e: lambda a: a == e,
}


def _compile(tests: tuple[tuple[str, Any], ...]) -> Callable[[Any], bool]:
    """A test function for the predicate; one numeric comparison gets a fast path."""

    def general(actual: Any) -> bool:
        for op, expected in tests:
            if actual is None and op not in _ABOUT_PRESENCE:
                return False
            if not OPERATORS[op](actual, expected):
                return False
        return True

    if len(tests) == 1:
        op, expected = tests[0]
        if op in _FAST_NUMERIC and _number(expected) is not None and not isinstance(expected, str):
            fast = _FAST_NUMERIC[op](float(expected))

            def numeric(actual: Any) -> bool:
                cls = actual.__class__
                if cls is int or cls is float:
                    return fast(actual)
                return general(actual)

            return numeric
    return general


def compile_predicate(raw: Any) -> Predicate:
    """``{gte: 20, lt: 100}`` → `Predicate`; a bare value means ``equals``. Raises ValueError."""
    if not isinstance(raw, Mapping):
        return Predicate((("equals", raw),))
    if not raw:
        raise ValueError(f"expected at least one operator ({', '.join(OPERATORS)})")
    tests = []
    for op, expected in raw.items():
        if op not in OPERATORS:
            raise ValueError(f"unknown operator {op!r}; operators are {', '.join(OPERATORS)}")
        tests.append((op, _checked_operand(op, expected)))
    return Predicate(tuple(tests))


def _checked_operand(op: str, expected: Any) -> Any:
    if op == "between":
        if not (isinstance(expected, list | tuple) and len(expected) == 2):
            raise ValueError(f"between: expected [low, high] (got {expected!r})")
        return tuple(expected)
    if op in {"in", "not_in"}:
        if not isinstance(expected, list | tuple | set):
            raise ValueError(f"{op}: expected a list (got {expected!r})")
        return tuple(expected)
    if (
        op in {"gt", "gte", "lt", "lte"}
        and _number(expected) is None
        and not isinstance(expected, str)
    ):
        raise ValueError(f"{op}: expected a number or a string (got {expected!r})")
    if op in {"starts_with", "ends_with"} and not isinstance(expected, str):
        raise ValueError(f"{op}: expected a string (got {expected!r})")
    if op == "matches":
        if not isinstance(expected, str):
            raise ValueError(f"matches: expected a regular expression (got {expected!r})")
        try:
            return re.compile(expected)
        except re.error as exc:
            raise ValueError(f"matches: invalid regular expression {expected!r}: {exc}") from None
    if op in {"exists", "not_exists"} and not isinstance(expected, bool):
        raise ValueError(f"{op}: expected true or false (got {expected!r})")
    return expected
