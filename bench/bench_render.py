"""Rendered frames per second of vlmbench.envs.rollout.rollout: 1 worker against N worker processes.

For each task, the same random-policy rollout (N episodes of --steps steps at --size x --size,
seeds 0..N-1) runs twice, with workers=1 and workers=N, and the table shows both side by side:
wall time (including env construction and GL start-up in every worker) and steady frames/s
(timed from the first environment step to the last, so start-up is excluded), and the ratio of
the N-worker rate to the 1-worker rate (ratio wall compares whole runs, ratio steady the
stepping and rendering alone).

    python bench/bench_render.py
    python bench/bench_render.py --workers 8 --tasks humanoid-kneel --steps 100
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from rich.console import Console
from rich.table import Table

from vlmbench.envs.rollout import rollout
from vlmbench.specs.catalogue import resolve_task
from vlmbench.specs.task import TaskSpec


def measure(task: TaskSpec, workers: int, episodes: int, steps: int) -> tuple[int, float, float]:
    """(frames, wall seconds, steady frames/s) of one rollout."""
    ticks: list[tuple[float, int]] = []
    start = time.perf_counter()
    episodes_ = rollout(task, episodes=episodes, seed=0, workers=workers, steps=steps, keep_states=False,
                        progress=lambda n: ticks.append((time.perf_counter(), n)))
    wall = time.perf_counter() - start
    frames = sum(len(ep.frames) for ep in episodes_)
    steady = sum(n for _, n in ticks[1:]) / max(ticks[-1][0] - ticks[0][0], 1e-9)
    return frames, wall, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["cartpole-upright", "humanoid-kneel"])
    parser.add_argument("--steps", nargs="+", type=int, default=[200, 100], help="steps per episode, one per task")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="N (default: the CPU count)")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per measurement (default: N)")
    parser.add_argument("--size", type=int, default=224, help="frame width and height")
    args = parser.parse_args()
    if len(args.steps) not in (1, len(args.tasks)):
        parser.error("give one --steps value, or one per task")
    steps = args.steps * len(args.tasks) if len(args.steps) == 1 else args.steps
    episodes = args.episodes or args.workers

    console = Console(width=max(Console().width, 110))  # the table whole, even when piped
    console.print(f"{os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {episodes} episodes per measurement")
    table = Table(title=f"rendered frames/s at {args.size}x{args.size}: 1 worker vs {args.workers}")
    for column in ("task", "workers", "frames", "wall s", "fps wall", "fps steady", "ratio wall", "ratio steady"):
        table.add_column(column, justify="left" if column == "task" else "right", no_wrap=True)
    for task_id, n_steps in zip(args.tasks, steps):
        task = resolve_task(task_id)
        task = task.model_copy(update={"render": task.render.model_copy(update={"width": args.size, "height": args.size})})
        results = {w: measure(task, w, episodes, n_steps) for w in dict.fromkeys((1, args.workers))}
        (_, wall_1, steady_1) = results[1]
        for w, (frames, wall, steady) in results.items():
            ratios = ["", ""] if w == 1 else [f"{wall_1 / wall:.2f}x", f"{steady / steady_1:.2f}x"]
            table.add_row(task.id, str(w), str(frames), f"{wall:.1f}", f"{frames / wall:.1f}", f"{steady:.1f}", *ratios)
    console.print(table)


if __name__ == "__main__":
    # Workers must not be forked: rollout's AsyncVectorEnv builds a dummy env (with an EGL context
    # for MuJoCo scenes) in this process first, and forked workers then deadlock in GL start-up.
    multiprocessing.set_start_method("spawn")
    main()
