"""Benchmark: the uplift backtest (Qini AUC, uplift at the top 30 %) against its baselines.

On the simulator with planted response types (persuadables, sure things, lost causes, sleeping
dogs), where the oracle's Qini AUC is known, or on a real randomized experiment that the
`causaldata` package ships (Cai et al. 2015's insurance sessions, Thornton 2008's incentives).
Writes the experiment table as CSV (so the same figures come from `nudge uplift backtest`) and
prints a Markdown table.

    uv run python bench/uplift.py --dataset sim [--customers 20000] [--splits 10]
    uv run python bench/uplift.py --dataset cai|thornton [--splits 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from models.uplift.backtest import prepare_experiment, run_backtest
from models.uplift.metrics import qini_auc_score, uplift_at_k

# name: (treatment column, control, treatment, outcome, features)
SETUPS = {
    "sim": ("treatment", "holdout", "email", "converted", None),
    "cai": ("intensive", "0", "1", "takeup_survey", None),
    "thornton": ("any", "0", "1", "got", ["distvct", "age", "hiv2004", "villnum"]),
}


def load(args: argparse.Namespace) -> pd.DataFrame:
    if args.dataset == "sim":
        from pipelines.simulator import simulate
        from pipelines.simulator.planted import PlantedConfig, ResponseTypes
        from pipelines.simulator.uplift import FEATURES, uplift_experiment

        planted = PlantedConfig(response_types=ResponseTypes())
        sim = simulate(args.customers, args.days, seed=args.seed, planted=planted)
        table = uplift_experiment(sim, seed=args.seed)
        return table[[*FEATURES, "treatment", "converted", "oracle_uplift"]]
    if args.dataset == "cai":
        from causaldata import social_insure

        return social_insure.load_pandas().data
    from causaldata import thornton_hiv

    return thornton_hiv.load_pandas().data.dropna(subset=["any", "got"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(SETUPS), default="sim")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--estimators", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Where to write the CSV.")
    args = parser.parse_args()

    started = time.perf_counter()
    frame = load(args)
    column, control, treatment, outcome, features = SETUPS[args.dataset]
    if features is None:  # everything but the arm, the outcome and the oracle
        features = [c for c in frame.columns if c not in (column, outcome, "oracle_uplift")]
    out = args.out or Path(tempfile.gettempdir()) / f"uplift_{args.dataset}.csv"
    frame.to_csv(out, index=False)
    experiment = prepare_experiment(frame, treatment_column=column, control=control,
                                    treatment=treatment, outcome=outcome, features=features)  # fmt: skip
    run = run_backtest(experiment, splits=args.splits, seed=args.seed, n_estimators=args.estimators)
    seconds = time.perf_counter() - started
    r = run.report
    print(f"{args.dataset}: {r.rows:,} rows ({r.treated:,} treated, {r.control:,} control); "
          f"ATE {r.ate.estimate:+.2%} (95 % CI {r.ate.ci_low:+.2%} … {r.ate.ci_high:+.2%}); "
          f"{r.splits} splits, {seconds:.0f} s; chosen by inner CV: {r.chosen}")  # fmt: skip
    print(f"CSV: {out} — nudge uplift backtest --input {out} --treatment-column {column} "
          f"--control {control} --treatment {treatment} --outcome {outcome} "
          f"--features {','.join(features)} --splits {args.splits} --seed {args.seed}")  # fmt: skip
    print()
    print("| model | Qini AUC (mean ± std) | uplift at top 30 % (mean ± std) | inner-CV Qini |")
    print("|---|---|---|---|")
    for name, s in r.models.items():
        mark = " ✓" if name == r.chosen else ""
        print(f"| {name}{mark} | {s.qini_auc.mean:+.3f} ± {s.qini_auc.std:.3f} | "
              f"{s.uplift_at_30.mean:+.1%} ± {s.uplift_at_30.std:.1%} | {s.cv_qini_auc:+.3f} |")  # fmt: skip
    if "oracle_uplift" in frame:
        # The ceiling: the planted uplift itself, scored on the whole experiment.
        y, t = experiment.y, experiment.treatment
        oracle = frame.loc[frame[column].isin([control, treatment]), "oracle_uplift"].to_numpy()
        print(f"| *oracle (planted uplift)* | {qini_auc_score(y, oracle, t):+.3f} | "
              f"{uplift_at_k(y, oracle, t, 0.3):+.1%} | |")  # fmt: skip


if __name__ == "__main__":
    main()
