"""A small, safe expression language for success detectors and progress measures.

Expressions may use numbers, feature names, arithmetic, comparisons, ``and``/``or``/``not``,
conditional expressions and a fixed set of math functions. Anything else (attribute access,
subscripts, unknown names or functions, dunder names, lambdas, comprehensions) is rejected
when the expression is compiled, so a YAML file can never run arbitrary Python.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping

import numpy as np

FUNCTIONS = {
    "abs": abs,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "cos": math.cos,
    "sin": math.sin,
    "tan": math.tan,
    "atan2": math.atan2,
    "tanh": math.tanh,
    "hypot": math.hypot,
    "floor": math.floor,
    "ceil": math.ceil,
    "sign": lambda x: float(np.sign(x)),
    "clip": lambda x, lo, hi: min(max(x, lo), hi),
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "degrees": math.degrees,
    "radians": math.radians,
}
CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf}

_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Name, ast.Load, ast.Constant,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.UAdd, ast.USub, ast.Not, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)


class ExpressionError(ValueError):
    """The expression is not in the safe language, or names something unknown."""


class Expression:
    """A compiled, validated expression over named features."""

    def __init__(self, source: str, names: Iterable[str]):
        self.source = source
        self.names = frozenset(names)
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid syntax in '{source}': {exc.msg}") from None
        self.used_names = self._validate(tree)
        for node in ast.walk(tree):  # float arithmetic: 9 ** 9 ** 9 overflows at once, never hangs
            if isinstance(node, ast.Constant) and type(node.value) is int:
                node.value = float(node.value)
        self._code = compile(tree, "<expression>", "eval")

    def _validate(self, tree: ast.AST) -> frozenset[str]:
        used: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED_NODES):
                raise ExpressionError(f"'{type(node).__name__}' is not allowed in '{self.source}'")
            if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
                raise ExpressionError(f"only numbers are allowed as constants in '{self.source}'")
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                    name = getattr(node.func, "id", type(node.func).__name__)
                    raise ExpressionError(
                        f"unknown function '{name}' in '{self.source}'; "
                        f"allowed: {', '.join(sorted(FUNCTIONS))}"
                    )
                if node.keywords:
                    raise ExpressionError(f"keyword arguments are not allowed in '{self.source}'")
            if isinstance(node, ast.Name):
                if node.id.startswith("__"):
                    raise ExpressionError(f"dunder name '{node.id}' is not allowed")
                is_function = any(
                    isinstance(p, ast.Call) and p.func is node for p in ast.walk(tree)
                )
                if not is_function:
                    if node.id not in self.names and node.id not in CONSTANTS:
                        raise ExpressionError(
                            f"unknown name '{node.id}' in '{self.source}'; "
                            f"features: {', '.join(sorted(self.names)) or '(none)'}"
                        )
                    used.add(node.id)
        return frozenset(used)

    def __call__(self, features: Mapping[str, float]) -> float:
        scope = {**CONSTANTS, **{k: features[k] for k in self.used_names if k in features}}
        missing = self.used_names - scope.keys()
        if missing:
            raise KeyError(f"features missing for '{self.source}': {sorted(missing)}")
        try:
            return eval(self._code, {"__builtins__": {}, **FUNCTIONS}, scope)  # noqa: S307 (validated AST)
        except (OverflowError, ZeroDivisionError, ValueError) as exc:
            raise ExpressionError(f"'{self.source}' failed on these features: {exc}") from None

    def __reduce__(self):  # recompiled on unpickling: code objects do not pickle
        return Expression, (self.source, self.names)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"
