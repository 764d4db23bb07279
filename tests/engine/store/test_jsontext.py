"""The stored JSON text: the same values as the standard library's, whatever orjson refuses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from engine.store import jsontext

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_any_json_value_reads_back_as_the_standard_library_writes_it(value: object) -> None:
    text = jsontext.dumps(value)
    assert jsontext.loads(text) == json.loads(json.dumps(value))
    assert json.loads(text) == value  # what it writes, any parser reads


@given(json_values)
def test_it_reads_what_the_standard_library_wrote(value: object) -> None:
    assert jsontext.loads(json.dumps(value)) == value


def test_the_text_is_compact() -> None:
    assert jsontext.dumps({"a": [1, 2.5, None], "b": "x"}) == '{"a":[1,2.5,null],"b":"x"}'


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    assert jsontext.dumps({1: "a"}) == '{"1":"a"}'  # a key that is not text
    big = 2**70
    assert jsontext.loads(jsontext.dumps([big])) == [big]  # an integer past 64 bits
    deep: list[object] = []
    for _ in range(300):  # past orjson's depth limit
        deep = [deep]
    assert jsontext.loads(jsontext.dumps(deep)) == deep


def test_datetimes_and_dataclasses_go_to_default_as_before() -> None:
    @dataclass
    class Point:
        x: int

    moment = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    value = {"at": moment, "day": date(2026, 12, 3), "point": Point(1)}
    assert jsontext.dumps(value, default=str) == json.dumps(
        value, default=str, separators=(",", ":")
    )
    assert json.loads(jsontext.dumps({"at": moment}, default=lambda v: "custom")) == {
        "at": "custom"
    }


def test_non_finite_numbers_are_written_as_null_and_old_tokens_still_read() -> None:
    assert jsontext.dumps([math.nan, math.inf]) == "[null,null]"
    old = json.dumps({"x": math.nan, "y": -math.inf})  # the standard library's tokens
    read = jsontext.loads(old)
    assert math.isnan(read["x"]) and read["y"] == -math.inf


def test_integers_past_64_bits_read_exactly() -> None:
    for number in (2**63, -(2**63) - 1, 2**64 + 1, 10**30):
        text = json.dumps({"n": number, "list": [number]})
        assert jsontext.loads(text) == {"n": number, "list": [number]}
        assert jsontext.loads(text.encode()) == {"n": number, "list": [number]}
    assert jsontext.loads('{"id": "1234567890123456789012"}') == {"id": "1234567890123456789012"}
    # text the engine wrote itself with no such integer reads the same without the scan
    state = jsontext.dumps({"events": {"x": [[1735689839.170549], [None]]}, "seen": ["e1"]})
    assert jsontext.loads(state, exact_integers=False) == jsontext.loads(state)


def test_lone_surrogates_written_before_still_read() -> None:
    assert jsontext.loads('"\\ud800"') == "\ud800"
    assert jsontext.dumps("\ud800") == json.dumps("\ud800")  # orjson refuses to write one
