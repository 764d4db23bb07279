"""Benchmark: the whole pipeline out of core — a million customers × 365 days on one machine.

Target (issue 20): 1,000,000 customers × 365 days simulated, featured, trained, registered and
materialized in ≤ 20 min with a peak RSS ≤ 16 GiB. Runs `bench/pipeline.py` at each scale in its
own process (so that each peak RSS is its own) and prints every stage side by side with how it
grows: the exponent k of t ∝ customers^k between the smallest and the largest scale (1.0 is
linear; below 1, fixed costs still weigh; above 1, the stage grows faster than the data).

How it stays in bounds (the pipeline's own code, not the bench's):
- simulation in parts of 100k customers (`pipelines.simulator.simulate_parts`), each part
  streamed to the data set's events.parquet and appended to the lake before the next is drawn;
- features one part of the customers at a time (`features.compute.build_feature_tables`,
  `engine.lake.CustomerSlice`): every feature is per customer, so the parts' rows are the whole's;
- training on a fixed hash sample of NUDGE_TRAIN_MAX_CUSTOMERS customers (default 250k) with all
  of their snapshots; at the largest scale ``--sample-check`` fits churn again on twice the
  sample and compares both on the same holdout rows;
- the in-memory join baseline of `bench/pipeline.py` (every feature table in pandas) is run at the
  smallest scale only.

    uv run python bench/out_of_core.py [--scales 100000,1000000] [--days 365] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 20 * 60
TARGET_GIB = 16.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", default="100000,1000000", help="customers, comma-separated")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep each scale's home here")
    args = parser.parse_args()
    scales = sorted(int(s) for s in args.scales.split(",") if s.strip())
    if not scales:
        parser.error("--scales: at least one number of customers")
    print(f"load average before: {_load()}", flush=True)
    figures: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for customers in scales:
            figures[customers] = _run_scale(customers, args, base, largest=customers == scales[-1])
    print(f"\nload average after: {_load()}")
    _report(figures, args.days)


def _run_scale(customers: int, args: argparse.Namespace, base: Path, largest: bool) -> dict:
    home = base / f"home-{customers}"
    out = base / f"figures-{customers}.json"
    command = [
        sys.executable,
        str(ROOT / "bench" / "pipeline.py"),
        f"--customers={customers}",
        f"--days={args.days}",
        f"--seed={args.seed}",
        f"--home={home}",
        f"--json={out}",
    ]
    if largest and len(args.scales.split(",")) > 1:
        command += ["--sample-check", "--skip-baseline"]
    print(f"\n== {customers:,} customers × {args.days} days", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    figures = json.loads(out.read_text())
    figures["wall_s"] = time.perf_counter() - started
    return figures


def _report(figures: dict[int, dict[str, Any]], days: int) -> None:
    scales = sorted(figures)
    small, large = scales[0], scales[-1]
    header = " | ".join(f"{c:,}" for c in scales)
    print(f"\n| stage ({days} days) | {header} | exponent |")
    print("|---|" + "---|" * len(scales) + "---|")
    stages = list(figures[large]["stages"])
    for stage in stages:
        cells = " | ".join(f"{figures[c]['stages'].get(stage, math.nan):.1f} s" for c in scales)
        print(f"| {stage} | {cells} | {_exponent(figures, small, large, stage)} |")
    events = " | ".join(f"{figures[c]['events']:,}" for c in scales)
    print(f"| events | {events} | |")
    totals = " | ".join(f"**{figures[c]['total_s']:.1f} s**" for c in scales)
    print(f"| **whole pipeline** | {totals} | {_exponent(figures, small, large, None)} |")
    peaks = " | ".join(f"{figures[c]['peak_rss_gib']:.1f} GiB" for c in scales)
    print(f"| peak RSS | {peaks} | |")
    rows = " | ".join(
        f"{figures[c]['training_rows']:,} ({figures[c]['sample_fraction']:.0%} of customers)"
        for c in scales
    )
    print(f"| training rows (3 models) | {rows} | |")
    big = figures[large]
    met = big["total_s"] <= TARGET_S and big["peak_rss_gib"] <= TARGET_GIB
    print(
        f"\n{large:,} customers: {big['total_s'] / 60:.1f} min (target ≤ {TARGET_S // 60} min), "
        f"peak RSS {big['peak_rss_gib']:.1f} GiB (target ≤ {TARGET_GIB:.0f} GiB): "
        f"{'met' if met else 'MISSED'}"
    )
    for customers in scales:
        holdout = figures[customers]["holdout"]
        row = "; ".join(
            f"{model}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            for model, scores in holdout.items()
        )
        print(f"holdout at {customers:,}: {row}")
    check = big.get("sample_check")
    if check:
        print(
            f"sample check at {large:,} (churn, the same {check['rows']:,} holdout rows): "
            f"ROC-AUC {check['auc_sample']:.4f} from {check['fraction']:.1%} of the customers, "
            f"{check['auc_double']:.4f} from {check['fraction_double']:.1%} "
            f"(difference {check['auc_double'] - check['auc_sample']:+.4f}; bound 0.005)"
        )


def _exponent(figures: dict[int, dict[str, Any]], small: int, large: int, stage: str | None) -> str:
    if small == large:
        return ""
    pick = (lambda f: f["total_s"]) if stage is None else (lambda f: f["stages"].get(stage))
    lo, hi = pick(figures[small]), pick(figures[large])
    if not lo or not hi or lo <= 0 or hi <= 0:
        return ""
    return f"{math.log(hi / lo) / math.log(large / small):.2f}"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
