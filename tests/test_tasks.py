"""The task catalogue: every YAML validates, builds, renders, its success detector is False in the
reset state and True in a hand-built goal state (vlmbench/datasets/goal_states.py), and its top rating class
is given exactly where the detector says the goal holds.

A contact sheet of the goal states is written to /tmp/task_success_states.png for people to
check that each pose looks like its task.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import vlmbench.envs  # noqa: F401  (headless GL backend before MuJoCo loads)
from vlmbench.datasets import goal_states as task_states
from vlmbench.envs.task_env import make_env
from vlmbench.judges.base import Frame
from vlmbench.judges.oracle import OracleJudge, OracleParams
from vlmbench.specs import catalogue
from vlmbench.specs.loading import load_spec
from vlmbench.specs.task import TaskSpec


SHEET = Path("/tmp/task_success_states.png")
FILES = sorted(catalogue.catalogue_dir("task").glob("*.yaml"))
IDS = [path.stem for path in FILES]
HUMANOID_VLM_RM = [i for i in IDS if i.startswith("humanoid-")]


@pytest.fixture(scope="module")
def envs():
    """One rendering environment per task, built on first use and shared by the tests."""
    built: dict[str, object] = {}

    def get(task_id: str):
        if task_id not in built:
            built[task_id] = make_env(catalogue.tasks().resolve(task_id), render=True)
        return built[task_id]

    yield get
    for env in built.values():
        env.close()


@pytest.fixture(scope="module")
def sheet():
    """Collects (task id, frame, caption) of goal states; saves them as one contact sheet."""
    tiles: dict[str, tuple[np.ndarray, str]] = {}
    yield tiles
    if tiles:
        from vlmbench.plots import captioned, contact_sheet, save

        images = [captioned(frame, [task_id, caption]) for task_id, (frame, caption) in sorted(tiles.items())]
        save(contact_sheet(images, columns=5, title="constructed success states (vlmbench/datasets/goal_states.py)"), SHEET)


# -- the catalogue as a whole -----------------------------------------------------------------
def test_catalogue_loads_every_file():
    tasks = catalogue.tasks()
    assert IDS, "no task YAML files found"
    assert tasks.names() == sorted(IDS)
    assert not getattr(tasks, "broken", {}), "some task files do not load"


def test_aliases_resolve_and_are_unique():
    owner: dict[str, str] = {}
    for task_id in IDS:
        spec = catalogue.tasks().resolve(task_id)
        assert spec.aliases, f"{task_id} has no aliases"
        for alias in spec.aliases:
            assert alias not in IDS, f"alias '{alias}' of {task_id} is another task's id"
            assert alias not in owner, f"alias '{alias}' used by both {owner[alias]} and {task_id}"
            owner[alias] = task_id
            assert catalogue.tasks().resolve(alias).id == task_id


def test_every_task_has_a_constructed_goal_state():
    assert set(task_states.SUCCESS_STATES) == set(IDS)
    assert task_states.GOAL_HOLDS_AT_RESET <= set(IDS)
    assert set(task_states.FAILURE_STATES) >= task_states.GOAL_HOLDS_AT_RESET


# -- each task ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_spec_validates(path: Path):
    spec = load_spec(path, TaskSpec)
    assert spec.id == path.stem
    assert spec.source in ("vlm-rm", "gpt4v-preferences")
    assert (spec.render.width, spec.render.height) == (224, 224)
    prompts = spec.prompts
    assert prompts.goal and prompts.baseline and prompts.pairwise and prompts.yes_no
    assert prompts.rating is not None and 3 <= len(prompts.rating.classes) <= 5
    assert len(spec.description.split()) >= 30, "the description should explain the detector"
    if "mujoco" in str(gym.spec(spec.env.id).entry_point):
        assert spec.render.camera is not None and spec.render.theme is not None


@pytest.mark.parametrize("task_id", HUMANOID_VLM_RM)
def test_humanoid_tasks_follow_vlm_rm_setup(task_id: str):
    spec = catalogue.tasks().resolve(task_id)
    assert spec.source == "vlm-rm"
    assert spec.env.id.startswith("Humanoid")
    assert spec.env.episode_length == 100 and spec.env.termination == "never"
    assert spec.env.kwargs.get("terminate_when_unhealthy") is False
    assert spec.prompts.baseline == ["a humanoid robot"]
    assert spec.prompts.goal[0].startswith("a humanoid robot ")
    camera = spec.render.camera
    assert camera.elevation < 0 and camera.track_body == "torso"
    assert spec.render.theme == "grass-sky"


@pytest.mark.parametrize("task_id", IDS)
def test_reset_state_renders_and_is_not_success(task_id: str, envs):
    env = envs(task_id)
    spec = env.task
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (spec.render.height, spec.render.width, 3) and frame.dtype == np.uint8
    assert frame.reshape(-1, 3).std(axis=0).max() > 5, "the frame is a single flat colour"
    features = env.features()
    progress = spec.progress_of(features)
    assert 0.0 <= progress <= 1.0
    if task_id in task_states.GOAL_HOLDS_AT_RESET:
        assert spec.is_success(features), "this task's goal holds from the start (keep it)"
        task_states.put_in_failure_state(env)
        assert not spec.is_success(env.features())
    else:
        assert not spec.is_success(features), f"goal already holds at reset: {features}"


@pytest.mark.parametrize("task_id", IDS)
def test_constructed_state_is_success(task_id: str, envs, sheet):
    env = envs(task_id)
    spec = env.task
    env.reset(seed=0)
    reset_progress = spec.progress_of(env.features())
    task_states.put_in_success_state(env)
    features = env.features()
    assert spec.is_success(features), f"constructed goal state fails the detector: {features}"
    progress = spec.progress_of(features)
    assert 0.9 <= progress <= 1.0, f"progress {progress:.3f} should be near 1 in a goal state"
    if task_id not in task_states.GOAL_HOLDS_AT_RESET:
        assert progress > reset_progress + 0.1
    frame = env.render()
    assert frame.reshape(-1, 3).std(axis=0).max() > 5
    sheet[task_id] = (frame, f"success={spec.is_success(features)} progress={progress:.2f}")
    if hasattr(env.unwrapped, "model"):  # a plausible MuJoCo pose settles rather than jumping apart
        for _ in range(3):
            *_, info = env.step(np.zeros(env.action_space.shape))
        assert info["success"], "the constructed pose does not survive three steps of simulation"


@pytest.mark.parametrize("task_id", IDS)
def test_progress_stays_in_unit_interval_under_random_actions(task_id: str, envs):
    env = envs(task_id)
    env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(15):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert math.isfinite(info["progress"]) and 0.0 <= info["progress"] <= 1.0
        assert isinstance(info["success"], bool)
        if terminated or truncated:
            break


def _random_steps(env, steps: int, seed: int) -> list[dict[str, float]]:
    """Features after each of up to ``steps`` random actions from the env's current state."""
    env.action_space.seed(seed)
    out = []
    for _ in range(steps):
        *_, terminated, truncated, info = env.step(env.action_space.sample())
        out.append(info["features"])
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("task_id", IDS)
def test_oracle_gives_the_top_rating_exactly_where_the_goal_holds(task_id: str, envs):
    """States from random rollouts, the constructed goal (and failure) states, and random steps
    away from the goal state, rated one frame at a time by the noise-free oracle."""
    env = envs(task_id)
    spec = env.task
    states = []
    for seed in (0, 1):
        env.reset(seed=seed)
        states += [env.features(), *_random_steps(env, 100, seed)]
    if task_id in task_states.FAILURE_STATES:
        env.reset(seed=0)
        task_states.put_in_failure_state(env)
        states.append(env.features())
    env.reset(seed=0)
    task_states.put_in_success_state(env)
    states += [env.features(), *_random_steps(env, 20, seed=2)]

    answers = OracleJudge("oracle", OracleParams()).rate(spec, [[Frame(features=f)] for f in states])
    top = len(spec.prompts.rating.classes) - 1
    goal = [spec.is_success(f) for f in states]
    assert [a.value == top for a in answers] == goal
    assert any(goal) and not all(goal)
