"""The ``vlmbench`` command line. User mistakes print one line per problem and exit 2."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from vlmbench.cli import (dataset_cmd, eval_cmd, fake_server_cmd, judges_cmd, label_cmd, leaderboard_cmd, render_cmd,
                          run_cmd, sweep_cmd, tasks_cmd)
from vlmbench.cli.output import make_console
from vlmbench.errors import Interrupted, VlmbenchError

app = typer.Typer(
    name="vlmbench",
    help="Benchmark vision-language models as reward models for reinforcement learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tasks_cmd.app, name="tasks")
app.add_typer(judges_cmd.app, name="judges")
app.add_typer(dataset_cmd.app, name="dataset")
app.command("render")(render_cmd.render)
app.command("judge")(judges_cmd.judge)
app.command("run")(run_cmd.run)
app.command("label")(label_cmd.label)
app.command("eval")(eval_cmd.evaluate_judge)
app.command("fake-server")(fake_server_cmd.fake_server)
app.command("leaderboard")(leaderboard_cmd.leaderboard)
app.command("sweep")(sweep_cmd.sweep)

err = make_console(stderr=True, highlight=False)


def _exception_classes(name: str) -> tuple[type[BaseException], ...]:
    """``name`` from click and from the click that typer vendors (typer >= 0.26), whichever exist."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


USAGE_ERRORS = _exception_classes("UsageError")
CLICK_ERRORS = _exception_classes("ClickException")
EXITS = _exception_classes("Exit")
ABORTS = _exception_classes("Abort")


def _usage_line(exc: Exception) -> str:
    """A usage error on one line, pointing at the command's --help."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{exc.format_message()}{where}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes become one line on stderr and exit 2; Ctrl-C exits 130."""
    args = sys.argv[1:] if argv is None else argv
    try:
        code = app(args=args, standalone_mode=False)
    except Interrupted as exc:
        err.print(str(exc))
        return exc.exit_code
    except VlmbenchError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True)
        return exc.exit_code
    except (KeyboardInterrupt, *ABORTS):
        err.print("interrupted")
        return 130
    except EXITS as exc:
        return exc.exit_code
    except USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `vlmbench` or a bare group: its help
            exc.show()
        else:
            err.print(f"[red]error:[/red] {escape(_usage_line(exc))}", soft_wrap=True)
        return 2
    except CLICK_ERRORS as exc:
        err.print(f"[red]error:[/red] {escape(exc.format_message())}", soft_wrap=True)
        return 2
    if code == 130:  # typer >= 0.26 turns Ctrl-C into a returned exit code
        err.print("interrupted")
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())
