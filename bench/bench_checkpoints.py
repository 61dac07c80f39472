"""Checkpoint size and time for SAC on humanoid-kneel: vlmbench's replay checkpoint (the filled rows
only) against stable-baselines3's own save_replay_buffer (a pickle of the whole pre-allocated
buffer), side by side at two points of one run.

The agent takes random actions (no gradient updates: learning_starts is never reached), which
fills the replay buffer exactly as training would; rendering and judges play no part here.

    .venv/bin/python bench/bench_checkpoints.py [--steps 1000 20000] [--buffer-size 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from vlmbench.agents.algorithms import make_algorithm
from vlmbench.agents.checkpoints import save_agent
from vlmbench.agents.vec_env import make_vec_env
from vlmbench.specs.catalogue import resolve_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--buffer-size", type=int, default=1_000_000, help="SB3's default, as VLM-RM's runs use")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    task = resolve_task("humanoid-kneel")
    env = make_vec_env(task, n_envs=1, render=False, subprocess=False)
    model = make_algorithm("sac", env, seed=0, kwargs={"learning_starts": 10**12, "buffer_size": args.buffer_size},
                           tensorboard_log=None, device="cpu")
    table = Table(title=f"SAC checkpoints on {task.id} (replay capacity {args.buffer_size:,})")
    for column in ("steps", "vlmbench MB", "vlmbench s", "SB3 pickle MB", "SB3 s", "size ratio", "time ratio"):
        table.add_column(column, justify="right")
    done = 0
    with tempfile.TemporaryDirectory(prefix="bench_checkpoints_") as tmp:
        folder = Path(tmp)
        for steps in sorted(args.steps):
            model.learn(steps - done, reset_num_timesteps=done == 0)
            done = steps
            start = time.perf_counter()
            ours = save_agent(model, folder, "agent")
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            model.save_replay_buffer(folder / "sb3_replay.pkl")
            theirs_s = time.perf_counter() - start
            theirs = (folder / "sb3_replay.pkl").stat().st_size + (folder / "agent.zip").stat().st_size
            (folder / "sb3_replay.pkl").unlink()
            table.add_row(f"{steps:,}", f"{ours / 2**20:,.1f}", f"{ours_s:.2f}", f"{theirs / 2**20:,.1f}",
                          f"{theirs_s:.2f}", f"{theirs / ours:,.0f}x smaller", f"{theirs_s / ours_s:,.1f}x faster")
    env.close()
    console.print(table)
    console.print("target: checkpoint size grows with steps taken, not with the buffer's capacity")


if __name__ == "__main__":
    main()
