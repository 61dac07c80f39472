"""A dataset as the labelling page's source: its states (goal / not goal / skip) and pairs of its
lone states (left / right / neither closer to the goal), for `vlmbench label`.

Everyone sees the states, and the pairs, in the same seeded order; each handle resumes at its
first item without a label. Frames are the dataset's re-rendered states (vlmbench.datasets.render),
served as PNG from the frame cache.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from vlmbench.datasets.format import Dataset, Row
from vlmbench.datasets.render import FRAMES_DIR, cache_folder, frames
from vlmbench.specs.task import TaskSpec
from vlmbench.web.app import Rejected, questions
from vlmbench.web.labels import PAIR_VALUES, STATE_VALUES, DuplicateLabel, LabelStore, agreement

SEED = 0


def state_order(dataset: Dataset, seed: int = SEED) -> list[Row]:
    """Every state of ``dataset`` in a seeded shuffled order (the builder groups them by sampler,
    which would tell the labeller what to expect)."""
    order = np.random.default_rng(seed).permutation(len(dataset.rows))
    return [dataset.rows[i] for i in order]


def draw_pairs(dataset: Dataset, count: int, seed: int = SEED) -> list[tuple[Row, Row]]:
    """``count`` (or as many as there are) distinct pairs of lone states whose progress differs, in
    seeded random order and sides; the first k pairs are the same whatever ``count`` is."""
    lone = dataset.lone()
    candidates = [(i, j) for i in range(len(lone)) for j in range(i + 1, len(lone))
                  if lone[i].progress != lone[j].progress]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    swaps = rng.random(len(candidates)) < 0.5
    pairs = []
    for k in order[:count]:
        i, j = candidates[k]
        pairs.append((lone[j], lone[i]) if swaps[k] else (lone[i], lone[j]))
    return pairs


class DatasetSource:
    """The states and pairs of ``dataset`` (of ``task``), labelled into ``store``; ``handle`` is the
    one the page starts with."""

    def __init__(self, dataset: Dataset, task: TaskSpec, store: LabelStore, *, pairs: int = 50, seed: int = SEED,
                 handle: str | None = None, frames_dir: Path = FRAMES_DIR):
        self.dataset, self.task, self.store, self.handle, self.frames_dir = dataset, task, store, handle, frames_dir
        self.title = f"vlmbench labelling: {dataset.task}"
        self.states = state_order(dataset, seed)
        self.state_ids = {row.state_id: row for row in self.states}
        self.pairs = draw_pairs(dataset, pairs, seed)
        self.render_lock = threading.Lock()

    def info(self) -> dict:
        return {
            "task": self.task.id, "dataset": self.dataset.path.name if self.dataset.path else "",
            "digest": self.dataset.digest, **questions(self.task), "description": self.task.description,
            "handle": self.handle or "", "states": len(self.states), "pairs": len(self.pairs),
            "store": str(self.store.path), "live": False,
        }

    def next(self, kind: str, handle: str) -> dict:
        if kind == "state":
            done = {label.state_id for label in self.store.state_labels(handle)}
            todo = [row for row in self.states if row.state_id not in done]
            item = {"item": todo[0].state_id, "frames": [f"/frames/{todo[0].state_id}.png"]} if todo else None
            total = len(self.states)
        else:
            done = {label.pair for label in self.store.pair_labels(handle)}
            todo_pairs = [k for k in range(len(self.pairs)) if k not in done]
            item = None
            if todo_pairs:
                left, right = self.pairs[todo_pairs[0]]
                item = {"item": str(todo_pairs[0]),
                        "frames": [f"/frames/{left.state_id}.png", f"/frames/{right.state_id}.png"]}
            total = len(self.pairs)
        return {"kind": kind, "handle": handle, "done": len(done), "total": total, "next": item}

    def post(self, kind: str, handle: str, item: str, value: str) -> None:
        if kind == "state":
            if item not in self.state_ids:
                raise Rejected(404, f"no state '{item}' in dataset {self.dataset.task} {self.dataset.digest}")
            if value not in STATE_VALUES:
                raise Rejected(422, f"value '{value}': a state label is one of {', '.join(STATE_VALUES)}")
            try:
                self.store.add_state(item, handle, value)
            except DuplicateLabel:
                raise Rejected(409, f"'{handle}' has labelled state '{item}' already") from None
            return
        if not (item.isdigit() and int(item) < len(self.pairs)):
            raise Rejected(404, f"no pair '{item}': the {len(self.pairs)} pairs are numbered from 0")
        if value not in PAIR_VALUES:
            raise Rejected(422, f"value '{value}': a pair label is one of {', '.join(PAIR_VALUES)}")
        left, right = self.pairs[int(item)]
        try:
            self.store.add_pair(int(item), left.state_id, right.state_id, handle, value)
        except DuplicateLabel:
            raise Rejected(409, f"'{handle}' has labelled pair {item} already") from None

    def image(self, name: str) -> tuple[Path, str]:
        row = self.state_ids.get(name.removesuffix(".png")) if name.endswith(".png") else None
        if row is None:
            raise Rejected(404, f"no state '{name.removesuffix('.png')}' in dataset {self.dataset.task} "
                                f"{self.dataset.digest}")
        with self.render_lock:  # one renderer at a time: the frame is cached after the first request
            frames(self.dataset, self.task, [row], cache=self.frames_dir)
        return cache_folder(self.dataset, self.task, self.frames_dir) / f"{row.state_id}.png", "image/png"

    def agreement(self) -> dict:
        return agreement(self.dataset, self.store)
