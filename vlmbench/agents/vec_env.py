"""Vectorised task envs for training, and the wrapper that swaps in judge-derived rewards.

``JudgeRewardVecEnv`` sets each step's reward to zero (judge-derived rewards are written over a
whole rollout at its end, by the callbacks of ``relabel``), keeps the environment's own reward in
``info['env_reward']``, hands each step's reward-model inputs on in ``info['reward_inputs']``, and
cuts the stream of steps into segments for the feedback loop.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

from vlmbench.envs.task_env import make_env
from vlmbench.judges.base import Frame
from vlmbench.specs.task import TaskSpec

InputsFn = Callable[[np.ndarray, np.ndarray, list[dict]], np.ndarray]  # (reached obs, actions, infos) -> (n, D)


def make_vec_env(task: TaskSpec, *, n_envs: int, render: bool, subprocess: bool) -> VecEnv:
    make = partial(make_env, task, render=render, frames_in_info=render)
    if subprocess and n_envs > 1:
        return SubprocVecEnv([make] * n_envs, start_method="spawn")  # forked workers can deadlock on GL
    return DummyVecEnv([make] * n_envs)


def observation_inputs(with_actions: bool) -> InputsFn:
    """Reward-model inputs from flattened observations, optionally with the (raw) actions."""

    def inputs(observations: np.ndarray, actions: np.ndarray, _infos: list[dict]) -> np.ndarray:
        obs = np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)
        if not with_actions:
            return obs
        return np.concatenate([obs, np.asarray(actions, dtype=np.float32).reshape(len(obs), -1)], axis=1)

    return inputs


def embedding_inputs(embed: Callable[[list[Frame]], np.ndarray]) -> InputsFn:
    """Reward-model inputs from frozen image embeddings of the rendered frames (the pixel variant)."""

    def inputs(_observations: np.ndarray, _actions: np.ndarray, infos: list[dict]) -> np.ndarray:
        return np.asarray(embed([Frame(pixels=info["frame"]) for info in infos]), dtype=np.float32)

    return inputs


class JudgeRewardVecEnv(VecEnvWrapper):
    """Zero rewards; with ``attach_inputs`` each info carries its step's reward-model inputs (a row of
    ``inputs_fn``). Finished segments go to ``on_segment(inputs, frames)`` while ``collecting()`` says
    they are wanted. Once it says no (the feedback loop has bought its last round), segments stop for
    good, and with ``frames_only_for_segments`` the envs stop rendering."""

    def __init__(
        self,
        venv: VecEnv,
        *,
        attach_inputs: bool,
        inputs_fn: InputsFn,
        segment_length: int,
        on_segment: Callable[[np.ndarray, tuple[Frame, ...]], None] | None,
        keep_pixels: bool,
        collecting: Callable[[], bool] = lambda: True,
        frames_only_for_segments: bool = False,
    ):
        super().__init__(venv)
        self.collecting = collecting
        self.frames_only_for_segments = frames_only_for_segments
        self.attach_inputs = attach_inputs
        self.inputs_fn = inputs_fn
        self.segment_length = segment_length
        self.on_segment = on_segment
        self.keep_pixels = keep_pixels
        self._actions: np.ndarray | None = None
        self._open: list[list[tuple[np.ndarray, Frame]]] = [[] for _ in range(venv.num_envs)]

    def reset(self):
        self._open = [[] for _ in range(self.num_envs)]
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, _, dones, infos = self.venv.step_wait()
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        if self.on_segment is not None and not self.collecting():
            self._stop_collecting()
        if not self.attach_inputs and self.on_segment is None:
            return obs, rewards, dones, infos
        # The reward belongs to the state reached by the step: for finished episodes that is the
        # terminal observation, not the first observation of the next episode.
        reached = np.array([info["terminal_observation"] if done else o for o, done, info in zip(obs, dones, infos)])
        inputs = self.inputs_fn(reached, self._actions, infos)
        if self.attach_inputs:
            for info, row in zip(infos, inputs, strict=True):
                info["reward_inputs"] = row
        if self.on_segment is not None:
            self._collect(inputs, infos, dones)
        return obs, rewards, dones, infos

    def _stop_collecting(self) -> None:
        self.on_segment = None
        self._open = [[] for _ in range(self.num_envs)]
        if self.frames_only_for_segments:
            self.venv.set_attr("frames_in_info", False)

    def _collect(self, inputs: np.ndarray, infos: list[dict], dones: np.ndarray) -> None:
        for i, info in enumerate(infos):
            pixels = info.get("frame") if self.keep_pixels else None
            self._open[i].append((inputs[i], Frame(pixels=pixels, features=info["features"])))
            if len(self._open[i]) == self.segment_length:
                rows, frames = zip(*self._open[i], strict=True)
                self.on_segment(np.array(rows), frames)
                self._open[i] = []
            if dones[i]:  # segments never straddle episodes
                self._open[i] = []
