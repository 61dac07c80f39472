"""`vlmbench run`: train an agent whose only reward comes from a judge, then evaluate it."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from vlmbench.agents.config import MAX_SEED, RunConfig
from vlmbench.cli.output import bar, make_console
from vlmbench.errors import Interrupted, SpecError, VlmbenchError
from vlmbench.specs.loading import line_of

console = make_console()


def _config(config_file: Path | None, overrides: dict) -> tuple[RunConfig, str | None]:
    """The run config from a YAML file and command-line overrides, and the file's ``name:`` if any."""
    from vlmbench.specs.loading import parse_yaml, validation_problems

    data, root = ({}, None) if config_file is None else parse_yaml(config_file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError([f"{config_file}:1: (top level): expected a mapping of run settings"])
    data = dict(data)
    name = data.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise SpecError([f"{config_file}:{line_of(root, ('name',))}: name: expected a run folder name"])
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    feedback = {k.removeprefix("feedback."): merged.pop(k) for k in list(merged) if k.startswith("feedback.")}
    if feedback:
        merged["feedback"] = {**merged.get("feedback", {}), **feedback}
    for required in ("task", "judge"):
        if required not in merged:
            raise VlmbenchError(f"no {required}: pass --{required} or set '{required}:' in --config")
    try:
        return RunConfig.model_validate(merged), name
    except ValidationError as exc:
        flags = {key: f"--{key.rsplit('.', 1)[-1].replace('_', '-')} {value}"  # a bad value names its flag
                 for key, value in overrides.items() if value is not None}
        raise SpecError(validation_problems(config_file or Path("<command line>"), exc, merged, root,
                                            given=flags)) from None


def run(
    task: str = typer.Option(None, "--task", "-t", help="task id, alias or YAML path"),
    judge: str = typer.Option(None, "--judge", "-j", help="judge name, alias or YAML path"),
    config_file: Path = typer.Option(None, "--config", "-c",
                                     help="YAML run config: any field that --print-config shows, plus 'name:' "
                                          "(options given here override it)"),
    algorithm: str = typer.Option(None, "--algorithm", "-a", help="auto (SAC for continuous actions, PPO for discrete), ppo, sac or dqn"),
    timesteps: int = typer.Option(None, "--timesteps", help="agent steps in the main stage (default 80,000); "
                                                            "with --resume, more steps extend a finished run"),
    seed: int = typer.Option(None, "--seed", help=f"seed of the agent, envs and reward model, 0 to {MAX_SEED}"),
    reward: str = typer.Option(None, "--reward", help="auto, score, preference or rating"),
    label_budget: int = typer.Option(None, "--label-budget", help="most judge labels to buy (default 200)"),
    n_envs: int = typer.Option(None, "--n-envs", help="parallel environments (default 8)"),
    final_ppo_timesteps: int = typer.Option(None, "--final-ppo-timesteps",
                                            help="an extra PPO stage on the frozen reward model (default 0: none)"),
    eval_episodes: int = typer.Option(None, "--eval-episodes", help="final evaluation episodes (default: the task's)"),
    name: str = typer.Option(None, "--name", help="run folder name (default: <task>--<judge>--<reward>--<algorithm>"
                                                  "--seed<N>--<config digest>)"),
    results: Path = typer.Option(Path("results/runs"), "--results", help="where run records go"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run from its checkpoints"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing run record of the same name first"),
    print_config: bool = typer.Option(False, "--print-config", help="print the full run config as YAML and stop"),
) -> None:
    """Train an agent on judge rewards, then measure its success rate with the task's detector."""
    from vlmbench.agents.run import finishing_files, train

    if resume and overwrite:
        raise VlmbenchError("--resume continues the run record that --overwrite deletes: pass one of them")
    config, file_name = _config(config_file, {
        "task": task, "judge": judge, "algorithm": algorithm, "timesteps": timesteps, "seed": seed,
        "reward": reward, "feedback.label_budget": label_budget, "n_envs": n_envs,
        "final_ppo_timesteps": final_ppo_timesteps, "eval_episodes": eval_episodes,
    })
    if print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return
    try:
        if console.is_terminal:
            with bar() as progress:
                result = train(config, results_dir=results, name=name or file_name, resume=resume,
                               overwrite=overwrite, progress=progress, log=progress.console.print)
        else:  # a log file or a cluster job: one plain line per checkpoint
            result = train(config, results_dir=results, name=name or file_name, resume=resume, overwrite=overwrite,
                           log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        raise Interrupted("interrupted; continue with --resume") from None
    ev = result.evaluation
    table = Table(title=f"{result.folder.name}: evaluation over {len(ev.episodes)} episodes")
    columns = ["success rate", "mean progress", "env return", "judge answers", "abstained"]
    row = [f"{ev.success_rate:.0%}", f"{ev.mean_progress:.3f}", f"{ev.mean_env_return:.1f}",
           str(result.labels), str(result.abstained)]
    if not result.env_return_meaningful:  # constant where the task never ends early
        del columns[2], row[2]
    for column in columns:
        table.add_column(column)
    table.add_row(*row)
    console.print(table)
    files = ("header.json", "queries.jsonl", "curves.csv", "eval.json", *finishing_files(config))
    console.print(f"record: {result.folder} ({', '.join(files)})")
