"""The safe expression language of success detectors and progress measures."""

from __future__ import annotations

import math

import pytest

from vlmbench.specs.expressions import CONSTANTS, FUNCTIONS, Expression, ExpressionError

FEATURES = {"x": 0.3, "y": -1.5, "z": 2.0}


@pytest.mark.parametrize(
    "source",
    [
        "x + y * z - 1", "x / z", "y // 0.4", "y % 0.4", "z ** 3", "-y", "+x", "(x + y) * -z",
        "x < y", "x <= 0.3", "x == 0.3", "x != y", "y < x < z", "z > x >= y",
        "x > 0 and y > 0", "x > 0 or y > 0", "not x > 0", "x and y", "0 or y",
        "x if y > 0 else z", "1 if x > 0 and not y > 0 else 0", "True + 1", "pi * x", "e ** y",
    ],
)
def test_results_match_python(source):
    assert Expression(source, FEATURES)(FEATURES) == eval(source, {"pi": math.pi, "e": math.e}, dict(FEATURES))


@pytest.mark.parametrize(
    "source, expected",
    [
        ("abs(y)", 1.5), ("min(x, y, z)", -1.5), ("max(x, y)", 0.3), ("sqrt(z)", math.sqrt(2)),
        ("exp(x)", math.exp(0.3)), ("log(z)", math.log(2)), ("cos(x)", math.cos(0.3)),
        ("sin(x)", math.sin(0.3)), ("tan(x)", math.tan(0.3)), ("atan2(y, z)", math.atan2(-1.5, 2)),
        ("tanh(y)", math.tanh(-1.5)), ("hypot(y, z)", 2.5), ("floor(y)", -2), ("ceil(y)", -1),
        ("sign(y)", -1.0), ("sign(0)", 0.0), ("clip(z, 0, 1)", 1), ("clip(y, 0, 1)", 0), ("clip(x, 0, 1)", 0.3),
        ("sigmoid(0)", 0.5), ("degrees(pi)", 180.0), ("radians(180)", math.pi), ("inf > z", True),
    ],
)
def test_functions_and_constants(source, expected):
    assert Expression(source, FEATURES)(FEATURES) == pytest.approx(expected)


def test_every_function_and_constant_is_covered():
    names = {"abs", "min", "max", "sqrt", "exp", "log", "cos", "sin", "tan", "atan2", "tanh", "hypot",
             "floor", "ceil", "sign", "clip", "sigmoid", "degrees", "radians"}
    assert set(FUNCTIONS) == names  # a new function needs a case in test_functions_and_constants
    assert set(CONSTANTS) == {"pi", "e", "inf"}


def test_feature_shadows_constant_and_records_used_names():
    expr = Expression("e * 2 + clip(x, 0, 1)", ["e", "x", "unused"])
    assert expr.used_names == {"e", "x"}
    assert expr({"e": 1.0, "x": 0.5}) == 2.5


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("x.__class__", "'Attribute' is not allowed"),
        ("x.real", "'Attribute' is not allowed"),
        ("(1, 2)[0]", "is not allowed"),
        ("x[0]", "'Subscript' is not allowed"),
        ("open('f')", "unknown function 'open' in 'open('f')'; allowed: abs, atan2,"),
        ("__import__('os')", "unknown function '__import__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("x(1)", "unknown function 'x'"),
        ("abs.__call__(x)", "unknown function 'Attribute'"),
        ("__builtins__", "dunder name '__builtins__'"),
        ("lambda: 1", "'Lambda' is not allowed"),
        ("[v for v in (1, 2)]", "'ListComp' is not allowed"),
        ("max(v for v in (1, 2))", "'GeneratorExp' is not allowed"),
        ("'abc'", "only numbers are allowed as constants"),
        ("x > 'a'", "only numbers are allowed as constants"),
        ("None", "only numbers are allowed as constants"),
        ("clip(x, lo=0, hi=1)", "keyword arguments are not allowed"),
        ("max(*x)", "'Starred' is not allowed"),
        ("(w := 1)", "'NamedExpr' is not allowed"),
        ("x +", "invalid syntax"),
        ("", "invalid syntax"),
        ("abs", "unknown name 'abs'"),
    ],
)
def test_rejected_when_compiled(source, fragment):
    with pytest.raises(ExpressionError) as exc:
        Expression(source, FEATURES)
    assert fragment in str(exc.value)


def test_unknown_name_lists_the_features():
    with pytest.raises(ExpressionError) as exc:
        Expression("x + hieght", FEATURES)
    assert "unknown name 'hieght'" in str(exc.value) and "features: x, y, z" in str(exc.value)
    with pytest.raises(ExpressionError, match=r"features: \(none\)"):
        Expression("hieght", [])


def test_missing_feature_at_evaluation():
    expr = Expression("x + y", FEATURES)
    with pytest.raises(KeyError, match="'y'"):
        expr({"x": 1.0})

