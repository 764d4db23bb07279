"""Benchmark: the whole pipeline on 100k simulated customers × 365 days (target: under 10 min).

Stages, each timed: simulate into the lake; build features (compute the tables at 12 monthly
snapshots, feast apply, materialize the latest snapshot into SQLite); training sets by Feast
point-in-time joins; fit churn, LTV and engagement with their baselines; log and register them in
MLflow. The stages run as the flows' task functions (``task.fn``), so Prefect's API server start
(15–20 s once per process) is not part of the figures.

Baseline, in the same run: the training sets built without Feast — the same feature tables and
labels joined in memory with pandas (`pipelines.datasets.memory_sets` does this for backtests) —
which prices the feature store's point-in-time join.

    uv run python bench/pipeline.py [--customers 100000] [--days 365] [--json FILE]

More customers than a part (100k) are simulated, featured and loaded one part at a time, and the
models learn from a sample of NUDGE_TRAIN_MAX_CUSTOMERS customers (`bench/out_of_core.py` runs
this at 100k and 1M and prints how each stage grows). With a sample, ``--sample-check`` fits
churn again on twice the sample and compares the two on the same holdout rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--home", type=Path, default=None, help="keep the state here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--sample-check",
        action="store_true",
        help="when training samples customers, fit churn on twice the sample too",
    )
    parser.add_argument(
        "--skip-baseline",
        action="store_true",
        help="skip the in-memory join baseline (it holds every feature table in memory)",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        home = (args.home or Path(tmp) / "home").resolve()
        os.environ["NUDGE_HOME"] = str(home)
        figures = run(
            home,
            args.customers,
            args.days,
            args.seed,
            sample_check=args.sample_check,
            baseline=not args.skip_baseline,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


def run(
    home: Path,
    customers: int,
    days: int,
    seed: int,
    *,
    sample_check: bool = False,
    baseline: bool = True,
) -> dict[str, Any]:
    import logging

    from pipelines.prefect_env import configure_prefect

    configure_prefect(home)
    for name in ("mlflow", "prefect", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from engine.lake import EventLake
    from features.schema import ENTITY_KEY, TIMESTAMP_COLUMN
    from pipelines.flows.features import apply_feature_store, compute_feature_tables, materialize
    from pipelines.flows.train import fit_model, load_training_sets, log_result, training_sample
    from pipelines.simulate import run_simulation
    from pipelines.tracking import default_tracking_uri

    timings: list[tuple[str, float]] = []
    if not _TREE.is_alive():
        _TREE.start()
    total = time.perf_counter()

    def timed(label: str, fn, *a, **kw):
        started = time.perf_counter()
        print(f"  {label} …", flush=True)
        out = fn(*a, **kw)
        timings.append((label, time.perf_counter() - started))
        print(f"  {label}: {timings[-1][1]:.1f} s (peak RSS {_peak_gib():.1f} GiB)", flush=True)
        return out

    def say(message: str) -> None:
        print(f"    {message}", flush=True)

    sim = timed(
        "simulate + load the lake",
        run_simulation,
        customers=customers,
        days=days,
        seed=seed,
        start="2025-01-01",
        out=home / "simulation",
        lake=EventLake(home / "lake"),
        progress=say,
    )
    events = sim.events
    del sim
    built = timed(
        "features: compute + write 3 tables",
        compute_feature_tables.fn,
        str(home),
        progress=say,
    )
    timed("features: feast apply", apply_feature_store.fn, str(home))
    timed(
        "features: materialize latest snapshot (SQLite)",
        materialize.fn,
        str(home),
        built["snapshots"][-1:],
        progress=say,
    )
    problems, data, _skipped = timed(
        "training sets: labels + Feast point-in-time joins",
        load_training_sets.fn,
        str(home),
        ["churn", "ltv", "engagement"],
        6,
    )
    rows = sum(len(p.train) + len(p.holdout) for p in problems.values())
    sample = training_sample(EventLake(home / "lake"))
    if sample is not None:
        say(f"training on a sample of {sample.fraction:.1%} of the customers")
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
    peak_gb = _peak_gib()
    checked = None
    if sample_check and sample is not None:
        fit_s = dict(timings)["fit churn + baselines"]
        checked = _sample_check(home, problems["churn"], results["churn"], sample, fit_s)
    baseline_s = (
        _memory_join_baseline(home, problems, ENTITY_KEY, TIMESTAMP_COLUMN) if baseline else None
    )
    feast_s = next(s for label, s in timings if label.startswith("training sets"))

    print(f"\n| stage | {customers:,} customers × {days} days ({events:,} events) |")
    print("|---|---|")
    for label, seconds in timings:
        print(f"| {label} | {seconds:.1f} s |")
    target_s = 600 if customers <= 100_000 else 1_200  # issue 20: 1M customers in 20 min
    verdict = "met" if pipeline_s < target_s else "MISSED"
    print(f"| **whole pipeline** | **{pipeline_s:.1f} s** (target < {target_s} s: {verdict}) |")
    print(f"| peak memory (RSS, with the simulation's part workers) | {peak_gb:.1f} GiB |")
    if baseline_s is not None:
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
    if checked:
        print(
            f"\nsample check (churn, the same {checked['rows']:,} holdout rows): ROC-AUC "
            f"{checked['auc_sample']:.4f} learning from {checked['fraction']:.1%} of the "
            f"customers, {checked['auc_double']:.4f} from {checked['fraction_double']:.1%} "
            f"(difference {checked['auc_double'] - checked['auc_sample']:+.4f}; "
            f"{checked['train_rows']:,} → {checked['train_rows_double']:,} training rows, "
            f"fits {checked['fit_s']:.0f} s → {checked['fit_double_s']:.0f} s)"
        )
    return {
        "customers": customers,
        "days": days,
        "events": events,
        "stages": dict(timings),
        "total_s": pipeline_s,
        "peak_rss_gib": peak_gb,
        "training_rows": rows,
        "sample_fraction": sample.fraction if sample is not None else 1.0,
        "feast_join_s": feast_s,
        "memory_join_s": baseline_s,
        "holdout": {
            name: {k: v[result.spec.primary_metric] for k, v in result.metrics.items()}
            for name, result in results.items()
        },
        "sample_check": checked,
        "load_average": os.getloadavg(),
    }


def _peak_gib() -> float:
    """The peak of the whole job so far: this process's own, or the largest sum of this process
    and its children (the simulation's part workers) seen by `_TreeMemory`, if larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return max(own, _TREE.peak / 1024**3)


class _TreeMemory(threading.Thread):
    """Samples the summed RSS of this process and its descendants every 0.2 s (Linux /proc)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            self.peak = max(self.peak, _tree_pages(os.getpid()) * page)
            time.sleep(0.2)


def _tree_pages(root: int) -> int:
    children: dict[int, list[int]] = {}
    pages: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as statm:
                pages[int(entry)] = int(statm.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += pages.get(pid, 0)
        todo += children.get(pid, [])
    return total


_TREE = _TreeMemory()


def _sample_check(home: Path, problem, result, sample, fit_s: float) -> dict[str, Any]:
    """Churn learnt from twice the customers of `sample`, scored with the sample's model on the
    holdout rows both share (the smaller sample's customers are within the larger's)."""
    from engine.lake import EventLake
    from features.schema import ENTITY_KEY
    from models.metrics import classification_metrics
    from pipelines.flows.train import fit_model, load_training_sets

    lake = EventLake(home / "lake")
    double = min(1.0, 2 * sample.fraction)
    most = round(double * lake.customer_count())
    print(f"  sample check: churn learning from {double:.1%} of the customers …", flush=True)
    problems, _data, _skipped = load_training_sets.fn(str(home), ["churn"], 6, max_customers=most)
    started = time.perf_counter()
    bigger = fit_model.fn(problems["churn"])
    fit_double_s = time.perf_counter() - started
    shared = set(problem.holdout[ENTITY_KEY])
    small = result.holdout_scores
    large = bigger.holdout_scores[bigger.holdout_scores[ENTITY_KEY].isin(shared)]
    label = result.spec.label
    merged = small.merge(large, on=ENTITY_KEY, suffixes=("", "_double"), validate="1:1")
    return {
        "rows": len(merged),
        "fraction": sample.fraction,
        "fraction_double": double,
        "auc_sample": classification_metrics(merged[label], merged["model"])["roc_auc"],
        "auc_double": classification_metrics(merged[label], merged["model_double"])["roc_auc"],
        "train_rows": len(problem.train),
        "train_rows_double": len(problems["churn"].train),
        "fit_s": fit_s,
        "fit_double_s": fit_double_s,
    }


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
