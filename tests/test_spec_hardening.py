"""Hostile or careless spec files, through the real `vlmbench` command: every problem is one located line
'file:line: field: message' with exit status 2, quickly (never a traceback, a hang or a silent acceptance).

Files are built from the catalogue's own tasks with one change each, so the expected line is the changed one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from console import vlmbench
from vlmbench.specs import catalogue

TASKS = catalogue.catalogue_dir("task")


def task_text(task_id: str) -> str:
    return (TASKS / f"{task_id}.yaml").read_text()


def line_number(text: str, fragment: str) -> int:
    """The 1-based line on which ``fragment`` first appears."""
    assert fragment in text, fragment
    return text[: text.index(fragment)].count("\n") + 1


def problems_by_file(proc, paths: list[Path]) -> dict[Path, list[str]]:
    """stderr's lines, grouped by the file they name; none may be left over."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    grouped = {path: [line for line in lines if line.startswith(f"error: {path}:")] for path in paths}
    assert sum(map(len, grouped.values())) == len(lines), lines
    return grouped


# -- files that cannot be read as YAML text ---------------------------------------------------------------------
CARTPOLE = task_text("cartpole-upright")


def with_kwargs(kwargs: str) -> str:
    """cartpole-upright with ``kwargs`` (YAML text, indented by four) under env."""
    return CARTPOLE.replace("  episode_length: 200\n", f"  episode_length: 200\n  kwargs:\n{kwargs}\n")


# a billion laughs: each level repeats the one before ten times; level 3 is the first past 10,000 values
ALIAS_BOMB = with_kwargs("\n".join(
    ["    l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    + [f"    l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
))
DUPLICATE = CARTPOLE + "success: abs(pole_angle) < 0.1\n"
LATIN1 = CARTPOLE.replace("baseline: pole and cart", "baseline: p\u00f4le and cart")
CONTROL = CARTPOLE.replace("baseline: pole and cart", "baseline: pole\x01 and cart")
MANY_VALUES = with_kwargs(f"    many: [{', '.join(['1'] * 20_000)}]")
HUGE_INTEGER = CARTPOLE.replace("episode_length: 200", "episode_length: " + "9" * 5000)

# name -> (file contents, expected line or None, message)
UNREADABLE = {
    "utf16_bom": (CARTPOLE.encode("utf-16"), 1, "not UTF-8 text: it is UTF-16; save it as UTF-8"),
    "utf16_no_bom": (CARTPOLE.encode("utf-16-le"), 1, "not UTF-8 text: it contains NUL bytes"),
    "latin1": (LATIN1.encode("latin-1"), line_number(LATIN1, "baseline:"),
               "not UTF-8 text: byte 0xf4 cannot be decoded"),
    "control_character": (CONTROL.encode(), line_number(CONTROL, "baseline:"),
                          "YAML syntax error: character #x0001 is not allowed"),
    "deep_nesting": (("id: " + "[" * 100_000 + "]" * 100_000).encode(), 1,
                     "YAML error: nested more than 50 levels deep"),
    "alias_bomb": (ALIAS_BOMB.encode(), line_number(ALIAS_BOMB, "    l3:"),
                   "YAML error: more than 10000 values here once aliases are expanded"),
    "recursive_alias": (b"id: x\nloop: &loop [1, *loop]\n", 2,
                        "YAML error: an alias refers to a node that contains it"),
    "duplicate_key": (DUPLICATE.encode(), DUPLICATE.count("\n"),
                      f"YAML error: duplicate key 'success' (first at line {line_number(CARTPOLE, 'success:')})"),
    "huge_integer": (HUGE_INTEGER.encode(), line_number(CARTPOLE, "episode_length:"),
                     "YAML error: cannot read this value: Exceeds the limit"),
    "too_many_values": (MANY_VALUES.encode(), line_number(MANY_VALUES, "    many:"),
                        "YAML error: more than 10000 values in the file"),
    "too_large": ((CARTPOLE + "# " + "x" * 300_000 + "\n").encode(), None, "cannot read: larger than 256 kB"),
}
SPECIAL = {"dev_zero": "cannot read: not a regular file", "fifo": "cannot read: not a regular file",
           "directory": "cannot read: not a regular file", "missing": "cannot read: No such file or directory"}


@pytest.fixture(scope="module")
def unreadable(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unreadable")
    paths = {}
    for name, (content, _, _) in UNREADABLE.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_bytes(content)
    os.mkfifo(folder / "fifo.yaml")
    (folder / "directory.yaml").mkdir()
    paths.update(dev_zero=Path("/dev/zero"), fifo=folder / "fifo.yaml", directory=folder / "directory.yaml",
                 missing=folder / "missing.yaml")
    proc = vlmbench("tasks", "validate", "--no-build", *map(str, paths.values()), timeout=120)
    assert proc.returncode == 2
    return paths, problems_by_file(proc, list(paths.values()))


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unreadable_file_is_one_located_error(name, unreadable):
    paths, problems = unreadable
    _, line, fragment = UNREADABLE[name]
    (problem,) = problems[paths[name]]
    location = f"{paths[name]}:{line}:" if line is not None else f"{paths[name]}:"
    assert problem.startswith(f"error: {location} {fragment}"), problem


@pytest.mark.parametrize("name", list(SPECIAL))
def test_special_file_is_refused_without_reading(name, unreadable):
    paths, problems = unreadable
    assert problems[paths[name]] == [f"error: {paths[name]}: {SPECIAL[name]}"]
