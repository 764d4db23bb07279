"""Writing a simulation to disk (data set + planted truth) and reading the truth back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml

from pipelines.simulator.generate import Simulation
from pipelines.simulator.planted import PlantedConfig

__all__ = ["EVENTS_ROW_GROUP", "read_truth", "summarize", "write_simulation"]

EVENTS_ROW_GROUP = 512_000


def write_simulation(
    sim: Simulation, out: Path, *, events_written: int | None = None
) -> dict[str, Path]:
    """Write events, profiles and the planted truth under `out`; returns what went where.

    `events_written`: the events are already in ``events.parquet`` (a simulation in parts
    streams them there part by part), this many of them; only the rest is written."""
    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "events": out / "events.parquet",
        "customers": out / "customers.parquet",
        "truth": truth_dir / "customers.parquet",
        "effects": truth_dir / "effects.csv",
        "planted": truth_dir / "planted.yaml",
        "summary": truth_dir / "summary.json",
    }
    if events_written is None:
        pq.write_table(sim.events, paths["events"], row_group_size=EVENTS_ROW_GROUP)
    sim.customers.to_parquet(paths["customers"], index=False)
    sim.truth.to_parquet(paths["truth"], index=False)
    sim.effects.to_csv(paths["effects"], index=False)
    paths["planted"].write_text(sim.planted.to_yaml())
    summary = summarize(sim, events=events_written)
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str))
    return paths


def read_truth(directory: Path) -> tuple[pd.DataFrame, PlantedConfig, dict[str, Any]]:
    """The per-customer truth, the planted config and the summary of a written simulation."""
    truth_dir = directory / "truth"
    if not (truth_dir / "summary.json").exists():
        raise FileNotFoundError(f"{directory} holds no simulation (no truth/summary.json)")
    truth = pd.read_parquet(truth_dir / "customers.parquet")
    planted = PlantedConfig.model_validate(yaml.safe_load((truth_dir / "planted.yaml").read_text()))
    summary = json.loads((truth_dir / "summary.json").read_text())
    return truth, planted, summary


def summarize(sim: Simulation, *, events: int | None = None) -> dict[str, Any]:
    """A small JSON-able description of the data set and its planted truth (`events`: the
    count, when `sim.events` does not hold them all — a simulation in parts)."""
    truth = sim.truth
    per_segment = (
        truth.groupby("segment")
        .agg(
            customers=("customer_id", "size"),
            purchases_per_customer=("n_purchases", "mean"),
            active_at_end=("alive_at_end", "mean"),
            email_engagement=("email_engagement", "mean"),
        )
        .round(3)
    )
    return {
        "seed": sim.params.seed,
        "customers": sim.params.n_customers,
        "days": sim.params.days,
        "start": sim.params.start.isoformat(),
        "end": sim.params.end.isoformat(),
        "events": sim.events.num_rows if events is None else events,
        "active_at_end": round(float(truth["alive_at_end"].mean()), 4),
        "segments": per_segment.to_dict(orient="index"),
        "best_delay": {s: sim.planted.best_delay(s) for s in sim.planted.segment_names},
    }
