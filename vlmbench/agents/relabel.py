"""Judge-derived rewards written over a whole rollout at its end, in one batched call.

The environment reward SB3 sees is zero (``JudgeRewardVecEnv``). When a rollout ends, its steps
are rewarded together and written into SB3's rollout or replay buffer: on-policy buffers hold only
SB3's time-limit bootstrap terms, to which the rewards are added before returns and advantages are
recomputed; off-policy buffers get the rewards at the positions the steps were stored in.

- ``ScoreRelabelCallback``: a score judge (CLIP, yes-probability) scores the rollout's frames, as
  VLM-RM does.
- ``LearnedRewardCallback``: the reward model scores the rollout's reward-model inputs; one
  batched pass per rollout instead of one per step. Placed before the feedback loop's callback,
  so a rollout is rewarded by the model it was collected under. Off-policy, the whole replay
  buffer is rewarded again after each refit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from vlmbench.judges.base import Frame, Judge
from vlmbench.learning import RewardEnsemble
from vlmbench.results.record import RunRecord
from vlmbench.specs.task import TaskSpec


class RolloutRelabelCallback(BaseCallback):
    """Collects ``_step_items(infos)`` at every step; at the rollout's end writes ``_rewards(items)``,
    (steps, envs) float32, into the algorithm's buffer."""

    def __init__(self) -> None:
        super().__init__()
        self._steps: list = []
        self._positions: list[int] = []

    def _step_items(self, infos: list[dict]):
        raise NotImplementedError

    def _rewards(self, steps: list) -> np.ndarray:
        raise NotImplementedError

    def _on_rollout_start(self) -> None:
        self._steps, self._positions = [], []

    def _on_step(self) -> bool:
        self._steps.append(self._step_items(self.locals["infos"]))
        if isinstance(self.model, OffPolicyAlgorithm):
            self._positions.append(self.model.replay_buffer.pos)  # where this step is about to be stored
        return True

    def _on_rollout_end(self) -> None:
        if not self._steps:
            return
        rewards = self._rewards(self._steps)
        if isinstance(self.model, OffPolicyAlgorithm):
            self.model.replay_buffer.rewards[np.asarray(self._positions)] = rewards
        else:
            buffer = self.model.rollout_buffer
            buffer.rewards += rewards
            buffer.compute_returns_and_advantage(last_values=self.locals["values"], dones=self.locals["dones"])


class LearnedRewardCallback(RolloutRelabelCallback):
    """Rewards from the reward model's ``predict`` on each step's ``info['reward_inputs']``.

    Off-policy, each step's inputs are also kept beside the replay buffer (its ``reward_inputs``
    array, saved and loaded with it), and once ``refits()`` changes, every stored transition is
    rewarded again by the refitted model: a replay buffer otherwise keeps training the agent on
    the rewards of models the feedback rounds have since replaced. The first rollout after a
    resume relabels the loaded buffer the same way.
    """

    RELABEL_ROWS = 65_536  # rows of the replay buffer predicted at once

    def __init__(self, ensemble: RewardEnsemble, refits: Callable[[], int] = lambda: 0):
        super().__init__()
        self.ensemble, self.refits = ensemble, refits
        self._relabelled_for: int | None = None  # the refits() count the stored rewards belong to

    def _step_items(self, infos: list[dict]) -> np.ndarray:
        return np.stack([info["reward_inputs"] for info in infos])

    def _rewards(self, steps: list[np.ndarray]) -> np.ndarray:
        rewards = self.ensemble.predict(np.stack(steps))
        self.logger.record("reward_model/mean_reward", float(rewards.mean()))
        return rewards

    def _on_rollout_end(self) -> None:
        if not (self._steps and isinstance(self.model, OffPolicyAlgorithm)):
            super()._on_rollout_end()
            return
        replay = self.model.replay_buffer
        if getattr(replay, "reward_inputs", None) is None:  # rows stored before (an older checkpoint) stay as they are
            replay.reward_inputs = np.zeros((replay.buffer_size, *self._steps[0].shape), np.float32)
            replay.reward_inputs_kept = np.zeros(replay.buffer_size, bool)
        replay.reward_inputs[self._positions] = np.stack(self._steps)
        replay.reward_inputs_kept[self._positions] = True
        refits = self.refits()
        if refits == self._relabelled_for:  # the same model: this rollout's rows only
            rows = np.asarray(self._positions)
        else:
            self._relabelled_for = refits
            rows = np.flatnonzero(replay.reward_inputs_kept)
            self.logger.record("reward_model/relabelled_transitions", len(rows) * replay.n_envs)
        chunk = max(1, self.RELABEL_ROWS // replay.n_envs)
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            replay.rewards[part] = self.ensemble.predict(replay.reward_inputs[part])
        self.logger.record("reward_model/mean_reward", float(replay.rewards[self._positions].mean()))


class ScoreRelabelCallback(RolloutRelabelCallback):
    """Rewards from a score judge on each step's frame; an abstained frame gets the rollout's mean
    score (the count is recorded, never hidden)."""

    def __init__(self, task: TaskSpec, judge: Judge, record: RunRecord):
        super().__init__()
        self.task, self.judge, self.record = task, judge, record
        self.queries = 0
        self.abstained = 0
        self.cost_usd = 0.0

    def restore_counts(self) -> None:
        """Resume the counters from the record: every frame scored so far was paid for."""
        for line in self.record.score_batches():
            self.queries += line["frames"]
            self.abstained += line["abstained"]
            self.cost_usd += line["cost_usd"]

    def _step_items(self, infos: list[dict]) -> list[Frame]:
        return [Frame(info.get("frame"), info["features"]) for info in infos]

    def _rewards(self, steps: list[list[Frame]]) -> np.ndarray:
        flat = [frame for step in steps for frame in step]
        answers = self.judge.score(self.task, flat)
        values = np.array([np.nan if a.abstained else a.value for a in answers], dtype=np.float64)
        abstained = int(np.isnan(values).sum())
        if abstained == len(values):
            raise RuntimeError(f"judge '{self.judge.name}' abstained on every frame: {answers[0].abstain_reason}")
        values[np.isnan(values)] = np.nanmean(values)
        scores = values.reshape(len(steps), -1).astype(np.float32)
        self.queries += len(answers)
        self.abstained += abstained
        self.cost_usd += sum(a.provenance.cost_usd for a in answers)
        self.record.log_score_batch(self.num_timesteps, answers, scores.shape)
        self.logger.record("judge/mean_score", float(scores.mean()))
        self.logger.record("judge/queries", self.queries)
        self.logger.record("judge/abstained", self.abstained)
        return scores
