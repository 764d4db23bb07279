"""The closed loop: the engine's emails are answered by simulated customers from the planted truth."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.decisions.suppression import SuppressionPolicy
from engine.dsl.triggers import TriggerIndex, load_trigger_dir, load_trigger_text
from engine.optimizer.analyses import recommend, validate_exposures
from engine.optimizer.stats import two_proportion_power
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.processor import Processor
from engine.runtime.replay import events_from_rows
from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from engine.store.inbox import pending_count
from pipelines.closed_loop import run_closed_loop
from pipelines.simulator import PlantedConfig, simulate
from pipelines.simulator.responder import Responder

ROOT = Path(__file__).resolve().parents[2]


def window_events(sim, start_day: int, types: list[str] | None = None) -> list[dict]:
    start = sim.params.start + pd.Timedelta(days=start_day)
    mask = pc.greater_equal(
        sim.events["timestamp"], pa.scalar(start.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    )
    if types:
        mask = pc.and_(mask, pc.is_in(sim.events["event_type"], pa.array(types)))
    return list(events_from_rows(sim.events.filter(mask).to_pylist()))


def engine_parts(tmp_path, sim, index, policy=None):
    store = EngineDB.open(f"sqlite:///{tmp_path / 'engine.db'}")
    profiles = json.loads(sim.customers.to_json(orient="records", date_format="iso"))
    store.write(upsert_profiles, {p["customer_id"]: p for p in profiles}, 0.0)
    email = EmailSettings(
        templates_dir=ROOT / "engine" / "templates", outbox_dir=tmp_path / "outbox"
    )
    processor = Processor(store, index, policy=policy or SuppressionPolicy())
    return store, processor, Dispatcher(store, index, email=email, webhooks=WebhookSender("s"))


def test_example_triggers_in_the_loop(tmp_path):
    sim = simulate(1_500, 67, seed=9)
    index = TriggerIndex(load_trigger_dir(ROOT / "engine" / "examples").triggers)
    store, processor, dispatcher = engine_parts(tmp_path, sim, index)
    report = run_closed_loop(
        store, processor, dispatcher, Responder(sim.truth, sim.planted, 9), window_events(sim, 53)
    )
    funnel = report.funnel
    assert (
        funnel["triggered"]
        >= funnel["sent"]
        >= funnel["delivered"]
        >= funnel["opened"]
        >= funnel["clicked"]
    )
    assert funnel["sent"] > 20 and funnel["converted"] > 0
    assert report.feedback_events >= funnel["sent"], (
        "each send is answered (delivered or bounced, and more)"
    )
    assert store.read(pending_count) == 0, "the answers were processed too"
    assert report.actions[("send_email", "sent")] == funnel["sent"]
    assert set(report.suppressed_by_reason) <= {
        "no_consent",
        "frequency_cap",
        "cooldown",
        "max_per_customer",
        "quiet_hours",
        "low_engagement",
    }
    exposures = validate_exposures(report.exposures)
    assert set(exposures["variant"]) <= {"d1h", "d4h", "d24h", "holdout"}
    assert not exposures.loc[exposures["variant"] == "holdout", "sent"].any()
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == funnel["sent"]


EXPERIMENT = """
id: cart_timing
when: {event: cart_abandoned}
quiet_hours: ignore
actions: [{send_email: {template: cart_reminder}, cancel_if: {event: purchase_completed}}]
experiment: {variants: {1h: {delay: 1h}, 4h: {delay: 4h}, 24h: {delay: 24h}}, holdout: 0.1}
"""


# Stronger planted effects than the defaults, so that a test-sized population has the power to
# see them; the browser segment keeps equal effects (the optimizer must recommend nothing there).
STRONG_EFFECTS = {
    "loyal": {"1h": 0.0, "4h": 0.03, "24h": 0.15},
    "bargain_hunter": {"1h": 0.15, "4h": 0.05, "24h": 0.0},
    "browser": {"1h": 0.02, "4h": 0.02, "24h": 0.02},
    "at_risk": {"1h": 0.02, "4h": 0.15, "24h": 0.03},
}


@pytest.mark.slow
def test_engine_and_optimizer_recover_the_planted_best_delay_per_segment(tmp_path):
    """Closed loop: a delay experiment on cart abandonment, analysed per segment."""
    planted = PlantedConfig(uplift=STRONG_EFFECTS)
    sim = simulate(16_000, 365 + 60, seed=7, planted=planted)
    sim.customers = sim.customers.assign(consent_email=True)
    index = TriggerIndex(load_trigger_text(EXPERIMENT).triggers)
    store, processor, dispatcher = engine_parts(tmp_path, sim, index, SuppressionPolicy(caps={}))
    events = window_events(sim, 365, ["cart_abandoned", "purchase_completed"])
    report = run_closed_loop(store, processor, dispatcher, Responder(sim.truth, planted, 7), events)
    recommendations = {r.segment: r for r in recommend(report.exposures, min_users_per_arm=150)}
    arms = (
        report.exposures[report.exposures["variant"] != "holdout"]
        .groupby(["segment", "variant"])
        .size()
    )
    checked = []
    for segment in planted.segment_names:
        rec, best = recommendations[segment], planted.best_delay(segment)
        if best is None:
            assert rec.variant is None, (
                f"{segment}: equal planted effects, yet recommended {rec.variant}"
            )
            continue
        assert rec.variant in {None, best}, (
            f"{segment}: recommended {rec.variant}, planted best {best}"
        )
        # Enough sample: >= 95 % power to see the planted gap to the runner-up at alpha / 3.
        base = planted.segments[segment].conversion_baseline
        effects = sorted(planted.uplift[segment].values())
        n = int(arms[segment].min())
        power = two_proportion_power(base + effects[-2], base + effects[-1], n, alpha=0.05 / 3)
        if power >= 0.95:
            assert rec.variant == best, (
                f"{segment}: {n} per arm (power {power:.2f}) but {rec.reason}: {rec.detail}"
            )
            checked.append(segment)
    assert len(checked) >= 2, f"too little power to test anything: {dict(arms)}"


def test_experiment_report_reads_the_execution_log(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nudge.experiment_cli import experiment_app

    sim = simulate(1_500, 67, seed=9)
    sim.customers = sim.customers.assign(segment=sim.truth["segment"].to_numpy())
    index = TriggerIndex(load_trigger_dir(ROOT / "engine" / "examples").triggers)
    store, processor, dispatcher = engine_parts(tmp_path, sim, index)
    report = run_closed_loop(
        store, processor, dispatcher, Responder(sim.truth, sim.planted, 9), window_events(sim, 53)
    )
    monkeypatch.setenv("NUDGE_ENGINE_DB", f"sqlite:///{tmp_path / 'engine.db'}")
    result = CliRunner().invoke(
        experiment_app, ["report", "cart_recovery", "--segment-by", "segment", "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    loop = report.exposures[report.exposures["trigger_id"] == "cart_recovery"]
    assert body["exposures"] == len(loop) > 0
    pooled = [
        row for row in body["funnel"] if row.get("variant") in (None, "all", "(all)")
    ] or body["funnel"]
    assert pooled and body["timing"]
    assert {r["segment"] for r in body["recommendations"]} <= set(sim.truth["segment"])
    text = CliRunner().invoke(experiment_app, ["report", "cart_recovery"])
    assert "customers assigned" in text.output
    missing = CliRunner().invoke(experiment_app, ["report", "no_such_trigger"])
    assert missing.exit_code == 2 and "no experiment decisions" in missing.output


def test_run_period_replays_the_lake_with_warm_state(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from nudge.cli import app
    from pipelines.closed_loop import run_period

    home = tmp_path / "home"
    monkeypatch.setenv("NUDGE_HOME", str(home))
    assert (
        CliRunner()
        .invoke(app, ["simulate", "--customers", "1500", "--days", "67", "--seed", "4"])
        .exit_code
        == 0
    )
    start = datetime(2025, 2, 23, tzinfo=UTC)
    report = run_period(
        lake_root=home / "lake", simulation_dir=home / "simulation", engine_url=f"sqlite:///{tmp_path / 'e.db'}",
        triggers_dir=ROOT / "engine" / "examples", templates_dir=ROOT / "engine" / "templates",
        outbox_dir=tmp_path / "outbox", start=start, end=start + timedelta(days=7),
    )  # fmt: skip
    assert report.events > 1000 and report.funnel["sent"] > 0
    assert report.decisions["skipped"] > 0, "score conditions without a scoring service are skipped"
