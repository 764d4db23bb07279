"""Benchmark (issue 20, item 4): scale-out measured, not only configured.

    uv run python bench/scale_out.py [--customers 4000] [--repeats 3] [--batches 20]
                                     [--seconds 5] [--home DIR] [--skip-http]

One $NUDGE_HOME (`bench.scoring.prepared_home`: simulated customers → lake → feature tables →
Feast with the latest snapshot online → three champions in MLflow), then, in the same run:

1. **Training on Dask.** The train flow's `fit-models` subflow (one `fit_model` task per model)
   on the same training sets, sequentially in this process (the flow's default) and on a
   2-worker `distributed.LocalCluster` (processes, one thread each) through `DaskTaskRunner`,
   alternating which goes first, `--repeats` times; then the whole `train` flow the same way
   (training sets by Feast joins, fitting, MLflow logging and registration). The holdout
   metrics of both must be equal: LightGBM is `deterministic` with a fixed seed, so the same
   data gives the same model whatever process fits it. Cluster start and worker warm-up
   (imports) are timed apart: a production cluster outlives the runs it serves.
2. **Online batch reads.** 1,000-customer batches × the features of the three models, read
   in-process the way the service does (`serving.online.OnlineFeatures`): Feast's Redis online
   store (127.0.0.1:6379; a Feast project of this run's own, its SQL registry in a PostgreSQL
   schema of its own; keys and schema deleted afterwards) against the SQLite online store, read
   by Feast and by nudge's direct reader (from SQLite, and from views held in memory). Every
   reader must return the same rows as Feast's SQLite read.
3. **Over HTTP** (unless `--skip-http`): `nudge serve` on Redis and on SQLite, 1,000-customer ×
   3-model batches from one client for `--seconds` each (`bench.scoring`'s load generator).

The baseline of each table is measured in the same run; the load average is printed with
every table (two cores shared with other jobs: read the ratios, not the absolute times).
Stages print a spinner and their time as they end.

Measured here (BENCHMARKS.md, 2 cores, load average 4–7 from other sessions): Dask's fit stage
1.01–1.55× the in-process one (in-process LightGBM already uses both cores; Dask's workers run
one OpenMP thread each), the same holdout metrics both ways; Redis 1.05–1.13× Feast's SQLite
read in-process (Feast's per-value decoding dominates either store), nudge's direct SQLite read
10–12× and its in-memory views 129–174×.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scoring import (
    API_KEY,
    Result,
    bench_home,
    closed_loop,
    measured,
    prepared_home,
    start_scoring,
    stop_server,
)
from nudge.console import StepPrinter
from nudge.local_server import free_port
from pipelines.sample_home import PreparedHome

__all__ = ["main"]

MODELS = ("churn", "ltv", "engagement")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def load() -> str:
    """The 1/5/15-minute load averages, for every figure printed."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# -- 1. training on Dask ---------------------------------------------------------------------------


@dataclass
class TrainRun:
    """Wall times of one way of fitting, and the holdout metric of every model."""

    mode: str
    fit_seconds: list[float] = field(default_factory=list)
    flow_seconds: list[float] = field(default_factory=list)
    primary: dict[str, float] = field(default_factory=dict)  # fit stage: the model's metric
    flow_metrics: dict[str, Any] = field(default_factory=dict)  # whole flow: as registered
    pids: set[int] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)


def bench_train(
    prepared: PreparedHome, *, repeats: int, max_rounds: int, n_train: int, step: StepPrinter
) -> tuple[TrainRun, TrainRun, dict[str, float]]:
    """The fit stage and the whole flow, in-process and on a 2-worker LocalCluster."""
    import logging

    from prefect import flow

    for name in ("prefect", "mlflow", "alembic", "distributed", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from distributed import Client, LocalCluster
    from prefect_dask import DaskTaskRunner

    import models.evaluate  # noqa: F401  # LightGBM, MLflow & co. imported before any clock
    import pipelines.tracking  # noqa: F401
    from pipelines.flows.train import fit_models, load_training_sets, train

    home = str(prepared.home)
    costs: dict[str, float] = {}

    @flow(name="warm-up")
    def warm_up() -> int:
        return 1

    step("Prefect's ephemeral API server (start, once)")
    started = time.perf_counter()
    warm_up()
    costs["Prefect API server start"] = time.perf_counter() - started
    # Dask workers that do not know the API's address each start an ephemeral server of their
    # own (~16 s each here, measured: the first Dask fit took 28 s against 3 s in-process): point
    # them at this one, as a deployment points every process at its Prefect server.
    os.environ.setdefault("PREFECT_API_URL", _ephemeral_api_url())

    step("training sets by Feast point-in-time joins (once, shared by both ways)")
    started = time.perf_counter()
    problems, _, _ = load_training_sets.fn(home, None, n_train)
    costs["training sets (Feast joins)"] = time.perf_counter() - started
    costs["training rows"] = sum(len(p.train) for p in problems.values())

    step("Dask LocalCluster: 2 worker processes × 1 thread, start and warm-up")
    started = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    costs["LocalCluster start"] = time.perf_counter() - started
    started = time.perf_counter()
    threads = client.run(_warm_worker)  # worker address → its OMP_NUM_THREADS
    costs["worker warm-up (imports)"] = time.perf_counter() - started
    costs["worker OMP threads"] = float(min(int(t or 0) for t in threads.values()))
    local, dask = (
        TrainRun("in-process, sequential"),
        TrainRun("Dask LocalCluster, 2 workers × 1 thread"),
    )
    on_dask = fit_models.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))  # type: ignore[arg-type]  # Prefect's generic runner types do not unify
    try:
        for run, runner in ((local, fit_models), (dask, on_dask)):
            step(f"fit stage warm-up (5 rounds, not counted): {run.mode}")
            started = time.perf_counter()
            runner(problems, 5)
            costs[f"warm-up fit, {run.mode}"] = time.perf_counter() - started
        for r in range(repeats):
            order = [(local, fit_models), (dask, on_dask)]
            for run, runner in order if r % 2 == 0 else order[::-1]:
                step(f"fit stage {r + 1}/{repeats}: {run.mode} ({len(problems)} models)")
                run.loads.append(load())
                started = time.perf_counter()
                results = runner(problems, max_rounds)
                run.fit_seconds.append(time.perf_counter() - started)
                run.primary = {name: result.primary for name, result in results.items()}
                run.pids |= {result.extra["fitted_on_pid"] for result in results.values()}
        flows = [(local, None), (dask, cluster.scheduler_address)]
        for r in range(repeats):
            for run, address in flows if r % 2 == 0 else flows[::-1]:
                step(f"whole train flow {r + 1}/{repeats}: {run.mode}")
                run.loads.append(load())
                started = time.perf_counter()
                logged = train(
                    home=home,
                    n_train=n_train,
                    dask_address=address,
                    max_rounds=max_rounds,
                    refresh_scores=False,
                )
                run.flow_seconds.append(time.perf_counter() - started)
                run.flow_metrics = {name: logged[name]["metrics"] for name in problems}
    finally:
        client.close()
        cluster.close()
    if os.getpid() in dask.pids or local.pids != {os.getpid()}:
        raise RuntimeError(f"fits ran in the wrong processes: {local.pids} / {dask.pids}")
    return local, dask, costs


def _ephemeral_api_url() -> str:
    """The address of the ephemeral Prefect API server this process started."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process's one instance (per port; None: the default)
    if server.port is None:
        raise RuntimeError("no ephemeral Prefect API server runs in this process")
    return f"http://127.0.0.1:{server.port}/api"


def _warm_worker() -> str | None:
    """Import the fitting code in a worker; its OpenMP thread setting (Dask sets it to 1)."""
    import models.evaluate  # noqa: F401

    return os.environ.get("OMP_NUM_THREADS")


def train_table(local: TrainRun, dask: TrainRun, costs: dict[str, float]) -> str:
    """The training comparison as markdown, with the quality check."""
    lines = [
        "| way of fitting (3 models, same training sets) | fit stage s (each run) | fit stage "
        "median s | ratio | whole train flow s (each run) | median s | ratio | load avg "
        "(1/5/15) at each run's start |",
        "|---|---|---:|---:|---|---:|---:|---|",
    ]
    base_fit, base_flow = map(statistics.median, (local.fit_seconds, local.flow_seconds))
    for run in (local, dask):
        fit, whole = map(statistics.median, (run.fit_seconds, run.flow_seconds))
        each = ", ".join(f"{s:.1f}" for s in run.fit_seconds)
        flows = ", ".join(f"{s:.1f}" for s in run.flow_seconds)
        lines.append(
            f"| {run.mode} | {each} | {fit:.1f} | {base_fit / fit:.2f}× | {flows} | "
            f"{whole:.1f} | {base_flow / whole:.2f}× | {'; '.join(run.loads)} |"
        )
    lines.append("")
    lines.append("ratio: the in-process time over this row's (above 1: faster than in-process).")
    lines.append("")
    lines.append("| model | holdout metric in-process | on Dask | equal |")
    lines.append("|---|---:|---:|---|")
    for name, value in local.primary.items():
        theirs = dask.primary[name]
        lines.append(f"| {name} | {value:.6f} | {theirs:.6f} | {_equal(value, theirs)} |")
    flows_equal = local.flow_metrics == dask.flow_metrics
    lines.append("")
    timed = [
        f"{k} {v:,.1f} s"
        for k, v in costs.items()
        if k not in ("training rows", "worker OMP threads")
    ]
    lines.append(
        f"Whole flow: registered metrics identical both ways: {'yes' if flows_equal else 'NO'}. "
        f"Once per run, not in the ratios: {'; '.join(timed)}. Training rows "
        f"{costs['training rows']:,.0f}; OMP_NUM_THREADS in the workers "
        f"{costs['worker OMP threads']:.0f} (in-process LightGBM uses every core)."
    )
    return "\n".join(lines)


def _equal(a: float, b: float) -> str:
    return "yes" if abs(a - b) <= 1e-9 * max(1.0, abs(a)) else f"NO (Δ {b - a:+.2e})"


# -- 2. online batch reads -------------------------------------------------------------------------


@dataclass
class ReadRun:
    """Latencies of the batches one reader answered."""

    label: str
    seconds: list[float]
    customers: int
    load: str

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.seconds) * 1_000

    @property
    def rate(self) -> float:
        return self.customers * len(self.seconds) / sum(self.seconds)


@contextmanager
def redis_store(prepared: PreparedHome, step: StepPrinter) -> Iterator[Any]:
    """The production Feast store (Redis online, SQL registry) under a project and a PostgreSQL
    schema of this run's own, the latest snapshot materialized; everything deleted after."""
    import redis
    import sqlalchemy as sa

    from features.store import apply_definitions, materialize_snapshot, open_store

    tag = f"scaleout_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(POSTGRES)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{tag}"'))
    # Feast's production config reads these; the HTTP servers get the same.
    redis_env = {
        "NUDGE_FEAST_REGISTRY_URL": f"{POSTGRES}?options=-csearch_path%3D{tag}",
        "NUDGE_REDIS_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
    }
    previous = {k: os.environ.get(k) for k in redis_env}
    os.environ.update(redis_env)
    store = None
    try:
        store = open_store(prepared.home, production=True, project=tag)
        step(f"Redis online store: feast apply + materialize the latest snapshot ({tag})")
        apply_definitions(store, prepared.home)
        materialize_snapshot(store, prepared.snapshot)
        yield store, tag, redis_env
    finally:
        if store is not None:
            store.teardown()
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        left = list(client.scan_iter(match=f"*{tag}".encode()))
        if left:  # Feast's teardown deletes by entity key prefix; anything else of ours goes too
            client.delete(*left)
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{tag}" CASCADE'))
        engine.dispose()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def bench_reads(
    prepared: PreparedHome, *, batches: int, size: int, step: StepPrinter
) -> list[ReadRun]:
    """Every reader on the same batches of known customers; answers checked against Feast's."""
    from features.store import open_store
    from serving.online import OnlineFeatures, _same_rows

    ids = prepared.known_ids
    if len(ids) < size:
        raise SystemExit(f"only {len(ids)} customers online: use --customers ≥ {size * 2}")
    chunks = [
        [ids[(i * size + k) % len(ids)] for k in range(size)] for i in range(batches)
    ]  # overlapping windows when batches × size > customers: the same load for every reader

    def run(label: str, reader: OnlineFeatures) -> ReadRun:
        step(f"online reads: {label}, {batches} × {size:,} customers × {len(MODELS)} models")
        reader.read(MODELS, chunks[0])  # warm-up (and the direct reader's check against Feast)
        at = load()
        seconds = []
        for chunk in chunks:
            started = time.perf_counter()
            reader.read(MODELS, chunk)
            seconds.append(time.perf_counter() - started)
        return ReadRun(label, seconds, size, at)

    sqlite_store = open_store(prepared.home, production=False)
    readers = {
        "SQLite, Feast's read (baseline)": OnlineFeatures(sqlite_store, direct=False),
        "SQLite, nudge's direct read": OnlineFeatures(sqlite_store, snapshot_max_customers=0),
        "SQLite, direct read from views in memory": OnlineFeatures(
            sqlite_store, snapshot_max_customers=1_000_000
        ),
    }
    out = []
    with redis_store(prepared, step) as (store, _tag, _env):
        readers["Redis, Feast's read"] = OnlineFeatures(store)
        reference = readers["SQLite, Feast's read (baseline)"].read(MODELS, chunks[0])
        for label, reader in readers.items():
            out.append(run(label, reader))
            answer = reader.read(MODELS, chunks[0])
            wrong = [m for m in MODELS if not _same_rows(answer[m], reference[m])]
            if wrong:
                raise RuntimeError(f"{label} answers differently from Feast's SQLite read: {wrong}")
    return out


def reads_table(runs: Sequence[ReadRun]) -> str:
    base = runs[0]
    lines = [
        f"| reader ({base.customers:,} customers × {len(MODELS)} models a batch, in-process) "
        "| batches | p50 ms | customers/s | ratio | load avg (1/5/15) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.label} | {len(run.seconds)} | {run.p50_ms:.1f} | {run.rate:,.0f} | "
            f"{run.rate / base.rate:.2f}× | {run.load} |"
        )
    lines.append("")
    lines.append("ratio: customers/s over the baseline's. Every reader's answer was checked equal "
                 "to Feast's SQLite read.")  # fmt: skip
    return "\n".join(lines)


# -- 3. over HTTP ----------------------------------------------------------------------------------


def bench_http(prepared: PreparedHome, *, seconds: float, step: StepPrinter) -> list[Result]:
    """`nudge serve` on SQLite (Feast's read; the default direct read) and on Redis."""
    ids = prepared.known_ids

    def thousand(i: int) -> dict[str, Any]:
        start = (i * 1000) % max(len(ids) - 1000, 1)
        return {"customer_ids": ids[start : start + 1000]}

    results: list[Result] = []

    def serve(label: str, env: dict[str, str], **options: bool) -> None:
        step(f"HTTP: nudge serve ({label}), 1,000-customer batches, {seconds:g} s")
        port = free_port()
        server = start_scoring(prepared, port, extra_env=env, **options)
        try:
            url, headers = f"http://127.0.0.1:{port}/v1/scores", {"X-API-Key": API_KEY}
            closed_loop("warm-up", url, thousand, clients=1, seconds=2, headers=headers)
            at = load()
            result = measured(
                server,
                lambda: closed_loop(
                    f"{label} · load {at}", url, thousand, clients=1, seconds=seconds,
                    headers=headers,
                ),
            )  # fmt: skip
            results.append(result)
        finally:
            stop_server(server)

    serve("SQLite, Feast's read (baseline)", {}, direct=False, in_memory=False)
    serve("SQLite, direct read, views in memory (default)", {})
    with redis_store(prepared, step) as (_store, tag, redis_env):
        serve(
            "Redis, Feast's read",
            {"NUDGE_FEAST_PRODUCTION": "true", "NUDGE_FEAST_PROJECT": tag, **redis_env},
        )
    return results


def http_table(results: Sequence[Result]) -> str:
    base = results[0]
    lines = [
        "| nudge serve, 1,000 customers × 3 models, 1 client | requests | errors | p50 ms | "
        "p99 ms | customers/s | ratio | server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.label} | {r.requests} | {r.errors} | {r.quantile(0.5):.0f} | "
            f"{r.quantile(0.99):.0f} | {r.throughput * 1_000:,.0f} | "
            f"{r.throughput / base.throughput:.2f}× | {r.cpu_ms_per_request:.0f} |"
        )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, help="a NUDGE_HOME to reuse (or create) and keep")
    parser.add_argument("--customers", type=int, default=4_000, help="simulated customers")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each way (fit stage, whole flow)"
    )
    parser.add_argument("--max-rounds", type=int, default=1_000, help="boosting rounds at most")
    parser.add_argument("--n-train", type=int, default=6, help="training snapshots per model")
    parser.add_argument("--batches", type=int, default=20, help="online-read batches per reader")
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="HTTP run of each server")
    parser.add_argument("--skip-train", action="store_true", help="only the online reads")
    parser.add_argument("--skip-http", action="store_true", help="no HTTP scenarios")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    with bench_home(args.home, "nudge-scale-out-") as home:
        sections = measure(home.resolve(), args)
    for section in sections:
        print()
        print(section())
    print(f"\ncores: {os.cpu_count()}; load average at the end (1/5/15): {load()}")


def measure(home: Path, args: argparse.Namespace) -> list[Callable[[], str]]:
    """Every measurement the arguments ask for, in `home`; the tables to print."""
    os.environ["NUDGE_HOME"] = str(home)
    from pipelines.prefect_env import configure_prefect

    configure_prefect(home)
    step = StepPrinter(f"scale-out benchmark on {os.cpu_count()} cores, load {load()}")
    sections: list[Callable[[], str]] = []
    step(f"prepare {home} ({args.customers:,} customers, unless prepared before)")
    prepared = prepared_home(home, args.customers)
    if not args.skip_train:
        local, dask, costs = bench_train(
            prepared,
            repeats=args.repeats,
            max_rounds=args.max_rounds,
            n_train=args.n_train,
            step=step,
        )
        sections.append(lambda: train_table(local, dask, costs))
    runs = bench_reads(prepared, batches=args.batches, size=args.batch_size, step=step)
    sections.append(lambda: reads_table(runs))
    if not args.skip_http:
        served = bench_http(prepared, seconds=args.seconds, step=step)
        sections.append(lambda: http_table(served))
    step.finish()
    return sections


if __name__ == "__main__":
    main()
