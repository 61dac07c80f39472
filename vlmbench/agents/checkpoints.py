"""Periodic checkpoints, checkpoint evaluations and the live progress bar of a run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rich.progress import Progress
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm


def save_agent(model: BaseAlgorithm, folder: Path, stage: str) -> None:
    """Write the agent (and an off-policy replay buffer) atomically: a crash never leaves half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / f"{stage}.tmp.zip")
    os.replace(folder / f"{stage}.tmp.zip", folder / f"{stage}.zip")
    if isinstance(model, OffPolicyAlgorithm):
        model.save_replay_buffer(folder / f"{stage}_replay.tmp.pkl")
        os.replace(folder / f"{stage}_replay.tmp.pkl", folder / f"{stage}_replay.pkl")


class CheckpointCallback(BaseCallback):
    """At the first rollout end after every ``every`` timesteps: save, then ``on_checkpoint(model)``.

    Saving at rollout ends (after the reward callbacks ran) means a checkpointed replay buffer never
    holds transitions whose judge rewards are still to be filled in.
    """

    def __init__(self, folder: Path, stage: str, every: int, on_checkpoint: Callable[[BaseAlgorithm], None]):
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
            save_agent(self.model, self.folder, self.stage)
            self.on_checkpoint(self.model)


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
