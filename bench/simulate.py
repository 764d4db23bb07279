"""Benchmark: the vectorised simulator at 100k customers × 365 days (target: under 60 s).

Baseline, in the same run: bench/baselines/simulate_loop.py (a per-customer Python loop),
timed on fewer customers and compared by events per second.

    uv run python bench/simulate.py [--customers 100000] [--days 365] [--baseline-customers 5000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines.simulate_loop import simulate_loop
from engine.lake import EventLake
from pipelines.simulator import simulate
from pipelines.simulator.output import write_simulation


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--baseline-customers", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    started = time.perf_counter()
    sim = simulate(args.customers, args.days, seed=args.seed)
    generate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_simulation(sim, Path(tmp) / "sim")
        write_s = time.perf_counter() - started
        started = time.perf_counter()
        EventLake(Path(tmp) / "lake").append(sim.events)
        lake_s = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    events = sim.events.num_rows

    started = time.perf_counter()
    baseline = simulate_loop(args.baseline_customers, args.days, seed=args.seed)
    baseline_s = time.perf_counter() - started

    ours = events / generate_s
    theirs = baseline.num_rows / baseline_s
    print(f"| step | {args.customers:,} customers × {args.days} days |")
    print("|---|---|")
    print(f"| generate ({events:,} events) | {generate_s:.1f} s |")
    print(f"| write data set + truth (Parquet) | {write_s:.1f} s |")
    print(
        f"| **simulate total (generate + write)** | **{generate_s + write_s:.1f} s** (target < 60 s) |"
    )
    print(f"| load into the lake (partition by day, dedupe by id) | {lake_s:.1f} s |")
    print(f"| peak memory (RSS) | {peak_gb:.1f} GiB |")
    print()
    print("| simulator | events/s | ratio |")
    print("|---|---|---|")
    print(
        f"| baseline: per-customer Python loop ({args.baseline_customers:,} customers, {baseline.num_rows:,} events) | {theirs:,.0f} | 1.0× |"
    )
    print(
        f"| nudge vectorised ({args.customers:,} customers) | {ours:,.0f} | {ours / theirs:.1f}× |"
    )


if __name__ == "__main__":
    main()
