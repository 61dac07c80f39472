"""Score judges (CLIP, yes-probability): relabel a whole rollout's rewards in one batched judge call.

Frames are rendered at every step (in the env workers) and collected here; when the rollout ends
they are scored together, as VLM-RM does, and written into SB3's rollout or replay buffer. The
environment reward seen by SB3 is zero, so on-policy buffers hold only SB3's time-limit bootstrap
terms, to which the scores are added before returns and advantages are recomputed.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from vlmbench.judges.base import Frame, Judge
from vlmbench.results.record import RunRecord
from vlmbench.specs.task import TaskSpec


class ScoreRelabelCallback(BaseCallback):
    def __init__(self, task: TaskSpec, judge: Judge, record: RunRecord):
        super().__init__()
        self.task, self.judge, self.record = task, judge, record
        self._frames: list[list[Frame]] = []
        self._positions: list[int] = []
        self.queries = 0
        self.abstained = 0
        self.cost_usd = 0.0

    def restore_counts(self) -> None:
        """Resume the counters from the record: every frame scored so far was paid for."""
        for line in self.record.score_batches():
            self.queries += line["frames"]
            self.abstained += line["abstained"]
            self.cost_usd += line["cost_usd"]

    def _on_rollout_start(self) -> None:
        self._frames, self._positions = [], []

    def _on_step(self) -> bool:
        self._frames.append([Frame(info.get("frame"), info["features"]) for info in self.locals["infos"]])
        if isinstance(self.model, OffPolicyAlgorithm):
            self._positions.append(self.model.replay_buffer.pos)  # where this step is about to be stored
        return True

    def _on_rollout_end(self) -> None:
        if not self._frames:
            return
        flat = [frame for step in self._frames for frame in step]
        answers = self.judge.score(self.task, flat)
        values = np.array([np.nan if a.abstained else a.value for a in answers], dtype=np.float64)
        abstained = int(np.isnan(values).sum())
        if abstained == len(values):
            raise RuntimeError(f"judge '{self.judge.name}' abstained on every frame: {answers[0].abstain_reason}")
        # An abstained frame gets the rollout's mean score (the count is recorded, never hidden).
        values[np.isnan(values)] = np.nanmean(values)
        scores = values.reshape(len(self._frames), -1).astype(np.float32)
        self.queries += len(answers)
        self.abstained += abstained
        self.cost_usd += sum(a.provenance.cost_usd for a in answers)
        self.record.log_score_batch(self.num_timesteps, answers, scores.shape)
        if isinstance(self.model, OffPolicyAlgorithm):
            self.model.replay_buffer.rewards[np.asarray(self._positions)] = scores
        else:
            buffer = self.model.rollout_buffer
            buffer.rewards += scores
            buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])
        self.logger.record("judge/mean_score", float(scores.mean()))
        self.logger.record("judge/queries", self.queries)
        self.logger.record("judge/abstained", self.abstained)
