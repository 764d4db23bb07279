"""A small trigger log with planted response types, for the uplift tests and notebook.

The simulator plants persuadables, sure things, lost causes and sleeping dogs
(``PlantedConfig(response_types=ResponseTypes())``); its events go through the real engine
(``pipelines.closed_loop.run_closed_loop``) with a trigger that holds out half of its customers;
the feature tables are computed from the same events at daily snapshots and written under
``$NUDGE_HOME/features`` as the feature pipeline writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SAMPLE_TRIGGER", "TRIGGER_YAML", "SampleLog", "sample_trigger_log"]

SAMPLE_TRIGGER: Final = "cart_uplift"
TRIGGER_YAML: Final = f"""
id: {SAMPLE_TRIGGER}
when: {{event: cart_abandoned}}
quiet_hours: ignore
actions: [{{send_email: {{template: cart_reminder}}}}]
experiment: {{variants: {{d1h: {{delay: 1h}}}}, holdout: 0.5}}
"""


@dataclass(frozen=True)
class SampleLog:
    """Where the sample lives: the engine database URL, and the simulation's truth."""

    engine_url: str
    truth: pd.DataFrame


def sample_trigger_log(
    home: Path, *, customers: int = 1_500, days: int = 120, loop_days: int = 30, seed: int = 9
) -> SampleLog:
    """Simulate `days`, run the engine over the last `loop_days` of them, write the feature
    tables (one snapshot a day over the loop's window, and the day before it) under `home`."""
    from engine.channels.email import EmailSettings
    from engine.channels.webhooks import WebhookSender
    from engine.decisions.suppression import SuppressionPolicy
    from engine.dsl.triggers import TriggerIndex, load_trigger_text
    from engine.runtime.dispatcher import Dispatcher
    from engine.runtime.processor import Processor
    from engine.runtime.replay import events_from_rows
    from engine.store import EngineDB
    from engine.store.customers import upsert_profiles
    from features.compute.tables import compute_features, write_feature_tables
    from features.schema import VIEW_NAMES
    from pipelines.closed_loop import run_closed_loop
    from pipelines.simulator import PlantedConfig, simulate
    from pipelines.simulator.planted import ResponseTypes
    from pipelines.simulator.responder import Responder

    root = Path(__file__).resolve().parent.parent
    sim = simulate(
        customers, days, seed=seed, planted=PlantedConfig(response_types=ResponseTypes())
    )
    start = sim.params.start + pd.Timedelta(days=days - loop_days)
    ts = pa.scalar(start.to_pydatetime(), pa.timestamp("us", tz="UTC"))
    window = sim.events.filter(pc.greater_equal(sim.events["timestamp"], ts))
    home.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{home / 'engine.db'}"
    store = EngineDB.open(url)
    profiles = json.loads(sim.customers.to_json(orient="records", date_format="iso"))
    store.write(upsert_profiles, {p["customer_id"]: p for p in profiles}, 0.0)
    loaded = load_trigger_text(TRIGGER_YAML)
    if loaded.issues:  # the sample trigger is ours: a problem is a bug here, not a user mistake
        raise RuntimeError(f"sample trigger: {loaded.issues}")
    index = TriggerIndex(loaded.triggers)
    email = EmailSettings(templates_dir=root / "engine" / "templates", outbox_dir=home / "outbox")
    processor = Processor(store, index, policy=SuppressionPolicy())
    dispatcher = Dispatcher(store, index, email=email, webhooks=WebhookSender("s"))
    events = list(events_from_rows(window.to_pylist()))
    run_closed_loop(store, processor, dispatcher, Responder(sim.truth, sim.planted, seed), events)
    store.dispose()
    snapshots = pd.date_range(start.normalize() - pd.Timedelta(days=1), periods=loop_days + 1, freq="D", tz="UTC")  # fmt: skip
    tables = compute_features(sim.events, snapshots, sim.customers, views=list(VIEW_NAMES))
    write_feature_tables(tables, home)
    return SampleLog(url, sim.truth)
