"""Build a gymnasium environment from a task spec, wrapped to expose features, frames and states."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.registration import load_env_creator
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

import vlmbench.envs  # noqa: F401  (sets the headless GL backend before MuJoCo loads)
from vlmbench.envs.features import FeatureReader
from vlmbench.envs.rendering import MujocoCamera, RenderError, fit
from vlmbench.envs.sim_state import SimState, mujoco_state, restore_mujoco_state, state_kind
from vlmbench.envs.themes import resolve_theme, themed_xml
from vlmbench.errors import VlmbenchError
from vlmbench.specs.task import TaskSpec


class TaskEnv(gym.Wrapper):
    """A task's environment: fixed episode length, termination overrides, features and frames.

    ``step`` returns the environment's own reward (learning code replaces it) and puts
    ``env_reward``, ``features``, ``success``, ``progress`` and, when ``frames_in_info`` is set,
    the rendered ``frame`` into ``info``.
    """

    def __init__(
        self, env: gym.Env, task: TaskSpec, *, render: bool, frames_in_info: bool = False, states_in_info: bool = False
    ):
        super().__init__(env)
        self.task = task
        self.frames_in_info = frames_in_info and render
        self.states_in_info = states_in_info
        # Classic-control envs create their state vector in reset(): kind and features wait for it.
        self.kind: str | None = "mujoco" if hasattr(env.unwrapped, "model") else None
        self.features_of: FeatureReader | None = None
        camera = task.render.camera
        if self.kind == "mujoco" and camera is not None and camera.track_body is not None:
            if mujoco.mj_name2id(env.unwrapped.model, mujoco.mjtObj.mjOBJ_BODY, camera.track_body) < 0:
                exc = RenderError(f"no body '{camera.track_body}' in the model")
                exc.field = ("render", "camera", "track_body")
                raise exc
        self.camera = MujocoCamera(env.unwrapped.model, task.render) if render and self.kind == "mujoco" else None
        self._can_render = render
        self._steps = 0
        self._absorbed = False
        self._obs: np.ndarray | None = None
        self._reset_seed: int | None = None
        self._seed_rng: np.random.Generator | None = None
        self._actions: list[np.ndarray] = []

    # -- episode control -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.kind is None:
            self._inner_reset(seed=seed)
            self.kind = state_kind(self.env.unwrapped)
        if self.features_of is None:
            self.features_of = FeatureReader(self.task, self.env.unwrapped)
        if self.kind == "replay":  # replayable: every inner reset gets an explicit seed
            if seed is not None or self._seed_rng is None:
                self._seed_rng = np.random.default_rng(seed)
            seed = int(self._seed_rng.integers(2**31 - 1))
        obs, info = self._inner_reset(seed=seed, options=options)
        self._reset_seed, self._actions = seed, []
        self._steps, self._absorbed, self._obs = 0, False, obs
        return obs, self._annotate(info, env_reward=0.0)

    def _inner_reset(self, **kwargs):
        try:
            return self.env.reset(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the env's kwargs can make its reset fail in any way
            problem = f"{self.task.env.id} failed to reset: {_brief(exc)}"
            raise _spec_error(self.task, _env_field(self.task), problem) from None

    def step(self, action):
        self._steps += 1
        if self.kind == "replay":
            self._actions.append(np.array(action, copy=True))
        if self._absorbed:
            obs, reward, terminated, truncated, info = self._obs, 0.0, False, False, {}
        else:
            obs, reward, terminated, truncated, info = self.env.step(action)
            if self.kind == "mujoco":  # positions and contacts of the new state, as a restore computes them
                mujoco.mj_forward(self.env.unwrapped.model, self.env.unwrapped.data)
            mode = self.task.env.termination
            if terminated and mode == "absorbing":
                self._absorbed, terminated = True, False
            elif mode == "never":
                terminated = False
                if hasattr(self.env.unwrapped, "steps_beyond_terminated"):
                    self.env.unwrapped.steps_beyond_terminated = None  # classic control keeps stepping
        self._obs = obs
        truncated = bool(truncated or self._steps >= self.task.env.episode_length)
        return obs, float(reward), bool(terminated), truncated, self._annotate(info, env_reward=float(reward))

    def _annotate(self, info: dict, env_reward: float) -> dict:
        features = self.features()
        info = dict(info)
        info.update(
            env_reward=env_reward,
            features=features,
            success=self.task.is_success(features),
            progress=self.task.progress_of(features),
        )
        if self.frames_in_info:
            info["frame"] = self.render()
        if self.states_in_info:
            info["state"] = self.get_state()
        return info

    # -- observation of the current state ---------------------------------------------------
    def features(self) -> dict[str, float]:
        return self.features_of(self.env.unwrapped, self._obs)

    def render(self) -> np.ndarray:
        """An RGB frame (height, width, 3) of the current state, at the task's size and camera."""
        if not self._can_render:
            raise RenderError("this environment was built with render=False")
        if self.camera is not None:
            return self.camera(self.env.unwrapped.data)
        frame = self.env.render()
        return fit(np.asarray(frame), self.task.render.width, self.task.render.height)

    # -- saving and restoring ---------------------------------------------------------------
    def get_state(self) -> SimState:
        unwrapped = self.env.unwrapped
        common = dict(observation=np.array(self._obs, copy=True), step=self._steps, absorbed=self._absorbed)
        if self.kind == "mujoco":
            return SimState("mujoco", values=mujoco_state(unwrapped.model, unwrapped.data), **common)
        if self.kind == "vector":
            return SimState("vector", values=np.array(unwrapped.state, dtype=np.float64), **common)
        return SimState("replay", reset_seed=self._reset_seed, actions=tuple(self._actions), **common)

    def set_state(self, state: SimState) -> np.ndarray:
        """Restore ``state``; returns its observation. Frames rendered afterwards match the original."""
        if state.kind != self.kind:
            raise VlmbenchError(f"cannot restore a '{state.kind}' state into a '{self.kind}' environment")
        unwrapped = self.env.unwrapped
        if self.kind == "replay":
            self._obs, _ = self.env.reset(seed=state.reset_seed)  # a state with no actions is this one
            self._steps, self._absorbed, self._actions = 0, False, []
            frames_in_info, self.frames_in_info = self.frames_in_info, False
            for action in state.actions:
                self.step(action)
            self.frames_in_info = frames_in_info
            self._reset_seed = state.reset_seed
            return self._obs
        if self.kind == "mujoco":
            restore_mujoco_state(unwrapped.model, unwrapped.data, state.values)
        else:
            unwrapped.state = np.array(state.values, dtype=np.asarray(unwrapped.state).dtype)
            if hasattr(unwrapped, "steps_beyond_terminated"):
                unwrapped.steps_beyond_terminated = None
        self._steps, self._absorbed = state.step, state.absorbed
        self._obs = np.array(state.observation, copy=True)
        return self._obs

    def close(self):
        if self.camera is not None:
            self.camera.close()
        super().close()


def _spec_error(task: TaskSpec, field: tuple[str, ...], problem: str) -> VlmbenchError:
    """An error in the task spec's ``field`` (which `vlmbench tasks validate` turns into a file line)."""
    error = VlmbenchError(f"task '{task.id}': {'.'.join(field)}: {problem}")
    error.field = field
    return error


def _env_field(task: TaskSpec) -> tuple[str, ...]:
    """Where an env that fails to build or reset is located in the spec: its kwargs, else its id."""
    return ("env", "kwargs") if task.env.kwargs else ("env", "id")


def _brief(exc: Exception) -> str:
    """An exception in one short line (gymnasium appends the kwargs, which may be long, to its errors)."""
    text = " ".join(str(exc).split(" was raised from the environment creator")[0].split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _annotations(creator: Callable) -> dict[str, object]:
    """Type annotations of the constructor's parameters, following ``**kwargs`` up the class hierarchy."""
    if isinstance(creator, type):
        owners = [cls.__init__ for cls in creator.__mro__ if "__init__" in vars(cls)]
    else:
        owners = [creator]
    found: dict[str, object] = {}
    for init in owners:
        try:
            parameters = inspect.signature(init).parameters.values()
            hints = typing.get_type_hints(init)
        except (TypeError, ValueError, NameError):  # no signature, or annotations that do not resolve
            break
        for parameter in parameters:
            if parameter.name in hints and parameter.kind is not inspect.Parameter.VAR_KEYWORD:
                found.setdefault(parameter.name, hints[parameter.name])
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return found


def _check_kwargs(task: TaskSpec, entry_point: str | Callable) -> None:
    """env.kwargs against the types the env's constructor declares (so that 'x' for a float, or 'no' for a
    bool, is an error here and not a crash mid-training or a silent truthy value)."""
    try:
        creator = entry_point if callable(entry_point) else load_env_creator(entry_point)
    except Exception as exc:  # noqa: BLE001 - the env's module may fail to import in any way
        raise _spec_error(task, ("env", "id"), f"{task.env.id} cannot be loaded: {_brief(exc)}") from None
    annotations = _annotations(creator)
    for name, value in task.env.kwargs.items():
        if name not in annotations:
            continue  # an unknown name is reported when the env is built
        annotation = annotations[name]
        try:
            adapter = TypeAdapter(annotation)
        except PydanticSchemaGenerationError:  # e.g. numpy arrays: left to the env
            continue
        expected = getattr(annotation, "__name__", str(annotation))
        try:
            adapter.validate_json(json.dumps(value), strict=True)
        except (TypeError, ValidationError):
            raise _spec_error(task, ("env", "kwargs", name), f"expected {expected}, got {value!r}") from None


def _build(task: TaskSpec, **kwargs: Any) -> gym.Env:
    try:
        return gym.make(task.env.id, **kwargs)
    except Exception as exc:  # noqa: BLE001 - an env's constructor may fail in any way on the kwargs it is given
        raise _spec_error(task, _env_field(task), f"{task.env.id} cannot be built: {_brief(exc)}") from None


def make_env(
    task: TaskSpec, *, render: bool = True, frames_in_info: bool = False, states_in_info: bool = False
) -> TaskEnv:
    """Build the task's environment. ``render=False`` skips all GL work (oracle judges need none)."""
    try:
        env_spec = gym.spec(task.env.id)
    except gym.error.Error as exc:
        raise _spec_error(task, ("env", "id"), str(exc)) from None
    mujoco_scene = "mujoco" in str(env_spec.entry_point)
    _check_kwargs(task, env_spec.entry_point)
    kwargs: dict[str, Any] = dict(task.env.kwargs)
    frame_skip, xml_file = kwargs.get("frame_skip"), kwargs.get("xml_file")
    if mujoco_scene and isinstance(frame_skip, int) and frame_skip < 1:
        raise _spec_error(task, ("env", "kwargs", "frame_skip"), f"must be at least 1, got {frame_skip}")
    if mujoco_scene and isinstance(xml_file, str) and Path(xml_file).exists() and not Path(xml_file).is_file():
        # MuJoCo would read a device forever, or wait on a FIFO
        raise _spec_error(task, ("env", "kwargs", "xml_file"), f"'{xml_file}' is not a regular file")
    for field in ("camera", "theme"):
        if not mujoco_scene and getattr(task.render, field) is not None:
            raise _spec_error(task, ("render", field), "applies to MuJoCo scenes only")
    if mujoco_scene and task.render.theme is not None:
        probe = _build(task, **kwargs)
        original = Path(probe.unwrapped.fullpath)
        probe.close()
        kwargs["xml_file"] = str(themed_xml(original, resolve_theme(task.render.theme)))
    if render and not mujoco_scene:
        kwargs["render_mode"] = "rgb_array"
    # Gymnasium's checker looks at the first step of each new env only: after a restored state (a
    # resumed run) it warns about observations that `termination: never` lets leave their bounds.
    env = _build(task, max_episode_steps=task.env.episode_length, disable_env_checker=True, **kwargs)
    return TaskEnv(env, task, render=render, frames_in_info=frames_in_info, states_in_info=states_in_info)
