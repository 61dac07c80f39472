"""People's labels of a dataset's states and state pairs, in one SQLite file per dataset.

The file is ``<root>/<task>-<digest>.sqlite`` (``digest``: the dataset file's, so a rebuilt
dataset starts a new file) in WAL mode, so the page can read while it writes. Each label has
the labeller's handle and a UTC timestamp; a handle labels an item once.

State values: ``goal``, ``not-goal`` or ``skip`` (seen, but the person could not tell).
Pair values: ``left``, ``right`` or ``neither`` (which of the two is closer to the goal).
"""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from vlmbench.datasets.format import Dataset, now, save_dataset
from vlmbench.errors import VlmbenchError
from vlmbench.files import sqlite_connect, sqlite_create

LABELS_DIR = Path("results/labels")
STATE_VALUES = ("goal", "not-goal", "skip")
PAIR_VALUES = ("left", "right", "neither")
GOAL_OF = {"goal": 1, "not-goal": 0}  # state values that are labels (a skip is none)
HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
DETECTOR = "detector"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dataset (task TEXT NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state_labels (
    state_id TEXT NOT NULL, handle TEXT NOT NULL, value TEXT NOT NULL, created TEXT NOT NULL,
    PRIMARY KEY (state_id, handle));
CREATE TABLE IF NOT EXISTS pair_labels (
    pair INTEGER NOT NULL, left_id TEXT NOT NULL, right_id TEXT NOT NULL, handle TEXT NOT NULL,
    value TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (pair, handle));
"""


class DuplicateLabel(Exception):
    """The handle has labelled this item already."""


def check_handle(handle: str) -> str:
    """``handle`` if it is a usable labeller name, else a VlmbenchError saying what one looks like."""
    if not HANDLE.fullmatch(handle) or handle == DETECTOR:
        raise VlmbenchError(f"handle '{handle}': use 1 to 40 letters, digits, '.', '_' or '-' (starting with a "
                            f"letter or digit), other than '{DETECTOR}'")
    return handle


def store_path(dataset: Dataset, root: Path = LABELS_DIR) -> Path:
    return root / f"{dataset.task}-{dataset.digest}.sqlite"


@dataclass(frozen=True)
class StateLabel:
    state_id: str
    handle: str
    value: str
    created: str


@dataclass(frozen=True)
class PairLabel:
    pair: int
    left_id: str
    right_id: str
    handle: str
    value: str
    created: str


class LabelStore:
    """The label file of one dataset; one connection per call, so any thread may use it."""

    def __init__(self, path: Path, dataset: Dataset):
        self.path = Path(path)
        db = sqlite_create(self.path, _SCHEMA)
        try:
            known = db.execute("SELECT task, digest FROM dataset").fetchone()
            if known is None:
                db.execute("INSERT INTO dataset VALUES (?, ?)", (dataset.task, dataset.digest))
            elif tuple(known) != (dataset.task, dataset.digest):
                raise VlmbenchError(f"{self.path}: holds labels of dataset {known[0]} {known[1]}, not of "
                                    f"{dataset.path} ({dataset.task} {dataset.digest})")
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite_connect(self.path)

    def add_state(self, state_id: str, handle: str, value: str) -> StateLabel:
        """Store one state label (the caller has checked the id and value); DuplicateLabel if present."""
        label = StateLabel(state_id, handle, value, now())
        self._insert("INSERT INTO state_labels VALUES (?, ?, ?, ?)",
                     (label.state_id, label.handle, label.value, label.created))
        return label

    def add_pair(self, pair: int, left_id: str, right_id: str, handle: str, value: str) -> PairLabel:
        """Store one pair label (the caller has checked the pair and value); DuplicateLabel if present."""
        label = PairLabel(pair, left_id, right_id, handle, value, now())
        self._insert("INSERT INTO pair_labels VALUES (?, ?, ?, ?, ?, ?)",
                     (label.pair, label.left_id, label.right_id, label.handle, label.value, label.created))
        return label

    def _insert(self, sql: str, values: tuple) -> None:
        db = self._connect()
        try:
            db.execute(sql, values)
        except sqlite3.IntegrityError:
            raise DuplicateLabel() from None
        finally:
            db.close()

    def state_labels(self, handle: str | None = None) -> list[StateLabel]:
        """State labels in the order given, of one handle or of all."""
        where, args = ("WHERE handle = ?", (handle,)) if handle is not None else ("", ())
        db = self._connect()
        try:
            rows = db.execute(f"SELECT * FROM state_labels {where} ORDER BY created, rowid", args).fetchall()
        finally:
            db.close()
        return [StateLabel(*row) for row in rows]

    def pair_labels(self, handle: str | None = None) -> list[PairLabel]:
        """Pair labels in the order given, of one handle or of all."""
        where, args = ("WHERE handle = ?", (handle,)) if handle is not None else ("", ())
        db = self._connect()
        try:
            rows = db.execute(f"SELECT * FROM pair_labels {where} ORDER BY created, rowid", args).fetchall()
        finally:
            db.close()
        return [PairLabel(*row) for row in rows]


def cohen_kappa(a: list[int], b: list[int]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items (in the same order); None where it is
    undefined (no items, or both raters gave one and the same label throughout)."""
    if len(a) != len(b):
        raise ValueError("two raters' labels of the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    counts_a, counts_b = Counter(a), Counter(b)
    expected = sum(counts_a[k] * counts_b[k] for k in counts_a) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def agreement(dataset: Dataset, store: LabelStore) -> dict:
    """Cohen's kappa between every two handles on the states both labelled (skips left out); each
    handle's agreement with the detector's labels (the share of equal labels and the kappa); and
    the share of each handle's pair choices (``neither`` left out) that picked the state of higher
    progress."""
    detector = {row.state_id: row.label for row in dataset.rows}
    by_handle: dict[str, dict[str, int]] = {}
    for label in store.state_labels():
        if label.value in GOAL_OF:
            by_handle.setdefault(label.handle, {})[label.state_id] = GOAL_OF[label.value]
    handles = sorted(by_handle)
    pairs = []
    for i, first in enumerate(handles):
        for second in handles[i + 1:]:
            shared = sorted(set(by_handle[first]) & set(by_handle[second]))
            pairs.append({"a": first, "b": second, "n": len(shared),
                          "kappa": cohen_kappa([by_handle[first][s] for s in shared],
                                               [by_handle[second][s] for s in shared])})
    with_detector = {}
    for handle in handles:
        ids = sorted(by_handle[handle])
        mine, theirs = [by_handle[handle][s] for s in ids], [detector[s] for s in ids]
        with_detector[handle] = {"n": len(ids), "agree": sum(x == y for x, y in zip(mine, theirs)) / len(ids),
                                 "kappa": cohen_kappa(mine, theirs)}
    progress = {row.state_id: row.progress for row in dataset.rows}
    with_progress: dict[str, list[bool]] = {}
    for label in store.pair_labels():
        if label.value != "neither":
            closer = label.left_id if label.value == "left" else label.right_id
            other = label.right_id if label.value == "left" else label.left_id
            with_progress.setdefault(label.handle, []).append(progress[closer] > progress[other])
    return {"handles": pairs, "detector": with_detector,
            "progress": {handle: {"n": len(agrees), "agree": sum(agrees) / len(agrees)}
                         for handle, agrees in sorted(with_progress.items())}}


def export_labels(dataset: Dataset, store: LabelStore, handle: str, out: Path) -> tuple[Dataset, int]:
    """Save a copy of ``dataset`` to ``out`` in which the states ``handle`` labelled goal or not goal
    carry that label with ``labeller`` = the handle (the other rows stay as they were); returns the
    saved dataset and the number of rows relabelled."""
    given = {label.state_id: GOAL_OF[label.value] for label in store.state_labels(handle) if label.value in GOAL_OF}
    if not given:
        raise VlmbenchError(f"{store.path}: '{handle}' has labelled no state goal or not goal; nothing to export")
    rows = [replace(row, label=given[row.state_id], labeller=handle) if row.state_id in given else row
            for row in dataset.rows]
    note = (f"{len(given)} of {len(rows)} states labelled by '{handle}' on the labelling page "
            f"(labels {store.path.name}, from dataset {dataset.digest}); the other rows keep their labels")
    copy = Dataset(dataset.task, dataset.task_version, rows, dataset.build, [*dataset.notes, note],
                   dataset.created, dataset.vlmbench_version)
    return save_dataset(copy, out), len(given)
