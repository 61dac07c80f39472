"""Periodic checkpoints, checkpoint evaluations and the live progress bar of a run."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from vlmbench.agents.algorithms import load_algorithm
from vlmbench.errors import VlmbenchError
from vlmbench.files import atomic_write, previous_of

# SB3's arrays, and the reward-model inputs a learned-reward run keeps beside them (relabel.py)
REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts",
                 "reward_inputs", "reward_inputs_kept")


def _replay_path(folder: Path, stage: str) -> Path:
    return folder / f"{stage}_replay.npz"


def save_replay_buffer(buffer: ReplayBuffer, path: Path, *, keep_previous: bool = False) -> None:
    """The filled part of an off-policy replay buffer (its size grows with steps taken, not capacity)."""
    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:filled] for name in REPLAY_ARRAYS
              if isinstance(getattr(buffer, name, None), np.ndarray)}
    atomic_write(path, lambda tmp: np.savez(tmp, pos=buffer.pos, full=buffer.full, **arrays),
                 keep_previous=keep_previous)


def load_replay_buffer(buffer: ReplayBuffer, path: Path) -> None:
    with np.load(path) as saved:
        for name in REPLAY_ARRAYS:
            if name in saved:
                part = saved[name]
                if getattr(buffer, name, None) is None:  # an array SB3 does not allocate
                    setattr(buffer, name, np.zeros((buffer.buffer_size, *part.shape[1:]), part.dtype))
                getattr(buffer, name)[: len(part)] = part
        buffer.pos, buffer.full = int(saved["pos"]), bool(saved["full"])


def save_agent(model: BaseAlgorithm, folder: Path, stage: str) -> int:
    """Write the agent (and an off-policy replay buffer) atomically, keeping the previous checkpoint
    beside it as a fallback; returns the bytes written."""
    path = folder / f"{stage}.zip"
    atomic_write(path, model.save, keep_previous=True)
    written = path.stat().st_size
    if isinstance(model, OffPolicyAlgorithm):
        save_replay_buffer(model.replay_buffer, _replay_path(folder, stage), keep_previous=True)
        written += _replay_path(folder, stage).stat().st_size
    return written


def load_agent(algorithm: str, folder: Path, stage: str, env: VecEnv | None, device: str,
               notes: list[str] | None = None) -> BaseAlgorithm | None:
    """The agent saved by ``save_agent`` (with its replay buffer), or None if there is none. A damaged
    checkpoint falls back to the previous one, with a line in ``notes`` saying so."""
    path, replay = folder / f"{stage}.zip", _replay_path(folder, stage)
    damaged = []
    for agent_file, replay_file in ((path, replay), (previous_of(path), previous_of(replay))):
        if not agent_file.exists():
            continue
        try:
            model = load_algorithm(algorithm, str(agent_file), env, device)
            if isinstance(model, OffPolicyAlgorithm) and replay_file.exists():
                load_replay_buffer(model.replay_buffer, replay_file)
        except Exception as exc:  # noqa: BLE001 - any damage: try the previous checkpoint
            damaged.append(f"{agent_file.name} ({type(exc).__name__})")
            continue
        if damaged and notes is not None:
            notes.append(f"checkpoint {damaged[0]} in {folder} is damaged; resumed from {agent_file.name}")
        if not damaged:  # the runtime state belongs to the newest checkpoint only
            restore_runtime(model, runtime_path(folder, stage))
        return model
    if damaged:
        raise VlmbenchError(f"the agent checkpoints in {folder} are damaged: {', '.join(damaged)}; delete "
                            f"{stage}*.zip to train the agent from the start (the bought labels are kept)")
    return None


def runtime_path(folder: Path, stage: str) -> Path:
    return folder / f"{stage}_runtime.pkl"


def save_runtime(model: BaseAlgorithm, path: Path) -> None:
    """What SB3's own save leaves out and a resume needs to continue as if never stopped: the global
    random generators, each env's simulator state and generator, and the observations the next
    step starts from."""
    env = model.get_env()
    state = {
        "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate(),
        "envs": env.env_method("get_state"), "env_rngs": [g.bit_generator.state for g in env.get_attr("np_random")],
        "last_obs": model._last_obs, "episode_starts": model._last_episode_starts,
    }
    atomic_write(path, lambda tmp: tmp.write_bytes(pickle.dumps(state)), keep_previous=True)


def restore_runtime(model: BaseAlgorithm, path: Path) -> bool:
    """Undo ``save_runtime`` on a freshly loaded agent; False (nothing restored) if there is no usable file."""
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)  # noqa: S301 - the run's own checkpoint file
    except Exception:  # noqa: BLE001 - missing or damaged: the env starts new episodes instead
        return False
    env = model.get_env()
    if env is None:
        return False
    env.reset()  # envs learn their kind at their first reset; every state and generator is then replaced
    for i, (sim_state, rng_state) in enumerate(zip(state["envs"], state["env_rngs"], strict=True)):
        env.env_method("set_state", sim_state, indices=[i])
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = rng_state
        env.set_attr("np_random", generator, indices=[i])
    model._last_obs, model._last_episode_starts = state["last_obs"], state["episode_starts"]
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    return True


class CheckpointCallback(BaseCallback):
    """At the first rollout start after every ``every`` timesteps: save, ``on_checkpoint(model, bytes)``,
    then the runtime state.

    A rollout starts after the previous one was relabelled (score judges), used for feedback rounds
    and trained on, so a checkpoint holds no half-finished step of the learning loop, and a resumed
    run repeats nothing the interrupted one did before it.
    """

    def __init__(self, folder: Path, stage: str, every: int, on_checkpoint: Callable[[BaseAlgorithm, int], None]):
        super().__init__()
        self.folder, self.stage, self.every, self.on_checkpoint = folder, stage, every, on_checkpoint
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps - self._last >= self.every:
            self._last = self.model.num_timesteps
            self.on_checkpoint(self.model, save_agent(self.model, self.folder, self.stage))
            save_runtime(self.model, runtime_path(self.folder, self.stage))


class ProgressCallback(BaseCallback):
    """Advances a rich progress bar; ``status()`` supplies live counters (labels, cost, success)."""

    def __init__(self, progress: Progress | None, task_id, status: Callable[[], str]):
        super().__init__()
        self.progress, self.task_id, self.status = progress, task_id, status
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        if self.progress is not None and self.num_timesteps - self._last >= 256:
            self.progress.update(self.task_id, advance=self.num_timesteps - self._last, status=self.status())
            self._last = self.num_timesteps
        return True

    def _on_training_end(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, advance=self.num_timesteps - self._last, status=self.status())
