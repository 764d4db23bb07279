"""Benchmark: the whole pipeline on 100k simulated customers × 365 days (target: under 10 min).

Stages, each timed: simulate into the lake; build features (compute the tables at 12 monthly
snapshots, feast apply, materialize the latest snapshot into SQLite); training sets by Feast
point-in-time joins; fit churn, LTV and engagement with their baselines; log and register them in
MLflow. The stages run as the flows' task functions (``task.fn``), so Prefect's API server start
(15–20 s once per process) is not part of the figures.

Baseline, in the same run: the training sets built without Feast — the same feature tables and
labels joined in memory with pandas (`pipelines.datasets.memory_sets` does this for backtests) —
which prices the feature store's point-in-time join.

    uv run python bench/pipeline.py [--customers 100000] [--days 365]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--home", type=Path, default=None, help="keep the state here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        home = (args.home or Path(tmp) / "home").resolve()
        os.environ["NUDGE_HOME"] = str(home)
        run(home, args.customers, args.days, args.seed)


def run(home: Path, customers: int, days: int, seed: int) -> None:
    import logging

    from pipelines.prefect_env import configure_prefect

    configure_prefect(home)
    for name in ("mlflow", "prefect", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from engine.lake import EventLake
    from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
    from pipelines.flows.features import apply_feature_store, compute_feature_tables, materialize
    from pipelines.flows.train import fit_model, load_training_sets, log_result
    from pipelines.simulate import run_simulation
    from pipelines.tracking import default_tracking_uri

    timings: list[tuple[str, float]] = []
    total = time.perf_counter()

    def timed(label: str, fn, *a, **kw):
        started = time.perf_counter()
        out = fn(*a, **kw)
        timings.append((label, time.perf_counter() - started))
        print(f"  {label}: {timings[-1][1]:.1f} s", flush=True)
        return out

    sim = timed(
        "simulate + load the lake",
        run_simulation,
        customers=customers,
        days=days,
        seed=seed,
        start="2025-01-01",
        out=home / "simulation",
        lake=EventLake(home / "lake"),
    )
    events = sim.simulation.events.num_rows
    del sim
    built = timed("features: compute + write 3 tables", compute_feature_tables.fn, str(home))
    timed("features: feast apply", apply_feature_store.fn, str(home))
    timed(
        "features: materialize latest snapshot (SQLite)",
        materialize.fn,
        str(home),
        built["snapshots"][-1:],
    )
    problems, data, _skipped = timed(
        "training sets: labels + Feast point-in-time joins",
        load_training_sets.fn,
        str(home),
        ["churn", "ltv", "engagement"],
        6,
    )
    rows = sum(len(p.train) + len(p.holdout) for p in problems.values())
    results = {}
    for name, problem in problems.items():
        results[name] = timed(f"fit {name} + baselines", fit_model.fn, problem)
    uri = default_tracking_uri(home)
    context = {"data_range": data.describe(), "git_commit": "bench", "task_runner": "local"}
    for name in problems:
        timed(
            f"log + register {name} (MLflow)",
            log_result.fn,
            results[name],
            problems[name],
            context,
            str(home),
            uri,
        )
    pipeline_s = time.perf_counter() - total
    baseline_s = _memory_join_baseline(home, problems, ENTITY_KEY, TIMESTAMP_COLUMN)
    feast_s = next(s for label, s in timings if label.startswith("training sets"))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    print(f"\n| stage | {customers:,} customers × {days} days ({events:,} events) |")
    print("|---|---|")
    for label, seconds in timings:
        print(f"| {label} | {seconds:.1f} s |")
    verdict = "met" if pipeline_s < 600 else "MISSED"
    print(f"| **whole pipeline** | **{pipeline_s:.1f} s** (target < 600 s: {verdict}) |")
    print(f"| peak memory (RSS) | {peak_gb:.1f} GiB |")
    print(f"\n| training sets ({rows:,} rows, 3 models) | seconds | ratio |")
    print("|---|---|---|")
    print(
        f"| baseline: in-memory pandas join of the same tables and labels | {baseline_s:.1f} | 1.0× |"
    )
    print(
        f"| Feast point-in-time join (DuckDB offline store) | {feast_s:.1f} | {feast_s / baseline_s:.1f}× |"
    )
    print("\nholdout:")
    for name, result in results.items():
        metric = result.spec.primary_metric
        row = ", ".join(f"{k} {v[metric]:.4f}" for k, v in result.metrics.items())
        print(f"  {name} ({metric}): {row}")


def _memory_join_baseline(home: Path, problems, key: str, stamp: str) -> float:
    """The same training rows joined in memory: the feature tables merged on keys with labels."""
    import pandas as pd

    from features.compute import read_feature_table
    from features.schema import VIEW_NAMES

    started = time.perf_counter()
    tables = [read_feature_table(view, home) for view in VIEW_NAMES]
    features = tables[0]
    for table in tables[1:]:
        features = features.merge(table, on=[key, stamp], validate="1:1")
    for problem in problems.values():
        labels = pd.concat([problem.train, problem.holdout])[[key, stamp, problem.spec.label]]
        joined = labels.merge(features, on=[key, stamp], how="left", validate="1:1")
        assert len(joined) == len(labels)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
