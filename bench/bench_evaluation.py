"""Agent evaluation: unrendered episodes stepped side by side against one at a time, in one run.

A run's evaluations (at checkpoints and at the end) roll its policy out without rendering. Stepped
side by side (up to rollout.LOCKSTEP episodes in one process), the policy network is asked once per
step for all of them; one at a time (LOCKSTEP = 1), once per episode and step. Each task's PPO
policy (untrained, seeded, deterministic actions) is evaluated both ways in alternating turns, and
the episodes must come out the same. Prints the median times and their ratio.

    python bench/bench_evaluation.py
    python bench/bench_evaluation.py --tasks cartpole-upright --episodes 50 --turns 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from stable_baselines3 import PPO

from vlmbench.envs import rollout as rollout_module
from vlmbench.envs.task_env import make_env
from vlmbench.errors import VlmbenchError
from vlmbench.metrics.success import evaluate
from vlmbench.specs.catalogue import resolve_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole-upright", "mountaincar-flag"])
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes (the label-efficiency cells' 20)")
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    if min(args.episodes, args.turns) < 1:
        parser.error("--episodes and --turns must be at least 1")
    try:
        tasks = [resolve_task(name) for name in args.tasks]
    except VlmbenchError as exc:
        parser.error(str(exc))
    torch.set_num_threads(1)
    table = Table(title=f"{args.episodes}-episode evaluation, median of {args.turns} turns")
    for column in ("task", "one at a time (s)", "side by side (s)", "speed-up", "same episodes"):
        table.add_column(column)
    side_by_side = rollout_module.LOCKSTEP
    for task in tasks:
        model = PPO("MlpPolicy", make_env(task, render=False), seed=0, device="cpu")

        def policy(obs, model=model):
            return model.predict(obs, deterministic=True)[0]

        times: dict[int, list[float]] = {1: [], side_by_side: []}
        results = {}
        for _ in range(args.turns):
            for width in times:
                rollout_module.LOCKSTEP = width
                began = time.perf_counter()
                results[width] = evaluate(task, policy, episodes=args.episodes, seed=1)
                times[width].append(time.perf_counter() - began)
        rollout_module.LOCKSTEP = side_by_side
        alone, together = (float(np.median(times[w])) for w in (1, side_by_side))
        same = results[1].episodes == results[side_by_side].episodes
        table.add_row(task.id, f"{alone:.2f}", f"{together:.2f}", f"{alone / together:.1f}x", "yes" if same else "NO")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
