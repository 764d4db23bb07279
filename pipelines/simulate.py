"""Simulate a data set, write it with its planted truth, and load it into the event lake."""

from __future__ import annotations

import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
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
        for result in _draw_parts(jobs, min(workers, parts), out):
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


def _draw_parts(jobs: list[_PartJob], workers: int, out: Path) -> Iterator[_PartResult]:
    """Each job's result, as the parts end: here for one worker, else in up to `workers`
    processes of ``python -m pipelines.simulate JOB`` (plain processes, not a multiprocessing
    pool: that re-imports the caller's main module, which breaks scripts without a main guard)."""
    if workers <= 1:
        yield from map(_draw_part, jobs)
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.TemporaryDirectory(dir=out, prefix=".parts.") as scratch:
        waiting = list(jobs)
        running: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    job = waiting.pop(0)
                    ticket = Path(scratch) / f"part-{job.index}"
                    ticket.with_suffix(".job").write_bytes(pickle.dumps(job))
                    command = [sys.executable, "-m", "pipelines.simulate", str(ticket)]
                    running[job.index] = (
                        subprocess.Popen(command, env=env, stderr=subprocess.PIPE),
                        ticket,
                    )
                index, (process, ticket) = _first_ended(running)
                del running[index]
                _, error = process.communicate()
                if process.returncode != 0:
                    lines = error.decode(errors="replace").strip().splitlines() or ["no output"]
                    raise RuntimeError(  # the exception's own line: the traceback is the worker's
                        f"simulation part {index} failed (exit {process.returncode}): {lines[-1]}"
                    )
                yield pickle.loads(ticket.with_suffix(".result").read_bytes())
        finally:
            for process, _ in running.values():
                process.kill()
                process.wait()


def _first_ended(
    running: dict[int, tuple[subprocess.Popen[bytes], Path]],
) -> tuple[int, tuple[subprocess.Popen[bytes], Path]]:
    while True:
        for index, entry in running.items():
            if entry[0].poll() is not None:
                return index, entry
        time.sleep(0.1)


def _part_worker(ticket: Path) -> None:
    """A worker process's work: the job in ``TICKET.job`` drawn, its result in ``.result``."""
    job = pickle.loads(ticket.with_suffix(".job").read_bytes())
    ticket.with_suffix(".result").write_bytes(pickle.dumps(_draw_part(job)))


def _lake_window(events: pa.Table, start: pd.Timestamp, lake_days: int | None) -> pa.Table:
    """The events of the first `lake_days` days (all of them when None)."""
    if lake_days is None:
        return events
    until = (start + pd.Timedelta(days=lake_days)).to_pydatetime()
    return events.filter(
        pc.less(events["timestamp"], pa.scalar(until, pa.timestamp("us", tz="UTC")))
    )


if __name__ == "__main__":  # a part worker (`_draw_parts`)
    # Through the module, so that what the worker pickles names `pipelines.simulate`'s
    # classes, not this `__main__`'s.
    from pipelines.simulate import _part_worker as work

    work(Path(sys.argv[1]))
