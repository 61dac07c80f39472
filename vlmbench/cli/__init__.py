"""The ``vlmbench`` command line. User mistakes print one line per problem and exit 2."""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape

from vlmbench.cli import judges_cmd, render_cmd, run_cmd, tasks_cmd
from vlmbench.errors import VlmbenchError

app = typer.Typer(
    name="vlmbench",
    help="Benchmark vision-language models as reward models for reinforcement learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tasks_cmd.app, name="tasks")
app.add_typer(judges_cmd.app, name="judges")
app.command("render")(render_cmd.render)
app.command("judge")(judges_cmd.judge)
app.command("run")(run_cmd.run)

err = Console(stderr=True, highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning vlmbench errors into one-line messages and exit 2."""
    try:
        app(args=argv, standalone_mode=False)
    except VlmbenchError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    return 0


def entry() -> None:
    sys.exit(main())
