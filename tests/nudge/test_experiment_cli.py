"""`nudge experiment analyze` end to end, on an app that mounts `experiment_app` as nudge will."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from scipy import stats
from typer.testing import CliRunner

from engine.optimizer.arms import analyze_arms, read_arms_csv
from nudge.experiment_cli import experiment_app

app = typer.Typer(pretty_exceptions_enable=False)
app.add_typer(experiment_app, name="experiment")
runner = CliRunner()

TOP_LEVEL_KEYS = ["metric", "srm_p_value", "arms"]  # exactly the object of the issue
ARM_KEYS = ["arm", "users", "value", "abs_lift", "rel_lift", "p_value", "p_value_corrected",
            "chance_to_beat_control", "sequential_ci"]  # fmt: skip
COMPARISON_KEYS = ARM_KEYS[3:]
RATE_CSV = "arm,users,conversions\ncontrol,10000,500\nsubject_b,10050,580\nsubject_c,9900,530\n"


def analyze(*args: str):
    return runner.invoke(app, ["experiment", "analyze", *args], catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "arms.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def mean_csv(tmp_path: Path) -> Path:
    arms = {
        "control": [0.0, 12.5, 3.0, 0.0, 40.0, 7.5, 0.0, 19.0],
        "bigger_coupon": [5.0, 0.0, 22.0, 31.0, 0.0, 9.5, 14.0, 3.5, 28.0],
    }
    lines = [f"{n},{len(v)},{sum(v)!r},{sum(x * x for x in v)!r}" for n, v in arms.items()]
    return write(tmp_path, "arm,users,value_sum,value_sum_squares\n" + "\n".join(lines) + "\n")


def test_rate_csv_json_is_one_object_of_the_exact_shape(tmp_path: Path) -> None:
    path = write(tmp_path, RATE_CSV)
    result = analyze("--input", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    payload = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert list(payload) == TOP_LEVEL_KEYS
    assert payload["metric"] == "rate"
    control, *treatments = payload["arms"]
    assert [arm["arm"] for arm in payload["arms"]] == ["control", "subject_b", "subject_c"]
    assert list(control) == ARM_KEYS
    assert all(control[key] is None for key in COMPARISON_KEYS)
    assert (control["users"], control["value"]) == (10_000, 0.05)
    for arm in treatments:
        assert list(arm) == ARM_KEYS
        assert list(arm["abs_lift"]) == list(arm["rel_lift"]) == ["estimate", "ci_low", "ci_high"]
        assert list(arm["sequential_ci"]) == ["ci_low", "ci_high"]
        assert all(isinstance(arm[key], float) for key in ("p_value", "p_value_corrected"))
    assert payload["srm_p_value"] == pytest.approx(stats.chisquare([10_000, 10_050, 9_900]).pvalue)
    # the numbers are analyze_arms', unchanged
    full = analyze_arms(read_arms_csv(path))
    assert payload == {key: full[key] for key in TOP_LEVEL_KEYS}


def test_mean_csv_json_matches_welch(tmp_path: Path) -> None:
    result = analyze("--input", str(mean_csv(tmp_path)), "--json", "--alpha", "0.1")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["metric"] == "mean"
    control, treatment = payload["arms"]
    assert control["abs_lift"] is None and control["sequential_ci"] is None
    expected = stats.ttest_ind(
        [5.0, 0.0, 22.0, 31.0, 0.0, 9.5, 14.0, 3.5, 28.0],
        [0.0, 12.5, 3.0, 0.0, 40.0, 7.5, 0.0, 19.0],
        equal_var=False,
    )
    assert treatment["p_value"] == pytest.approx(expected.pvalue)
    interval = expected.confidence_interval(0.9)
    assert treatment["abs_lift"]["ci_low"] == pytest.approx(interval.low)


def test_rate_text_output_shows_every_arm_the_srm_check_and_a_verdict(tmp_path: Path) -> None:
    result = analyze("--input", str(write(tmp_path, RATE_CSV)))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for arm in ("control", "subject_b", "subject_c"):
        assert arm in out
    assert "10,050 users" in out and "5.77 %" in out
    assert "absolute lift (95 % CI)" in out and "+0.77 pp" in out
    assert "p-value (holm)" in out and "chance to beat control" in out
    assert "sequential CI (95 %)" in out
    assert "SRM check: p = 0.5575 — users split as intended" in out
    assert "Verdict: subject_b beats control (+0.77 pp, holm p = 0.0312)" in out


def test_mean_text_output_and_a_null_verdict(tmp_path: Path) -> None:
    result = analyze("--input", str(mean_csv(tmp_path)), "--correction", "bh")
    assert result.exit_code == 0, result.output
    assert "bigger_coupon — 9 users" in result.stdout
    assert "mean" in result.stdout and "p-value (bh)" in result.stdout
    assert "no arm differs significantly from control at α = 0.05 after bh correction" in (
        result.stdout
    )


def test_srm_is_flagged_in_the_verdict_and_weights_fix_it(tmp_path: Path) -> None:
    path = write(tmp_path, "arm,users,conversions\ncontrol,8000,400\nb,2000,130\n")
    skewed = analyze("--input", str(path))
    assert "sample ratio mismatch" in skewed.stdout
    assert "Verdict: do not trust these lifts" in skewed.stdout
    designed = analyze("--input", str(path), "--weights", "4,1", "--json")
    assert json.loads(designed.stdout)["srm_p_value"] == 1.0


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "no such file"),
        ("arm,users\na,10\nb,10\n", [], "line 1: missing column(s) conversions"),
        (
            "arm,users,conversions\ncontrol,100,5\nb,100,120\n",
            [],
            "line 3 (arm 'b'): conversions (120) exceed users (100)",
        ),
        ("arm,users,conversions\ncontrol,100,5\n", [], "has 1 arm(s); need at least 2 rows"),
        ("", [], "is empty; expected a header"),
        (RATE_CSV, ["--weights", "1,1"], "--weights has 2 value(s) for 3 arms"),
        (RATE_CSV, ["--weights", "1,x,1"], "--weights must be numbers"),
        (RATE_CSV, ["--correction", "sidak"], "--correction: unknown 'sidak'"),
        (RATE_CSV, ["--alpha", "1.5"], "--alpha must lie strictly between 0 and 1"),
    ],
)
def test_input_errors_exit_2_with_one_clear_line(
    tmp_path: Path, content: str | None, args: list[str], message: str
) -> None:
    path = tmp_path / "arms.csv" if content is None else write(tmp_path, content)
    result = analyze("--input", str(path), "--json", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_a_folder_or_binary_file_is_named(tmp_path: Path) -> None:
    folder = analyze("--input", str(tmp_path))
    assert folder.exit_code == 2 and "is a folder" in folder.stderr
    binary = tmp_path / "arms.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = analyze("--input", str(binary))
    assert result.exit_code == 2 and "not a UTF-8 text file" in result.stderr


def test_importing_the_command_module_imports_nothing_heavy() -> None:
    code = (
        "import sys; import nudge.experiment_cli; "
        "print(','.join(m for m in ('numpy', 'scipy', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_apply_writes_a_new_trigger_version_only_after_yes(tmp_path, monkeypatch):
    import shutil

    from engine.dsl.triggers import load_trigger_dir

    folder = tmp_path / "triggers"
    shutil.copytree(Path(__file__).resolve().parents[2] / "engine" / "examples", folder)
    monkeypatch.setenv("NUDGE_TRIGGERS_DIR", str(folder))
    before = (folder / "cart_recovery.yaml").read_text()
    preview = CliRunner().invoke(experiment_app, ["apply", "cart_recovery", "--variant", "d4h"])
    assert preview.exit_code == 0 and "preview only" in preview.output
    assert (folder / "cart_recovery.yaml").read_text() == before, "nothing changes without --yes"
    done = CliRunner().invoke(
        experiment_app, ["apply", "cart_recovery", "--variant", "d4h", "--yes"]
    )
    assert done.exit_code == 0, done.output
    [trigger] = [t for t in load_trigger_dir(folder).triggers if t.id == "cart_recovery"]
    assert trigger.spec.experiment is None and trigger.plan[0].delay == 4 * 3600
    assert list(folder.glob("cart_recovery.yaml.*.bak"))
    wrong = CliRunner().invoke(experiment_app, ["apply", "cart_recovery", "--variant", "d9h"])
    assert wrong.exit_code == 2 and "no variant 'd9h'" in wrong.output
