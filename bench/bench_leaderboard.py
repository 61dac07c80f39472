"""The leaderboard over many records, and sweep throughput with one and two local workers.

Leaderboard: --records synthetic finished records (evaluations and runs over 4 tasks, 25 judges and seeds),
timed three ways: the index built from nothing (every header and summary read), the index brought up to date
when nothing changed (a stat per record file, no reads), and the tables, CSV, markdown, HTML and plots written
from it. Target: a leaderboard built from an up-to-date index in < 5 s (and the whole cold build reported).

Sweep: --cells tiny cells, each a fresh Python process that sleeps --cell-seconds and writes a finished record,
run through the local process pool with 1 and with 2 workers (cells per second).

    python bench/bench_leaderboard.py
    python bench/bench_leaderboard.py --records 10000 --cells 8 --cell-seconds 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_records import metric, write_eval, write_run  # noqa: E402

from vlmbench.results.leaderboard import build, write  # noqa: E402
from vlmbench.results.store import ResultsIndex  # noqa: E402
from vlmbench.sweeps.grid import Sweep, plan  # noqa: E402

TARGET_SECONDS = 5.0
TASKS = ("cartpole-upright", "cartpole-balance", "mountaincar-flag", "lunarlander-top-left")
EVAL_METRICS = ("epic_goal_distance", "goal_roc_auc", "value_order_correlation", "pairwise_accuracy",
                "identical_pair_bias", "position_consistency", "preference_fairness")


def make_records(root: Path, count: int) -> None:
    """``count`` records: per (task, judge, seed) an evaluation, and a run for every other one."""
    made, seed = 0, 0
    while made < count:
        for task in TASKS:
            for j in range(25):
                if made >= count:
                    return
                judge = f"judge-{j:02d}"
                value = (j + seed % 7) / 40
                write_eval(root, task, judge, seed, {m: metric(value, value - 0.05, value + 0.05) for m in EVAL_METRICS},
                           calls=300, cost_usd=0.01 * j)
                made += 1
                if made < count and seed % 2 == 0:
                    (root / "runs").mkdir(exist_ok=True)
                    write_run(root / "runs" / f"{seed}", task, judge, seed, [True, j % 2 == 0], summary=True)
                    made += 1
        seed += 1


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def bench_leaderboard(count: int, console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        console.print(f"writing {count:,} synthetic records ...")
        make_records(root, count)
        index = ResultsIndex(root)
        cold, (entries, skipped) = timed(lambda: index.refresh(rebuild=True))
        warm, (entries, skipped) = timed(index.refresh)
        tables, board = timed(lambda: build(entries, skipped))
        files, _ = timed(lambda: write(board, root / "board"))
        table = Table(title=f"leaderboard over {len(entries):,} records ({len(skipped)} skipped)")
        for column in ("step", "seconds"):
            table.add_column(column)
        table.add_row("index built from nothing (--reindex)", f"{cold:.2f}")
        table.add_row("index up to date, nothing changed", f"{warm:.2f}")
        table.add_row("tables over seeds and tasks", f"{tables:.2f}")
        table.add_row("md, csv, html and 3 plots written", f"{files:.2f}")
        total = warm + tables + files
        verdict = "[green]met[/green]" if total < TARGET_SECONDS else "[red]missed[/red]"
        table.add_row(f"leaderboard from an up-to-date index (target < {TARGET_SECONDS:g} s: {verdict})",
                      f"{total:.2f}")
        table.add_row("leaderboard with a cold index", f"{cold + tables + files:.2f}")
        console.print(table)


TINY_CELL = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from synthetic_records import metric, write_eval
time.sleep({seconds})
write_eval(Path({root!r}), {task!r}, {judge!r}, {seed}, {{"epic_goal_distance": metric(0.5)}})
"""


def bench_sweep(cells: int, seconds: float, console: Console) -> None:
    tests = str(Path(__file__).resolve().parents[1] / "tests")
    grid = plan(TASKS[:1], ["oracle"], list(range(cells)), ["eval"])
    table = Table(title=f"sweep of {cells} tiny cells (a Python process each, {seconds:g} s of sleep)")
    for column in ("workers", "seconds", "cells per second"):
        table.add_column(column)
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)

            def execute(args: list[str], log: Path) -> tuple[int, str]:
                seed = int(args[args.index("--seed") + 1])
                code = TINY_CELL.format(tests=tests, seconds=seconds, root=str(root), task=TASKS[0], judge="oracle",
                                        seed=seed)
                return subprocess.run([sys.executable, "-c", code], check=False).returncode, ""

            took, outcome = timed(Sweep(grid, root, workers=workers, execute=execute).run)
            assert all(r.status == "done" for r in outcome), outcome
            table.add_row(str(workers), f"{took:.2f}", f"{cells / took:.2f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--cell-seconds", type=float, default=1.0)
    args = parser.parse_args()
    console = Console()
    bench_leaderboard(args.records, console)
    bench_sweep(args.cells, args.cell_seconds, console)


if __name__ == "__main__":
    main()
