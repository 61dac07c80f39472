"""`vlmbench tasks list|show|validate|schema`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from vlmbench.cli.output import make_console, print_yaml, readable_yaml
from vlmbench.errors import SpecError, VlmbenchError
from vlmbench.specs import catalogue
from vlmbench.specs.loading import line_of, load_spec, parse_yaml
from vlmbench.specs.task import TaskSpec

app = typer.Typer(help="List, show and validate task specs.", no_args_is_help=True)
console = make_console()


@app.command("list")
def list_tasks() -> None:
    """All built-in tasks."""
    table = Table(title=f"tasks ({catalogue.tasks().directory})")
    for column in ("id", "aliases", "env", "source", "goal prompt"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for _, spec in catalogue.tasks().items():
        table.add_row(spec.id, ", ".join(spec.aliases), spec.env.id, spec.source, spec.prompts.goal[0])
    console.print(table)
    for name, problems in catalogue.tasks().broken.items():
        console.print(f"[red]invalid:[/red] {name} ({problems[0]}); `vlmbench tasks validate` lists all problems")


@app.command("show")
def show(name: str = typer.Argument(..., help="task id, alias or YAML path")) -> None:
    """A task's full spec, defaults filled in."""
    spec = catalogue.resolve_task(name)
    text = readable_yaml(spec.model_dump(mode="json"))
    print_yaml(console, text)


def check_builds(spec: TaskSpec, path: Path) -> None:
    """Build the env (without rendering) and reset it, so that kwargs, feature names and indices are
    checked against the env and success and progress are evaluated once, in the reset state (where
    progress must lie in [0, 1])."""
    from vlmbench.envs.task_env import make_env

    try:
        env = make_env(spec, render=False)
        try:
            _, info = env.reset(seed=0)
        finally:
            env.close()
        if not 0.0 <= info["progress"] <= 1.0:
            error = VlmbenchError(f"task '{spec.id}': progress: {info['progress']:g} in the reset state; progress is "
                                  f"closeness to the goal, in [0, 1] (features: {info['features']})")
            error.field = ("progress",)
            raise error
    except VlmbenchError as exc:
        if exc.field is None:
            raise SpecError([f"{path}: {line}" for line in exc.lines()]) from None
        _, root = parse_yaml(path)
        where = ".".join(exc.field)
        message = str(exc).removeprefix(f"task '{spec.id}': {where}: ")  # the file names the task
        raise SpecError([f"{path}:{line_of(root, exc.field)}: {where}: {message}"]) from None


@app.command("validate")
def validate(
    paths: list[Path] = typer.Argument(None, help="YAML files (default: every built-in task)"),
    build: bool = typer.Option(True, help="also build each env to check feature and body names"),
) -> None:
    """Check task specs; one line per problem, exit 2 if any."""
    targets = paths or catalogue.tasks().files()
    problems: list[str] = []
    for path in targets:
        try:
            spec = load_spec(path, TaskSpec)
            if build:
                check_builds(spec, path)
            console.print(f"[green]ok[/green] {escape(str(path))}")
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)


@app.command("schema")
def schema() -> None:
    """The task spec's JSON Schema."""
    print(json.dumps(TaskSpec.model_json_schema(), indent=2))
