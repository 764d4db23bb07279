"""Simulate a data set, write it with its planted truth, and load it into the event lake."""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.lake import LAKE_SCHEMA, AppendResult, EventLake
from pipelines.simulator import PlantedConfig, Simulation, SimulationParams, load_planted, simulate
from pipelines.simulator.generate import Progress, part_count, simulate_part, utc_midnight
from pipelines.simulator.output import EVENTS_ROW_GROUP, summarize, write_simulation

__all__ = ["DEFAULT_PART_CUSTOMERS", "SimulationRun", "run_simulation"]


# Above this many customers a simulation is drawn in parts of this size (`simulate_parts`): one
# part of 100k customers × 365 days is ~10.8 M events and ~3 GiB at its peak; a million customers
# in one piece would need ~55 GiB.
DEFAULT_PART_CUSTOMERS: Final = 100_000
# Parts drawn at once, each in its own process: drawing is single-threaded numpy.
DEFAULT_WORKERS: Final = min(2, os.cpu_count() or 1)


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
    peak_rss: int = 0  # bytes: the largest of the part processes' peaks (parts only)

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
    workers: int = DEFAULT_WORKERS,
) -> SimulationRun:
    """Draw the data set, write it under `out`, and append it to `lake` (idempotently) if given.

    With `lake_days`, only the first `lake_days` days go to the lake: the rest stays in the data
    set as "the future" (for example, to replay it through the engine after training). More than
    `part_customers` customers are drawn, written and loaded one part at a time, `workers`
    parts at once; their events are then a directory of Parquet files (``events.parquet/``,
    which pandas, pyarrow and DuckDB read as one table).
    """
    say = progress or (lambda _msg: None)
    planted = load_planted(planted_path)
    if customers > part_customers:
        return _run_in_parts(
            customers,
            days,
            seed,
            start,
            out,
            lake,
            planted,
            say,
            lake_days,
            part_customers,
            workers,
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
    workers: int,
) -> SimulationRun:
    """`run_simulation` one part at a time, `workers` parts at once (each in a process of its
    own): a part's events go to a file of its own under the ``events.parquet`` directory and
    to the lake before its process draws the next; profiles and truth (a row per customer) come
    back and are written at the end."""
    parts = part_count(customers, days, part_customers)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".events.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    jobs = [
        _PartJob(
            index,
            customers,
            days,
            seed,
            part_customers,
            start,
            planted,
            staging,
            lake.root if lake is not None else None,
            lake_days,
        )
        for index in range(parts)
    ]
    done: list[_PartResult] = []
    started = time.perf_counter()
    try:
        with _pool(min(workers, parts)) as pool:
            for result in pool.map(_draw_part, jobs):
                done.append(result)
                written = sum(r.events for r in done)
                elapsed = time.perf_counter() - started
                say(
                    f"part {len(done)}/{parts}: {written:,} events so far ({elapsed:.0f} s, "
                    f"{written / max(elapsed, 1e-9):,.0f} events/s)"
                )
        events_path = out / "events.parquet"
        if events_path.is_dir():
            shutil.rmtree(events_path)
        events_path.unlink(missing_ok=True)
        os.replace(staging, events_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written = sum(r.events for r in done)
    sim = Simulation(
        SimulationParams(customers, days, seed, utc_midnight(start)),
        planted,
        LAKE_SCHEMA.empty_table(),
        pd.concat([r.customers for r in done], ignore_index=True),
        pd.concat([r.truth for r in done], ignore_index=True),
    )
    say(f"writing profiles and planted truth to {out}")
    paths = write_simulation(sim, out, events_written=written)
    lake_result, n_profiles = None, 0
    if lake is not None:
        lake_result = AppendResult(
            sum(r.appended.received for r in done if r.appended),
            sum(r.appended.added for r in done if r.appended),
            sum(r.appended.duplicates for r in done if r.appended),
        )
        n_profiles = lake.upsert_customers(sim.customers)
    return SimulationRun(
        sim, paths, lake_result, n_profiles, written, max(r.peak_rss for r in done)
    )


@dataclass(frozen=True)
class _PartJob:
    index: int
    customers: int
    days: int
    seed: int
    part_customers: int
    start: str
    planted: PlantedConfig
    events_dir: Path
    lake_root: Path | None
    lake_days: int | None


@dataclass(frozen=True)
class _PartResult:
    events: int
    appended: AppendResult | None
    customers: pd.DataFrame
    truth: pd.DataFrame
    peak_rss: int  # bytes, of the process that drew the part


def _draw_part(job: _PartJob) -> _PartResult:
    """Draw one part, write its events file and append it to the lake (in a worker process)."""
    part = simulate_part(
        job.index, job.customers, job.days, job.seed, job.part_customers, job.start, job.planted
    )
    pq.write_table(
        part.events,
        job.events_dir / f"part-{job.index:05d}.parquet",
        row_group_size=EVENTS_ROW_GROUP,
    )
    appended = None
    if job.lake_root is not None:
        events = _lake_window(part.events, part.params.start, job.lake_days)
        appended = EventLake(job.lake_root).append(events)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return _PartResult(part.events.num_rows, appended, part.customers, part.truth, peak)


@contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """Processes for the parts (spawned: the parent may hold threads, DuckDB's among them), or
    this process alone for one worker."""
    if workers <= 1:

        class _Here:
            map = staticmethod(map)

        yield _Here()
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def _lake_window(events: pa.Table, start: pd.Timestamp, lake_days: int | None) -> pa.Table:
    """The events of the first `lake_days` days (all of them when None)."""
    if lake_days is None:
        return events
    until = (start + pd.Timedelta(days=lake_days)).to_pydatetime()
    return events.filter(
        pc.less(events["timestamp"], pa.scalar(until, pa.timestamp("us", tz="UTC")))
    )
