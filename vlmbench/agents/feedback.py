"""The feedback loop for compare and rate judges (Christiano et al.; ERL-VLM for ratings).

Segments of recent experience go into a bounded buffer; at scheduled rounds the loop buys labels
from the judge (pairs for compare judges, single segments for rate judges), stores them at once,
retrains the reward-model ensemble on everything bought so far and re-standardises its output.
The agent is trained on the ensemble mean throughout. Pairs are shown in random order (the query
log records it), or, with ``position: swap-tie|swap-drop``, asked in both orders, so that a
judge's first-position bias turns into ties or dropped pairs rather than labels.

Nothing bought is lost or bought twice. A round first writes the items it will ask about
(``rounds/round-NNNN.pending.pkl``); every answer is appended to the run's query log as it
arrives, under a query id; the finished round is written once (``rounds/round-NNNN.pkl``). A
resumed round asks only what the log does not already answer. The rest of the loop's state
(counters, buffer, generator, reward model) is saved with each agent checkpoint, one file
replaced atomically with its previous version kept as a fallback; a round bought after that
checkpoint is taken from its file when the resumed run comes to it again.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from vlmbench.agents.config import FeedbackConfig
from vlmbench.errors import VlmbenchError
from vlmbench.files import atomic_write, previous_of
from vlmbench.judges.base import Answer, Frame, Judge, Question
from vlmbench.learning.preferences import PreferenceDataset, train_on_preferences
from vlmbench.learning.ratings import RatingDataset, train_on_ratings
from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.learning.segments import DisagreementPairSampler, Segment, SegmentBuffer, UniformPairSampler
from vlmbench.results.record import RunRecord
from vlmbench.specs.task import TaskSpec

Mode = Literal["preference", "rating"]
STATE_FILE = "state.pkl"
ASK_CHUNK = 16  # answers are logged after every chunk of this many queries


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
    """The loop's counters; the label counts are recomputed from the round files on resume."""

    rounds_done: int = 0  # rounds whose labels are bought and whose reward-model fit is done
    labels_bought: int = 0
    abstained: int = 0
    cost_usd: float = 0.0
    segments_seen: int = 0
    last_metrics: dict = field(default_factory=dict)


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh)  # noqa: S301 - the run's own checkpoint file


def _strip_frames(item):
    """Items as a round file keeps them: segments with their inputs, without pixels."""
    if isinstance(item, tuple):
        return tuple(replace(s, frames=()) for s in item)
    return replace(item, frames=())


def swap_debiased(as_shown: list[Answer], reversed_: list[Answer], position: str) -> list[float | None]:
    """P(first better) of each pair from its answers in both orders: the mean of the two when they
    prefer the same clip (or both call a tie); otherwise a tie (``swap-tie``) or None (``swap-drop``).
    None also where either answer abstained."""
    labels: list[float | None] = []
    for a, b in zip(as_shown, reversed_, strict=True):
        if a.abstained or b.abstained:
            labels.append(None)
            continue
        p_shown, p_reversed = float(a.value), 1.0 - float(b.value)
        if np.sign(p_shown - 0.5) == np.sign(p_reversed - 0.5):
            labels.append((p_shown + p_reversed) / 2)
        else:
            labels.append(0.5 if position == "swap-tie" else None)
    return labels


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
        self.reused = 0  # answers taken from the query log instead of bought again

    # -- fed by JudgeRewardVecEnv ------------------------------------------------------------
    def add_segment(self, inputs: np.ndarray, frames: tuple[Frame, ...]) -> None:
        self.state.segments_seen += 1
        self.buffer.add(Segment(key=f"s{self.state.segments_seen}", inputs=inputs, frames=frames))

    def wants_segments(self) -> bool:
        """Whether a round is still to come: after the last one, segments are of no use."""
        return self.state.rounds_done < len(self.schedule)

    # -- schedule ----------------------------------------------------------------------------
    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        """At most one round per rollout, so a run shorter than the schedule buys only its share."""
        if (
            self.state.rounds_done < len(self.schedule)
            and self.num_timesteps >= self.schedule[self.state.rounds_done][0]
            and len(self.buffer) >= 2
        ):
            self.run_round()

    @property
    def budget_left(self) -> int:
        return self.config.label_budget - self.state.labels_bought

    @property
    def rounds_dir(self) -> Path:
        return self.save_to / "rounds"

    def _round_file(self, index: int, pending: bool = False) -> Path:
        return self.rounds_dir / f"round-{index:04d}{'.pending' if pending else ''}.pkl"

    def run_round(self) -> None:
        """Buy the round's labels, or take them from the round's file if an earlier session bought
        them (after the checkpoint this run resumed from), then refit the reward model."""
        index = self.state.rounds_done
        if self._round_file(index).exists():
            kept = _load_pickle(self._round_file(index))
            self.rng.bit_generator.state = kept["rng"]
        else:
            kept = self._buy_round(index)
        self._add_labels(kept["items"], [Answer.from_dict(a) for a in kept["answers"]])
        self._train()
        self.state.rounds_done += 1

    def _sample(self, n: int) -> list:
        if self.mode == "preference":
            return self.sampler.sample(self.buffer, n, self.rng)
        segments = self.buffer.segments
        picks = self.rng.choice(len(segments), size=min(n, len(segments)), replace=False)
        return [segments[i] for i in sorted(picks)]

    def _note_answered(self, items: list) -> None:
        if self.mode == "preference":
            self.judge.note_answered(self.task, Question.COMPARE, [(a.frames, b.frames) for a, b in items])
        else:
            self.judge.note_answered(self.task, Question.RATE, [s.frames for s in items])

    def _ask(self, items: list) -> list[Answer]:
        if self.mode == "preference":
            return self.judge.compare(self.task, [(a.frames, b.frames) for a, b in items])
        return self.judge.rate(self.task, [s.frames for s in items])

    def _buy_round(self, index: int) -> dict:
        """Choose the round's items (or take those an interrupted attempt chose), ask the judge what
        the query log does not already answer, logging each chunk of answers as it arrives."""
        pending = self._round_file(index, pending=True)
        if pending.exists():
            saved = _load_pickle(pending)
            items, timesteps = saved["items"], saved["timesteps"]
            self.rng.bit_generator.state = saved["rng"]
        else:
            if self.swapped:  # two labels a pair; an odd label left over goes to the next round
                due = sum(labels for _, labels in self.schedule[: index + 1]) - self.state.labels_bought
                pairs = self._sample(min(due, self.budget_left) // 2)
                items = pairs + [(b, a) for a, b in pairs]
            else:
                wanted = min(self.schedule[index][1], self.budget_left)
                items = self._sample(wanted) if wanted > 0 else []
            timesteps = self.num_timesteps
            atomic_write(pending, lambda tmp: tmp.write_bytes(pickle.dumps(
                {"items": items, "timesteps": timesteps, "rng": self.rng.bit_generator.state})))
        ids = [f"r{index}-q{i}" for i in range(len(items))]
        wanted = set(ids)
        logged = {line["query_id"]: line for line in self.record.queries() if line.get("query_id") in wanted}
        answers: dict[str, Answer] = {q: Answer.from_dict(logged[q]) for q in ids if q in logged}
        self.reused += len(answers)
        if answers:
            self._note_answered([items[i] for i, q in enumerate(ids) if q in answers])
        missing = [i for i, q in enumerate(ids) if q not in answers]
        for start in range(0, len(missing), ASK_CHUNK):
            chunk = missing[start : start + ASK_CHUNK]
            got = self._ask([items[i] for i in chunk])
            lines = []
            for i, answer in zip(chunk, got, strict=True):
                answers[ids[i]] = answer
                keys = [s.key for s in items[i]] if isinstance(items[i], tuple) else [items[i].key]
                lines.append(RunRecord.query_line(ids[i], index, timesteps, keys, answer))
            self.record.log_queries(lines)
        kept = {"items": [_strip_frames(item) for item in items], "answers": [answers[q].to_dict() for q in ids],
                "rng": self.rng.bit_generator.state}
        atomic_write(self._round_file(index), lambda tmp: tmp.write_bytes(pickle.dumps(kept)))
        pending.unlink(missing_ok=True)
        return kept

    @property
    def swapped(self) -> bool:
        """Whether each pair is asked in both orders (its second half of a round's items: the first reversed)."""
        return self.mode == "preference" and self.config.position != "random"

    def _add_labels(self, items: list, answers: list[Answer]) -> None:
        for answer in answers:
            self.state.labels_bought += 1
            self.state.cost_usd += answer.provenance.cost_usd
            self.state.abstained += answer.abstained
        if self.swapped:
            half = len(items) // 2
            for item, label in zip(items[:half], swap_debiased(answers[:half], answers[half:], self.config.position),
                                   strict=True):
                if label is not None:
                    self.dataset.add(item[0], item[1], label)
            return
        for item, answer in zip(items, answers, strict=True):
            if answer.abstained:
                continue
            if self.mode == "preference":
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
            c = self.config
            metrics = train_on_preferences(self.ensemble, self.dataset, mistake_prob=c.mistake_prob,
                                           label_smoothing=c.label_smoothing, contradicted_weight=c.contradicted_weight,
                                           contradicted_confidence=c.contradicted_confidence, **common)
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
    def save(self) -> None:
        """The loop's state in one atomic file (the previous one kept), and labels.npz for reading."""
        state = {"state": self.state, "buffer": self.buffer, "rng": self.rng.bit_generator.state,
                 "reward_model": self.ensemble.state_dict()}
        atomic_write(self.save_to / STATE_FILE, lambda tmp: tmp.write_bytes(pickle.dumps(state)), keep_previous=True)
        atomic_write(self.save_to / "labels.npz", self.dataset.save)

    def load(self) -> list[str]:
        """Restore the saved state (falling back to the previous one if it is damaged) and every label
        of the finished rounds; returns notes on what was repaired."""
        notes = []
        path, fallback = self.save_to / STATE_FILE, previous_of(self.save_to / STATE_FILE)
        saved = None
        if path.exists() or fallback.exists():
            try:
                saved = _load_pickle(path)
            except Exception as exc:  # noqa: BLE001 - any damage: fall back to the previous state
                try:
                    saved = _load_pickle(fallback)
                except Exception:  # noqa: BLE001
                    raise VlmbenchError(f"{path} is damaged ({type(exc).__name__}) and {fallback.name} cannot be "
                                        "read; the bought labels are in rounds/ and queries.jsonl") from None
                notes.append(f"{path} is damaged ({type(exc).__name__}); resumed from the previous state "
                             f"{fallback.name}, keeping every bought label")
        if saved is not None:  # else: killed before the first save; the round files still hold every label
            self.state, self.buffer = saved["state"], saved["buffer"]
            self.rng.bit_generator.state = saved["rng"]
            try:
                self.ensemble.load_state_dict(saved["reward_model"])
            except (RuntimeError, ValueError) as exc:
                raise VlmbenchError(f"{path}: the saved reward model does not fit this run's ensemble: "
                                    f"{str(exc).strip().splitlines()[-1].strip()}") from None
        self.dataset = type(self.dataset)()
        self.state.labels_bought, self.state.abstained, self.state.cost_usd = 0, 0, 0.0
        # The labels of the rounds this state has fitted; later round files (bought after the state
        # was saved) are taken up again when their rounds come due.
        for index in range(self.state.rounds_done):
            kept = _load_pickle(self._round_file(index))
            self._add_labels(kept["items"], [Answer.from_dict(a) for a in kept["answers"]])
        return notes
