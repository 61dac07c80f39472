"""Broken YAML specs: `vlmbench tasks|judges validate` reports each problem on one line as
'file:line: field.path: message' and exits 2, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vlmbench.cli import main
from vlmbench.judges.registry import BUILTIN_TYPES

BROKEN = Path(__file__).parent / "broken_specs"


def case(name: str, expected: list[tuple[int, str, str]]):
    return pytest.param(name, expected, id=name)


# file -> [(line, field path or label, message fragment)], one per problem
CASES = [
    case("unknown_field", [(4, "colour", "unknown field")]),
    case("wrong_type", [(6, "env.episode_length", "valid integer")]),
    case("missing_field", [(1, "description", "Field required")]),
    case("unknown_name", [(11, "success", "unknown name 'angel' in 'abs(angel) < 0.2'; features: angle")]),
    case("attribute_access", [(12, "progress", "'Attribute' is not allowed")]),
    case("unknown_function", [(11, "success", "unknown function 'open'")]),
    case("unknown_feature_kind", [(10, "features.angle", "'velocity_of'")]),
    case("yaml_syntax", [(11, "YAML syntax error", "mapping values are not allowed here")]),
    case("top_level_list", [(1, "(top level)", "expected a mapping of fields, got list")]),
    case("negative_length", [(6, "env.episode_length", "greater than 0")]),
    case("several_problems", [
        (1, "id", "should match pattern"),
        (6, "env.episode_length", "greater than 0"),
        (7, "env.termination", "'keep', 'never' or 'absorbing'"),
        (9, "render.width", "greater than or equal to 16"),
        (12, "prompts.rating.classes", "rating classes must be distinct"),
        (16, "progress", "unknown name 'speed'"),
    ]),
    case("progress_out_of_range", [(12, "progress", "in the reset state; progress is closeness to the goal, in [0, 1]")]),
    case("bad_theme_colour", [(10, "render.theme.sky.rgb1", "colour components must lie in [0, 1]")]),
    case("unknown_theme_name", [(8, "render.theme", "unknown theme 'grass-skye'")]),
    case("missing_body", [(11, "features.nose_height", "no body or geom 'nose'")]),
    case("missing_track_body", [(8, "render.camera.track_body", "no body 'nose'")]),
    case("judge_type_not_string", [(2, "type", "valid string")]),
    case("judge_unknown_type", [(2, "type", f"unknown judge type 'oracel'; known: {', '.join(sorted(BUILTIN_TYPES))}")]),
    case("judge_bad_params", [(4, "params.temperature", "greater than or equal to 0"), (6, "params.colour", "unknown field")]),
]


@pytest.mark.parametrize("name, expected", CASES)
def test_validate_reports_each_problem_located(name, expected, capsys):
    path = BROKEN / f"{name}.yaml"
    command = "judges" if name.startswith("judge_") else "tasks"
    assert main([command, "validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len(lines) == len(expected), err
    for line, (number, field, fragment) in zip(lines, expected):
        assert line.startswith(f"error: {path}:{number}: {field}: "), line
        assert fragment in line, line


def test_build_problem_names_file_and_feature(capsys):
    """A body the model lacks is found by building the env; the message names file, feature and body."""
    path = BROKEN / "missing_body.yaml"
    assert main(["tasks", "validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}") and "feature 'nose_height'" in line and "no body or geom 'nose'" in line
    assert "bodies: world, torso" in line  # lists what the model does have


def test_command_line_exit_code_and_no_traceback():
    """The real command (`python -m vlmbench`), several files at once: every problem reported, exit status 2."""
    names = ["unknown_field", "wrong_type", "unknown_name", "yaml_syntax", "top_level_list", "several_problems"]
    proc = subprocess.run([sys.executable, "-m", "vlmbench", "tasks", "validate", *(str(BROKEN / f"{n}.yaml") for n in names)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 5 + 6 and all(line.startswith("error: ") for line in lines)
    assert {n for n in names if any(f"{n}.yaml:" in line for line in lines)} == set(names)


@pytest.mark.parametrize("argv", [["tasks", "show", "humanoid-kneal"], ["render", "--task", "cartpol", "--steps", "2"]])
def test_unknown_task_name_suggests(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown task" in err and "did you mean:" in err and "Traceback" not in err


def test_unknown_judge_name_suggests(capsys):
    assert main(["judges", "show", "oracel"]) == 2
    assert "unknown judge 'oracel' (did you mean: oracle" in capsys.readouterr().err


def test_a_misspelt_field_inside_a_section_names_the_missing_field_in_file_order(tmp_path):
    from console import vlmbench

    shown = vlmbench("tasks", "show", "cartpole-upright")
    spec = tmp_path / "typo.yaml"
    spec.write_text(shown.stdout.replace("episode_length:", "episode_lenght:").replace("\n  goal:", "\n  gaol:"))
    proc = vlmbench("tasks", "validate", str(spec))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line.removeprefix("error: ") for line in proc.stderr.splitlines()]
    fields = [line.split(": ")[1] for line in lines]
    assert fields == ["env.episode_length", "env.episode_lenght", "prompts.goal", "prompts.gaol"]
    numbers = [int(line.split(":")[1]) for line in lines]
    assert numbers == sorted(numbers)
