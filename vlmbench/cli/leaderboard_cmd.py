"""`vlmbench leaderboard`: every finished evaluation and run under a results folder, as tables and plots."""

from __future__ import annotations

import difflib
from pathlib import Path

import typer
from rich.table import Table

from vlmbench.cli.output import make_console
from vlmbench.errors import VlmbenchError

console = make_console()


def _chosen(option: str, given: list[str], present: set[str], resolve) -> list[str]:
    """The names ``given`` to --task or --judge as the records spell them (catalogue aliases resolved); a name
    neither in the records nor the catalogue is an error with close matches."""
    from vlmbench.errors import UnknownNameError

    chosen = []
    for name in given:
        if name in present:
            chosen.append(name)
            continue
        try:
            chosen.append(resolve(name))
        except UnknownNameError:
            close = difflib.get_close_matches(name, sorted(present), n=3, cutoff=0.6)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            raise VlmbenchError(f"{option} {name}: no records and no catalogue entry of that name{hint}") from None
    return chosen


def show(board) -> None:
    """The leaderboard's tables on the terminal."""
    from vlmbench.results.leaderboard import table_rows

    if board.empty:
        console.print("No finished evaluation or run records were found: the leaderboard is empty.")
    for title, rows in [("overall (mean over tasks)", board.overall), *sorted(board.tasks.items())]:
        header, body = table_rows(rows, short=True)
        table = Table(title=title, title_justify="left")
        for i, column in enumerate(header):
            table.add_column(column, overflow="fold", no_wrap=i >= 2)
        for line in body:
            table.add_row(*line)
        console.print(table)
    for skipped in board.skipped:
        console.print(f"[yellow]left out[/yellow] {skipped.path}: {skipped.reason}", soft_wrap=True)


def build_leaderboard(results: Path, out: Path, *, tasks: list[str] = (), judges: list[str] = (),
                      reindex: bool = False, quiet: bool = False):
    """Bring the index of ``results`` up to date, then write the leaderboard under ``out`` (and show it)."""
    from vlmbench.results.leaderboard import build, write
    from vlmbench.results.store import ResultsIndex
    from vlmbench.specs.catalogue import resolve_judge, resolve_task

    if not results.is_dir():
        raise VlmbenchError(f"--results {results}: no such folder")
    entries, skipped = ResultsIndex(results).refresh(rebuild=reindex)
    tasks = _chosen("--task", list(tasks), {e["task"] for e in entries}, lambda n: resolve_task(n).id)
    judges = _chosen("--judge", list(judges), {e["judge"] for e in entries}, lambda n: resolve_judge(n).name)
    board = build(entries, skipped, tasks=tasks, judges=judges)
    written = write(board, out)
    if not quiet:
        show(board)
        console.print(f"wrote {', '.join(p.name for p in written)} to {out}")
    return board


def leaderboard(
    task: list[str] = typer.Option([], "--task", "-t", help="only this task (repeat for several)"),
    judge: list[str] = typer.Option([], "--judge", "-j", help="only this judge (repeat for several)"),
    results: Path = typer.Option(Path("results"), "--results", help="results folder to read (every record under it)"),
    out: Path = typer.Option(None, "--out", help="where leaderboard.md/.csv/.html and plots go "
                                                 "(default: <results>/leaderboard)"),
    reindex: bool = typer.Option(False, "--reindex", help="rebuild <results>/index.sqlite by reading every record"),
) -> None:
    """Tables per task and overall (EPIC, ROC-AUC, value order, success rate, bias probes, cost), with plots."""
    build_leaderboard(results, out or results / "leaderboard", tasks=task, judges=judge, reindex=reindex)
