"""Limits for untrusted JSON and text: depth, sizes, unstorable characters — never a crash."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.limits import (
    MAX_DEPTH,
    MAX_KEY,
    MAX_STRING,
    find_json_problem,
    json_problem,
    parse_json,
    storable_text,
    text_problem,
)


def nested(depth: int, leaf: object = 1) -> object:
    """`depth` lists inside each other, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_plain_json_has_no_problem():
    value = {"cart": [{"sku": "A", "qty": 1, "price": 9.5}], "note": "line 1\nline 2", "ok": None}
    assert json_problem(value) is None
    assert json_problem(nested(MAX_DEPTH)) is None


def test_too_deep_names_the_path_of_the_first_container_too_deep():
    value = {"a": {"b": nested(MAX_DEPTH - 1)}}
    assert json_problem(value, path="properties") == (
        f"properties.a.b{'.0' * (MAX_DEPTH - 2)}: nested deeper than {MAX_DEPTH} levels"
    )
    problem = find_json_problem({"a": {"b": {"c": 1}}}, max_depth=2)
    assert problem is not None and problem.loc == ("a", "b")
    assert problem.message == "nested deeper than 2 levels"


def test_a_hundred_thousand_levels_or_a_cycle_never_recurse():
    assert "nested deeper than 32 levels" in json_problem(nested(100_000))
    cycle: dict = {}
    cycle["self"] = cycle
    assert "nested deeper than 32 levels" in json_problem(cycle)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": "\ud800"}, "a: contains a lone surrogate U+D800 at position 0"),
        ({"a": ["ok", "x\x00"]}, "a.1: contains NUL (U+0000) at position 1"),
        ({"\udfff": 1}, r"'\udfff': key contains a lone surrogate U+DFFF at position 0"),
        ({"k\ny": 1}, r"'k\ny': key contains the control character U+000A at position 1"),
        ({"a": float("nan")}, "a: must be a finite number (no NaN or Infinity)"),
        ({"a": [math.inf]}, "a.0: must be a finite number (no NaN or Infinity)"),
        (
            {"a": b"bytes"},
            "a: must be a JSON value (object, array, string, number, true, false "
            "or null), not bytes",
        ),
        ({1: "x"}, "1: keys must be strings, not int"),
        ({"a": "x" * (MAX_STRING + 1)}, f"a: string longer than {MAX_STRING} characters"),
        ({"k" * (MAX_KEY + 1): 1}, f"{'k' * 60}…: key longer than {MAX_KEY} characters"),
    ],
)
def test_each_problem_names_its_path_and_what_was_expected(value, expected):
    assert json_problem(value) == expected


def test_size_bounds_items_and_serialized_bytes():
    assert json_problem(list(range(20)), max_items=10) == "(value): more than 10 values"
    assert json_problem({"a": ["é" * 600]}, max_bytes=1024) == (
        "(value): larger than 1024 bytes as JSON (got 1210)"
    )
    assert json_problem({"a": ["é" * 100]}, max_bytes=1024) is None
    # a huge structure is refused while walking, before anything serializes it
    assert json_problem(["x" * 1000] * 5000, max_bytes=64 * 1024).startswith(
        "(value): larger than 65536 bytes"
    )


def test_text_problem_refuses_surrogates_and_nul_and_with_a_flag_controls():
    assert text_problem("plain ünïcode ✓ 🎉") is None
    assert text_problem("tab\tand\nnewline") is None
    assert text_problem("a\ud83d") == "contains a lone surrogate U+D83D at position 1"
    assert text_problem("\x00") == "contains NUL (U+0000) at position 0"
    assert text_problem("a\r\nb", controls=True) == (
        "contains the control character U+000D at position 1"
    )
    for char in ("\x1b", "\x7f", "\x85", "\u2028"):
        assert text_problem(f"x{char}", controls=True) is not None
    assert text_problem("🎉 ok", controls=True) is None


def test_parse_json_is_strict_utf8_and_never_raises_recursion_error():
    assert parse_json(b'{"a": [1, "\\u00e9"]}') == {"a": [1, "é"]}
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_json(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_json(b'{"a": "\xed\xa0\x80"}')  # an encoded surrogate is not UTF-8 either
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_json(b"{nope")


def test_storable_text_escapes_what_databases_refuse_and_truncates():
    assert storable_text("ok é") == "ok é"
    assert storable_text("a\x00b\ud800c") == "a\\x00b\\ud800c"
    assert storable_text("x" * 100, max_chars=10) == "x" * 10 + "…"
    storable_text("\ud800" * 10).encode("utf-8")  # never raises
    json.dumps(storable_text("\udfff"), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("1.5", 1.5), ("6h", 21600), ("1d", 86400)]
)
def test_nudge_max_future_reads_seconds_or_a_duration(monkeypatch, text, seconds):
    from nudge.settings import Settings

    monkeypatch.setenv("NUDGE_MAX_FUTURE", text)
    assert Settings().max_future.total_seconds() == seconds
    monkeypatch.delenv("NUDGE_MAX_FUTURE")
    assert Settings().max_future.total_seconds() == 86400


def test_nudge_max_future_refuses_what_is_not_a_duration(monkeypatch):
    from pydantic import ValidationError

    from nudge.settings import Settings

    for text in ("soon", "-5", ""):
        monkeypatch.setenv("NUDGE_MAX_FUTURE", text)
        with pytest.raises(ValidationError, match="expected a duration"):
            Settings()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e)
                              | st.sampled_from(["é", "ü", "中"]), max_size=8),
                      children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_the_size_limit_is_exact_whether_or_not_the_exact_size_is_computed(value):
    # The walk's upper bound lets small values skip the exact serialisation: the limit must
    # still hold to the byte, escapes (\u001f, \") and multi-byte UTF-8 included.
    exact = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    assert find_json_problem(value, max_bytes=exact) is None
    refused = find_json_problem(value, max_bytes=exact - 1)
    assert refused is not None and refused.message.startswith(f"larger than {exact - 1} bytes")


# Values with problems too (NaN, NUL, a lone surrogate, control characters in keys, bytes, a
# non-string key), checked against small limits so that random values reach every one.
_any_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**14000), max_value=2**14000)
    | st.floats() | st.binary(max_size=2)
    | st.text(st.sampled_from(["a", "é", "\x00", "\ud800", "\x01", "\u2028"]), max_size=7),
    lambda children: st.lists(children, max_size=4) | st.tuples(children)
    | st.dictionaries(st.text(st.sampled_from(["k", "é", "\x01", "\ud800", "\x00"]), max_size=4)
                      | st.integers(0, 2), children, max_size=4),
    max_leaves=25,
)  # fmt: skip
_limits = st.fixed_dictionaries(
    {"max_depth": st.integers(1, 5), "max_string": st.integers(0, 6), "max_key": st.integers(0, 3),
     "max_items": st.integers(1, 30), "max_bytes": st.none() | st.integers(0, 300)}
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(_any_values, _limits)
def test_the_quick_check_says_no_problem_only_when_the_full_walk_finds_none(value, limits):
    from engine.limits import _first_problem, _fits

    problem = _first_problem(value, **limits)
    if not isinstance(value, dict | list | tuple):
        return
    if _fits(value, **limits):
        assert problem is None
    elif limits["max_bytes"] is None:  # then only a problem makes it look (plain types here)
        assert problem is not None
    assert find_json_problem(value, **limits) == problem
