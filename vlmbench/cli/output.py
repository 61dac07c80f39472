"""Terminal output shared by the commands: consoles, YAML that can be saved, progress bars."""

from __future__ import annotations

import os

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax

LOG_WIDTH = 200  # where tables wrap in a log or a pipe, unless COLUMNS says otherwise


def make_console(*, stderr: bool = False, highlight: bool = True) -> Console:
    """A console that fits a terminal's window; in a log or a pipe it never breaks a line of text
    (a path, a name, YAML), and tables wrap at COLUMNS, else LOG_WIDTH, rather than rich's default 80."""
    console = Console(stderr=stderr, highlight=highlight)
    if console.is_terminal:
        return console
    width = None if os.environ.get("COLUMNS", "").isdigit() else LOG_WIDTH  # None: rich reads COLUMNS
    return Console(stderr=stderr, highlight=highlight, width=width, soft_wrap=True)


class ReadableDumper(yaml.SafeDumper):
    """YAML as a person writes it: multi-line strings (expressions) as literal blocks, long ones folded,
    lists of numbers on one line. Loading the text gives back the same data."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text.rstrip("\n") else ">" if len(text) > 80 else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)  # PyYAML quotes when it must


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.SequenceNode:
    numbers = bool(items) and all(isinstance(item, (int, float)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=numbers)


ReadableDumper.add_representer(str, _represent_str)
ReadableDumper.add_representer(list, _represent_list)


def readable_yaml(data: object) -> str:
    return yaml.dump(data, Dumper=ReadableDumper, sort_keys=False, width=100, allow_unicode=True)


def print_yaml(console: Console, text: str) -> None:
    """YAML highlighted on a terminal; elsewhere the text itself, so that it can be saved as a file."""
    if console.is_terminal:
        console.print(Syntax(text, "yaml", theme="ansi_dark", word_wrap=True))
    else:
        console.out(text, end="", highlight=False)


def bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        transient=transient,
    )
