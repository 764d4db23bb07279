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


def test_apply_writes_a_new_trigger_version_only_after_yes(tmp_path, monkeypatch, nudge_home):
    import shutil

    from engine.dsl.triggers import load_trigger_dir

    folder = tmp_path / "triggers"
    shutil.copytree(Path(__file__).resolve().parents[2] / "engine" / "examples", folder)
    monkeypatch.setenv("NUDGE_TRIGGERS_DIR", str(folder))
    before = (folder / "cart_recovery.yaml").read_text()
    # No experiment in this home's log: only a forced apply, with its reason, goes through.
    forced = ["--force", "--reason", "tested elsewhere"]
    preview = CliRunner().invoke(
        experiment_app, ["apply", "cart_recovery", "--variant", "d4h", *forced]
    )
    assert preview.exit_code == 0 and "preview only" in preview.output
    assert (folder / "cart_recovery.yaml").read_text() == before, "nothing changes without --yes"
    done = CliRunner().invoke(
        experiment_app, ["apply", "cart_recovery", "--variant", "d4h", "--yes", *forced]
    )
    assert done.exit_code == 0, done.output
    [trigger] = [t for t in load_trigger_dir(folder).triggers if t.id == "cart_recovery"]
    assert trigger.spec.experiment is None and trigger.plan[0].delay == 4 * 3600
    assert list(folder.glob("cart_recovery.yaml.*.bak"))
    wrong = CliRunner().invoke(experiment_app, ["apply", "cart_recovery", "--variant", "d9h"])
    assert wrong.exit_code == 2 and "no variant 'd9h'" in wrong.output


# -- apply against the execution log ---------------------------------------------------------

CART = """\
id: cart_recovery
when: {event: cart_abandoned}
actions:
  - send_email: {template: cart_reminder}
    delay: 10m
experiment:
  variants: {early: {delay: 10m}, late: {delay: 20m}}
"""


@pytest.fixture(scope="module")
def experiment_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A log made by the real processor: 600 customers abandon a cart and are assigned early
    or late; 60 % of the late ones buy within the window, 10 % of the early ones."""
    import random
    from datetime import UTC, datetime, timedelta

    from engine.dsl.triggers import TriggerIndex, load_trigger_dir
    from engine.runtime.inbox import accept_events
    from engine.runtime.processor import Processor
    from engine.store import EngineDB
    from engine.store.customers import upsert_profiles
    from engine.store.execution_log import list_decisions

    root = tmp_path_factory.mktemp("apply")
    url = f"sqlite:///{root / 'engine.db'}"
    store = EngineDB.open(url)
    (root / "live").mkdir()
    (root / "live" / "cart.yaml").write_text(CART)
    customers = [f"c{i:03d}" for i in range(600)]
    store.write(upsert_profiles, {c: {"customer_id": c, "email": f"{c}@example.com",
                                      "consent_email": True, "timezone": "UTC"}
                                  for c in customers}, 0.0)  # fmt: skip
    start = datetime(2026, 4, 1, 9, tzinfo=UTC)
    carts = [{"event_id": f"cart-{c}", "customer_id": c, "event_type": "cart_abandoned",
              "timestamp": (start + timedelta(minutes=i)).isoformat()}
             for i, c in enumerate(customers)]  # fmt: skip
    clock = (start + timedelta(days=30)).timestamp()
    accept_events(store, carts, source="t", now=clock)
    Processor(store, TriggerIndex(load_trigger_dir(root / "live").triggers)).run_until_empty()
    rng = random.Random(5)
    buys = []
    for row in store.read(list_decisions):
        if rng.random() < (0.6 if row.variant == "late" else 0.1):
            at = start + timedelta(minutes=customers.index(row.customer_id) + 90)
            buys.append({"event_id": f"buy-{row.customer_id}", "customer_id": row.customer_id,
                         "event_type": "purchase_completed", "timestamp": at.isoformat(),
                         "properties": {"total": 30}})  # fmt: skip
    accept_events(store, buys, source="t", now=clock)
    store.dispose()
    return {"url": Path(url.removeprefix("sqlite:///")), "root": root}


@pytest.fixture
def applying(experiment_log, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the trigger file, the log of `experiment_log`: the file to apply to."""
    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "cart.yaml").write_text(CART)
    monkeypatch.setenv("NUDGE_TRIGGERS_DIR", str(folder))
    monkeypatch.setenv("NUDGE_ENGINE_DB", f"sqlite:///{experiment_log['url']}")
    return folder / "cart.yaml"


def apply_cli(*args: str):
    return CliRunner().invoke(experiment_app, ["apply", "cart_recovery", *args], terminal_width=200)


def test_apply_the_recommended_variant_records_the_recommendation(applying: Path) -> None:
    from engine.dsl.triggers import load_trigger_dir

    done = apply_cli("--variant", "late", "--min-users", "50", "--yes")
    assert done.exit_code == 0, done.output
    assert "recommendation: use late" in done.output and "written" in done.output
    text = applying.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[0].startswith("# experiment apply: variant late of cart_recovery for everyone")
    assert header[1].startswith("# by ") and " at 20" in header[1]
    assert header[2].startswith("# recommendation (window 72h, min 50 users per arm): use late")
    assert not any("reason" in line for line in header), "nothing was overridden"
    [trigger] = load_trigger_dir(applying.parent).triggers
    assert trigger.spec.experiment is None and trigger.plan[0].delay == 20 * 60
    backup = applying.with_name(f"cart.yaml.{trigger.version}.bak")
    assert not backup.exists(), "the backup is named after the previous version"
    assert list(applying.parent.glob("cart.yaml.*.bak"))


def test_apply_refuses_a_variant_the_recommendation_does_not_name(applying: Path) -> None:
    refused = apply_cli("--variant", "early", "--min-users", "50", "--yes")
    assert refused.exit_code == 2, refused.output
    out = " ".join(refused.output.split())
    assert "the recommendation is late, not early" in out
    assert "refused: the experiment's recommendation does not back 'early'" in out
    assert applying.read_text() == CART, "nothing written"


def test_failed_guardrails_refuse_unless_forced_with_a_reason(applying: Path) -> None:
    refused = apply_cli("--variant", "late", "--yes")  # 1,000 users per arm by default
    assert refused.exit_code == 2
    out = " ".join(refused.output.split())
    assert "guardrail min_sample failed: too few users: early has" in out
    assert "need ≥ 1,000 per arm" in out and applying.read_text() == CART
    alone = apply_cli("--variant", "late", "--yes", "--force")
    assert alone.exit_code == 2 and "--force and --reason go together" in alone.output
    assert "Traceback" not in alone.output
    without = apply_cli("--variant", "late", "--yes", "--reason", "x")
    assert without.exit_code == 2 and "--force and --reason go together" in without.output
    empty = apply_cli("--variant", "late", "--yes", "--force", "--reason", "  ")
    assert empty.exit_code == 2 and "empty reason" in empty.output
    forced = apply_cli("--variant", "late", "--yes", "--force", "--reason",
                       "launch before\nthe sale; 300 per arm is enough")  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert "forced" in forced.output and "written" in forced.output
    header = [line for line in applying.read_text().splitlines() if line.startswith("#")]
    assert header[-2].startswith("# guardrails overridden (--force): guardrail min_sample failed")
    assert header[-1] == "# reason: launch before the sale; 300 per arm is enough"


def test_the_note_leaves_the_new_version_as_computed(applying: Path) -> None:
    from engine.dsl.triggers import load_trigger_dir, variant_version

    [current] = load_trigger_dir(applying.parent).triggers
    expected = variant_version(current, "late").new.version
    done = apply_cli("--variant", "late", "--yes", "--force", "--reason", "r")
    assert done.exit_code == 0, done.output
    [written] = load_trigger_dir(applying.parent).triggers
    assert written.version == expected and f"→ {expected}" in done.output
