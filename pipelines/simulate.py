"""Simulate a data set, write it with its planted truth, and load it into the event lake."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.lake import LAKE_SCHEMA, AppendResult, EventLake
from pipelines.simulator import PlantedConfig, Simulation, SimulationParams, load_planted, simulate
from pipelines.simulator.generate import Progress, simulate_parts
from pipelines.simulator.output import EVENTS_ROW_GROUP, summarize, write_simulation

__all__ = ["DEFAULT_PART_CUSTOMERS", "SimulationRun", "run_simulation"]


# Above this many customers a simulation is drawn in parts of this size (`simulate_parts`): one
# part of 100k customers × 365 days is ~10.8 M events and ~3 GiB at its peak; a million customers
# in one piece would need ~55 GiB.
DEFAULT_PART_CUSTOMERS: Final = 100_000


@dataclass(frozen=True)
class SimulationRun:
    """What `run_simulation` produced: the data set, its files, and what reached the lake.

    A simulation drawn in parts keeps its profiles and truth in `simulation` but not its events
    (`simulation.events` is empty): they are in the lake and in ``paths["events"]``, `events`
    of them."""

    simulation: Simulation
    paths: dict[str, Path]
    appended: AppendResult | None
    profiles: int
    events: int

    @property
    def summary(self) -> dict[str, Any]:
        return summarize(self.simulation, events=self.events)


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
    part_customers: int = DEFAULT_PART_CUSTOMERS,
) -> SimulationRun:
    """Draw the data set, write it under `out`, and append it to `lake` (idempotently) if given.

    With `lake_days`, only the first `lake_days` days go to the lake: the rest stays in the data
    set as "the future" (for example, to replay it through the engine after training). More than
    `part_customers` customers are drawn, written and loaded one part at a time.
    """
    say = progress or (lambda _msg: None)
    planted = load_planted(planted_path)
    if customers > part_customers:
        return _run_in_parts(
            customers, days, seed, start, out, lake, planted, say, lake_days, part_customers
        )
    sim = simulate(customers, days, seed, start=start, planted=planted, progress=say)
    say(f"writing data set and planted truth to {out}")
    paths = write_simulation(sim, out)
    appended, profiles = None, 0
    if lake is not None:
        events = _lake_window(sim.events, sim.params.start, lake_days)
        say(f"loading {events.num_rows:,} events into the lake")
        appended = lake.append(events)
        profiles = lake.upsert_customers(sim.customers)
    return SimulationRun(sim, paths, appended, profiles, sim.events.num_rows)


def _run_in_parts(
    customers: int,
    days: int,
    seed: int,
    start: str,
    out: Path,
    lake: EventLake | None,
    planted: PlantedConfig,
    say: Progress,
    lake_days: int | None,
    part_customers: int,
) -> SimulationRun:
    """`run_simulation` one part at a time: each part's events are streamed to events.parquet
    and appended to the lake before the next part is drawn; profiles and truth (a row per
    customer) are kept and written at the end."""
    out.mkdir(parents=True, exist_ok=True)
    events_path = out / "events.parquet"
    staging = out / f".events.{uuid.uuid4().hex}.tmp"
    profiles: list[pd.DataFrame] = []
    truths: list[pd.DataFrame] = []
    received = added = duplicates = written = 0
    started = time.perf_counter()
    last: Simulation | None = None
    try:
        with pq.ParquetWriter(staging, LAKE_SCHEMA) as writer:
            for part in simulate_parts(
                customers, days, seed, part_customers, start=start, planted=planted, progress=say
            ):
                writer.write_table(part.events, row_group_size=EVENTS_ROW_GROUP)
                written += part.events.num_rows
                if lake is not None:
                    result = lake.append(_lake_window(part.events, part.params.start, lake_days))
                    received += result.received
                    added += result.added
                    duplicates += result.duplicates
                profiles.append(part.customers)
                truths.append(part.truth)
                last = part
                say(
                    f"{written:,} events so far ({time.perf_counter() - started:.0f} s, "
                    f"{written / max(time.perf_counter() - started, 1e-9):,.0f} events/s)"
                )
                del part
        os.replace(staging, events_path)
    finally:
        staging.unlink(missing_ok=True)
    assert last is not None  # at least one part: customers > part_customers >= 1
    sim = Simulation(
        SimulationParams(customers, days, seed, last.params.start),
        planted,
        LAKE_SCHEMA.empty_table(),
        pd.concat(profiles, ignore_index=True),
        pd.concat(truths, ignore_index=True),
    )
    say(f"writing profiles and planted truth to {out}")
    paths = write_simulation(sim, out, events_written=written)
    lake_result, n_profiles = None, 0
    if lake is not None:
        lake_result = AppendResult(received, added, duplicates)
        n_profiles = lake.upsert_customers(sim.customers)
    return SimulationRun(sim, paths, lake_result, n_profiles, written)


def _lake_window(events: pa.Table, start: pd.Timestamp, lake_days: int | None) -> pa.Table:
    """The events of the first `lake_days` days (all of them when None)."""
    if lake_days is None:
        return events
    until = (start + pd.Timedelta(days=lake_days)).to_pydatetime()
    return events.filter(
        pc.less(events["timestamp"], pa.scalar(until, pa.timestamp("us", tz="UTC")))
    )
