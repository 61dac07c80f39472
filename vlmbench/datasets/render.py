"""Re-render a dataset's states on demand, with a frame cache.

Each state is restored into the task's environment (``TaskEnv.set_state``) and rendered, which
gives the frame the env showed in that state bit for bit. Frames are cached as PNG (lossless) in
``<cache>/<task>-<key>/<state_id>.png``; the key digests the dataset file and the task's env and
render settings, so a rebuilt dataset or a changed camera never reuses old frames. With
``workers > 1`` the missing frames are rendered by that many spawned processes, each with its own
environment and GL context.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from vlmbench.datasets.format import Dataset, Row
from vlmbench.envs.sim_state import SimState
from vlmbench.files import atomic_write
from vlmbench.specs.task import TaskSpec

FRAMES_DIR = Path("results/frames")
CHUNK = 8  # states a worker renders per task it is handed


def cache_folder(dataset: Dataset, task: TaskSpec, root: Path = FRAMES_DIR) -> Path:
    """Where the frames of ``dataset`` rendered with ``task``'s env and camera are cached."""
    settings = json.dumps([dataset.digest, task.env.model_dump(mode="json"), task.render.model_dump(mode="json")],
                          sort_keys=True)
    return root / f"{task.id}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}"


class Renderer:
    """Frames of restored states of one task, from one environment (built on first use)."""

    def __init__(self, task: TaskSpec):
        self.task, self.env = task, None

    def __call__(self, state: SimState) -> np.ndarray:
        if self.env is None:
            from vlmbench.envs.task_env import make_env

            self.env = make_env(self.task, render=True)
            self.env.reset(seed=0)
        self.env.set_state(state)
        return self.env.render()

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


_worker: Renderer | None = None


def _start_worker(task: TaskSpec) -> None:
    global _worker
    _worker = Renderer(task)


def _render_chunk(states: list[dict]) -> list[np.ndarray]:
    return [_worker(SimState.from_dict(state)) for state in states]


def render_states(task: TaskSpec, states: Sequence[SimState], *, workers: int = 1,
                  progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Frames of ``states`` in order, rendered by ``workers`` processes (this one when 1)."""
    chunks = [list(states[i:i + CHUNK]) for i in range(0, len(states), CHUNK)]
    frames: list[np.ndarray] = []
    if workers <= 1 or len(chunks) <= 1:
        renderer = Renderer(task)
        try:
            for chunk in chunks:
                frames += [renderer(state) for state in chunk]
                if progress is not None:
                    progress(len(chunk))
        finally:
            renderer.close()
        return frames
    # Spawned, not forked: a forked child of a process that holds a GL context deadlocks in GL start-up.
    # An executor, not a multiprocessing.Pool: a worker that dies raises BrokenProcessPool instead of a hang.
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(task,)) as pool:
        for chunk_frames in pool.map(_render_chunk, [[s.to_dict() for s in chunk] for chunk in chunks]):
            frames += chunk_frames
            if progress is not None:
                progress(len(chunk_frames))
    return frames


def _read_png(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError):  # missing, or damaged by something other than vlmbench: render again
        return None


def frames(dataset: Dataset, task: TaskSpec, rows: Sequence[Row] | None = None, *, workers: int = 1,
           cache: Path | None = FRAMES_DIR, progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """The frames of ``rows`` (default: every row) of a saved ``dataset``, from the cache under ``cache``
    where present, else rendered (and cached); ``cache=None`` renders everything and caches nothing.
    ``progress`` is called with the number of frames just obtained."""
    rows = list(dataset.rows if rows is None else rows)
    folder = cache_folder(dataset, task, cache) if cache is not None else None
    found = [(_read_png(folder / f"{row.state_id}.png") if folder else None) for row in rows]
    missing = [i for i, frame in enumerate(found) if frame is None]
    if progress is not None and len(rows) > len(missing):
        progress(len(rows) - len(missing))
    rendered = render_states(task, [rows[i].state for i in missing], workers=workers, progress=progress)
    for i, frame in zip(missing, rendered):
        found[i] = frame
        if folder is not None:
            atomic_write(folder / f"{rows[i].state_id}.png", lambda tmp, f=frame: Image.fromarray(f).save(tmp))
    return found
