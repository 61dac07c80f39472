"""Load YAML specs into pydantic models, reporting each problem as 'file:line: field: message'."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vlmbench.errors import SpecError

M = TypeVar("M", bound=BaseModel)


def line_of(root: yaml.Node | None, loc: tuple[object, ...]) -> int:
    """The 1-based line of the deepest YAML node along ``loc`` (pydantic's error location)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else 1)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            key = next((k for k, _ in node.value if k.value == str(part)), None)
            if match is None:
                continue  # e.g. a discriminator tag that is not a YAML key
            node, line = match, key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def _field_path(loc: tuple[object, ...], data: object) -> str:
    """Dotted field path, leaving out pydantic's union tags that do not appear in the data."""
    parts: list[str] = []
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif isinstance(part, str) and (data is None or isinstance(data, dict)) and parts:
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[") or "(top level)"


def parse_yaml(path: Path) -> tuple[object, yaml.Node | None]:
    """Read a YAML file, returning its data and its node tree (for line numbers)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{path}{line}: YAML syntax error: {problem}"]) from None


def validation_problems(
    path: Path, exc: ValidationError, data: object, root: yaml.Node | None, prefix: tuple[str, ...] = ()
) -> list[str]:
    """One 'file:line: field: message' per error; ``prefix`` locates a model validated inside ``data``."""
    problems = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(f"{path}:{line_of(root, loc)}: {_field_path(loc, data)}: {message}")
    return problems


def load_spec(path: str | Path, model: type[M]) -> M:
    """Load and validate one YAML file as ``model``; raise SpecError listing every problem."""
    path = Path(path)
    data, root = parse_yaml(path)
    if not isinstance(data, dict):
        raise SpecError([f"{path}:1: (top level): expected a mapping of fields, got {type(data).__name__}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_problems(path, exc, data, root)) from None
