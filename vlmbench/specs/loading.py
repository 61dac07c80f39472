"""Load YAML specs into pydantic models, reporting each problem as 'file:line: field: message'."""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vlmbench.errors import SpecError

M = TypeVar("M", bound=BaseModel)

# PyYAML is pure Python (about 0.2 ms a value): these limits keep any file under a few seconds
MAX_SPEC_BYTES = 256_000
MAX_YAML_DEPTH = 50  # nested mappings and lists
MAX_YAML_NODES = 10_000  # values, counted with every alias expanded (a task spec has a few hundred)


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


def _field_path(loc: tuple[object, ...], data: object, missing: bool = False) -> str:
    """Dotted field path, leaving out pydantic's union tags that do not appear in the data (but not
    the last part when it names a ``missing`` field)."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if part == "[key]":  # pydantic's marker of an error in a mapping key (already named)
            continue
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        elif isinstance(part, str) and (data is None or isinstance(data, dict)) and parts and not (
                missing and i == len(loc) - 1):
            continue
        parts.append(f"[{part}]" if isinstance(part, int) else str(part))
    return ".".join(parts).replace(".[", "[") or "(top level)"


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what a spec never needs and what could exhaust time, memory or the
    stack: duplicate keys, nesting deeper than MAX_YAML_DEPTH, more than MAX_YAML_NODES values."""

    def __init__(self, text: str):
        super().__init__(text)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent, index):
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark
                )
            if self._nodes > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_NODES} values in the file", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):
                    continue  # the base class reports unhashable keys
                if key in first_line:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first at line {first_line[key]})", key_node.start_mark
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. a 5000-digit integer, '!!float abc'
            problem = f"cannot read this value: {exc}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Aliases share nodes; count the tree with every alias expanded (as anything that copies the
    data would) and refuse recursive aliases, too many nodes or too much depth."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    pending: list[tuple[yaml.Node, bool]] = [(root, False)]
    while pending:
        node, children_done = pending.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_YAML_NODES} values here once aliases are expanded", node.start_mark
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases nest this more than {MAX_YAML_DEPTH} levels deep", node.start_mark
                )
        elif key in on_path:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", node.start_mark)
        elif key not in size:
            on_path.add(key)
            pending.append((node, True))
            pending.extend((child, False) for child in _children(node))


def read_text(path: Path) -> str:
    """A spec file's text: a regular file of at most MAX_SPEC_BYTES, in UTF-8."""
    try:  # non-blocking, so that opening a FIFO does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpecError([f"{path}: cannot read: not a regular file"])
    try:
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError([f"{path}: cannot read: larger than {MAX_SPEC_BYTES // 1000} kB"])
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SpecError([f"{path}:1: not UTF-8 text: it is UTF-16; save it as UTF-8"])
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise SpecError([f"{path}:{line}: not UTF-8 text: it contains NUL bytes (UTF-16 or binary?)"])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError([f"{path}:{line}: not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded"]) from None


def parse_yaml(path: Path) -> tuple[object, yaml.Node | None]:
    """Read a YAML file, returning its data and its node tree (for line numbers)."""
    text = read_text(path)
    try:
        return _load(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise SpecError([f"{path}:{line}: YAML syntax error: character #x{exc.character:04x} is not allowed"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        syntax = isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError))
        label = "YAML syntax error" if syntax else "YAML error"
        raise SpecError([f"{path}{line}: {label}: {problem}"]) from None


def _load(text: str) -> tuple[object, yaml.Node | None]:
    loader = _SpecLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root)
        return loader.construct_document(root), root
    finally:
        loader.dispose()


def validation_problems(
    path: Path | str, exc: ValidationError, data: object, root: yaml.Node | None, prefix: tuple[str, ...] = (),
    given: dict[str, str] | None = None,
) -> list[str]:
    """One 'file:line: field: message' per error ('source: field: message' without a YAML ``root``);
    ``prefix`` locates a model validated inside ``data``; ``given`` names where a field's value came
    from instead (e.g. {'timesteps': '--timesteps 0'}), giving 'where: message'."""
    problems = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        field = _field_path(loc, data, missing=err["type"] == "missing")
        line = line_of(root, loc)
        where = (given or {}).get(field) or (f"{path}:{line}: {field}" if root is not None else f"{path}: {field}")
        problems.append((line, f"{where}: {message}"))
    return [text for _, text in sorted(problems, key=lambda p: p[0])]  # in file order


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
