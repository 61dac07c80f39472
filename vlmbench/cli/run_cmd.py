"""`vlmbench run`: train an agent whose only reward comes from a judge, then evaluate it."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from vlmbench.cli.progress import bar
from vlmbench.errors import SpecError

console = Console()


def _config(config_file: Path | None, overrides: dict):
    from vlmbench.agents.config import RunConfig
    from vlmbench.specs.loading import parse_yaml, validation_problems

    data, root = ({}, None) if config_file is None else parse_yaml(config_file)
    if not isinstance(data, dict):
        raise SpecError([f"{config_file}:1: (top level): expected a mapping of run settings"])
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    feedback = {k.removeprefix("feedback."): merged.pop(k) for k in list(merged) if k.startswith("feedback.")}
    if feedback:
        merged["feedback"] = {**merged.get("feedback", {}), **feedback}
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise SpecError(validation_problems(config_file or Path("<command line>"), exc, merged, root)) from None


def run(
    task: str = typer.Option(None, "--task", "-t", help="task id, alias or YAML path"),
    judge: str = typer.Option(None, "--judge", "-j", help="judge name, alias or YAML path"),
    config_file: Path = typer.Option(None, "--config", "-c", help="YAML run config (options below override it)"),
    algorithm: str = typer.Option(None, "--algorithm", "-a", help="auto (SAC for continuous actions, PPO for discrete), ppo, sac or dqn"),
    timesteps: int = typer.Option(None, "--timesteps"),
    seed: int = typer.Option(None, "--seed"),
    reward: str = typer.Option(None, "--reward", help="auto, score, preference or rating"),
    label_budget: int = typer.Option(None, "--label-budget", help="most judge labels to buy"),
    n_envs: int = typer.Option(None, "--n-envs"),
    final_ppo_timesteps: int = typer.Option(None, "--final-ppo-timesteps"),
    eval_episodes: int = typer.Option(None, "--eval-episodes"),
    name: str = typer.Option(None, "--name", help="run folder name (default: <task>--<judge>--<algorithm>--seed<N>)"),
    results: Path = typer.Option(Path("results/runs"), "--results", help="where run records go"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its checkpoints"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing run of the same name first"),
) -> None:
    """Train an agent on judge rewards, then measure its success rate with the task's detector."""
    from vlmbench.agents.run import train

    config = _config(config_file, {
        "task": task, "judge": judge, "algorithm": algorithm, "timesteps": timesteps, "seed": seed,
        "reward": reward, "feedback.label_budget": label_budget, "n_envs": n_envs,
        "final_ppo_timesteps": final_ppo_timesteps, "eval_episodes": eval_episodes,
    })
    with bar() as progress:
        result = train(config, results_dir=results, name=name, resume=resume, overwrite=overwrite,
                       progress=progress)
    ev = result.evaluation
    table = Table(title=f"{result.folder.name}: evaluation over {len(ev.episodes)} episodes")
    for column in ("success rate", "mean progress", "env return", "judge answers", "abstained"):
        table.add_column(column)
    table.add_row(f"{ev.success_rate:.0%}", f"{ev.mean_progress:.3f}", f"{ev.mean_env_return:.1f}",
                  str(result.labels), str(result.abstained))
    console.print(table)
    console.print(f"record: {result.folder} (episode.gif, episode.png, eval.json, curves.csv, queries.jsonl)")
