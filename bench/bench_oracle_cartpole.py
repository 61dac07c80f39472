"""The headline check: the noise-free oracle judge solves cartpole-upright from at most 200 preferences.

Target: success >= 90% over 20 evaluation episodes in at least 4 of 5 seeds, with the default run
config (PPO, 60,000 timesteps, label budget 200, 8 envs). Each seed is a full `vlmbench run
--task cartpole-upright --judge oracle --seed N`; the table gives per seed the preferences used
(judge labels, abstentions included), the success rate and mean progress of the evaluation, and
the wall time. Seeds run one after another unless --jobs says otherwise.

    python bench/bench_oracle_cartpole.py
    python bench/bench_oracle_cartpole.py --seeds 0 1 2 3 4 5 6 7 8 9 --jobs 2 --results results/oracle-bench
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vlmbench.agents.config import FeedbackConfig, RunConfig


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    from vlmbench.agents.run import train

    config = RunConfig(task="cartpole-upright", judge=args.judge, seed=seed, timesteps=args.timesteps,
                       eval_episodes=args.episodes, feedback=FeedbackConfig(label_budget=args.label_budget))
    began = time.perf_counter()
    result = train(config, results_dir=Path(args.results), name=f"cartpole-upright--{args.judge}--seed{seed}",
                   overwrite=True)
    return {"seed": seed, "labels": result.labels, "abstained": result.abstained,
            "success_rate": result.evaluation.success_rate, "mean_progress": result.evaluation.mean_progress,
            "seconds": time.perf_counter() - began, "folder": str(result.folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--judge", default="oracle")
    parser.add_argument("--timesteps", type=int, default=RunConfig.model_fields["timesteps"].default)
    parser.add_argument("--label-budget", type=int, default=200, help="preferences each seed may buy")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per seed")
    parser.add_argument("--success", type=float, default=0.9, help="success rate a seed must reach")
    parser.add_argument("--required", type=int, default=None, help="seeds that must pass (default: all but one)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel processes")
    parser.add_argument("--results", default=None, help="where run records go (default: a temporary folder)")
    args = parser.parse_args()
    args.results = args.results or tempfile.mkdtemp(prefix="bench_oracle_cartpole_")
    required = args.required if args.required is not None else max(1, len(args.seeds) - 1)
    console = Console()
    console.print(f"{len(args.seeds)} seeds of cartpole-upright with judge '{args.judge}': {args.timesteps:,} "
                  f"timesteps, at most {args.label_budget} preferences each; records in {args.results}")

    began = time.perf_counter()
    rows = []
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for row in pool.map(run_seed, args.seeds, [args] * len(args.seeds)):
                rows.append(row)
                console.print(f"seed {row['seed']}: success {row['success_rate']:.0%} in {row['seconds']:.0f} s")
    else:
        for seed in args.seeds:
            rows.append(run_seed(seed, args))
            row = rows[-1]
            console.print(f"seed {seed}: success {row['success_rate']:.0%} in {row['seconds']:.0f} s")

    table = Table(title=f"judge '{args.judge}' on cartpole-upright: {args.timesteps:,} PPO timesteps, "
                  f"{args.episodes} evaluation episodes per seed")
    abstentions = any(row["abstained"] for row in rows)  # never, for the oracle: the column is left out
    columns = ["seed", "preferences", *(["abstained"] if abstentions else []), "success", "mean progress",
               "wall time", "passes"]
    for column in columns:
        table.add_column(column, justify="left" if column == "seed" else "right")
    passed = 0
    for row in rows:
        ok = row["success_rate"] >= args.success and row["labels"] <= args.label_budget
        passed += ok
        table.add_row(str(row["seed"]), str(row["labels"]), *([str(row["abstained"])] if abstentions else []),
                      f"{row['success_rate']:.0%}", f"{row['mean_progress']:.3f}", f"{row['seconds']:.0f} s",
                      "yes" if ok else "[red]no[/red]")
    console.print(table)
    verdict = "[green]PASS[/green]" if passed >= required else "[red]FAIL[/red]"
    console.print(f"{verdict}: {passed} of {len(rows)} seeds reached success >= {args.success:.0%} from at most "
                  f"{args.label_budget} preferences (target: at least {required}); "
                  f"total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
