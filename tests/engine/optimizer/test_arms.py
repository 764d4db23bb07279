"""engine.optimizer.arms: reading the per-arm CSV and the exact JSON shape of the analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from engine.optimizer.arms import (
    Arm,
    ArmInputError,
    ArmTable,
    analyze_arms,
    read_arms_csv,
)
from engine.optimizer.stats import MeanSummary, RateSummary

TOP_LEVEL_KEYS = {"metric", "alpha", "correction", "srm_p_value", "arms"}
ARM_KEYS = {
    "arm",
    "users",
    "value",
    "abs_lift",
    "rel_lift",
    "p_value",
    "p_value_corrected",
    "chance_to_beat_control",
    "sequential_ci",
}
COMPARISON_KEYS = ARM_KEYS - {"arm", "users", "value"}


def write(tmp_path: Path, text: str, name: str = "arms.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_shape(result: dict) -> None:
    assert set(result) == TOP_LEVEL_KEYS
    assert result["metric"] in {"rate", "mean"}
    control, *treatments = result["arms"]
    assert set(control) == ARM_KEYS
    assert all(control[key] is None for key in COMPARISON_KEYS)
    for arm in treatments:
        assert set(arm) == ARM_KEYS
        assert set(arm["abs_lift"]) == set(arm["rel_lift"]) == {"estimate", "ci_low", "ci_high"}
        assert set(arm["sequential_ci"]) == {"ci_low", "ci_high"}
    # strict JSON: no NaN or Infinity sneaks through
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_rate_csv_end_to_end(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "arm,users,conversions\ncontrol,10000,500\nsubject_b,10050,580\nsubject_c,9900,530\n",
    )
    table = read_arms_csv(path)
    assert table.metric == "rate"
    assert [arm.name for arm in table.arms] == ["control", "subject_b", "subject_c"]
    result = analyze_arms(table)
    assert_shape(result)
    assert (result["metric"], result["alpha"], result["correction"]) == ("rate", 0.05, "holm")
    assert result["srm_p_value"] == pytest.approx(
        stats.chisquare([10_000, 10_050, 9_900]).pvalue, rel=1e-9
    )

    control, b, c = result["arms"]
    assert (control["arm"], control["users"], control["value"]) == ("control", 10_000, 0.05)
    assert b["value"] == pytest.approx(580 / 10_050)
    raw = [proportions_ztest([x, 500], [n, 10_000])[1] for x, n in ((580, 10_050), (530, 9_900))]
    assert [b["p_value"], c["p_value"]] == pytest.approx(raw, rel=1e-9)
    corrected = multipletests(raw, method="holm")[1]
    assert [b["p_value_corrected"], c["p_value_corrected"]] == pytest.approx(corrected.tolist())
    assert b["abs_lift"]["estimate"] == pytest.approx(580 / 10_050 - 0.05)
    assert b["rel_lift"]["estimate"] == pytest.approx((580 / 10_050) / 0.05 - 1)
    assert b["abs_lift"]["ci_low"] > 0  # significant before correction
    assert 0.99 < b["chance_to_beat_control"] < 0.995
    # the always-valid interval is wider than the fixed-horizon one
    assert b["sequential_ci"]["ci_low"] < b["abs_lift"]["ci_low"]
    assert b["sequential_ci"]["ci_high"] > b["abs_lift"]["ci_high"]


def test_mean_csv_end_to_end(tmp_path: Path) -> None:
    control_values = [0.0, 12.5, 3.0, 0.0, 40.0, 7.5, 0.0, 19.0]
    treatment_values = [5.0, 0.0, 22.0, 31.0, 0.0, 9.5, 14.0, 3.5, 28.0]
    rows = [
        (name, len(values), sum(values), sum(v * v for v in values))
        for name, values in (("control", control_values), ("bigger_coupon", treatment_values))
    ]
    path = write(
        tmp_path,
        "arm,users,value_sum,value_sum_squares\n"
        + "".join(f"{name},{n},{s!r},{ss!r}\n" for name, n, s, ss in rows),
    )
    result = analyze_arms(read_arms_csv(path), alpha=0.1, correction="bh")
    assert_shape(result)
    assert (result["metric"], result["alpha"], result["correction"]) == ("mean", 0.1, "bh")
    control, treatment = result["arms"]
    assert control["value"] == pytest.approx(sum(control_values) / 8)
    expected = stats.ttest_ind(treatment_values, control_values, equal_var=False)
    interval = expected.confidence_interval(0.9)
    assert treatment["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert treatment["p_value_corrected"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert treatment["abs_lift"]["ci_low"] == pytest.approx(interval.low)
    assert treatment["abs_lift"]["ci_high"] == pytest.approx(interval.high)
    assert result["srm_p_value"] == pytest.approx(stats.chisquare([8, 9]).pvalue)


def test_srm_uses_the_intended_weights_when_given() -> None:
    table = ArmTable(
        "rate", (Arm("control", RateSummary(8_000, 400)), Arm("b", RateSummary(2_000, 110)))
    )
    assert analyze_arms(table, weights={"control": 4, "b": 1})["srm_p_value"] == 1.0
    assert analyze_arms(table)["srm_p_value"] < 1e-100
    with pytest.raises(ValueError, match="weights must name exactly the arms"):
        analyze_arms(table, weights={"control": 1, "c": 1})


def test_undefined_relative_lift_and_sequential_interval_are_null() -> None:
    table = ArmTable("rate", (Arm("control", RateSummary(300, 0)), Arm("b", RateSummary(300, 6))))
    result = analyze_arms(table)
    assert_shape(result)
    treatment = result["arms"][1]
    assert treatment["rel_lift"] == {"estimate": None, "ci_low": None, "ci_high": None}
    assert treatment["sequential_ci"] == {"ci_low": None, "ci_high": None}
    assert treatment["abs_lift"]["estimate"] == pytest.approx(0.02)


def test_csv_tolerates_whitespace_case_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "arms.csv"
    path.write_bytes(b"\xef\xbb\xbf Arm , USERS ,Conversions\r\n\r\n a ,100, 5\r\nb,120,9\r\n\r\n")
    table = read_arms_csv(path)
    assert [(arm.name, arm.summary) for arm in table.arms] == [
        ("a", RateSummary(100, 5)),
        ("b", RateSummary(120, 9)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty; expected a header arm,users,conversions"),
        ("arm,users\na,10\nb,10\n", "line 1: missing column\\(s\\) conversions"),
        (
            "arm,users,value_sum\na,10,1\nb,10,1\n",
            "line 1: missing column\\(s\\) value_sum_squares",
        ),
        ("arm,conversions\na,1\nb,1\n", "line 1: missing column\\(s\\) users"),
        ("arm,users,conversions,colour\na,10,1,red\n", "line 1: unknown column\\(s\\) colour"),
        (
            "arm,users,conversions,value_sum\na,10,1,3\nb,10,1,3\n",
            "header mixes 'conversions' with value sums",
        ),
        ("arm,users,users,conversions\n", "column\\(s\\) users appear twice"),
        (
            "arm,users,conversions\ncontrol,100,5\nb,12.5,3\n",
            "line 3 \\(arm 'b'\\): users must be a whole number ≥ 0, got '12.5'",
        ),
        (
            "arm,users,conversions\ncontrol,1e3,5\nb,100,3\n",
            "line 2 \\(arm 'control'\\): users must be a whole number",
        ),
        (
            "arm,users,conversions\ncontrol,100,5\nb,0,0\n",
            "line 3 \\(arm 'b'\\): users must be at least 1",
        ),
        (
            "arm,users,conversions\ncontrol,100,5\nb,100,-3\n",
            "line 3 \\(arm 'b'\\): conversions must be a whole number ≥ 0, got '-3'",
        ),
        (
            "arm,users,conversions\ncontrol,100,5\nb,100,120\n",
            "line 3 \\(arm 'b'\\): conversions \\(120\\) exceed users \\(100\\)",
        ),
        ("arm,users,conversions\ncontrol,100,5\n", "has 1 arm\\(s\\); need at least 2 rows"),
        ("arm,users,conversions\n", "has 0 arm\\(s\\); need at least 2 rows"),
        (
            "arm,users,conversions\ncontrol,100,5\nb,100,6\ncontrol,50,1\n",
            "line 4: duplicate arm name 'control' \\(first on line 2\\)",
        ),
        ("arm,users,conversions\ncontrol,100,5\n,100,6\n", "line 3: column 'arm' is empty"),
        ("arm,users,conversions\ncontrol,100\nb,100,6\n", "line 2: expected 3 values"),
        (
            "arm,users,value_sum,value_sum_squares\ncontrol,10,100,900\nb,10,50,400\n",
            "line 2 \\(arm 'control'\\): value_sum_squares \\(900\\) is smaller than "
            "value_sum²/users \\(1000\\), which implies a negative variance",
        ),
        (
            "arm,users,value_sum,value_sum_squares\ncontrol,10,abc,900\nb,10,50,400\n",
            "line 2 \\(arm 'control'\\): value_sum must be a number, got 'abc'",
        ),
        (
            "arm,users,value_sum,value_sum_squares\ncontrol,10,nan,900\nb,10,50,400\n",
            "value_sum must be a finite number",
        ),
        (
            "arm,users,value_sum,value_sum_squares\ncontrol,10,5,-1\nb,10,50,400\n",
            "value_sum_squares must be non-negative",
        ),
        (
            "arm,users,value_sum,value_sum_squares\ncontrol,1,5,25\nb,10,50,400\n",
            "line 2 \\(arm 'control'\\): users must be at least 2 for a mean metric",
        ),
    ],
)
def test_each_input_error_names_where_and_what(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ArmInputError, match=message):
        read_arms_csv(write(tmp_path, text))


def test_arm_input_error_is_a_value_error() -> None:
    assert issubclass(ArmInputError, ValueError)


def test_arm_table_validates_programmatic_construction() -> None:
    with pytest.raises(ArmInputError, match="at least 2 arms"):
        ArmTable("rate", (Arm("control", RateSummary(10, 1)),))
    with pytest.raises(ArmInputError, match="duplicate arm names: 'a'"):
        ArmTable("rate", (Arm("a", RateSummary(10, 1)), Arm("a", RateSummary(10, 2))))
    with pytest.raises(ArmInputError, match="metric must be 'rate' or 'mean'"):
        ArmTable("ratio", (Arm("a", RateSummary(10, 1)), Arm("b", RateSummary(10, 2))))  # type: ignore[arg-type]
    with pytest.raises(ArmInputError, match="expected RateSummary"):
        ArmTable("rate", (Arm("a", RateSummary(10, 1)), Arm("b", MeanSummary(10, 1.0, 1.0))))


def test_analyze_arms_rejects_bad_options() -> None:
    table = ArmTable("rate", (Arm("a", RateSummary(10, 1)), Arm("b", RateSummary(10, 2))))
    with pytest.raises(ValueError, match="alpha"):
        analyze_arms(table, alpha=1.5)
    with pytest.raises(ValueError, match="unknown p-value correction"):
        analyze_arms(table, correction="sidak")  # type: ignore[arg-type]
