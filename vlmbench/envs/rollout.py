"""Roll out a policy on a task across worker processes, collecting frames, features and states.

Rendering, not physics, is the slow part, so with ``workers > 1`` each worker process owns one
environment (and its own GL context) and renders its frames in parallel with the others. Without
rendering, one process steps up to LOCKSTEP episodes side by side, so a policy network is asked
once per step for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from functools import partial

import gymnasium as gym
import numpy as np

from vlmbench.envs.sim_state import SimState
from vlmbench.envs.task_env import make_env
from vlmbench.judges.base import Frame
from vlmbench.specs.task import TaskSpec

Policy = Callable[[np.ndarray], np.ndarray]  # batched observations -> batched actions
LOCKSTEP = 32  # episodes stepped side by side in one process when nothing is rendered


@dataclass
class Episode:
    """One episode: per step after each action, its frame (if rendered), features and state.

    ``horizon`` is the number of steps the episode was given (the task's episode length, or a
    rollout's cap); it ends sooner when the env terminates it.
    """

    seed: int
    horizon: int
    observations: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    features: list[dict[str, float]] = field(default_factory=list)
    successes: list[bool] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    env_rewards: list[float] = field(default_factory=list)
    states: list[SimState] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.actions)

    def judge_frames(self) -> list[Frame]:
        pixels = self.frames or [None] * len(self)
        states = self.states or [None] * len(self)
        return [Frame(p, f, s) for p, f, s in zip(pixels, self.features, states)]

    def success_fraction(self) -> float:
        """The share of the ``horizon`` steps in which the goal held: steps that an early
        termination cut off count as steps without the goal."""
        return sum(self.successes) / self.horizon


def _unbatch(info: dict, i: int) -> dict:
    return {k: (_unbatch(v, i) if isinstance(v, dict) else v[i]) for k, v in info.items() if not k.startswith("_")}


def rollout(
    task: TaskSpec,
    *,
    episodes: int,
    seed: int,
    policy: Policy | None = None,
    workers: int = 1,
    render: bool = True,
    keep_states: bool = True,
    steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run ``episodes`` episodes (``workers`` processes at a time, or up to LOCKSTEP in this process
    when nothing is rendered) with ``policy`` (uniform random if None).

    Episode i is reset with seed ``seed + i``, so it is the same however many run side by side;
    ``steps`` caps the episode length. ``progress`` is called with the number of environment steps
    just taken.
    """
    length = min(steps or task.env.episode_length, task.env.episode_length)
    workers = max(1, min(workers, episodes))
    make = partial(make_env, task, render=render, frames_in_info=render, states_in_info=keep_states)
    # Spawned, not forked: AsyncVectorEnv first builds a dummy env here (a GL context for MuJoCo
    # scenes), and workers forked after that deadlock when they start their own.
    envs = (gym.vector.AsyncVectorEnv([make] * workers, context="spawn") if workers > 1
            else gym.vector.SyncVectorEnv([make] * (1 if render else min(episodes, LOCKSTEP))))
    width = envs.num_envs
    out: list[Episode] = []
    try:
        for start in range(0, episodes, width):
            n = min(width, episodes - start)
            batch = [Episode(seed=seed + start + i, horizon=length) for i in range(n)]
            obs, _ = envs.reset(seed=[seed + start + i for i in range(width)])
            done = np.zeros(width, dtype=bool)
            done[n:] = True  # surplus envs in the last batch run but are not recorded
            # Random actions from one generator per episode, so they do not depend on ``width``.
            spaces = [deepcopy(envs.single_action_space) for _ in range(width)]
            for i, space in enumerate(spaces):
                space.seed(int(np.random.default_rng([seed, start + i]).integers(2**31 - 1)))
            for _ in range(length):
                actions = np.stack([s.sample() for s in spaces]) if policy is None else policy(obs)
                obs, _, terminated, truncated, info = envs.step(actions)
                for i in np.flatnonzero(~done):
                    ep, step_info = batch[i], _unbatch(info, i)
                    ep.observations.append(obs[i])
                    ep.actions.append(np.asarray(actions[i]))
                    ep.features.append(step_info["features"])
                    ep.successes.append(bool(step_info["success"]))
                    ep.progress.append(float(step_info["progress"]))
                    ep.env_rewards.append(float(step_info["env_reward"]))
                    if render:
                        ep.frames.append(step_info["frame"])
                    if keep_states:
                        ep.states.append(step_info["state"])
                if progress is not None:
                    progress(int((~done).sum()))
                done |= terminated | truncated
                if done.all():
                    break
            out.extend(batch)
    finally:
        envs.close()
    return out
