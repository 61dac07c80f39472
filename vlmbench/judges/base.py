"""The Judge interface: what every judge answers, and the provenance every answer carries.

A judge answers up to three kinds of question about a task:

- score: one reward per frame, higher is better;
- compare: for a pair of clips (one frame or more), the probability that the first is better,
  0.5 for a tie, or an abstention with a reason;
- rate: the index of one of the task's ordered rating classes (0 = worst).

Subclasses set ``answers`` and implement the matching ``_score``/``_compare``/``_rate``. A judge
that answers score also answers compare, from the difference of summed clip scores.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from vlmbench.errors import CapabilityError
from vlmbench.specs.task import TaskSpec


class Question(str, Enum):
    SCORE = "score"
    COMPARE = "compare"
    RATE = "rate"


@dataclass(frozen=True)
class Frame:
    """One observed moment: ``pixels`` for visual judges, ``features`` for oracles.

    ``state`` (a vlmbench.envs.sim_state.SimState) lets datasets re-render the moment later.
    """

    pixels: np.ndarray | None = None
    features: Mapping[str, float] | None = None
    state: object | None = None

    def content_hash(self) -> str:
        """A digest of the pixels (or features), used as a cache key."""
        h = hashlib.sha1()
        if self.pixels is not None:
            h.update(str(self.pixels.shape).encode())
            h.update(np.ascontiguousarray(self.pixels).tobytes())
        else:
            h.update(repr(sorted((self.features or {}).items())).encode())
        return h.hexdigest()


Clip = Sequence[Frame]


@dataclass(frozen=True)
class Provenance:
    """Where an answer came from and what it cost."""

    judge: str
    judge_version: str
    model: str
    prompt_hash: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """A judge's answer. ``value`` is a score, P(first better) or a class index; None if abstained."""

    question: Question
    value: float | int | None
    provenance: Provenance
    abstain_reason: str | None = None
    detail: dict = field(default_factory=dict)

    @property
    def abstained(self) -> bool:
        return self.value is None

    @classmethod
    def from_dict(cls, data: Mapping) -> Answer:
        """The answer ``to_dict`` wrote (a logged answer, reused instead of bought again)."""
        known = Provenance.__dataclass_fields__
        provenance = Provenance(**{k: v for k, v in data["provenance"].items() if k in known})
        return cls(Question(data["question"]), data["value"], provenance, data.get("abstain_reason"),
                   dict(data.get("detail") or {}))

    def to_dict(self) -> dict:
        return {
            "question": self.question.value,
            "value": self.value,
            "abstain_reason": self.abstain_reason,
            "detail": self.detail,
            "provenance": self.provenance.to_dict(),
        }


def prompt_hash(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


# Params that cap a judge's spending: raising one continues an evaluation rather than making another.
BUDGET_PARAMS = frozenset({"budget_calls", "budget_usd"})
COMPARE_TEMPERATURE = ("T of a comparison made from scores: P(first better) = sigmoid((S1 - S2) / T); "
                       "0: hard (0.5 on ties)")


class JudgeParams(BaseModel):
    """Base class of each judge type's validated ``params``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Judge:
    """Base class of all judges. Construct with a name and validated params."""

    answers: ClassVar[frozenset[Question]] = frozenset()
    needs_pixels: ClassVar[bool] = True
    interactive: ClassVar[bool] = False  # a person answers: too slow for a reward at every environment step
    version: ClassVar[str] = "1"
    Params: ClassVar[type[JudgeParams]] = JudgeParams

    def __init__(self, name: str, params: JudgeParams):
        self.name = name
        self.params = params

    # -- what callers use -----------------------------------------------------------------
    def score(self, task: TaskSpec, frames: Sequence[Frame]) -> list[Answer]:
        self._require(Question.SCORE)
        return self._score(task, list(frames)) if frames else []

    def compare(self, task: TaskSpec, pairs: Sequence[tuple[Clip, Clip]]) -> list[Answer]:
        self._require(Question.COMPARE)
        return self._compare(task, list(pairs)) if pairs else []

    def rate(self, task: TaskSpec, clips: Sequence[Clip]) -> list[Answer]:
        self._require(Question.RATE)
        if task.prompts.rating is None:
            raise CapabilityError(f"task '{task.id}' has no prompts.rating, so no judge can rate it")
        return self._rate(task, list(clips)) if clips else []

    def can_answer(self, question: Question) -> bool:
        return question in self.effective_answers()

    def effective_answers(self) -> frozenset[Question]:
        extra = {Question.COMPARE} if Question.SCORE in self.answers else set()
        return frozenset(self.answers | extra)

    def describe_model(self) -> str:
        return type(self).__name__

    def warm_up(self) -> None:
        """Load whatever the judge needs (weights, clients) now, so a run fails before it trains."""

    def note_answered(self, task: TaskSpec, question: Question, items: Sequence) -> None:
        """Questions the caller answered from its own log instead of asking (``items`` as ``score``,
        ``compare`` or ``rate`` take them): a judge that numbers repeated questions counts them as asked."""

    # -- what subclasses implement --------------------------------------------------------
    def _score(self, task: TaskSpec, frames: list[Frame]) -> list[Answer]:
        raise NotImplementedError

    def _rate(self, task: TaskSpec, clips: list[Clip]) -> list[Answer]:
        raise NotImplementedError

    def _compare(self, task: TaskSpec, pairs: list[tuple[Clip, Clip]]) -> list[Answer]:
        """Default for score judges: P(first better) = sigmoid((S1 - S2) / T), S the summed scores.

        T is the judge's ``compare_temperature`` param (0: a hard comparison, 0.5 on exact ties).
        """
        flat = [frame for a, b in pairs for frame in (*a, *b)]
        scores = self._score(task, flat)
        temperature = float(getattr(self.params, "compare_temperature", 0.0))
        out, i = [], 0
        for a, b in pairs:
            block = scores[i : i + len(a) + len(b)]
            i += len(a) + len(b)
            provenance = _merge(block)
            abstained = next((s for s in block if s.abstained), None)
            if abstained is not None:
                out.append(Answer(Question.COMPARE, None, provenance, abstained.abstain_reason))
                continue
            diff = sum(s.value for s in block[: len(a)]) - sum(s.value for s in block[len(a) :])
            if temperature > 0:
                p = 1.0 / (1.0 + math.exp(-max(min(diff / temperature, 700), -700)))
            else:
                p = 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
            out.append(Answer(Question.COMPARE, p, provenance, detail={"score_difference": diff}))
        return out

    def _require(self, question: Question) -> None:
        if not self.can_answer(question):
            can = ", ".join(sorted(q.value for q in self.effective_answers())) or "nothing"
            raise CapabilityError(
                f"judge '{self.name}' ({type(self).__name__}) cannot answer '{question.value}' questions; "
                f"it answers: {can}"
            )


def _merge(answers: Sequence[Answer]) -> Provenance:
    """One provenance for an answer derived from several: costs add up, cached if all were."""
    first = answers[0].provenance
    return replace(
        first,
        input_tokens=sum(a.provenance.input_tokens for a in answers),
        output_tokens=sum(a.provenance.output_tokens for a in answers),
        cost_usd=sum(a.provenance.cost_usd for a in answers),
        seconds=sum(a.provenance.seconds for a in answers),
        cached=all(a.provenance.cached for a in answers),
    )


__all__ = ["Answer", "Clip", "Frame", "Judge", "JudgeParams", "Provenance", "Question", "prompt_hash"]
