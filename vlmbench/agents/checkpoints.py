"""Periodic checkpoints, checkpoint evaluations and the live progress bar of a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.progress import Progress
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from vlmbench.agents.algorithms import load_algorithm
from vlmbench.errors import VlmbenchError
from vlmbench.files import atomic_write, previous_of

REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


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
        return model
    if damaged:
        raise VlmbenchError(f"the agent checkpoints in {folder} are damaged: {', '.join(damaged)}; delete "
                            f"{stage}*.zip to train the agent from the start (the bought labels are kept)")
    return None


class CheckpointCallback(BaseCallback):
    """At the first rollout end after every ``every`` timesteps: save, then ``on_checkpoint(model)``.

    Saving at rollout ends (after the reward callbacks ran) means a checkpointed replay buffer never
    holds transitions whose judge rewards are still to be filled in.
    """

    def __init__(self, folder: Path, stage: str, every: int, on_checkpoint: Callable[[BaseAlgorithm, int], None]):
        super().__init__()
        self.folder, self.stage, self.every, self.on_checkpoint = folder, stage, every, on_checkpoint
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps - self._last >= self.every:
            self._last = self.num_timesteps
            self.on_checkpoint(self.model, save_agent(self.model, self.folder, self.stage))


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
