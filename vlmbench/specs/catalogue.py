"""Find built-in and user task/judge YAML files and resolve names, aliases and paths."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

from vlmbench.errors import SpecError, UnknownNameError
from vlmbench.specs.judge_config import JudgeConfig
from vlmbench.specs.loading import load_spec
from vlmbench.specs.task import TaskSpec

Kind = Literal["task", "judge"]
M = TypeVar("M", bound=BaseModel)


def catalogue_dir(kind: Kind | Literal["dataset"]) -> Path:
    """tasks/, judges/ or datasets/: from a source checkout if present, else the copy inside the wheel."""
    folder = f"{kind}s"
    checkout = Path(__file__).resolve().parents[2] / folder
    if checkout.is_dir() and (checkout.parent / "pyproject.toml").is_file():
        return checkout
    return Path(str(resources.files("vlmbench") / "catalogue" / folder))


@dataclass
class Catalogue(Generic[M]):
    """The YAML specs of one kind, by id and alias; loaded on first use."""

    kind: Kind
    model: type[M]
    directory: Path
    _entries: dict[str, tuple[Path, M]] = field(default_factory=dict, init=False)
    _aliases: dict[str, str] = field(default_factory=dict, init=False)
    broken: dict[str, list[str]] = field(default_factory=dict, init=False)
    _loaded: bool = field(default=False, init=False)

    def _load(self) -> None:
        """Load every file; a broken one is kept aside (with its problems) and blocks nothing else."""
        if self._loaded:
            return
        for path in sorted(self.directory.glob("*.yaml")):
            try:
                spec = load_spec(path, self.model)
            except SpecError as exc:
                self.broken[path.stem] = exc.problems
                continue
            key = _identity(spec)
            if key != path.stem:
                self.broken[path.stem] = [f"{path}:1: {_id_field(spec)}: '{key}' must match the file name '{path.stem}'"]
                continue
            self._entries[key] = (path, spec)
            for alias in getattr(spec, "aliases", []):
                self._aliases[alias] = key
        self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[Path, M]]:
        self._load()
        return [self._entries[k] for k in sorted(self._entries)]

    def files(self) -> list[Path]:
        """Every YAML file of the catalogue, valid or not."""
        return sorted(self.directory.glob("*.yaml"))

    def resolve(self, name: str) -> M:
        """A spec by id, alias or path to a file. A name ending in .yaml or .yml or holding a path separator
        is always a path; any other name is looked up first, then read as a file if one exists."""
        as_path = Path(name)
        separators = {os.sep, os.altsep} - {None}
        if name.endswith((".yaml", ".yml")) or any(sep in name for sep in separators):
            return load_spec(as_path, self.model)
        self._load()
        key = self._aliases.get(name, name)
        if key in self._entries:
            return self._entries[key][1]
        if key in self.broken:
            raise SpecError(self.broken[key])
        if as_path.exists():
            return load_spec(as_path, self.model)
        choices = list(self._entries) + list(self._aliases)
        raise UnknownNameError(self.kind, name, difflib.get_close_matches(name, choices, n=3, cutoff=0.6))


def _identity(spec: BaseModel) -> str:
    return getattr(spec, "id", None) or getattr(spec, "name")


def _id_field(spec: BaseModel) -> str:
    return "id" if hasattr(spec, "id") else "name"


@cache
def tasks() -> Catalogue[TaskSpec]:
    return Catalogue("task", TaskSpec, catalogue_dir("task"))


@cache
def judges() -> Catalogue[JudgeConfig]:
    return Catalogue("judge", JudgeConfig, catalogue_dir("judge"))


def resolve_task(name: str) -> TaskSpec:
    return tasks().resolve(name)


def resolve_judge(name: str) -> JudgeConfig:
    return judges().resolve(name)
