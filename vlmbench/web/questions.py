"""The questions a `human` judge waits on, kept in SQLite (WAL) beside their images, and the
labelling page's source over them.

A question is a state (goal / not goal / skip) or a pair (left / right / neither closer to the
goal) of one task, shown as images: one frame as a PNG, a clip of several frames as an animated
GIF, each stored once under its content hash. Whoever answers first on the page answers it; the
answer is committed at once with the person's handle and a UTC timestamp.

Nothing a person answers is lost or asked twice. An answer counts as delivered once the judge
that asked has handed it over and been called again (its caller logs answers between calls).
An answer that was never delivered, because the asking process died, is reused by the next
question with the same task, kind and images, and so is a question still waiting; a delivered
answer never is, so a probe that repeats a question really asks the person again.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vlmbench.datasets.format import now
from vlmbench.files import atomic_write, sqlite_connect, sqlite_create
from vlmbench.web.app import Rejected
from vlmbench.web.labels import PAIR_VALUES, STATE_VALUES

QUEUE_DIR = Path("results/human")
VALUES = {"state": STATE_VALUES, "pair": PAIR_VALUES}
GIF_FRAME_MS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, task TEXT NOT NULL, text TEXT NOT NULL,
    description TEXT NOT NULL, content TEXT NOT NULL, images TEXT NOT NULL, asked TEXT NOT NULL,
    value TEXT, handle TEXT, answered TEXT, delivered INTEGER NOT NULL DEFAULT 0, withdrawn INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS questions_content ON questions (content, delivered);
"""


@dataclass(frozen=True)
class Question:
    id: int
    kind: str
    task: str
    text: str
    images: list[str]
    asked: str
    value: str | None
    handle: str | None
    answered: str | None


def _image_file(clip: Sequence[np.ndarray]) -> tuple[str, bytes]:
    """A clip as (file name by content hash, bytes): one frame a PNG, several an animated GIF."""
    frames = [Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)) for pixels in clip]
    buffer = io.BytesIO()
    if len(frames) == 1:
        frames[0].save(buffer, format="PNG")
        suffix = "png"
    else:
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
        suffix = "gif"
    data = buffer.getvalue()
    return f"{hashlib.sha1(data).hexdigest()[:20]}.{suffix}", data


class QuestionQueue:
    """The questions file ``<folder>/questions.sqlite`` and its ``images/``; one connection per call."""

    def __init__(self, folder: Path = QUEUE_DIR):
        self.folder = Path(folder)
        self.images = self.folder / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "questions.sqlite"
        sqlite_create(self.path, _SCHEMA).close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite_connect(self.path)

    def ask(self, kind: str, task: str, text: str, description: str,
            clips: Sequence[Sequence[np.ndarray]], exclude: set[int] = frozenset()) -> int:
        """The id of a question of ``kind`` about ``clips`` (one for a state, two for a pair): an
        undelivered one with the same content not in ``exclude``, else a new one."""
        files = [_image_file(clip) for clip in clips]
        content = hashlib.sha1(json.dumps([kind, task, [name for name, _ in files]]).encode()).hexdigest()
        db = self._connect()
        try:
            for (qid,) in db.execute("SELECT id FROM questions WHERE content = ? AND delivered = 0 AND withdrawn = 0 "
                                     "ORDER BY id", (content,)):
                if qid not in exclude:
                    return qid
            for name, data in files:
                target = self.images / name
                if not target.exists():
                    atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
            cursor = db.execute(
                "INSERT INTO questions (kind, task, text, description, content, images, asked) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (kind, task, text, description, content, json.dumps([name for name, _ in files]), now()))
            return int(cursor.lastrowid)
        finally:
            db.close()

    def answer(self, qid: int, handle: str, value: str) -> None:
        """Store a person's answer; Rejected if the question is unknown, withdrawn or answered, or the value bad."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT kind, value, withdrawn FROM questions WHERE id = ?", (qid,)).fetchone()
            if row is None:
                raise Rejected(404, f"no question {qid}")
            kind, answered, withdrawn = row
            if value not in VALUES[kind]:
                raise Rejected(422, f"value '{value}': a {kind} answer is one of {', '.join(VALUES[kind])}")
            if withdrawn:
                raise Rejected(410, f"question {qid} is no longer asked (its judge stopped waiting)")
            if answered is not None:
                raise Rejected(409, f"question {qid} has been answered already")
            db.execute("UPDATE questions SET value = ?, handle = ?, answered = ? WHERE id = ?", (value, handle, now(), qid))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def get(self, ids: Sequence[int]) -> dict[int, Question]:
        db = self._connect()
        try:
            rows = db.execute(f"SELECT id, kind, task, text, images, asked, value, handle, answered FROM questions "
                              f"WHERE id IN ({','.join('?' * len(ids))})", list(ids)).fetchall() if ids else []
        finally:
            db.close()
        return {row[0]: Question(row[0], row[1], row[2], row[3], json.loads(row[4]), *row[5:]) for row in rows}

    def waiting(self, kind: str) -> list[Question]:
        """The unanswered questions of ``kind`` still asked, oldest first."""
        db = self._connect()
        try:
            ids = [qid for (qid,) in db.execute("SELECT id FROM questions WHERE kind = ? AND value IS NULL AND "
                                                "withdrawn = 0 ORDER BY id", (kind,))]
        finally:
            db.close()
        found = self.get(ids)
        return [found[qid] for qid in ids]

    def counts(self, kind: str, handle: str) -> tuple[int, int]:
        """(answered by ``handle``, answered by anyone or waiting) among questions of ``kind``."""
        db = self._connect()
        try:
            mine = db.execute("SELECT COUNT(*) FROM questions WHERE kind = ? AND handle = ?", (kind, handle)).fetchone()[0]
            total = db.execute("SELECT COUNT(*) FROM questions WHERE kind = ? AND (value IS NOT NULL OR withdrawn = 0)",
                               (kind,)).fetchone()[0]
        finally:
            db.close()
        return mine, total

    def _flag(self, column: str, ids: Sequence[int], condition: str = "") -> None:
        """Set ``column`` to 1 on the questions ``ids`` (those meeting ``condition``, an SQL clause)."""
        if not ids:
            return
        db = self._connect()
        try:
            db.execute(f"UPDATE questions SET {column} = 1 WHERE {condition + ' AND ' if condition else ''}"
                       f"id IN ({','.join('?' * len(ids))})", list(ids))
        finally:
            db.close()

    def delivered(self, ids: Sequence[int]) -> None:
        """Mark answers as handed over and logged by their caller: never reused."""
        self._flag("delivered", ids)

    def withdraw(self, ids: Sequence[int]) -> None:
        """Stop asking unanswered questions (their judge gave up waiting); answered ones are untouched."""
        self._flag("withdrawn", ids, "value IS NULL")


class QueueSource:
    """The labelling page over the questions waiting in ``queue`` (``handle``: the one the page starts with)."""

    title = "vlmbench: the human judge"

    def __init__(self, queue: QuestionQueue, handle: str | None = None):
        self.queue, self.handle = queue, handle

    def info(self) -> dict:
        return {"task": "questions from runs and evaluations", "dataset": "", "digest": "", "question": "",
                "pair_question": "", "description": "", "handle": self.handle or "", "states": None, "pairs": None,
                "store": str(self.queue.path), "live": True}

    def next(self, kind: str, handle: str) -> dict:
        waiting = {k: self.queue.waiting(k) for k in VALUES}
        item = None
        if waiting[kind]:
            first = waiting[kind][0]
            item = {"item": str(first.id), "frames": [f"/frames/{name}" for name in first.images],
                    "question": first.text, "task": first.task}
        done, total = self.queue.counts(kind, handle)
        return {"kind": kind, "handle": handle, "done": done, "total": total, "next": item,
                "waiting": {k: len(v) for k, v in waiting.items()}}

    def post(self, kind: str, handle: str, item: str, value: str) -> None:
        if not item.isdigit():
            raise Rejected(404, f"no question '{item}'")
        found = self.queue.get([int(item)]).get(int(item))
        if found is None or found.kind != kind:
            raise Rejected(404, f"no {kind} question '{item}'")
        self.queue.answer(int(item), handle, value)

    def image(self, name: str) -> tuple[Path, str]:
        path = self.queue.images / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise Rejected(404, f"no image '{name}'")
        return path, "image/gif" if name.endswith(".gif") else "image/png"

    def agreement(self) -> dict:
        return {"handles": [], "detector": {}, "progress": {}}
