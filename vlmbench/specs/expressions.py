"""A small, safe expression language for success detectors and progress measures.

Expressions may use numbers, feature names, arithmetic, comparisons, ``and``/``or``/``not``,
conditional expressions and a fixed set of math functions. Anything else (attribute access,
subscripts, unknown names or functions, dunder names, lambdas, comprehensions) is rejected
when the expression is compiled, so a YAML file can never run arbitrary Python. Arithmetic is
in floats (every function returns a float and ``**`` is ``math.pow``), so no expression can build
huge integers, and expressions are bounded in length and nesting.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Iterable, Mapping

import numpy as np

MAX_LENGTH = 10_000  # characters
MAX_DEPTH = 200  # nested syntax nodes
_TOO_DEEP = f"expression is nested more than {MAX_DEPTH} levels deep (each operator of a chain 'a + b + c' is a level)"


def _log(x, base=None):
    return math.log(x) if base is None else math.log(x, base)


def _sigmoid(x):
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)  # never overflows for x < 0
    return z / (1.0 + z)


FUNCTIONS = {
    "abs": lambda x: float(abs(x)),
    "min": lambda first, *rest: float(min((first, *rest))),
    "max": lambda first, *rest: float(max((first, *rest))),
    "sqrt": lambda x: math.sqrt(x),
    "exp": lambda x: math.exp(x),
    "log": _log,
    "cos": lambda x: math.cos(x),
    "sin": lambda x: math.sin(x),
    "tan": lambda x: math.tan(x),
    "atan2": lambda y, x: math.atan2(y, x),
    "tanh": lambda x: math.tanh(x),
    "hypot": lambda first, *rest: math.hypot(first, *rest),
    "floor": lambda x: float(math.floor(x)),
    "ceil": lambda x: float(math.ceil(x)),
    "sign": lambda x: float(np.sign(float(x))),
    "clip": lambda x, lo, hi: float(min(max(x, lo), hi)),
    "sigmoid": _sigmoid,
    "degrees": lambda x: math.degrees(x),
    "radians": lambda x: math.radians(x),
}
_SIGNATURES = {name: inspect.signature(function) for name, function in FUNCTIONS.items()}
CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf}
_POW = "_pow"  # the name '**' is compiled to; not a valid feature or function name

_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Name, ast.Load, ast.Constant,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.UAdd, ast.USub, ast.Not, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)


class ExpressionError(ValueError):
    """The expression is not in the safe language, names something unknown, or cannot be evaluated."""


def _depth(tree: ast.AST) -> int:
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


class _FloatPower(ast.NodeTransformer):
    """Numbers become floats and ``a ** b`` becomes ``math.pow(a, b)``: no unbounded integers, no complex results."""

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.copy_location(ast.Constant(float(node.value)), node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Pow):
            return ast.copy_location(ast.Call(ast.Name(_POW, ast.Load()), [node.left, node.right], []), node)
        return node


class Expression:
    """A compiled, validated expression over named features."""

    def __init__(self, source: str, names: Iterable[str]):
        self.source = source
        self.names = frozenset(names)
        if len(source) > MAX_LENGTH:
            raise ExpressionError(f"expression is {len(source)} characters long; the limit is {MAX_LENGTH}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"invalid syntax in '{source}': {exc.msg}") from None
        except (RecursionError, MemoryError):  # the parser's own nesting limits
            raise ExpressionError(_TOO_DEEP) from None
        if _depth(tree) > MAX_DEPTH:
            raise ExpressionError(_TOO_DEEP)
        self.used_names = self._validate(tree)
        tree = ast.fix_missing_locations(_FloatPower().visit(tree))
        self._code = compile(tree, "<expression>", "eval")

    def _validate(self, tree: ast.AST) -> frozenset[str]:
        used: set[str] = set()
        callees: set[int] = set()  # ids of the Name nodes that are called (functions, not features)
        for node in ast.walk(tree):  # breadth first: a Call comes before its function's Name
            if not isinstance(node, _ALLOWED_NODES):
                raise ExpressionError(f"'{type(node).__name__}' is not allowed in '{self.source}'")
            if isinstance(node, ast.Constant) and type(node.value) not in (int, float, bool):
                raise ExpressionError(f"only numbers are allowed as constants in '{self.source}'")
            if isinstance(node, ast.Call):
                self._check_call(node)
                callees.add(id(node.func))
            if isinstance(node, ast.Name):
                if node.id.startswith("__"):
                    raise ExpressionError(f"dunder name '{node.id}' is not allowed")
                if id(node) not in callees:
                    if node.id not in self.names and node.id not in CONSTANTS:
                        raise ExpressionError(
                            f"unknown name '{node.id}' in '{self.source}'; "
                            f"features: {', '.join(sorted(self.names)) or '(none)'}"
                        )
                    used.add(node.id)
        return frozenset(used)

    def _check_call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)  # as written
            raise ExpressionError(
                f"unknown function '{name}' in '{self.source}'; allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        if node.keywords:
            raise ExpressionError(f"keyword arguments are not allowed in '{self.source}'")
        name, count = node.func.id, len(node.args)
        try:
            _SIGNATURES[name].bind(*range(count))
        except TypeError:
            raise ExpressionError(
                f"'{name}' called with {count} argument{'s' * (count != 1)} in '{self.source}'; "
                f"usage: {name}{_SIGNATURES[name]}"
            ) from None

    def __call__(self, features: Mapping[str, float]) -> float:
        scope = {**CONSTANTS, **{k: features[k] for k in self.used_names if k in features}}
        missing = self.used_names - scope.keys()
        if missing:
            raise KeyError(f"features missing for '{self.source}': {sorted(missing)}")
        try:
            value = eval(self._code, {"__builtins__": {}, **FUNCTIONS, _POW: math.pow}, scope)  # noqa: S307
        except (ArithmeticError, ValueError) as exc:
            raise ExpressionError(f"cannot evaluate '{self.source}' {self._at(features)}: {exc}") from None
        if math.isnan(value):
            raise ExpressionError(f"'{self.source}' is NaN {self._at(features)}")
        return value

    def _at(self, features: Mapping[str, float]) -> str:
        values = ", ".join(f"{k}={features[k]:.6g}" for k in sorted(self.used_names) if k in features)
        return f"at {values}" if values else "(it uses no features)"

    def __reduce__(self):  # recompiled on unpickling: code objects do not pickle
        return Expression, (self.source, self.names)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"
