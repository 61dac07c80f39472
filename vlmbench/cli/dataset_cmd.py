"""`vlmbench dataset build|show|list`: labelled-state datasets for evaluating judges."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from vlmbench.cli.output import bar, make_console
from vlmbench.datasets.format import LOCAL_DIR, Dataset, load_dataset, resolve_dataset, shipped_dir
from vlmbench.datasets.render import FRAMES_DIR
from vlmbench.errors import VlmbenchError
from vlmbench.specs.catalogue import resolve_task

app = typer.Typer(help="Build, list and show labelled-state datasets (states with their goal labels).",
                  no_args_is_help=True)
console = make_console()


class _PlainProgress:
    """Progress as plain lines, one per tenth of the work, for logs and pipes."""

    def __init__(self, what: str, total: int):
        self.what, self.total, self.done, self.shown = what, total, 0, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.done >= self.shown + max(1, self.total // 10) or self.done >= self.total > self.shown:
            print(f"{self.what}: {self.done}/{self.total}", flush=True)
            self.shown = self.done


def _with_progress(what: str, total: int, work):
    """Run ``work(progress)`` under a rich bar on a terminal, else with plain progress lines."""
    if console.is_terminal:
        with bar() as progress:
            job = progress.add_task(what, total=total, status="")
            return work(lambda n: progress.advance(job, n))
    return work(_PlainProgress(what, total))


@app.command("build")
def build(
    task: str = typer.Option(..., "--task", "-t", help="task id, alias or YAML path"),
    n: int = typer.Option(200, "--n", help="lone states (trajectories come on top)"),
    goal_fraction: float = typer.Option(0.3, "--goal-fraction", help="share of the lone states that hold the goal"),
    seed: int = typer.Option(0, "--seed"),
    trajectories: int = typer.Option(4, "--trajectories", help="short state sequences ending in the goal"),
    trajectory_length: int = typer.Option(8, "--trajectory-length", help="states per trajectory"),
    out: Path = typer.Option(None, "--out", help=f"the Parquet file to write (default {LOCAL_DIR}/<task>.parquet)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing file"),
) -> None:
    """Sample states of a task (random policy, goal states, near misses, trajectories) labelled by its
    success detector, and save them as a dataset. Nothing is rendered: frames are made on demand."""
    from vlmbench.datasets.build import build_dataset, check_build_settings
    from vlmbench.datasets.format import save_dataset

    check_build_settings(n, goal_fraction, trajectories, trajectory_length)
    spec = resolve_task(task)
    path = out or LOCAL_DIR / f"{spec.id}.parquet"
    if path.suffix != ".parquet":
        raise VlmbenchError(f"--out {path}: a dataset file's name ends in .parquet")
    if path.exists() and not overwrite:
        raise VlmbenchError(f"{path} exists; pass --overwrite to replace it")
    dataset = _with_progress(f"build {spec.id}", n + trajectories * trajectory_length, lambda progress: build_dataset(
        spec, n=n, goal_fraction=goal_fraction, seed=seed, trajectories=trajectories,
        trajectory_length=trajectory_length, progress=progress))
    dataset = save_dataset(dataset, path)
    _print_counts(dataset)
    console.print(f"saved {escape(str(path))}")


def _print_counts(dataset: Dataset) -> None:
    lone = dataset.lone()
    goals = sum(row.label for row in lone)
    console.print(f"{dataset.task} v{dataset.task_version}: {len(lone)} states, {goals} goal, {len(lone) - goals} "
                  f"not goal", soft_wrap=True)
    table = Table()
    for column in ("sampler", "states", "goal", "not goal"):
        table.add_column(column, justify="left" if column == "sampler" else "right")
    by_sampler = Counter((row.sampler, row.label) for row in dataset.rows)
    samplers = list(dict.fromkeys(row.sampler for row in dataset.rows))
    for sampler in samplers:
        yes, no = by_sampler[sampler, 1], by_sampler[sampler, 0]
        table.add_row(sampler, str(yes + no), str(yes), str(no))
    console.print(table)
    paths = dataset.trajectories()
    if paths:
        lengths = sorted({len(rows) for rows in paths.values()})
        console.print(f"{len(paths)} trajectories of {'/'.join(map(str, lengths))} states, each ending in the goal")
    how = dataset.build.get("samplers", {})
    for sampler in samplers:
        if sampler in how:
            console.print(f"{sampler}: {escape(str(how[sampler]))}")
    settings = ", ".join(f"{k} {v}" for k, v in dataset.build.items() if k != "samplers")
    console.print(f"built {dataset.created} by vlmbench {dataset.vlmbench_version}: {settings}", soft_wrap=True)
    labellers = Counter(row.labeller for row in dataset.rows)
    console.print("labelled by " + ", ".join(f"{who} ({count})" for who, count in labellers.most_common()))
    for note in dataset.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def _sample(dataset: Dataset, count: int) -> list:
    """Up to ``count`` lone states spread over the samplers and labels, then the first trajectory."""
    rng = np.random.default_rng(0)
    groups: dict[tuple, list] = {}
    for row in dataset.lone():
        groups.setdefault((row.sampler, row.label), []).append(row)
    picked: list = []
    queues = [list(rng.permutation(len(rows))) for rows in groups.values()]
    while len(picked) < count and any(queues):
        for rows, queue in zip(groups.values(), queues):
            if queue and len(picked) < count:
                picked.append(rows[queue.pop()])
    picked.sort(key=lambda row: row.state_id)
    first_path = next(iter(dataset.trajectories().values()), [])
    return picked + first_path


@app.command("show")
def show(
    name: str = typer.Argument(..., help="a task id or alias (its shipped dataset), or a dataset file"),
    task: str = typer.Option(None, "--task", "-t", help="the task it must hold (id, alias or YAML path; "
                                                       "default: the catalogue's task of its id)"),
    sheet: Path = typer.Option(None, "--sheet", help="contact sheet PNG (default results/datasets/<name>.png)"),
    sample: int = typer.Option(24, "--sample", min=1, help="lone states on the contact sheet"),
    workers: int = typer.Option(1, "--workers", min=1, help="worker processes rendering in parallel"),
    frames_dir: Path = typer.Option(FRAMES_DIR, "--frames", help="frame cache folder"),
) -> None:
    """Counts of a dataset, and a contact sheet of a sample of its states (re-rendered, captioned with
    label and progress; the first trajectory in its last row)."""
    from vlmbench.datasets.render import frames
    from vlmbench.plots import captioned, contact_sheet, save

    path = resolve_dataset(name)
    spec = resolve_task(task) if task is not None else None
    dataset = load_dataset(path, spec)
    spec = spec or resolve_task(dataset.task)
    _print_counts(dataset)
    rows = _sample(dataset, sample)
    pictures = _with_progress(f"render {dataset.task}", len(rows), lambda progress: frames(
        dataset, spec, rows, workers=workers, cache=frames_dir, progress=progress))
    tiles = []
    for row, frame in zip(rows, pictures):
        where = f"traj {row.trajectory} t={row.t}" if row.trajectory is not None else row.sampler
        lines = [f"{row.state_id} {where}", f"{'goal' if row.label else 'not goal'}  progress {row.progress:.2f}"]
        tiles.append(captioned(frame, lines, highlight=bool(row.label)))
    columns = max(6, len(next(iter(dataset.trajectories().values()), [])))
    title = f"{dataset.task} v{dataset.task_version} dataset {path.name} ({dataset.digest}): green = goal"
    target = sheet or LOCAL_DIR / f"{path.stem}.png"
    save(contact_sheet(tiles, columns=columns, title=title), target)
    console.print(f"contact sheet: {escape(str(target))}")


@app.command("list")
def list_datasets() -> None:
    """Shipped datasets (one per task) and local ones (results/datasets/ under this folder)."""
    table = Table(title=f"datasets (shipped: {shipped_dir()}; local: {LOCAL_DIR})")
    for column in ("task", "file", "states", "goal", "traj"):
        table.add_column(column, overflow="fold", no_wrap=column != "file", min_width=16 if column == "file" else None)
    invalid = []
    for where, folder in (("shipped", shipped_dir()), ("local", LOCAL_DIR)):
        for path in sorted(folder.glob("*.parquet")):
            try:
                dataset = load_dataset(path)
            except VlmbenchError as exc:
                invalid.append(str(exc))
                continue
            lone = dataset.lone()
            goals = sum(row.label for row in lone)
            file = where if where == "shipped" else escape(str(path))
            table.add_row(f"{dataset.task} v{dataset.task_version}", file, str(len(lone)),
                          f"{goals} ({goals / max(len(lone), 1):.0%})", str(len(dataset.trajectories())))
    console.print(table)
    for problem in invalid:
        console.print(f"[red]invalid:[/red] {escape(problem)}")
