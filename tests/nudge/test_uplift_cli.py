"""`nudge uplift backtest` end to end: the JSON contract, the table, the plots, one-line errors,
and the real randomized experiments that `causaldata` ships (no download at run time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nudge.cli import app
from tests.models.uplift.test_backtest import experiment_frame

runner = CliRunner()
CANDIDATES = ["random", "response", "t_learner", "x_learner", "dr_learner", "class_transformation"]
ARMS = ["--treatment-column", "segment", "--control", "No E-Mail", "--treatment", "Womens E-Mail"]


def backtest(*args: str):
    return runner.invoke(app, ["uplift", "backtest", *args], catch_exceptions=False)


@pytest.fixture
def experiment_csv(tmp_path: Path) -> Path:
    path = tmp_path / "experiment.csv"
    experiment_frame(n=900, seed=3).to_csv(path, index=False)
    return path


def test_json_is_the_contract(experiment_csv: Path) -> None:
    result = backtest("--input", str(experiment_csv), *ARMS, "--outcome", "visit",
                      "--features", "tenure,channel", "--splits", "2", "--estimators", "5",
                      "--seed", "4", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert set(payload["ate"]) == {"estimate", "ci_low", "ci_high"}
    assert list(payload["models"]) == CANDIDATES
    for scores in payload["models"].values():
        assert set(scores["qini_auc"]) == set(scores["uplift_at_30"]) == {"mean", "std"}
    assert payload["chosen"] in CANDIDATES
    assert payload["splits"] == 2 and payload["seed"] == 4
    assert payload["encoded"] == {"channel": "one-hot, 2 values"}
    assert payload["policy"][0]["policy"] == "send to all"
    assert set(payload["recommendation"]) == {"target_by_uplift", "reason"}
    frame = pd.read_csv(experiment_csv)
    arms = frame[frame["segment"] != "Mens E-Mail"]
    rates = arms.groupby("segment")["visit"].mean()
    assert payload["ate"]["estimate"] == pytest.approx(rates["Womens E-Mail"] - rates["No E-Mail"])


@pytest.mark.slow
def test_human_output_is_a_table_and_plots(experiment_csv: Path, tmp_path: Path) -> None:
    parquet = experiment_csv.with_suffix(".parquet")
    pd.read_csv(experiment_csv).to_parquet(parquet)
    result = backtest("--input", str(parquet), *ARMS, "--outcome", "visit", "--features",
                      "tenure", "--splits", "2", "--estimators", "5", "--plot", str(tmp_path / "plots"))  # fmt: skip
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == sorted(f"qini_{name}.png" for name in CANDIDATES)
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    for name in CANDIDATES:
        assert name in result.stdout
    assert "Qini AUC" in result.stdout and "ATE" in result.stdout
    assert "chosen by cross-validation inside the training parts" in result.stdout
    assert "incremental conversions per 1,000 sends" in result.stdout
    assert "recommendation:" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "--treatment-column",
                "arm",
                "--control",
                "a",
                "--treatment",
                "b",
                "--outcome",
                "visit",
            ],
            "--treatment-column 'arm': no such column",
        ),
        (
            [*ARMS[:4], "--treatment", "Kids E-Mail", "--outcome", "visit"],
            "--treatment 'Kids E-Mail': no row has segment",
        ),
        ([*ARMS, "--outcome", "spend"], "--outcome 'spend': expected a binary outcome"),
        ([*ARMS, "--outcome", "nope"], "--outcome 'nope': no such column"),
    ],
)
def test_mistakes_exit_2_with_one_line(experiment_csv: Path, args: list[str], message: str) -> None:
    result = backtest("--input", str(experiment_csv), *args, "--features", "tenure")
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_files_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    wrong = tmp_path / "data.xlsx"
    wrong.write_bytes(b"xx")
    few = tmp_path / "few.csv"
    experiment_frame(n=150).to_csv(few, index=False)
    for path, message in ((missing, "no such file"), (broken, "not a readable Parquet file"),
                          (wrong, "expected a .csv or .parquet file"), (tmp_path, "is a folder"),
                          (few, "too few rows")):  # fmt: skip
        result = backtest("--input", str(path), *ARMS, "--outcome", "visit")
        assert result.exit_code == 2, (path, result.output)
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# -- real randomized experiments shipped by the causaldata package ----------------------------


def _causaldata(name: str) -> pd.DataFrame:
    module = pytest.importorskip(f"causaldata.{name}")
    return module.load_pandas().data


@pytest.mark.slow
def test_thornton_hiv_incentives(tmp_path: Path) -> None:
    """Thornton (2008, AER): Malawians offered a randomized cash incentive to learn their HIV test
    result. The paper's headline — about 34 % without an incentive, 79 % with one — is the ATE."""
    frame = _causaldata("thornton_hiv").dropna(subset=["any", "got"])
    path = tmp_path / "thornton.csv"
    frame.to_csv(path, index=False)
    result = backtest("--input", str(path), "--treatment-column", "any", "--control", "0",
                      "--treatment", "1", "--outcome", "got", "--features",
                      "distvct,age,hiv2004,villnum", "--splits", "3", "--estimators", "30",
                      "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["conversion_rate"]["control"] == pytest.approx(0.34, abs=0.01)
    assert payload["conversion_rate"]["treated"] == pytest.approx(0.79, abs=0.01)
    assert 0.38 < payload["ate"]["ci_low"] < payload["ate"]["estimate"] < payload["ate"]["ci_high"] < 0.52  # fmt: skip


@pytest.mark.slow
def test_cai_insurance_marketing_sessions(tmp_path: Path) -> None:
    """Cai, de Janvry & Sadoulet (2015): rice farmers randomly invited to a simple or an intensive
    session selling weather insurance; outcome: bought the insurance."""
    frame = _causaldata("social_insure")
    path = tmp_path / "cai.parquet"
    frame.to_parquet(path)
    result = backtest("--input", str(path), "--treatment-column", "intensive", "--control", "0",
                      "--treatment", "1", "--outcome", "takeup_survey", "--splits", "3",
                      "--estimators", "30", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["rows"] == 1410 and payload["treated"] == int(frame["intensive"].sum())
    # Village names are text: encoded for the learners.
    assert payload["encoded"]["village"].startswith("integer codes")
    assert all(np.isfinite(m["qini_auc"]["mean"]) for m in payload["models"].values())
