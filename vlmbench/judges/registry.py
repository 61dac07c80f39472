"""Judge types by name: built-ins and plugins from the ``vlmbench.judges`` entry-point group.

Using a type imports its module alone, so a heavy or broken plugin costs nothing (and breaks
nothing) unless it is named; ``vlmbench judges list`` imports every type to show which load.
Entry points are read one installed distribution at a time: a distribution whose entry points
cannot be read (say, an entry_points.txt that is not UTF-8) is skipped and reported by name
instead of breaking every command.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from importlib.metadata import Distribution, EntryPoint, distributions
from pathlib import Path

from pydantic import ValidationError

from vlmbench.errors import SpecError, VlmbenchError
from vlmbench.judges.base import Judge
from vlmbench.specs.judge_config import JudgeConfig
from vlmbench.specs.loading import parse_yaml, validation_problems

ENTRY_POINT_GROUP = "vlmbench.judges"
BUILTIN_TYPES = {
    "clip": "vlmbench.judges.clip:ClipJudge",
    "human": "vlmbench.judges.human:HumanJudge",
    "oracle": "vlmbench.judges.oracle:OracleJudge",
    "openai-pairwise": "vlmbench.judges.api.judges:OpenAIPairwiseJudge",
    "anthropic-pairwise": "vlmbench.judges.api.judges:AnthropicPairwiseJudge",
    "openai-rating": "vlmbench.judges.api.judges:OpenAIRatingJudge",
    "anthropic-rating": "vlmbench.judges.api.judges:AnthropicRatingJudge",
    "openai-yes": "vlmbench.judges.api.judges:OpenAIYesJudge",
}


class JudgeLoadError(VlmbenchError):
    """A judge type is unknown, or its module (a plugin's) failed to import."""


@dataclass(frozen=True)
class JudgeType:
    name: str
    target: str  # "module:Class"
    origin: str  # "built-in" or the distribution that provides the plugin


@dataclass(frozen=True)
class PluginScan:
    """The ``vlmbench.judges`` entry points of the installed distributions, in sys.path order."""

    entry_points: list[tuple[EntryPoint, str]]  # (entry point, name of its distribution)
    unreadable: list[str]  # one line per distribution skipped because its entry points could not be read


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _distribution_name(dist: Distribution) -> str:
    try:
        name = dist.metadata["Name"]
    except Exception:  # noqa: BLE001 - unreadable metadata: the location still identifies it
        name = None
    return name or f"<unnamed distribution in {dist.locate_file('')}>"


def scan_plugins() -> PluginScan:
    """Read the entry points of each distribution on its own, skipping (and noting) unreadable ones.

    Like ``importlib.metadata.entry_points()``, only the first distribution of a name on sys.path counts.
    """
    found: list[tuple[EntryPoint, str]] = []
    unreadable: list[str] = []
    seen: set[str] = set()
    for dist in distributions():
        name = _distribution_name(dist)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            found.extend((ep, name) for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP)
        except Exception as exc:  # noqa: BLE001 - any unreadable or malformed entry_points.txt
            unreadable.append(
                f"distribution '{name}' (in {dist.locate_file('')}): its entry points cannot be read "
                f"({_describe(exc)}), so its judge types are left out"
            )
    return PluginScan(found, unreadable)


def judge_types(scan: PluginScan | None = None) -> dict[str, JudgeType]:
    """All known judge types, without importing any of them."""
    types = {name: JudgeType(name, target, "built-in") for name, target in BUILTIN_TYPES.items()}
    for ep, origin in (scan or scan_plugins()).entry_points:
        types.setdefault(ep.name, JudgeType(ep.name, ep.value, origin))
    return types


def shadowed_plugins(scan: PluginScan | None = None) -> list[str]:
    """Plugin entry points ignored because an earlier type (built-in or plugin) has their name."""
    seen = set(BUILTIN_TYPES)
    clashes = []
    for ep, origin in (scan or scan_plugins()).entry_points:
        if ep.name in seen:
            clashes.append(f"judge type '{ep.name}' from {origin} ({ep.value}): the name is already taken")
        seen.add(ep.name)
    return clashes


def load_judge_class(type_name: str, scan: PluginScan | None = None) -> type[Judge]:
    """Import a judge type's class; any failure, even a plugin's ``sys.exit()``, is a JudgeLoadError."""
    scan = scan or scan_plugins()
    types = judge_types(scan)
    if type_name not in types:
        unreadable = "".join(f"; {line}" for line in scan.unreadable)
        raise JudgeLoadError(f"unknown judge type '{type_name}'; known: {', '.join(sorted(types))}{unreadable}")
    jt = types[type_name]
    module_name, _, attr = jt.target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a plugin may fail in any way, sys.exit() included
        raise JudgeLoadError(
            f"judge type '{type_name}' ({jt.origin}, {jt.target}) failed to load: {_describe(exc)}"
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
        path = Path(source)
        in_file = path.suffix in (".yaml", ".yml") and path.is_file()  # then each problem at its line
        data, root = parse_yaml(path) if in_file else ({"params": config.params}, None)
        raise SpecError(validation_problems(source, exc, data, root, prefix=("params",))) from None
    return cls(config.name, params)
