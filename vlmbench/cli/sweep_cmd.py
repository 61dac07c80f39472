"""`vlmbench sweep`: evaluations and runs over tasks x judges x seeds, then the leaderboard."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from vlmbench.cli.output import bar, make_console
from vlmbench.errors import VlmbenchError

console = make_console()


def _names(option: str, given: list[str]) -> list[str]:
    """Names from repeated options, each possibly a comma-separated list."""
    names = [part.strip() for text in given for part in text.split(",") if part.strip()]
    if not names:
        raise VlmbenchError(f"{option}: give at least one name")
    return names


def _seeds(given: list[str]) -> list[int]:
    """Seeds from '0,1,2', '0-4' or repeated options."""
    seeds = []
    for part in _names("--seeds", given):
        low, dash, high = part.partition("-")
        try:
            span = range(int(low), int(high) + 1) if dash else [int(part)]
        except ValueError:
            raise VlmbenchError(f"--seeds {part}: give whole numbers, a comma-separated list or a range like 0-4")
        if not span or min(span) < 0 or max(span) >= 2**31:
            raise VlmbenchError(f"--seeds {part}: seeds run from 0 to 2^31-1 (a range goes low-high)")
        seeds += span
    return list(dict.fromkeys(seeds))


def sweep(
    tasks: list[str] = typer.Option(..., "--tasks", help="task ids or aliases, comma-separated or repeated"),
    judges: list[str] = typer.Option(..., "--judges", help="judge names, aliases or YAML paths"),
    seeds: list[str] = typer.Option(["0"], "--seeds", help="seeds: 0,1,2 or 0-2"),
    what: str = typer.Option("eval", "--what", help="eval, run or both"),
    workers: int = typer.Option(1, "--workers", help="cells at a time (each a process with one torch thread)"),
    ray: str = typer.Option(None, "--ray", help="run cells on the Ray cluster at this address (host:port), "
                                                "or 'local' for a Ray instance on this machine"),
    budget_usd: float = typer.Option(None, "--budget-usd", help="launch no cell once the grid's records "
                                                               "have cost this many dollars"),
    retries: int = typer.Option(1, "--retries", help="times a failed cell is tried again"),
    timesteps: int = typer.Option(None, "--timesteps", help="runs: agent steps (default: vlmbench run's)"),
    eval_episodes: int = typer.Option(None, "--eval-episodes", help="runs: final evaluation episodes"),
    results: Path = typer.Option(Path("results"), "--results", help="results folder (evals/ and runs/ go under it)"),
    out: Path = typer.Option(None, "--out", help="where the leaderboard goes (default: <results>/leaderboard)"),
) -> None:
    """Evaluate judges and train agents over a grid, skipping finished cells, then write the leaderboard."""
    from vlmbench.cli.leaderboard_cmd import build_leaderboard
    from vlmbench.sweeps.grid import WHATS, Sweep, plan

    whats = {"eval": ("eval",), "run": ("run",), "both": WHATS}.get(what)
    if whats is None:
        raise VlmbenchError(f"--what {what}: choose eval, run or both")
    for option, value, ok in (("--workers", workers, workers >= 1), ("--retries", retries, retries >= 0),
                              ("--budget-usd", budget_usd, budget_usd is None or budget_usd >= 0),
                              ("--timesteps", timesteps, timesteps is None or timesteps >= 1),
                              ("--eval-episodes", eval_episodes, eval_episodes is None or eval_episodes >= 1)):
        if not ok:
            raise VlmbenchError(f"{option} {value}: give " + ("at least 1" if option in (
                "--workers", "--timesteps", "--eval-episodes") else "0 or more"))
    cells = plan(_names("--tasks", tasks), _names("--judges", judges), _seeds(seeds), whats)
    results = results.resolve()
    execute = None
    if ray is not None:
        from vlmbench.sweeps.ray_cluster import connect

        execute = connect(ray, workers)
    interactive = console.is_terminal
    started = time.monotonic()

    def plain(result, done: int, total: int) -> None:
        extra = f" after {result.attempts} attempts" if result.attempts > 1 else ""
        took = f" ({result.seconds:.1f} s)" if result.seconds else ""
        message = f": {result.message}" if result.message else ""
        print(f"[{done}/{total}] {result.status} {result.cell.label}{took}{extra}{message}", flush=True)

    options = {"timesteps": timesteps, "eval_episodes": eval_episodes}
    kwargs = {"workers": workers, "retries": retries, "budget_usd": budget_usd, "run_options": options}
    if execute is not None:
        kwargs["execute"] = execute
    try:
        if interactive:
            with bar() as progress:
                job = progress.add_task("sweep", total=len(cells), status="")

                def show(result, done: int, total: int) -> None:
                    progress.update(job, completed=done, status=f"{result.status} {result.cell.label}")
                    if result.status in ("failed", "not started"):
                        progress.console.print(f"{result.status} {result.cell.label}: {result.message}")

                outcome = Sweep(cells, results, report=show, **kwargs).run()
        else:
            outcome = Sweep(cells, results, report=plain, **kwargs).run()
    finally:
        if ray is not None:
            from vlmbench.sweeps.ray_cluster import disconnect

            disconnect()
    counts = {s: sum(r.status == s for r in outcome) for s in ("done", "skipped", "failed", "not started")}
    console.print(f"sweep of {len(cells)} cells in {time.monotonic() - started:.0f} s: "
                  + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
                  + f"; logs in {results / 'sweep-logs'}")
    build_leaderboard(results, out or results / "leaderboard")
    if counts["failed"]:
        for r in outcome:
            if r.status == "failed":
                console.print(f"[red]failed[/red] {r.cell.label}: {r.message}", soft_wrap=True)
        raise typer.Exit(1)
