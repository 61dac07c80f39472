"""Hostile or careless spec files, through the real `vlmbench` command: every problem is one located line
'file:line: field: message' with exit status 2, quickly (never a traceback, a hang or a silent acceptance).

Files are built from the catalogue's own tasks with one change each, so the expected line is the changed one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from console import one_line_error, vlmbench
from vlmbench.cli.output import readable_yaml
from vlmbench.errors import VlmbenchError
from vlmbench.specs import catalogue
from vlmbench.specs.catalogue import resolve_task
from vlmbench.specs.loading import load_spec
from vlmbench.specs.task import TaskSpec

TASKS = catalogue.catalogue_dir("task")


def task_text(task_id: str) -> str:
    return (TASKS / f"{task_id}.yaml").read_text()


def line_number(text: str, fragment: str) -> int:
    """The 1-based line on which ``fragment`` first appears."""
    assert fragment in text, fragment
    return text[: text.index(fragment)].count("\n") + 1


def variant(task_id: str, old: str, new: str) -> tuple[str, int]:
    """The task's YAML with ``old`` replaced by ``new``, and the line where the change starts."""
    text = task_text(task_id)
    assert text.count(old) == 1, old
    changed = text.replace(old, new)
    return changed, line_number(changed, new.lstrip("\n").splitlines()[0])


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


# -- spec values that are wrong: each refused with its field and line -------------------------------------------
KNEEL_KWARGS = "kwargs: {terminate_when_unhealthy: false}"
HEAD = "head_height: {kind: body_position, body: head, axis: z}"
FLOOR_TOWER = "floor(9) ** floor(9) ** floor(9) ** floor(9)"
TRUE_TOWER = " ** ".join(["((cart_position > -9) + (cart_position > -9))"] * 6)
SUCCESS = "success: cos(pole_angle) > cos(radians(12)) and abs(cart_position) < 2.4"
PROGRESS = "progress: ((1 + cos(pole_angle)) / 2) ** 4 * clip((2.8 - abs(cart_position)) / 0.4, 0, 1)"
POLE_VELOCITY = "pole_velocity: {kind: state, index: 3}"


def case(name, task_id, old, new, field, fragment):
    return pytest.param(task_id, old, new, field, fragment, id=name)


BAD_VALUES = [
    case("huge_episode_length", "cartpole-upright", "episode_length: 200", "episode_length: 1000000000000",
         "env.episode_length", "less than or equal to 10000000"),
    case("bool_episode_length", "cartpole-upright", "episode_length: 200", "episode_length: true",
         "env.episode_length", "Input should be a valid integer"),
    case("float_episodes", "cartpole-upright", SUCCESS, "evaluation: {episodes: 1.0e+12}\n" + SUCCESS,
         "evaluation.episodes", "Input should be a valid integer"),
    case("infinite_distance", "humanoid-kneel", "distance: 3.2", "distance: .inf",
         "render.camera.distance", "Input should be a finite number"),
    case("nan_azimuth", "humanoid-kneel", "azimuth: 150", "azimuth: .nan", "render.camera.azimuth", "finite number"),
    case("nan_lookat", "humanoid-kneel", "lookat: [0.0, 0.0, 0.85]", "lookat: [0.0, .nan, 0.85]",
         "render.camera.lookat[1]", "finite number"),
    case("infinite_repeat", "humanoid-kneel", "theme: grass-sky",
         "theme: {floor: {pattern: checker, rgb1: [0.2, 0.2, 0.2], repeat: .inf}}",
         "render.theme.floor.repeat", "finite number"),
    case("nan_kwarg", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {healthy_z_range: [1.0, .nan]}",
         "env.kwargs.healthy_z_range", "NaN is not allowed"),
    case("reserved_kwarg", "cartpole-upright", "  termination: never",
         "  kwargs: {render_mode: human}\n  termination: never",
         "env.kwargs.render_mode", "'render_mode' cannot be set here"),
    case("keyword_feature", "cartpole-upright", POLE_VELOCITY, "lambda: {kind: state, index: 3}",
         "features.lambda", "feature name 'lambda' is a Python keyword"),
    case("function_feature", "cartpole-upright", POLE_VELOCITY, "sqrt: {kind: state, index: 3}",
         "features.sqrt", "feature name 'sqrt' is taken by the expression function 'sqrt'"),
    case("constant_feature", "cartpole-upright", POLE_VELOCITY, "pi: {kind: state, index: 3}",
         "features.pi", "feature name 'pi' is taken by the expression constant 'pi'"),
    case("deep_expression", "cartpole-upright", SUCCESS, "success: " + "not " * 2400 + "cart_position",
         "success", "expression is nested more than 200 levels deep"),
    case("nested_if_else", "cartpole-upright", PROGRESS, "progress: " + "1 if cart_position > 0 else " * 350 + "0",
         "progress", "expression is nested more than 200 levels deep"),
    case("long_expression", "cartpole-upright", PROGRESS, "progress: " + " + ".join(["cart_position"] * 12_000),
         "progress", "characters long; the limit is 10000"),
    case("wrong_argument_count", "cartpole-upright", SUCCESS, "success: min() > 0",
         "success", "'min' called with 0 arguments in 'min() > 0'; usage: min(first, *rest)"),
    # found when the env is built and reset
    case("unknown_env", "cartpole-upright", "id: CartPole-v1", "id: CartPole-v9", "env.id", "doesn't exist"),
    case("camera_on_classic_env", "cartpole-upright", "  width: 224", "  camera: {distance: 3}\n  width: 224",
         "render.camera", "applies to MuJoCo scenes only"),
    case("frame_skip_zero_themed", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {frame_skip: 0}",
         "env.kwargs.frame_skip", "must be at least 1, got 0"),
    case("frame_skip_negative", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {frame_skip: -1}",
         "env.kwargs.frame_skip", "must be at least 1, got -1"),
    case("unknown_kwarg_themed", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {terminate_when_unhealthy: false, bogus: 1}",
         "env.kwargs",
         "Humanoid-v5 cannot be built: TypeError: MujocoEnv.__init__() got an unexpected keyword argument 'bogus'"),
    case("string_for_float_kwarg", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {ctrl_cost_weight: heavy}",
         "env.kwargs.ctrl_cost_weight", "expected float, got 'heavy'"),
    case("string_for_bool_kwarg", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {terminate_when_unhealthy: 'no'}",
         "env.kwargs.terminate_when_unhealthy", "expected bool, got 'no'"),
    case("missing_model_file", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {xml_file: /nonexistent/humanoid.xml}",
         "env.kwargs", "Humanoid-v5 cannot be built: "),
    case("model_is_a_device", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {xml_file: /dev/zero}",
         "env.kwargs.xml_file", "'/dev/zero' is not a regular file"),
    case("reset_fails", "humanoid-kneel", KNEEL_KWARGS, "kwargs: {reset_noise_scale: 1.0e+308}",
         "env.kwargs", "Humanoid-v5 failed to reset: OverflowError: "),
    case("hinge_index", "humanoid-kneel", HEAD, "head_height: {kind: joint_position, joint: abdomen_y, index: 3}",
         "features.head_height", "index 3 is out of range: the qpos of hinge joint 'abdomen_y' has 1 entry (index 0)"),
    case("free_joint_velocity_index", "humanoid-kneel", HEAD,
         "head_height: {kind: joint_velocity, joint: root, index: 6}",
         "features.head_height", "index 6 is out of range: the qvel of free joint 'root' has 6 entries (0 to 5)"),
    case("observation_index", "mountaincar-flag", "velocity: {kind: observation, index: 1,",
         "velocity: {kind: observation, index: 2,", "features.velocity",
         "index 2 is out of range: the observation has 2 entries (0 to 1)"),
    case("state_index", "cartpole-upright", POLE_VELOCITY, "pole_velocity: {kind: state, index: 4}",
         "features.pole_velocity", "index 4 is out of range: the state vector has 4 entries (0 to 3)"),
    case("domain_error_at_reset", "cartpole-upright", PROGRESS, "progress: sqrt(-1 - abs(cart_position))",
         "progress", "cannot evaluate 'sqrt(-1 - abs(cart_position))' at cart_position="),
    case("division_by_zero_at_reset", "cartpole-upright", PROGRESS, "progress: 1 / (cart_position - cart_position)",
         "progress", "float division by zero"),
    case("overflow_at_reset", "cartpole-upright", PROGRESS, "progress: exp(1e308)",
         "progress", "cannot evaluate 'exp(1e308)' (it uses no features): math range error"),
    case("nan_at_reset", "cartpole-upright", PROGRESS, "progress: inf * 0 * cart_position",
         "progress", "'inf * 0 * cart_position' is NaN at cart_position="),
    case("power_tower", "cartpole-upright", SUCCESS, f"success: {FLOOR_TOWER} > cart_position",
         "success", "math range error"),
    case("boolean_power_tower", "cartpole-upright", SUCCESS, f"success: {TRUE_TOWER} > 0",
         "success", "math range error"),
]


@pytest.fixture(scope="module")
def bad_values(tmp_path_factory):
    """Every BAD_VALUES file, validated (and built) by one `vlmbench tasks validate` run."""
    folder = tmp_path_factory.mktemp("bad_values")
    files = {}
    for param in BAD_VALUES:
        task_id, old, new, _, _ = param.values
        text, line = variant(task_id, old, new)
        files[param.id] = (folder / f"{param.id}.yaml", line)
        files[param.id][0].write_text(text)
    proc = vlmbench("tasks", "validate", *(str(path) for path, _ in files.values()), timeout=240)
    assert proc.returncode == 2
    return files, problems_by_file(proc, [path for path, _ in files.values()])


@pytest.mark.parametrize("task_id, old, new, field, fragment", BAD_VALUES)
def test_bad_value_is_one_located_error(request, task_id, old, new, field, fragment, bad_values):
    files, problems = bad_values
    path, line = files[request.node.callspec.id]
    (problem,) = problems[path]
    assert problem.startswith(f"error: {path}:{line}: {field}: "), problem
    assert fragment in problem and "task '" not in problem, problem  # the file, not the message, names the task


def test_every_catalogue_task_validates_with_build():
    proc = vlmbench("tasks", "validate", timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok ") == len(list(TASKS.glob("*.yaml")))


# -- feature indices at the edge of a joint's width ---------------------------------------------------------------
def kneel_with_features(features: dict) -> TaskSpec:
    data = resolve_task("humanoid-kneel").model_dump(mode="json")
    data["features"] = {**data["features"], **features}
    data["render"]["theme"] = None  # no themed model: a faster build
    return TaskSpec.model_validate(data)


def test_last_entry_of_each_joint_is_read_from_its_own_address():
    import mujoco

    from vlmbench.envs.task_env import make_env

    task = kneel_with_features({
        "root_qw": {"kind": "joint_position", "joint": "root", "index": 6},
        "root_wz": {"kind": "joint_velocity", "joint": "root", "index": 5},
        "abdomen_y_angle": {"kind": "joint_position", "joint": "abdomen_y", "index": 0},
    })
    env = make_env(task, render=False)
    try:
        env.reset(seed=3)
        model, data = env.unwrapped.model, env.unwrapped.data
        abdomen_y = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "abdomen_y")
        features = env.features()
        assert features["root_qw"] == data.qpos[6] and features["root_wz"] == data.qvel[5]
        assert features["abdomen_y_angle"] == data.qpos[model.jnt_qposadr[abdomen_y]]
        assert len({features["root_qw"], features["root_wz"], features["abdomen_y_angle"]}) == 3
    finally:
        env.close()


@pytest.mark.parametrize("kind, joint, index, expected", [
    ("joint_position", "root", 7, "the qpos of free joint 'root' has 7 entries (0 to 6)"),
    ("joint_velocity", "root", 6, "the qvel of free joint 'root' has 6 entries (0 to 5)"),
    ("joint_position", "abdomen_y", 1, "the qpos of hinge joint 'abdomen_y' has 1 entry (index 0)"),
    ("joint_velocity", "abdomen_y", 1, "the qvel of hinge joint 'abdomen_y' has 1 entry (index 0)"),
])
def test_first_index_past_a_joint_is_refused(kind, joint, index, expected):
    from vlmbench.envs.features import FeatureError
    from vlmbench.envs.task_env import make_env

    env = make_env(kneel_with_features({"past": {"kind": kind, "joint": joint, "index": index}}), render=False)
    try:
        with pytest.raises(FeatureError) as exc:
            env.reset(seed=0)
    finally:
        env.close()
    assert exc.value.field == ("features", "past")
    assert str(exc.value) == f"feature 'past': index {index} is out of range: {expected}"


# -- failures while training -------------------------------------------------------------------------------------
def test_expression_failing_mid_episode_is_a_clear_error(tmp_path):
    """The pole falls past 0.3 rad under a random policy: progress then takes a square root of a negative number."""
    path = tmp_path / "falls.yaml"
    path.write_text(variant("cartpole-upright", PROGRESS, "progress: sqrt(0.3 - abs(pole_angle))")[0])
    assert vlmbench("tasks", "validate", str(path), timeout=60).returncode == 0  # fine in the reset state
    proc = vlmbench("render", "--task", str(path), "--steps", "200", "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2
    assert one_line_error(proc).startswith(
        "error: task 'cartpole-upright': progress: cannot evaluate 'sqrt(0.3 - abs(pole_angle))' at pole_angle="
    ), proc.stderr
    assert proc.stderr.rstrip().endswith("math domain error")


def test_spec_evaluation_error_names_task_and_field():
    spec = resolve_task("cartpole-upright")
    broken = TaskSpec.model_validate({**spec.model_dump(), "success": "1 / cart_position > 0"})
    with pytest.raises(VlmbenchError) as exc:
        broken.is_success({"cart_position": 0.0, "pole_angle": 0.0})
    assert str(exc.value) == (
        "task 'cartpole-upright': success: cannot evaluate '1 / cart_position > 0' at cart_position=0: "
        "float division by zero"
    )
    assert exc.value.field == ("success",)


# -- `tasks show`: readable YAML that reads back as the same spec --------------------------------------------------
def test_show_prints_expressions_as_written(tmp_path):
    proc = vlmbench("tasks", "show", "cartpole-upright")
    assert proc.returncode == 0, proc.stderr
    assert SUCCESS + "\n" in proc.stdout and PROGRESS + "\n" in proc.stdout
    kneel = vlmbench("tasks", "show", "humanoid-kneel")
    assert "progress: |\n  clip((torso_upright - 0.3) / 0.5, 0, 1) * (0.5 * clip((0.42 - max(" in kneel.stdout
    assert "\n     + 0.15 * (left_shin_floor + right_shin_floor) / 2\n" in kneel.stdout
    assert "lookat: [0.0, 0.0, 0.85]\n" in kneel.stdout
    saved = tmp_path / "kneel-copy.yaml"
    saved.write_text(kneel.stdout)
    assert vlmbench("tasks", "validate", str(saved), timeout=60).returncode == 0
    assert load_spec(saved, TaskSpec) == resolve_task("humanoid-kneel")


@pytest.mark.parametrize("task_id", [path.stem for path in sorted(TASKS.glob("*.yaml"))])
def test_readable_yaml_round_trips_every_task(task_id):
    spec = resolve_task(task_id)
    assert TaskSpec.model_validate(yaml.safe_load(readable_yaml(spec.model_dump(mode="json")))) == spec


@pytest.mark.parametrize("text", [
    "", " ", "plain", "a: b", "# not a comment", "- dash", "'quoted'", '"double"', "yes", "null", "1.5", ".inf",
    "trailing space ", " leading space", "line\n", "two\nlines", "two\nlines\n", "kept\n\n\n", "\n starts with a break",
    "  indented\nnot", "tab\there", "x" * 200, "word " * 60 + "\n", ("word " * 30 + "\n") * 3, "caf\u00e9 \u03c0",
    "more\n  indented\nless\n", "ends with colon:", "odd \x85 next line", "trailing spaces  \nnext",
])
def test_readable_yaml_round_trips_any_string(text):
    data = {"value": text, "list": [text, 1.0], "numbers": [0.5, -2, 1e-300]}
    assert yaml.safe_load(readable_yaml(data)) == data


# -- --task and `tasks show` with paths ---------------------------------------------------------------------------
@pytest.fixture
def user_task(tmp_path) -> Path:
    path = tmp_path / "my_task.txt"
    path.write_text(CARTPOLE.replace("id: cartpole-upright", "id: my-task"))
    return path


def test_existing_file_without_yaml_suffix_is_read(user_task):
    proc = vlmbench("tasks", "show", str(user_task))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("id: my-task\n")


@pytest.mark.parametrize("relative", ["missing.yaml", "no/such/task", "folder"])
def test_path_that_is_not_a_readable_file_is_one_error(relative, tmp_path):
    (tmp_path / "folder").mkdir()
    path = tmp_path / relative
    proc = vlmbench("tasks", "show", str(path))
    assert proc.returncode == 2
    reason = "not a regular file" if relative == "folder" else "No such file or directory"
    assert one_line_error(proc) == f"error: {path}: cannot read: {reason}"


def test_catalogue_name_wins_over_a_file_of_that_name_and_a_bare_file_name_is_read(user_task):
    (user_task.parent / "kneel").write_text("not a task")
    proc = vlmbench("tasks", "show", "kneel", cwd=user_task.parent)
    assert proc.returncode == 0 and proc.stdout.startswith("id: humanoid-kneel\n"), proc.stderr
    proc = vlmbench("tasks", "show", user_task.name, cwd=user_task.parent)
    assert proc.returncode == 0 and proc.stdout.startswith("id: my-task\n"), proc.stderr
