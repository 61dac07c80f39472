"""The labelling page: a person labels a dataset's states (goal / not goal / skip) and pairs of its
lone states (left / right / neither closer to the goal), one at a time, with arrow keys.

Everyone sees the states, and the pairs, in the same seeded order; each handle resumes at its
first item without a label. Frames are the dataset's re-rendered states (vlmbench.datasets.render),
served as PNG from the frame cache. Every posted label is checked (known item, allowed value,
not yet labelled by that handle) before anything is stored; a rejected post is a 4xx with a JSON
``detail`` message.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from vlmbench.datasets.format import Dataset, Row
from vlmbench.datasets.render import FRAMES_DIR, cache_folder, frames
from vlmbench.errors import VlmbenchError
from vlmbench.specs.task import TaskSpec
from vlmbench.web.labels import (
    PAIR_VALUES,
    STATE_VALUES,
    DuplicateLabel,
    LabelStore,
    agreement,
    check_handle,
)

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


class LabelPost(BaseModel):
    handle: str
    kind: str
    item: str
    value: str


def create_app(dataset: Dataset, task: TaskSpec, store: LabelStore, *, pairs: int = 50, seed: int = SEED,
               handle: str | None = None, frames_dir: Path = FRAMES_DIR) -> FastAPI:
    """The page and its API for labelling ``dataset`` (of ``task``) into ``store``; ``handle`` is the
    one the page starts with."""
    app = FastAPI(title=f"vlmbench labelling: {dataset.task}", docs_url=None, redoc_url=None, openapi_url=None)
    states = state_order(dataset, seed)
    state_ids = {row.state_id: row for row in states}
    pair_list = draw_pairs(dataset, pairs, seed)
    render_lock = threading.Lock()
    page = resources.files("vlmbench.web").joinpath("page.html").read_text(encoding="utf-8")

    def _handle(value: str) -> str:
        try:
            return check_handle(value)
        except VlmbenchError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict:
        prompts = task.prompts
        return {
            "task": task.id, "dataset": dataset.path.name if dataset.path else "", "digest": dataset.digest,
            "question": prompts.yes_no or f"Does the picture show: {prompts.goal[0]}?",
            "pair_question": f"Which picture is closer to: {prompts.goal[0]}?",
            "description": task.description, "handle": handle or "",
            "states": len(states), "pairs": len(pair_list), "store": str(store.path),
        }

    def _next(kind: str, who: str) -> dict:
        if kind == "state":
            done = {label.state_id for label in store.state_labels(who)}
            todo = [row for row in states if row.state_id not in done]
            item = {"item": todo[0].state_id, "frames": [f"/frames/{todo[0].state_id}.png"]} if todo else None
            total = len(states)
        else:
            done_pairs = {label.pair for label in store.pair_labels(who)}
            todo_pairs = [k for k in range(len(pair_list)) if k not in done_pairs]
            item = None
            if todo_pairs:
                left, right = pair_list[todo_pairs[0]]
                item = {"item": str(todo_pairs[0]),
                        "frames": [f"/frames/{left.state_id}.png", f"/frames/{right.state_id}.png"]}
            done, total = done_pairs, len(pair_list)
        return {"kind": kind, "handle": who, "done": len(done), "total": total, "next": item}

    @app.get("/api/next")
    def next_item(handle: str = Query(...), kind: str = Query("state")) -> dict:
        """The handle's first unlabelled item of ``kind`` (state or pair), and its progress."""
        if kind not in ("state", "pair"):
            raise HTTPException(422, f"kind '{kind}': use 'state' or 'pair'")
        return _next(kind, _handle(handle))

    @app.post("/api/labels", status_code=201)
    def post_label(post: LabelPost) -> dict:
        who = _handle(post.handle)
        if post.kind == "state":
            if post.item not in state_ids:
                raise HTTPException(404, f"no state '{post.item}' in dataset {dataset.task} {dataset.digest}")
            if post.value not in STATE_VALUES:
                raise HTTPException(422, f"value '{post.value}': a state label is one of {', '.join(STATE_VALUES)}")
            try:
                store.add_state(post.item, who, post.value)
            except DuplicateLabel:
                raise HTTPException(409, f"'{who}' has labelled state '{post.item}' already") from None
        elif post.kind == "pair":
            if not (post.item.isdigit() and int(post.item) < len(pair_list)):
                raise HTTPException(404, f"no pair '{post.item}': the {len(pair_list)} pairs are numbered from 0")
            if post.value not in PAIR_VALUES:
                raise HTTPException(422, f"value '{post.value}': a pair label is one of {', '.join(PAIR_VALUES)}")
            left, right = pair_list[int(post.item)]
            try:
                store.add_pair(int(post.item), left.state_id, right.state_id, who, post.value)
            except DuplicateLabel:
                raise HTTPException(409, f"'{who}' has labelled pair {post.item} already") from None
        else:
            raise HTTPException(422, f"kind '{post.kind}': use 'state' or 'pair'")
        return _next(post.kind, who)

    @app.get("/api/agreement")
    def agreement_table() -> dict:
        return agreement(dataset, store)

    @app.get("/frames/{state_id}.png")
    def frame(state_id: str) -> FileResponse:
        row = state_ids.get(state_id)
        if row is None:
            raise HTTPException(404, f"no state '{state_id}' in dataset {dataset.task} {dataset.digest}")
        path = cache_folder(dataset, task, frames_dir) / f"{state_id}.png"
        with render_lock:  # one renderer at a time: the frame is cached after the first request
            frames(dataset, task, [row], cache=frames_dir)
        return FileResponse(path, media_type="image/png")

    return app
