"""A grid of evaluations and runs (tasks x judges x seeds), each cell the `vlmbench eval` or `vlmbench run`
command in its own process.

A cell whose record exists and is finished is skipped; a failed cell is tried again up to ``retries`` times,
and a cell that still fails is reported without stopping the others. With a budget, no cell is launched
once the grid's records (finished ones, read through the results store) have cost that many dollars; cells
already running finish, so the total can pass the cap by what they spend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from vlmbench.errors import VlmbenchError
from vlmbench.results.store import RecordProblem, read_record

WHATS = ("eval", "run")
# Each cell's process runs its torch and BLAS on one thread: workers, not threads, use the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# A run cell's folder name carries every run option the sweep was given, so that a grid with other
# options makes new records instead of skipping the old ones as finished.
RUN_OPTION_UNITS = {"timesteps": "steps", "eval_episodes": "episodes"}


@dataclass(frozen=True)
class Cell:
    what: str  # "eval" or "run"
    task: str  # the task's id
    judge: str  # the judge as given (a name, alias or YAML path)
    judge_name: str  # the judge config's name (what its records are called)
    seed: int

    @property
    def label(self) -> str:
        return f"{self.what} {self.task} {self.judge_name} seed {self.seed}"

    def folder(self, results: Path, run_options: dict) -> Path:
        """Where this cell's record lives under ``results``."""
        if self.what == "eval":
            return results / "evals" / f"seed{self.seed}" / f"{self.task}--{self.judge_name}"
        given = "".join(f"--{run_options[option]}{unit}" for option, unit in RUN_OPTION_UNITS.items()
                        if run_options.get(option) is not None)
        return results / "runs" / f"{self.task}--{self.judge_name}--seed{self.seed}{given}"

    def command(self, results: Path, run_options: dict) -> list[str]:
        """The vlmbench command line that makes this cell's record."""
        folder = self.folder(results, run_options)
        common = ["--task", self.task, "--judge", self.judge, "--seed", str(self.seed)]
        if self.what == "eval":
            return ["eval", *common, "--results", str(folder.parent)]
        extra = [x for option, value in sorted(run_options.items()) if value is not None
                 for x in (f"--{option.replace('_', '-')}", str(value))]
        return ["run", *common, *extra, "--results", str(folder.parent), "--name", folder.name, "--resume"]


def plan(tasks: Sequence[str], judges: Sequence[str], seeds: Sequence[int], whats: Sequence[str]) -> list[Cell]:
    """Every cell of the grid; an unknown task or judge is an error (with close matches) before any starts."""
    from vlmbench.specs.catalogue import resolve_judge, resolve_task

    if not tasks or not judges or not seeds:
        raise VlmbenchError("a sweep needs at least one of each: --tasks, --judges, --seeds")
    task_ids = list(dict.fromkeys(resolve_task(t).id for t in tasks))
    judge_names = {j: resolve_judge(j).name for j in dict.fromkeys(judges)}
    return [Cell(what, task, judge, name, seed) for what in whats for task in task_ids
            for judge, name in judge_names.items() for seed in dict.fromkeys(seeds)]


def finished_cost(folder: Path) -> float | None:
    """The cost in dollars of a finished, readable record; None while there is none."""
    try:
        return read_record(folder)["cost_usd"]
    except RecordProblem:
        return None


@dataclass
class CellResult:
    cell: Cell
    status: str  # "done", "skipped" (finished before), "failed", "not started" (budget reached)
    attempts: int = 0
    seconds: float = 0.0
    message: str = ""


Execute = Callable[[list[str], Path], tuple[int, str]]


def run_command(args: list[str], log: Path, cwd: str | None = None) -> tuple[int, str]:
    """``vlmbench <args>`` in a process of its own (one torch thread) in ``cwd``; its output goes to ``log``.
    The exit code and the last line of its output."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        code = subprocess.run([sys.executable, "-m", "vlmbench", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, **ONE_THREAD}, cwd=cwd, check=False).returncode
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return code, lines[-1].strip() if lines else ""


class Sweep:
    """Runs the cells on ``workers`` at a time through ``execute`` (a local process by default)."""

    def __init__(self, cells: Sequence[Cell], results: Path, *, workers: int = 1, retries: int = 1,
                 budget_usd: float | None = None, run_options: dict | None = None,
                 execute: Execute = run_command, report: Callable[[CellResult, int, int], None] | None = None):
        self.cells, self.results, self.workers, self.retries = list(cells), results, workers, retries
        self.budget_usd, self.run_options = budget_usd, dict(run_options or {})
        self.execute, self.report = execute, report

    def folder(self, cell: Cell) -> Path:
        return cell.folder(self.results, self.run_options)

    def spent(self) -> float:
        """Dollars the grid's finished records cost."""
        return sum(cost for cell in self.cells if (cost := finished_cost(self.folder(cell))) is not None)

    def _over_budget(self) -> bool:
        return self.budget_usd is not None and self.spent() >= self.budget_usd

    def _attempt(self, cell: Cell, attempt: int) -> tuple[int, str, float]:
        log = self.results / "sweep-logs" / f"{cell.what}--{cell.task}--{cell.judge_name}--seed{cell.seed}.log"
        started = time.monotonic()
        try:
            code, last = self.execute(cell.command(self.results, self.run_options), log)
        except Exception as exc:  # noqa: BLE001 - a cell that breaks is reported, the grid goes on
            code, last = -1, f"{type(exc).__name__}: {exc}"
        if code == 0 and finished_cost(self.folder(cell)) is None:
            code, last = -1, f"exited 0 but left no finished record in {self.folder(cell)}"
        return code, last, time.monotonic() - started

    def run(self) -> list[CellResult]:
        results: dict[Cell, CellResult] = {}
        done = 0

        def settle(result: CellResult) -> None:
            nonlocal done
            results[result.cell] = result
            done += 1
            if self.report is not None:
                self.report(result, done, len(self.cells))

        queue = []
        for cell in self.cells:
            if finished_cost(self.folder(cell)) is not None:
                settle(CellResult(cell, "skipped", message="finished before"))
            else:
                queue.append(cell)
        attempts = dict.fromkeys(queue, 0)
        running: dict[Future, Cell] = {}
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while queue or running:
                while queue and len(running) < self.workers:
                    if self._over_budget():
                        for cell in queue:
                            settle(CellResult(cell, "not started",
                                              message=f"budget of ${self.budget_usd:.2f} reached"))
                        queue = []
                        break
                    cell = queue.pop(0)
                    attempts[cell] += 1
                    running[pool.submit(self._attempt, cell, attempts[cell])] = cell
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    code, last, seconds = future.result()
                    if code == 0:
                        settle(CellResult(cell, "done", attempts[cell], seconds))
                    elif attempts[cell] <= self.retries:
                        queue.append(cell)  # tried again after the cells not yet started
                    else:
                        settle(CellResult(cell, "failed", attempts[cell], seconds, f"exit {code}: {last}"))
        return [results[cell] for cell in self.cells]
