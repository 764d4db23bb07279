"""Simulate a data set, write it with its planted truth, and load it into the event lake."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from engine.lake import AppendResult, EventLake
from pipelines.simulator import Simulation, load_planted, simulate
from pipelines.simulator.generate import Progress
from pipelines.simulator.output import summarize, write_simulation

__all__ = ["SimulationRun", "run_simulation"]


@dataclass(frozen=True)
class SimulationRun:
    """What `run_simulation` produced: the data set, its files, and what reached the lake."""

    simulation: Simulation
    paths: dict[str, Path]
    appended: AppendResult | None
    profiles: int

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.simulation)


def run_simulation(
    *,
    customers: int,
    days: int,
    seed: int,
    start: str,
    out: Path,
    lake: EventLake | None,
    planted_path: Path | None = None,
    progress: Progress | None = None,
    lake_days: int | None = None,
) -> SimulationRun:
    """Draw the data set, write it under `out`, and append it to `lake` (idempotently) if given.

    With `lake_days`, only the first `lake_days` days go to the lake: the rest stays in the data
    set as "the future" (for example, to replay it through the engine after training).
    """
    say = progress or (lambda _msg: None)
    planted = load_planted(planted_path)
    sim = simulate(customers, days, seed, start=start, planted=planted, progress=say)
    say(f"writing data set and planted truth to {out}")
    paths = write_simulation(sim, out)
    appended, profiles = None, 0
    if lake is not None:
        events = sim.events
        if lake_days is not None:
            import pyarrow as pa
            import pyarrow.compute as pc

            until = (sim.params.start + pd.Timedelta(days=lake_days)).to_pydatetime()
            events = events.filter(
                pc.less(events["timestamp"], pa.scalar(until, pa.timestamp("us", tz="UTC")))
            )
        say(f"loading {events.num_rows:,} events into the lake")
        appended = lake.append(events)
        profiles = lake.upsert_customers(sim.customers)
    return SimulationRun(sim, paths, appended, profiles)
