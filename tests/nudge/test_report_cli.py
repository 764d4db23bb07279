"""`nudge triggers report`: the figures checked against counts computed here from the log and from
the events this test generated; `--since`, `--trigger`, the rich tables and clear errors."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.channels.email import EmailSettings
from engine.channels.webhooks import WebhookSender
from engine.dsl.triggers import TriggerIndex, load_trigger_dir
from engine.runtime.dispatcher import Dispatcher
from engine.runtime.inbox import accept_events
from engine.runtime.processor import Processor
from engine.store import EngineDB
from engine.store.customers import upsert_profiles
from engine.store.execution_log import list_decisions
from engine.store.outbox import list_actions
from nudge.cli import app

runner = CliRunner()
TEMPLATES = Path(__file__).resolve().parents[2] / "engine" / "templates"
DAY1 = datetime(2026, 5, 1, 8, tzinfo=UTC)
DAY3 = DAY1 + timedelta(days=2)
WINDOW = 72 * 3600.0
TRIGGERS = """
- id: cart_recovery
  when: {event: cart_abandoned}
  actions:
    - send_email: {template: cart_reminder}
      delay: 10m
  experiment:
    variants: {early: {delay: 10m}, late: {delay: 20m}}
    holdout: 0.3
- id: welcome
  when: {event: signup}
  actions:
    - send_email: {template: welcome}
- id: idle
  when: {event: never_sent}
  actions:
    - send_email: {template: welcome}
"""
FEEDBACK = {"email_delivered": "delivered", "email_bounced": "bounced",
            "email_complained": "complained", "unsubscribed": "unsubscribed",
            "email_opened": "opened", "email_clicked": "clicked"}  # fmt: skip


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@pytest.fixture(scope="module")
def engine_log(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A log made by the real processor and dispatcher: 400 customers, half on day 1 and half
    on day 3; every one signs up and abandons a cart; feedback and purchases at random."""
    root = tmp_path_factory.mktemp("report")
    (root / "triggers").mkdir()
    (root / "triggers" / "triggers.yaml").write_text(TRIGGERS)
    url = f"sqlite:///{root / 'engine.db'}"
    store = EngineDB.open(url)
    index = TriggerIndex(load_trigger_dir(root / "triggers").triggers)
    rng = random.Random(19)
    customers = [f"c{i:03d}" for i in range(400)]
    store.write(upsert_profiles, {c: {"customer_id": c, "email": f"{c}@example.com",
                                      "consent_email": i % 10 != 9, "timezone": "UTC"}
                                  for i, c in enumerate(customers)}, 0.0)  # fmt: skip
    times: dict[str, float] = {}
    events = []
    for i, customer in enumerate(customers):
        start = (DAY1 if i % 2 == 0 else DAY3).timestamp() + i * 60
        steps = [("signup", 0.0), ("cart_abandoned", 86400.0 + 600)]
        if i % 7 == 0:  # a second cart the same day: the daily email cap suppresses it
            steps.append(("cart_abandoned-again", 86400.0 + 7200))
        for kind, offset in steps:
            event_id = f"{kind}-{customer}"
            kind = kind.removesuffix("-again")
            times[event_id] = start + offset
            events.append({"event_id": event_id, "customer_id": customer, "event_type": kind,
                           "timestamp": iso(start + offset)})  # fmt: skip
    purchases = []
    for n, customer in enumerate(customers):
        if rng.random() < 0.35:
            after = rng.choice([1800.0, 36 * 3600.0, 71 * 3600.0, 80 * 3600.0])
            at = times[f"cart_abandoned-{customer}"] + after
            amount = round(rng.uniform(5, 120), 2)
            purchases.append((customer, at, amount))
            events.append({"event_id": f"buy-{n}", "customer_id": customer,
                           "event_type": "purchase_completed", "timestamp": iso(at),
                           "properties": {"total": amount}})  # fmt: skip
    clock = (DAY3 + timedelta(days=30)).timestamp()
    assert all(r.status == "accepted" for r in accept_events(store, events, source="t", now=clock))
    Processor(store, index).run_until_empty()
    email = EmailSettings(templates_dir=TEMPLATES, outbox_dir=root / "outbox")
    dispatcher = Dispatcher(store, index, email=email, webhooks=WebhookSender("s"))
    dispatcher.run_due(clock)
    sent = [a for a in store.read(list_actions) if a.status == "sent"]
    feedback = []
    for action in sent:
        at = action.due_at + 300
        for event_type, chance in (("email_delivered", 0.8), ("email_bounced", 0.05),
                                   ("email_opened", 0.4), ("email_clicked", 0.15),
                                   ("email_complained", 0.03), ("unsubscribed", 0.03)):  # fmt: skip
            if rng.random() < chance:
                machine = event_type in {"email_opened", "email_clicked"} and rng.random() < 0.3
                feedback.append((event_type, action.idempotency_key, machine))
                if machine and rng.random() < 0.3:  # a person opened it after the scanner did
                    feedback.append((event_type, action.idempotency_key, False))
    feedback.append(("email_opened", "not-one-of-ours", False))
    feedback_events = [
        {"event_id": f"fb-{n}", "customer_id": "c000", "event_type": kind, "timestamp": iso(clock - 60),
         "properties": {"message_id": key, **({"machine": True} if machine else {})}}
        for n, (kind, key, machine) in enumerate(feedback)
    ]  # fmt: skip
    accept_events(store, feedback_events, source="t", now=clock)
    Processor(store, index).run_until_empty()
    decisions = store.read(list_decisions)
    actions = store.read(list_actions)
    store.dispose()
    return {"url": url, "root": root, "times": times, "purchases": purchases,
            "feedback": feedback, "decisions": decisions, "actions": actions}  # fmt: skip


@pytest.fixture
def report_env(engine_log, nudge_home, monkeypatch):
    monkeypatch.setenv("NUDGE_ENGINE_DB", engine_log["url"])
    monkeypatch.setenv("NUDGE_TRIGGERS_DIR", str(engine_log["root"] / "triggers"))
    return engine_log


def expected(log: dict, since: float | None) -> dict[str, dict]:
    """The report's figures computed from the decisions, actions and generated events."""
    times = log["times"]
    out: dict[str, dict] = defaultdict(lambda: {"fired": 0, "suppressed": defaultdict(int),
                                                "sent": 0, "converted": 0, "revenue": 0.0})  # fmt: skip
    fires = defaultdict(list)
    for d in log["decisions"]:
        occurred = times.get(d.event_id, d.decided_at)
        if since is not None and occurred < since:
            continue
        row = out[d.trigger_id]
        if d.outcome == "fired":
            row["fired"] += 1
            fires[d.trigger_id].append((d.customer_id, occurred))
        elif d.outcome == "suppressed":
            row["suppressed"][d.reason.split(":")[0]] += 1
    messages = {}
    for a in log["actions"]:
        if a.status == "sent" and (since is None or a.trigger_at >= since):
            out[a.trigger_id]["sent"] += 1
            messages[a.idempotency_key] = a.trigger_id
    by_message = defaultdict(list)
    for event_type, key, machine in log["feedback"]:
        if key in messages:
            by_message[(event_type, key)].append(machine)
    for (event_type, key), machines in by_message.items():
        figure = out[messages[key]].setdefault(FEEDBACK[event_type], {"human": 0, "machine": 0})
        figure["machine" if all(machines) else "human"] += 1
    for trigger, fired in fires.items():
        bought = [p for p in log["purchases"] if since is None or p[1] >= since]
        out[trigger]["converted"] = sum(
            any(c == customer and t < at <= t + WINDOW for c, at, _ in bought)
            for customer, t in fired
        )
        out[trigger]["revenue"] = sum(
            amount for c, at, amount in bought
            if any(c == customer and t < at <= t + WINDOW for customer, t in fired)
        )  # fmt: skip
    return out


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["triggers", "report", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("since", [None, "2026-05-03"])
def test_the_report_matches_the_counts_of_the_log(report_env, since):
    start = datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp() if since else None
    payload = run_json(*(["--since", since] if since else []))
    assert payload["since"] == since and payload["window_hours"] == 72
    by_id = {t["trigger_id"]: t for t in payload["triggers"]}
    assert set(by_id) == {"cart_recovery", "welcome", "idle"}, "idle: a trigger without decisions"
    assert by_id["idle"]["fired"] == 0 and by_id["idle"]["incrementality"] is None
    truth = expected(report_env, start)
    for trigger in ("cart_recovery", "welcome"):
        got, want = by_id[trigger], truth[trigger]
        assert got["fired"] == want["fired"] > 0
        assert got["suppressed"] == dict(want["suppressed"])
        assert got["sent"] == want["sent"] == got["sent_by_channel"]["email"]
        for figure in FEEDBACK.values():
            assert got[figure] == want.get(figure, {"human": 0, "machine": 0}), (trigger, figure)
        assert got["converted"] == want["converted"]
        assert got["revenue"] == pytest.approx(want["revenue"], abs=0.01)
    decided = by_id["cart_recovery"]["decisions"]
    assert sum(by_id["cart_recovery"]["suppressed"].values()) == decided["suppressed"]
    assert truth["cart_recovery"]["opened"]["machine"] > 0, "the scenario has machine opens"
    if since is None:
        assert by_id["welcome"]["fired"] == 360
        assert set(by_id["cart_recovery"]["suppressed"]) == {"no_consent", "frequency_cap"}


def test_incrementality_over_the_holdout_is_computed_from_the_assignments(report_env):
    [row] = run_json("--trigger", "cart_recovery")["triggers"]
    times = report_env["times"]
    arms: dict[str, list[tuple[float, float]]] = {"sent": [], "holdout": []}
    seen = set()
    for d in report_env["decisions"]:
        if d.trigger_id != "cart_recovery" or d.variant is None or d.customer_id in seen:
            continue
        seen.add(d.customer_id)
        t = times[d.event_id]
        spent = [amount for c, at, amount in report_env["purchases"]
                 if c == d.customer_id and t < at <= t + WINDOW]  # fmt: skip
        arm = "holdout" if d.variant == "holdout" else "sent"
        arms[arm].append((float(bool(spent)), sum(spent)))
    n1, n0 = len(arms["sent"]), len(arms["holdout"])
    p1 = sum(c for c, _ in arms["sent"]) / n1
    p0 = sum(c for c, _ in arms["holdout"]) / n0
    margin = 1.959964 * math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    by_outcome = {i["outcome"]: i for i in row["incrementality"]}
    conversion = by_outcome["conversion"]
    assert (conversion["users_sent"], conversion["users_holdout"]) == (n1, n0)
    assert n0 > 50 and n1 > 150
    assert conversion["abs_lift"] == pytest.approx(p1 - p0)
    assert conversion["abs_ci_low"] == pytest.approx(p1 - p0 - margin, rel=1e-5)
    assert conversion["incremental"] == pytest.approx((p1 - p0) * n1)
    assert conversion["incremental_ci_high"] == pytest.approx((p1 - p0 + margin) * n1, rel=1e-5)
    assert 0 <= conversion["p_value"] <= 1
    revenue = by_outcome["revenue"]
    mean1 = sum(r for _, r in arms["sent"]) / n1
    mean0 = sum(r for _, r in arms["holdout"]) / n0
    assert revenue["abs_lift"] == pytest.approx(mean1 - mean0)
    assert revenue["incremental_ci_low"] < revenue["incremental"] < revenue["incremental_ci_high"]


def test_the_tables_for_people(report_env):
    result = runner.invoke(app, ["triggers", "report"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Decisions and sends — whole log" in out and "Suppressed by reason" in out
    assert "no_consent" in out and "frequency_cap" in out and "Feedback" in out
    assert (
        "cart_recovery" in out and "welcome" in out and "every send arm against the holdout" in out
    )


def test_mistakes_are_one_line(report_env):
    bad_day = runner.invoke(app, ["triggers", "report", "--since", "yesterday"])
    assert bad_day.exit_code == 2 and "--since: expected an ISO date" in bad_day.output
    unknown = runner.invoke(app, ["triggers", "report", "--trigger", "nope"])
    assert unknown.exit_code == 2 and "--trigger: no trigger 'nope'" in unknown.output
    window = runner.invoke(app, ["triggers", "report", "--window", "soon"])
    assert window.exit_code == 2 and "--window" in window.output


def test_experiment_report_prints_rich_tables_from_real_feedback(report_env):
    """The feedback has opens without a delivery event and clicks without an open (as real
    providers send it): the report still analyses the experiment."""
    result = runner.invoke(app, ["experiment", "report", "cart_recovery", "--min-users", "50"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Funnel — customers (share of those triggered)" in out
    assert "Variants against the control — conversion" in out
    assert "Incremental over the holdout — revenue" in out and "(all sends)" in out


@pytest.mark.slow
def test_pipeline_optimize_reviews_every_trigger_in_mlflow(report_env, tmp_path):
    """`nudge pipeline optimize` in a process of its own (Prefect's ephemeral API): the report's
    daily figures land in MLflow with a step per day, read back with MlflowClient."""
    import os
    import subprocess
    import sys

    from mlflow import MlflowClient

    home = tmp_path / "home"
    env = {**os.environ, "NUDGE_HOME": str(home), "NUDGE_ENGINE_DB": report_env["url"],
           "NUDGE_TRIGGERS_DIR": str(report_env["root"] / "triggers"),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}  # fmt: skip
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "nudge.cli", "pipeline", "optimize", "--json", "--min-users", "50"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    uri = f"sqlite:///{home.resolve()}/mlflow.db"
    assert outcome["tracking_uri"] == uri
    [experiment] = outcome["experiments"]
    assert experiment["trigger_id"] == "cart_recovery" and experiment["exposures"] == 400
    client = MlflowClient(uri)
    reviews = client.get_experiment_by_name("nudge-triggers")
    assert reviews.tags["mlflow.experimentKind"] == "custom_model_development"
    welcome = client.get_run(outcome["trigger_runs"]["welcome"])
    fired = {m.step: m.value for m in client.get_metric_history(welcome.info.run_id, "fired")}
    # Day by day, the figures of `nudge triggers report` (the latest event's day is not over).
    by_day = defaultdict(int)
    for d in report_env["decisions"]:
        if d.trigger_id == "welcome" and d.outcome == "fired":
            by_day[int(report_env["times"][d.event_id] // 86400)] += 1
    last_day = int(max(report_env["times"].values()) // 86400)
    assert fired == {step: float(by_day.get(step, 0)) for step in range(min(by_day), last_day)}
    assert sum(fired.values()) == 360 - by_day.get(last_day, 0)


def test_status_on_the_log_and_an_mlflow_store(report_env, tmp_path, monkeypatch):
    """`nudge status`: the engine's figures of the log; the champion and the last training from
    a real MLflow store; nothing created where nothing is."""
    from mlflow import MlflowClient

    # mlflow.set_tracking_uri (earlier tests of the session) exports MLFLOW_TRACKING_URI.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = runner.invoke(app, ["status", "--json"])
    assert missing.exit_code == 0, missing.output
    report = json.loads(missing.stdout)
    assert report["models"]["problem"].startswith("no MLflow store yet")
    engine = report["engine"]
    assert engine["revision"] and engine["inbox"]["pending"] == 0 and engine["due_actions"] == 0
    assert engine["processor_last_active"] is not None and engine["dispatcher_last_active"]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("NUDGE_MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("nudge-train")
    client.set_terminated(client.create_run(experiment, run_name="train-churn").info.run_id)
    client.create_registered_model("churn")
    version = client.create_model_version("churn", source=str(tmp_path), run_id=None)
    client.set_registered_model_alias("churn", "champion", version.version)
    found = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["models"]
    assert found["problem"] is None and found["last_training"] is not None
    assert found["champions"]["churn"]["version"] == str(version.version)
    people = runner.invoke(app, ["status"])
    assert people.exit_code == 0 and "champion churn" in people.output
    assert "processing lag" in people.output and "last training" in people.output
