"""Dataset re-rendering frames/s: 1 worker process against N.

Each dataset's states (all of them, or the first --states) are re-rendered with the frame cache
off, once with workers=1 and once with workers=N, and the table shows both side by side: frames,
wall time (including starting the workers and building an environment in each) and frames/s,
and the ratio of the N-worker rate to the 1-worker rate. Restoring a LunarLander state replays
its actions, so that dataset also measures replay.

    python bench/bench_dataset_render.py
    python bench/bench_dataset_render.py --workers 8 --datasets humanoid-kneel lunarlander-top-left
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

from rich.console import Console
from rich.table import Table

from vlmbench.datasets.format import load_dataset, resolve_dataset
from vlmbench.datasets.render import frames
from vlmbench.specs.catalogue import resolve_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["cartpole-upright", "humanoid-kneel"],
                        help="task ids (their shipped datasets) or dataset files")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="N (default: the CPU count)")
    parser.add_argument("--states", type=int, default=None, help="render only the first this many states")
    args = parser.parse_args()

    console = Console(width=max(Console().width, 100))  # the table whole, even when piped
    console.print(f"{os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, frame cache off")
    table = Table(title=f"dataset re-rendering frames/s: 1 worker vs {args.workers}")
    for column in ("dataset", "workers", "frames", "wall s", "frames/s", "ratio"):
        table.add_column(column, justify="left" if column == "dataset" else "right", no_wrap=True)
    for name in args.datasets:
        dataset = load_dataset(resolve_dataset(name))
        task = resolve_task(dataset.task)
        rows = dataset.rows[: args.states]
        rates = {}
        for workers in dict.fromkeys((1, args.workers)):
            start = time.perf_counter()
            rendered = frames(dataset, task, rows, workers=workers, cache=None)
            wall = time.perf_counter() - start
            rates[workers] = len(rendered) / wall
            ratio = "" if workers == 1 else f"{rates[workers] / rates[1]:.2f}x"
            table.add_row(name, str(workers), str(len(rendered)), f"{wall:.1f}", f"{rates[workers]:.1f}", ratio)
    console.print(table)


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    main()
