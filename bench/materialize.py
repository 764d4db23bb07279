"""Benchmark: materializing the latest snapshot — Feast's `materialize` against the direct one.

Issue 20 asks for 1M customers through the whole pipeline in 20 minutes on 2 cores, and Feast's
materialize of 100k customers × ~50 features into SQLite took 60.4 s (BENCHMARKS.md "Pipeline").
For each online store (SQLite; Redis at 127.0.0.1:6379 when reachable) the same feature tables
are materialized twice into fresh stores: by Feast (`materialize_snapshot(direct=False)`, the
baseline) and by `features.materialize` (the default path). Each run is a child process of its
own, so its peak RSS is its own. Afterwards Feast's `get_online_features` must answer the same
for a sample of customers from both stores, and (SQLite) every stored row must be equal.

The feature tables: by default synthetic, the three standard views' columns (`features.schema`)
at two monthly snapshots, `--customers` per snapshot, floats null where the schema says they may
be (~20 %), small counts for the integers — the writers' work depends on the number of values
and their types, not on their meaning. `--home` takes a home whose feature tables exist (e.g.
one bench/pipeline.py kept) and materializes its latest snapshot instead.

    uv run python bench/materialize.py [--customers 100000] [--backends sqlite,redis]
        [--home DIR] [--direct-only] [--batch 50000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

REDIS = "127.0.0.1:6379"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--home", type=Path, default=None, help="a home with feature tables")
    parser.add_argument("--direct-only", action="store_true", help="skip Feast's baseline")
    parser.add_argument("--batch", type=int, default=None, help="customers per batch")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ["PYTHONWARNINGS"] = "ignore"  # the children's too (ibis deprecations)
    scratch = Path(tempfile.mkdtemp(prefix="bench-materialize-"))
    try:
        tables = scratch / "tables"
        if args.home is not None:
            shutil.copytree(args.home.resolve() / "features", tables / "features")
        else:
            synthetic_tables(tables, args.customers)
        snapshot, ids = latest_snapshot(tables)
        customers = len(ids)
        sample = [*ids[:: max(1, customers // 2_000)], "nobody"]
        print(f"- {customers:,} customers at {snapshot.isoformat()}, {uptime()}", flush=True)
        for backend in args.backends.split(","):
            if backend == "redis" and not redis_reachable():
                print("- redis: unreachable at 127.0.0.1:6379, skipped")
                continue
            bench_backend(scratch, tables, backend, snapshot, sample, customers, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def synthetic_tables(home: Path, customers: int) -> None:
    """The standard views at two snapshots, `customers` each (module docstring)."""
    from features.compute import write_feature_tables
    from features.schema import VIEW_FEATURES

    rng = np.random.default_rng(20)
    ids = np.array([f"c{i:08d}" for i in range(customers)], dtype=object)
    snapshots = [pd.Timestamp("2025-11-01", tz="UTC"), pd.Timestamp("2025-12-01", tz="UTC")]
    tables = {}
    for view, features in VIEW_FEATURES.items():
        parts = []
        for at in snapshots:
            columns: dict[str, Any] = {"customer_id": ids, "event_timestamp": at}
            for name, dtype in features.items():
                if dtype == "int64":
                    columns[name] = rng.poisson(3, customers).astype(np.int64)
                else:
                    values = rng.gamma(2.0, 30.0, customers)
                    values[rng.random(customers) < 0.2] = np.nan
                    columns[name] = values
            parts.append(pd.DataFrame(columns))
        tables[view] = pd.concat(parts, ignore_index=True)
    write_feature_tables(tables, home)


def latest_snapshot(home: Path) -> tuple[pd.Timestamp, list[str]]:
    """The latest snapshot of the churn table and its customers."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from features.paths import feature_table_path
    from features.schema import CHURN_VIEW

    table = pq.read_table(
        feature_table_path(CHURN_VIEW, home), columns=["customer_id", "event_timestamp"]
    )
    latest = pc.max(table.column("event_timestamp"))
    at = table.filter(pc.equal(table.column("event_timestamp"), latest))
    ids = [str(c) for c in at.column("customer_id").to_pylist()]
    return pd.Timestamp(latest.as_py()).tz_convert("UTC"), ids


def bench_backend(
    scratch: Path,
    tables: Path,
    backend: str,
    snapshot: pd.Timestamp,
    sample: list[str],
    customers: int,
    args: argparse.Namespace,
) -> None:
    runs = [("direct", True)] if args.direct_only else [("feast", False), ("direct", True)]
    project = f"bench_mat_{uuid.uuid4().hex[:8]}"
    results: dict[str, dict[str, Any]] = {}
    homes: dict[str, Path] = {}
    for label, direct in runs:
        home = scratch / f"{backend}-{label}"
        shutil.copytree(tables / "features", home / "features")
        homes[label] = home
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(
            target=timed_run,
            args=(queue, home, backend, f"{project}_{label}", snapshot, direct, args.batch),
        )
        before = uptime()
        child.start()
        results[label] = queue.get()
        child.join()
        results[label]["load"] = f"{before} → {uptime()}"
        r = results[label]
        print(
            f"  {backend} {label}: {r['seconds']:.1f} s, {customers / r['seconds']:,.0f} "
            f"customers/s, peak RSS {r['rss_mib']:,.0f} MiB ({r['load']})",
            flush=True,
        )
    try:
        if len(runs) == 2:
            check_equal(homes, backend, project, sample)
            ratio = results["feast"]["seconds"] / results["direct"]["seconds"]
            print(f"  {backend}: direct is {ratio:.1f}× Feast's materialize; answers equal")
    finally:
        if backend == "redis":
            drop_redis(project)


def timed_run(
    queue: Any,
    home: Path,
    backend: str,
    project: str,
    snapshot: pd.Timestamp,
    direct: bool,
    batch: int | None,
) -> None:
    """In a child: open a fresh store, apply, then time the materialization alone."""
    warnings.filterwarnings("ignore")
    from features.store import apply_definitions, materialize_snapshot

    store = open_bench_store(home, backend, project)
    apply_definitions(store, home)
    started = time.perf_counter()
    materialize_snapshot(store, snapshot, direct=direct, batch_size=batch)
    seconds = time.perf_counter() - started
    queue.put({"seconds": seconds, "rss_mib": peak_rss_mib()})


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_bench_store(home: Path, backend: str, project: str) -> Any:
    """The embedded store of `home` (file registry, DuckDB offline), SQLite or Redis online."""
    from features.store import open_store

    if backend == "sqlite":
        return open_store(home, production=False, project=project)
    from string import Template

    import yaml
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from features.paths import REPO_DIR, feast_dir, feast_environment, feature_store_yaml

    text = Template(feature_store_yaml(False).read_text()).safe_substitute(
        feast_environment(home, False)
    )
    raw = yaml.safe_load(text)
    raw["project"] = project
    raw["online_store"] = {"type": "redis", "connection_string": REDIS}
    config = RepoConfig(**raw)
    config.repo_path = REPO_DIR
    feast_dir(home).mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(REPO_DIR), config=config)


def check_equal(homes: dict[str, Path], backend: str, project: str, ids: list[str]) -> None:
    """Feast's online answers for `ids`, and (SQLite) every stored row, equal in both."""
    import sqlite3

    from features.schema import VIEW_FEATURES

    stores = {
        label: open_bench_store(home, backend, f"{project}_{label}")
        for label, home in homes.items()
    }
    refs = [f"{view}:{name}" for view, names in VIEW_FEATURES.items() for name in names]
    answers = [
        store.get_online_features(features=refs, entity_rows={"customer_id": ids}).to_dict(
            include_event_timestamps=True
        )
        for store in stores.values()
    ]
    if answers[0] != answers[1]:
        raise SystemExit(f"{backend}: the online answers differ")
    if backend == "sqlite":
        from serving.online_sqlite import db_path

        connections = [sqlite3.connect(db_path(store)) for store in stores.values()]
        for view in VIEW_FEATURES:
            # Both tables in the same order, compared a chunk at a time (memory stays flat).
            cursors = [
                c.execute(f'SELECT * FROM "{s.project}_{view}" ORDER BY entity_key, feature_name')
                for c, s in zip(connections, stores.values(), strict=True)
            ]
            while True:
                chunks = [cursor.fetchmany(50_000) for cursor in cursors]
                if chunks[0] != chunks[1]:
                    raise SystemExit(f"sqlite: the stored rows of {view} differ")
                if not chunks[0]:
                    break
        for connection in connections:
            connection.close()


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping())
    except Exception:  # any failure to connect means: not reachable
        return False


def drop_redis(project: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(match=f"*{project}_*", count=10_000):
        client.delete(key)


def uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return "load average " + out.rsplit("load average:", 1)[-1].strip()


if __name__ == "__main__":
    main()
