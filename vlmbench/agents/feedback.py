"""The feedback loop for compare and rate judges (Christiano et al.; ERL-VLM for ratings).

Segments of recent experience go into a bounded buffer; at scheduled rounds the loop buys labels
from the judge (pairs for compare judges, single segments for rate judges), stores them at once,
retrains the reward-model ensemble on everything bought so far and re-standardises its output.
The agent is trained on the ensemble mean throughout.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from vlmbench.agents.config import FeedbackConfig
from vlmbench.judges.base import Frame, Judge
from vlmbench.learning.preferences import PreferenceDataset, train_on_preferences
from vlmbench.learning.ratings import RatingDataset, train_on_ratings
from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.learning.segments import DisagreementPairSampler, Segment, SegmentBuffer, UniformPairSampler
from vlmbench.results.record import RunRecord
from vlmbench.specs.task import TaskSpec

Mode = Literal["preference", "rating"]


def labels_per_round(config: FeedbackConfig) -> list[int]:
    """The label schedule: ``initial_fraction`` of the budget first, the rest spread evenly."""
    first = max(1, round(config.label_budget * config.initial_fraction)) if config.rounds > 1 else config.label_budget
    rest = config.label_budget - first
    later = [rest // (config.rounds - 1) + (1 if i < rest % (config.rounds - 1) else 0) for i in range(config.rounds - 1)]
    return [first, *later]


def round_timesteps(config: FeedbackConfig, total: int) -> list[int]:
    """Timestep at which each round becomes due (round one: as soon as segments exist)."""
    span = config.until_fraction * total
    return [0] + [int(span * i / (config.rounds - 1)) for i in range(1, config.rounds)] if config.rounds > 1 else [0]


@dataclass
class FeedbackState:
    """What the loop must keep across a restart: counts, the buffer and every label bought."""

    rounds_done: int = 0
    labels_bought: int = 0
    abstained: int = 0
    cost_usd: float = 0.0
    segments_seen: int = 0
    round_bought: bool = False  # this round's labels are bought (and saved); the fit may not be done
    last_metrics: dict = field(default_factory=dict)


class FeedbackLoop(BaseCallback):
    def __init__(
        self,
        *,
        task: TaskSpec,
        judge: Judge,
        mode: Mode,
        ensemble: RewardEnsemble,
        config: FeedbackConfig,
        total_timesteps: int,
        seed: int,
        record: RunRecord,
        save_to: Path,
    ):
        super().__init__()
        self.task, self.judge, self.mode, self.ensemble, self.config = task, judge, mode, ensemble, config
        self.record, self.save_to = record, save_to
        self.rng = np.random.default_rng(seed)
        self.state = FeedbackState()
        self.buffer = SegmentBuffer(config.buffer_capacity)
        self.dataset = PreferenceDataset() if mode == "preference" else RatingDataset()
        self.schedule = list(zip(round_timesteps(config, total_timesteps), labels_per_round(config)))
        self.sampler = (
            DisagreementPairSampler(ensemble) if config.sampler == "disagreement" else UniformPairSampler()
        )
        self.n_classes = len(task.prompts.rating.classes) if mode == "rating" else 0

    # -- fed by JudgeRewardVecEnv ------------------------------------------------------------
    def add_segment(self, inputs: np.ndarray, frames: tuple[Frame, ...]) -> None:
        self.state.segments_seen += 1
        self.buffer.add(Segment(key=f"s{self.state.segments_seen}", inputs=inputs.astype(np.float32), frames=frames))

    # -- schedule ----------------------------------------------------------------------------
    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        while (
            self.state.rounds_done < len(self.schedule)
            and self.num_timesteps >= self.schedule[self.state.rounds_done][0]
            and len(self.buffer) >= 2
        ):
            self.run_round()

    @property
    def budget_left(self) -> int:
        return self.config.label_budget - self.state.labels_bought

    def run_round(self) -> None:
        """Buy the round's labels and save them, then refit: an interruption never re-buys labels."""
        if not self.state.round_bought:
            wanted = min(self.schedule[self.state.rounds_done][1], self.budget_left)
            if wanted > 0:
                self._buy_labels(wanted)
            self.state.round_bought = True
            self.save(self.save_to)
        self._train()
        self.state.rounds_done += 1
        self.state.round_bought = False
        self.save(self.save_to)

    def _buy_labels(self, n: int) -> None:
        if self.mode == "preference":
            items = self.sampler.sample(self.buffer, n, self.rng)
            answers = self.judge.compare(self.task, [(a.frames, b.frames) for a, b in items])
        else:
            segments = self.buffer.segments
            picks = self.rng.choice(len(segments), size=min(n, len(segments)), replace=False)
            items = [segments[i] for i in sorted(picks)]
            answers = self.judge.rate(self.task, [s.frames for s in items])
        for item, answer in zip(items, answers):
            self.state.labels_bought += 1
            self.state.cost_usd += answer.provenance.cost_usd
            keys = [s.key for s in item] if isinstance(item, tuple) else [item.key]
            self.record.log_query(self.state.rounds_done, self.num_timesteps, keys, answer)
            if answer.abstained:
                self.state.abstained += 1
            elif self.mode == "preference":
                self.dataset.add(item[0], item[1], float(answer.value))
            else:
                self.dataset.add(item, int(answer.value))

    def _train(self) -> None:
        if len(self.dataset) == 0:
            return
        seed = int(self.rng.integers(2**31 - 1))
        common = dict(epochs=self.config.epochs, batch_size=self.config.batch_size, lr=self.config.lr,
                      rng=np.random.default_rng(seed))
        if self.mode == "preference":
            metrics = train_on_preferences(self.ensemble, self.dataset, **common)
        else:
            metrics = train_on_ratings(self.ensemble, self.dataset, n_classes=self.n_classes,
                                       loss=self.config.rating_loss, weighted=self.config.rating_weighted, **common)
        self.ensemble.fit_normalisation(np.concatenate([s.inputs for s in self.buffer.segments]))
        self.state.last_metrics = {k: float(v) for k, v in metrics.items()}
        for key, value in self.state.last_metrics.items():
            self.logger.record(f"reward_model/{key}", value)
        self.logger.record("judge/labels", self.state.labels_bought)
        self.logger.record("judge/abstained", self.state.abstained)

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.ensemble.state_dict(), folder / "reward_model.pt")
        self.dataset.save(folder / "labels.npz")
        with open(folder / "feedback.pkl", "wb") as fh:
            pickle.dump({"state": self.state, "buffer": self.buffer, "rng": self.rng.bit_generator.state}, fh)

    def load(self, folder: Path) -> None:
        self.ensemble.load_state_dict(torch.load(folder / "reward_model.pt", weights_only=True))
        self.dataset = type(self.dataset).load(folder / "labels.npz")
        with open(folder / "feedback.pkl", "rb") as fh:
            saved = pickle.load(fh)  # noqa: S301 - our own checkpoint file
        self.state, self.buffer = saved["state"], saved["buffer"]
        self.rng.bit_generator.state = saved["rng"]
