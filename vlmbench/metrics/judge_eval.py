"""Score a judge against a labelled-state dataset: every metric of `vlmbench eval`, from the judge's answers.

- A score judge's reward per state is the reward; trajectories give its value order.
- A compare judge answers pairs of states ordered by the task's progress (pairwise accuracy, accuracy
  by position) and the bias probes (identical pairs, swapped pairs, repeated queries); a reward model
  trained on its answers over a training split (the learner `vlmbench run` uses) gives the reward.
- A rate judge rates the training split's states; a reward model trained on those ratings gives the reward.

The reward, on held-out states (every state for score judges), is scored by EPIC distance to the goal
labels, goal ROC-AUC, Spearman correlation with progress and value-order correlation. Every judge call
goes through ``AnswerLog``: an answer it already holds is reused, never bought again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vlmbench.datasets.format import Dataset, Row
from vlmbench.judges.base import Answer, Frame, Judge, Question
from vlmbench.learning.preferences import PreferenceDataset, train_on_preferences
from vlmbench.learning.ratings import RatingDataset, train_on_ratings
from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.learning.segments import Segment
from vlmbench.metrics.bias_probes import (accuracy_by_position, flag_position_bias, identical_pair_bias,
                                          repetition_stability, swapped_pairs)
from vlmbench.metrics.bootstrap import Metric
from vlmbench.metrics.epic import epic_goal_distance
from vlmbench.metrics.judge_quality import pairwise_accuracy, progress_spearman, roc_auc, value_order_correlation
from vlmbench.specs.task import TaskSpec

PROBES = ("identical", "swap", "repeat")
ASK_CHUNK = 32


class AnswerLog(Protocol):
    """Where answers are kept: ``known`` maps query ids to answers already bought; ``add`` keeps new ones."""

    def known(self) -> dict[str, Answer]: ...

    def add(self, lines: list[dict]) -> None: ...


@dataclass
class EvalSettings:
    pairs: int = 200  # accuracy pairs (compare judges), drawn from the training split
    identical_pairs: int = 50
    repeats: int = 3  # times each of ``identical_pairs`` accuracy pairs is asked (repetition stability)
    probes: tuple[str, ...] = PROBES
    train_fraction: float = 0.5  # compare and rate judges: states whose answers train the reward model
    epochs: int = 100
    seed: int = 0


@dataclass
class EvalResult:
    metrics: dict[str, Metric]
    states: list[dict]  # state_id, label, progress, reward: the lines EPIC is computed on
    position_bias: dict | None
    calls: int = 0  # answers bought in this session
    reused: int = 0  # answers taken from the log
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0  # answers bought in this session that the judge took from its own cache
    abstained: Counter = field(default_factory=Counter)  # by reason
    trajectories: list[dict] = field(default_factory=list)  # per trajectory: its rewards, for plots


class JudgeEvaluation:
    """One evaluation: the judge's answers (through the log), then every metric they allow."""

    def __init__(self, task: TaskSpec, judge: Judge, dataset: Dataset, log: AnswerLog,
                 frames: Callable[[Sequence[Row]], list[np.ndarray]] | None, settings: EvalSettings,
                 progress: Callable[[int], None] | None = None):
        self.task, self.judge, self.dataset, self.log, self.settings = task, judge, dataset, log, settings
        self.frames_of = frames if judge.needs_pixels else None
        self.progress = progress
        self.rng = np.random.default_rng(settings.seed)
        self.known = log.known()
        self.result = EvalResult({}, [], None)
        self._frames: dict[str, Frame] = {}

    # -- asking, through the log ---------------------------------------------------------------------
    def frame(self, row: Row) -> Frame:
        return self._frames[row.state_id]

    def _load_frames(self, rows: Sequence[Row]) -> None:
        missing = [r for r in rows if r.state_id not in self._frames]
        pixels = self.frames_of(missing) if self.frames_of is not None and missing else [None] * len(missing)
        for row, image in zip(missing, pixels, strict=True):
            self._frames[row.state_id] = Frame(image, row.features, row.state)

    def ask(self, question: Question, queries: list[tuple[str, tuple[Row, ...]]]) -> list[Answer]:
        """Answers to ``queries`` (id, rows): from the log where it has them, else from the judge in chunks,
        each chunk logged as soon as it is answered."""
        self._load_frames([r for _, rows in queries for r in rows])
        out = {qid: self.known[qid] for qid, _ in queries if qid in self.known}
        self.result.reused += len(out)
        if out:
            self.judge.note_answered(self.task, question, self._items(question, [q for q in queries if q[0] in out]))
        todo = [(qid, rows) for qid, rows in queries if qid not in out]
        for start in range(0, len(todo), ASK_CHUNK):
            chunk = todo[start : start + ASK_CHUNK]
            items = self._items(question, chunk)
            if question is Question.SCORE:
                got = self.judge.score(self.task, items)
            elif question is Question.COMPARE:
                got = self.judge.compare(self.task, items)
            else:
                got = self.judge.rate(self.task, items)
            self.log.add([{"query_id": qid, "states": [r.state_id for r in rows], **answer.to_dict()}
                          for (qid, rows), answer in zip(chunk, got, strict=True)])
            for (qid, _), answer in zip(chunk, got, strict=True):
                out[qid] = answer
                self.result.calls += 1
                self.result.cost_usd += answer.provenance.cost_usd
                self.result.input_tokens += answer.provenance.input_tokens
                self.result.output_tokens += answer.provenance.output_tokens
                self.result.cache_hits += answer.provenance.cached
            if self.progress is not None:
                self.progress(len(chunk))
        answers = [out[qid] for qid, _ in queries]
        for answer in answers:
            if answer.abstained:
                self.result.abstained[answer.abstain_reason or "no reason given"] += 1
        return answers

    def _items(self, question: Question, queries: list[tuple[str, tuple[Row, ...]]]) -> list:
        """The judge's inputs for ``queries``: frames to score, pairs of one-frame clips, or clips to rate."""
        if question is Question.SCORE:
            return [self.frame(rows[0]) for _, rows in queries]
        if question is Question.COMPARE:
            return [([self.frame(a)], [self.frame(b)]) for _, (a, b) in queries]
        return [[self.frame(rows[0])] for _, rows in queries]

    def planned_queries(self) -> int:
        """How many answers this evaluation needs (for a progress bar)."""
        s, n = self.settings, len(self.dataset.rows)
        planned = n if self.judge.can_answer(Question.SCORE) else 0
        if self.judge.can_answer(Question.COMPARE):
            extra = {"identical": s.identical_pairs, "swap": s.pairs,
                     "repeat": min(s.identical_pairs, s.pairs) * (s.repeats - 1)}
            planned += s.pairs + sum(extra[p] for p in s.probes if p in extra)
        elif not planned:
            planned = int(round(len(self.dataset.lone()) * s.train_fraction))
        return planned

    # -- the evaluation ----------------------------------------------------------------------------------
    def run(self) -> EvalResult:
        """The reward from the judge's scores, else from a reward model trained on its comparisons, else on
        its ratings; and pairwise accuracy and bias probes for every judge that compares."""
        scores = self.judge.can_answer(Question.SCORE)
        train, held_out = self._split()
        if scores:
            self._score_judge()
        if self.judge.can_answer(Question.COMPARE):
            self._compare_judge(train, held_out, learn=not scores)
        elif not scores and self.judge.can_answer(Question.RATE):
            self._rate_judge(train, held_out)
        return self.result

    def _score_judge(self) -> None:
        rows = self.dataset.rows
        answers = self.ask(Question.SCORE, [(f"score-{r.state_id}", (r,)) for r in rows])
        reward = {r.state_id: a.value for r, a in zip(rows, answers, strict=True) if not a.abstained}
        self._reward_metrics([r for r in self.dataset.lone() if r.state_id in reward], reward)

    def _split(self) -> tuple[list[Row], list[Row]]:
        lone = list(self.dataset.lone())
        order = self.rng.permutation(len(lone))
        cut = int(round(len(lone) * self.settings.train_fraction))
        return [lone[i] for i in order[:cut]], [lone[i] for i in order[cut:]]

    def _compare_judge(self, train: list[Row], held_out: list[Row], *, learn: bool) -> None:
        s, m = self.settings, self.result.metrics
        pairs = self._pairs(train, s.pairs)
        forward = self.ask(Question.COMPARE, [(f"pair-{i}", pair) for i, pair in enumerate(pairs)])
        values = [a.value for a in forward]
        delta = np.array([a.progress - b.progress for a, b in pairs])
        accuracy = pairwise_accuracy(values, delta, rng=self.rng)
        m.update({x.name: x for x in (accuracy.accuracy, accuracy.tie_rate, accuracy.abstain_rate)})
        by_position = accuracy_by_position(values, delta, rng=self.rng)
        m.update({f"accuracy_{k}": getattr(by_position, k) for k in ("better_first", "better_second", "gap")})
        identical = swap = None
        if "identical" in s.probes:
            picks = self.rng.choice(len(train), size=min(s.identical_pairs, len(train)), replace=False)
            same = self.ask(Question.COMPARE, [(f"identical-{i}", (train[i], train[i])) for i in picks])
            identical = m["identical_pair_bias"] = identical_pair_bias([a.value for a in same], rng=self.rng)
        if "swap" in s.probes:
            backward = self.ask(Question.COMPARE, [(f"swap-{i}", (b, a)) for i, (a, b) in enumerate(pairs)])
            swap = swapped_pairs(values, [a.value for a in backward], rng=self.rng)
            m.update({x.name: x for x in (swap.consistency, swap.conflict_rate, swap.preference_fairness)})
        if "repeat" in s.probes and s.repeats > 1:
            k = min(s.identical_pairs, len(pairs))
            repeats = [[values[i]] for i in range(k)]
            for r in range(1, s.repeats):  # each repeat is a new query id: asked again, never reused
                again = self.ask(Question.COMPARE, [(f"repeat{r}-{i}", pairs[i]) for i in range(k)])
                for i, answer in enumerate(again):
                    repeats[i].append(answer.value)
            m["repetition_stability"] = repetition_stability(repeats, rng=self.rng)
        verdict = flag_position_bias(identical=identical, swap=swap, by_position=by_position)
        self.result.position_bias = {"biased": verdict.biased, "reasons": list(verdict.reasons),
                                     "checked": list(verdict.checked)}
        if not learn:
            return
        labelled = PreferenceDataset()
        for (a, b), answer in zip(pairs, forward, strict=True):
            if not answer.abstained:
                labelled.add(self._segment(a), self._segment(b), float(answer.value))
        self._learned_reward(held_out, labelled, train_on_preferences, {})

    def _rate_judge(self, train: list[Row], held_out: list[Row]) -> None:
        if self.task.prompts.rating is None:
            return
        answers = self.ask(Question.RATE, [(f"rate-{r.state_id}", (r,)) for r in train])
        labelled = RatingDataset()
        for row, answer in zip(train, answers, strict=True):
            if not answer.abstained:
                labelled.add(self._segment(row), int(answer.value))
        self._learned_reward(held_out, labelled, train_on_ratings,
                             {"n_classes": len(self.task.prompts.rating.classes)})

    # -- rewards and their metrics --------------------------------------------------------------------------
    def _pairs(self, rows: list[Row], n: int) -> list[tuple[Row, Row]]:
        """Up to ``n`` distinct pairs of states whose progress differs, each in random order."""
        pairs, seen, tries = [], set(), 0
        while len(pairs) < n and tries < 20 * n and len(rows) > 1:
            tries += 1
            i, j = (int(x) for x in self.rng.choice(len(rows), size=2, replace=False))
            if (min(i, j), max(i, j)) in seen or rows[i].progress == rows[j].progress:
                continue
            seen.add((min(i, j), max(i, j)))
            pairs.append((rows[i], rows[j]))
        return pairs

    @staticmethod
    def _segment(row: Row) -> Segment:
        return Segment(row.state_id, np.asarray(row.state.observation, dtype=np.float32).reshape(1, -1))

    def _learned_reward(self, held_out: list[Row], labelled, trainer, extra: dict) -> None:
        if len(labelled) == 0 or not held_out:
            self._reward_metrics([], {})
            return
        inputs = lambda rows: np.stack([self._segment(r).inputs[0] for r in rows])  # noqa: E731
        ensemble = RewardEnsemble(inputs(held_out[:1]).shape[1], seed=self.settings.seed)
        trainer(ensemble, labelled, epochs=self.settings.epochs, batch_size=32,
                rng=np.random.default_rng(self.settings.seed), **extra)
        ensemble.fit_normalisation(inputs(self.dataset.rows))
        trajectory_rows = [r for r in self.dataset.rows if r.trajectory is not None]
        scored = held_out + trajectory_rows
        reward = dict(zip((r.state_id for r in scored), ensemble.predict(inputs(scored)).tolist(), strict=True))
        self._reward_metrics(held_out, reward)

    def _reward_metrics(self, rows: list[Row], reward: dict[str, float]) -> None:
        m = self.result.metrics
        r = np.array([reward[row.state_id] for row in rows], dtype=float)
        goal = np.array([row.label == 1 for row in rows], dtype=bool)
        progress = np.array([row.progress for row in rows], dtype=float)
        m["epic_goal_distance"] = epic_goal_distance(r, goal, rng=self.rng)
        m["goal_roc_auc"] = roc_auc(r, goal, rng=self.rng)
        m["progress_spearman"] = progress_spearman(r, progress, rng=self.rng)
        curves = []
        for tid, states in self.dataset.trajectories().items():
            if all(s.state_id in reward for s in states):
                curves.append({"trajectory": tid, "rewards": [reward[s.state_id] for s in states],
                               "progress": [s.progress for s in states]})
        m["value_order_correlation"] = value_order_correlation([np.array(c["rewards"]) for c in curves], rng=self.rng)
        self.result.trajectories = curves
        self.result.states = [{"state_id": row.state_id, "label": row.label, "progress": row.progress,
                               "reward": reward[row.state_id]} for row in rows]
