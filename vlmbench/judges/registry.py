"""Judge types by name: built-ins and plugins from the ``vlmbench.judges`` entry-point group.

Nothing is imported until a type is used, so a heavy or broken plugin costs nothing (and breaks
nothing) unless it is named.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import ValidationError

from vlmbench.errors import SpecError, VlmbenchError
from vlmbench.judges.base import Judge
from vlmbench.specs.judge_config import JudgeConfig

ENTRY_POINT_GROUP = "vlmbench.judges"
BUILTIN_TYPES = {
    "clip": "vlmbench.judges.clip:ClipJudge",
    "oracle": "vlmbench.judges.oracle:OracleJudge",
}


class JudgeLoadError(VlmbenchError):
    """A judge type is unknown, or its module (a plugin's) failed to import."""


@dataclass(frozen=True)
class JudgeType:
    name: str
    target: str  # "module:Class"
    origin: str  # "built-in" or the distribution that provides the plugin


def judge_types() -> dict[str, JudgeType]:
    """All known judge types, without importing any of them."""
    types = {name: JudgeType(name, target, "built-in") for name, target in BUILTIN_TYPES.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in types:
            origin = ep.dist.name if ep.dist is not None else "plugin"
            types[ep.name] = JudgeType(ep.name, ep.value, origin)
    return types


def shadowed_plugins() -> list[str]:
    """Plugin entry points ignored because an earlier type (built-in or plugin) has their name."""
    seen = set(BUILTIN_TYPES)
    clashes = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:
            origin = ep.dist.name if ep.dist is not None else "plugin"
            clashes.append(f"judge type '{ep.name}' from {origin} ({ep.value}): the name is already taken")
        seen.add(ep.name)
    return clashes


def load_judge_class(type_name: str) -> type[Judge]:
    types = judge_types()
    if type_name not in types:
        raise JudgeLoadError(f"unknown judge type '{type_name}'; known: {', '.join(sorted(types))}")
    jt = types[type_name]
    module_name, _, attr = jt.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # noqa: BLE001 - a plugin may fail in any way; report it by name
        raise JudgeLoadError(
            f"judge type '{type_name}' ({jt.origin}, {jt.target}) failed to load: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Judge)):
        raise JudgeLoadError(f"judge type '{type_name}' ({jt.target}) is not a vlmbench Judge subclass")
    return cls


def build_judge(config: JudgeConfig, source: str = "<judge config>") -> Judge:
    """Instantiate the judge a config describes, validating its params against the type."""
    cls = load_judge_class(config.type)
    try:
        params = cls.Params.model_validate(config.params)
    except ValidationError as exc:
        problems = [
            f"{source}: params.{'.'.join(str(p) for p in e['loc'])}: "
            f"{'unknown field' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        ]
        raise SpecError(problems) from None
    return cls(config.name, params)
