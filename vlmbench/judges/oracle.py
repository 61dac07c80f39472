"""Oracle judges: answers computed from the task's own progress and success expressions.

They need no pixels and no model, so every pipeline (reward learning, bias probes, metrics) can
be tested offline against known truth. Noise models, applied in this order to a comparison:

1. position bias: with probability ``first_bias`` answer "first" whatever the content;
2. ties: if the summed progress differs by at most ``tie_threshold``, answer 0.5;
3. Boltzmann rationality: pick the first with probability sigmoid(difference / ``temperature``)
   (temperature 0: always the better one);
4. mistakes: with probability ``mistake_prob`` flip the choice.

Ratings follow the success detector: a clip gets the top class exactly when the goal holds in
every one of its frames; any other clip gets the class its mean progress falls in when [0, 1] is
cut into as many equal bins as there are classes, capped at the class below the top. With
probability ``rating_noise`` the class is replaced by a uniformly random one.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from vlmbench.judges.base import (
    COMPARE_TEMPERATURE, Answer, Clip, Frame, Judge, JudgeParams, Provenance, Question, prompt_hash,
)
from vlmbench.specs.task import TaskSpec


class OracleParams(JudgeParams):
    temperature: float = Field(default=0.0, ge=0, description="Boltzmann temperature on progress differences")
    mistake_prob: float = Field(default=0.0, ge=0, le=1, description="probability of flipping a choice")
    tie_threshold: float = Field(default=0.0, ge=0, description="differences at most this are ties (0.5)")
    first_bias: float = Field(default=0.0, ge=0, le=1, description="probability of answering 'first' blindly")
    rating_noise: float = Field(default=0.0, ge=0, le=1, description="probability of a random rating class")
    seed: int = Field(default=0, description="seeds the noise: temperature draws, mistakes, bias, rating noise")
    compare_temperature: float = Field(default=0.0, ge=0, description=COMPARE_TEMPERATURE)


class OracleJudge(Judge):
    """Scores by progress, compares and rates from progress, with configurable noise."""

    answers = frozenset({Question.SCORE, Question.COMPARE, Question.RATE})
    needs_pixels = False
    version = "2"
    Params = OracleParams

    def __init__(self, name: str, params: OracleParams):
        super().__init__(name, params)
        self.rng = np.random.default_rng(params.seed)

    def describe_model(self) -> str:
        return "oracle"

    def _provenance(self, task: TaskSpec) -> Provenance:
        return Provenance(self.name, self.version, "oracle", prompt_hash(task.progress, task.success))

    @staticmethod
    def _features(frame: Frame) -> dict[str, float]:
        if frame.features is None:
            raise ValueError("the oracle judge needs frames with features")
        return dict(frame.features)

    def _progress(self, task: TaskSpec, frame: Frame) -> float:
        return task.progress_of(self._features(frame))

    def _score(self, task: TaskSpec, frames: list[Frame]) -> list[Answer]:
        provenance = self._provenance(task)
        return [Answer(Question.SCORE, self._progress(task, f), provenance) for f in frames]

    def _compare(self, task: TaskSpec, pairs: list[tuple[Clip, Clip]]) -> list[Answer]:
        p = self.params
        provenance = self._provenance(task)
        out = []
        for a, b in pairs:
            diff = sum(self._progress(task, f) for f in a) - sum(self._progress(task, f) for f in b)
            detail = {"progress_difference": diff}
            if self.rng.random() < p.first_bias:
                out.append(Answer(Question.COMPARE, 1.0, provenance, detail={**detail, "biased": True}))
                continue
            if abs(diff) <= p.tie_threshold:
                out.append(Answer(Question.COMPARE, 0.5, provenance, detail=detail))
                continue
            if p.temperature > 0:
                prob_first = 1.0 / (1.0 + math.exp(-max(min(diff / p.temperature, 700), -700)))
                first = self.rng.random() < prob_first
            else:
                first = diff > 0
            if self.rng.random() < p.mistake_prob:
                first = not first
            out.append(Answer(Question.COMPARE, 1.0 if first else 0.0, provenance, detail=detail))
        return out

    def _rate(self, task: TaskSpec, clips: list[Clip]) -> list[Answer]:
        k = len(task.prompts.rating.classes)
        provenance = self._provenance(task)
        out = []
        for clip in clips:
            progress = float(np.mean([self._progress(task, f) for f in clip]))
            goal_held = all(task.is_success(self._features(f)) for f in clip)
            label = k - 1 if goal_held else min(int(np.clip(progress, 0.0, 1.0) * k), k - 2)
            if self.rng.random() < self.params.rating_noise:
                label = int(self.rng.integers(k))
            out.append(Answer(Question.RATE, label, provenance, detail={"progress": progress, "goal_held": goal_held}))
        return out
