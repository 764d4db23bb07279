"""The `nudge` CLI: instant help, clear errors, and the commands end to end."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nudge.cli import app

runner = CliRunner()
HEAVY = ("feast", "mlflow", "prefect", "lightgbm", "pandas", "pyarrow", "duckdb", "sklearn")


def nudge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nudge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )


def test_help_imports_nothing_heavy():
    code = "import sys; from nudge.cli import app; print(','.join(sorted(m for m in sys.modules if '.' not in m)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .split(",")
    )
    assert not loaded & set(HEAVY)


def test_help_answers_in_under_a_second():
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        done = nudge("--help")
        best = min(best, time.perf_counter() - started)
        assert done.returncode == 0 and "simulate" in done.stdout
    assert best < 1.0, f"nudge --help took {best:.2f} s"


@pytest.mark.parametrize("command", [["simulate"], ["import"], ["lake", "info"], ["demo"]])
def test_every_command_explains_itself(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and len(result.output.splitlines()) > 5


def test_simulate_writes_data_truth_and_the_lake(nudge_home):
    result = runner.invoke(app, ["simulate", "--customers", "300", "--days", "60", "--seed", "5"])
    assert result.exit_code == 0, result.output
    sim = nudge_home / "simulation"
    for name in (
        "events.parquet",
        "customers.parquet",
        "truth/customers.parquet",
        "truth/effects.csv",
        "truth/planted.yaml",
    ):
        assert (sim / name).exists(), name
    assert "best delay" in result.output
    info = json.loads(runner.invoke(app, ["lake", "info", "--json"]).output)
    assert info["customers"] == info["profiles"] == 300 and info["events"] > 1_000

    again = runner.invoke(app, ["simulate", "--customers", "300", "--days", "60", "--seed", "5"])
    assert "0 events added" in again.output
    assert (
        json.loads(runner.invoke(app, ["lake", "info", "--json"]).output)["events"]
        == info["events"]
    )


def test_import_cdnow_preset_prints_the_counts(nudge_home, cdnow_sample):
    def counts(output: str) -> dict[str, str]:
        return {
            " ".join(line.split()[:-1]): line.split()[-1]
            for line in output.splitlines()
            if line.strip()
        }

    result = runner.invoke(app, ["import", "--preset", "cdnow", str(cdnow_sample)])
    assert result.exit_code == 0, result.output
    first = counts(result.output)
    assert first["read"] == first["accepted"] == first["added to the lake"] == "6,919"
    assert first["rejected"] == "0"
    again = counts(
        runner.invoke(app, ["import", "--events", str(cdnow_sample), "--preset", "cdnow"]).output
    )
    assert again["duplicate (already in the lake)"] == "6,919" and again["added to the lake"] == "0"


def test_import_with_a_map_reports_rejects(nudge_home, tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("id,at,what\nu1,2026-01-01T00:00:00Z,signup\nu2,whenever,signup\n")
    result = runner.invoke(
        app, ["import", str(path), "--map", "customer_id=id,timestamp=at,event_type=what"]
    )
    assert result.exit_code == 0, result.output
    assert "rejected rows and reasons" in result.output
    assert "1 × timestamp: could not read 'whenever'" in result.output
    assert list((nudge_home / "rejects").glob("log-*.rejects.csv"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["import", "missing.csv", "--map", "customer_id=a,timestamp=b,event_type=c"],
            "no such file",
        ),
        (["import", "x.csv"], "say how the columns map"),
        (["import", "x.csv", "--preset", "shopify"], "unknown preset 'shopify'"),
        (
            ["import", "x.csv", "--map", "customer_id=a"],
            "missing required field(s) timestamp, event_type",
        ),
    ],
)
def test_user_mistakes_get_one_clear_line_and_no_traceback(nudge_home, args, message):
    done = nudge(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_bad_planted_file_is_named_without_a_traceback(nudge_home, tmp_path):
    planted = tmp_path / "planted.yaml"
    planted.write_text("segments: {vip: {share: 1.0}}\n")
    done = nudge("simulate", "--customers", "10", "--days", "5", "--planted", str(planted))
    assert done.returncode == 2
    assert "segments.vip.purchase_interval_days" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end_and_summarises(nudge_home):
    result = runner.invoke(app, ["demo", "--customers", "500", "--days", "90"])
    assert result.exit_code == 0, result.output
    for expected in (
        "Planted truth per segment",
        "Events per type",
        "purchase_completed",
        "500 customers",
        "Decisions and sends — whole log",  # the triggers report of the demo's log
        "nudge mlflow ui",
    ):
        assert expected in result.output
    assert Path(nudge_home / "lake" / "events").is_dir()
