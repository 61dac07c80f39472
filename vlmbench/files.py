"""Crash-safe file handling shared by every layer: atomic replacement, JSONL logs, folder locks,
SQLite files in WAL mode.

A file written with ``atomic_write`` is either the old version or the new one, never half of
either, whatever happens (kill -9, a full disk); with ``keep_previous`` the version it replaces
stays beside it as ``<name>.prev<suffix>``, a fallback should the new one be damaged later.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from vlmbench.errors import VlmbenchError


def previous_of(path: Path) -> Path:
    """Where ``atomic_write(path, keep_previous=True)`` keeps the version it replaced."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, keep_previous: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # libraries check suffixes
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_of(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], object], *, keep_previous: bool = False) -> Path:
    """``write(tmp)`` fills a temporary file, which then atomically becomes ``path``."""
    with atomic_path(path, keep_previous=keep_previous) as tmp:
        write(tmp)
    return path


def atomic_write_text(path: Path, text: str, *, keep_previous: bool = False) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text), keep_previous=keep_previous)


def write_json(path: Path, data: object) -> Path:
    """Pretty, key-sorted JSON, written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: Path, lines: list[dict]) -> None:
    """Append JSON lines and flush them to disk before returning (a bought answer is never lost)."""
    if not lines:
        return
    append_lines(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


def drop_torn_line(path: Path) -> bool:
    """Cut a last line that lacks its newline (a write cut short) from a text log; True if one was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return False
    os.truncate(path, data.rfind(b"\n") + 1)
    return True


def append_lines(path: Path, text: str) -> None:
    """Append text and flush it to disk before returning."""
    with open(path, "a") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path, *, repair: bool = False) -> tuple[list[dict], str | None]:
    """The complete lines of a JSONL log, and a note if a torn last line (a write cut short) was dropped.

    With ``repair`` the torn line is also cut from the file, so later appends start on a fresh line.
    A damaged line anywhere else is an error: that is not what a cut-short write leaves.
    """
    if not path.exists():
        return [], None
    data = path.read_bytes()
    lines: list[dict] = []
    offset = 0
    for raw in data.splitlines(keepends=True):
        complete = raw.endswith(b"\n")
        try:
            line = json.loads(raw) if raw.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            line = ...
        if line is ... or not complete:
            if offset + len(raw) < len(data):
                raise VlmbenchError(f"{path}: line {len(lines) + 1} is damaged (not valid JSON)")
            if repair:
                os.truncate(path, offset)
            return lines, f"{path}: dropped a torn last line ({len(raw)} bytes) left by an interrupted write"
        if line is not None:
            lines.append(line)
        offset += len(raw)
    return lines, None


class FolderLock:
    """An exclusive OS lock on a folder (``<folder>/.lock``), released when the process dies."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self._fh = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise VlmbenchError(f"run folder {self.path.parent} is in use by PID {holder}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def others(self) -> list[Path]:
        """What the folder holds besides its lock file."""
        folder = self.path.parent
        return [p for p in folder.iterdir() if p != self.path] if folder.is_dir() else []

    def clear_others(self) -> None:
        """Delete everything in the folder but the lock file (call with the lock held)."""
        for child in self.others():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def sqlite_connect(path: Path, *, timeout: float = 10.0, autocommit: bool = True,
                   any_thread: bool = False) -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` that waits up to ``timeout`` seconds for a lock; in
    autocommit mode unless told otherwise, usable from any thread with ``any_thread``."""
    return sqlite3.connect(path, timeout=timeout, isolation_level=None if autocommit else "",
                           check_same_thread=not any_thread)


def sqlite_create(path: Path, schema: str, **connect) -> sqlite3.Connection:
    """A connection to ``path`` (``connect``: sqlite_connect's options) in WAL mode (readers never block
    the writer, and a killed writer loses nothing it committed), with ``schema`` applied; the caller
    closes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_connect(path, **connect)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
