"""The labelling page and its JSON API, over a source of items a person labels one at a time.

Two sources exist: a dataset's states and pairs (vlmbench.web.dataset_labelling, `vlmbench label`)
and the questions a running `human` judge waits on (vlmbench.web.questions). Both use the same
page, keys and values: a state is ``goal``, ``not-goal`` or ``skip``; a pair ``left``, ``right``
or ``neither``. A source rejects a bad post (unknown item, bad value, an item already labelled)
with :class:`Rejected`, which the API returns as a 4xx with a JSON ``detail`` message.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from vlmbench.errors import VlmbenchError
from vlmbench.specs.task import TaskSpec
from vlmbench.web.labels import check_handle

KINDS = ("state", "pair")


class Rejected(Exception):
    """A post or request the source refuses: ``status`` (4xx) and a message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ItemSource(Protocol):
    """What the page labels. ``next`` returns {kind, handle, done, total, next: {item, frames, ...} or None}."""

    title: str

    def info(self) -> dict: ...

    def next(self, kind: str, handle: str) -> dict: ...

    def post(self, kind: str, handle: str, item: str, value: str) -> None: ...

    def image(self, name: str) -> tuple[Path, str]: ...

    def agreement(self) -> dict: ...


def questions(task: TaskSpec) -> dict[str, str]:
    """The questions the page asks about ``task``'s states and pairs."""
    prompts = task.prompts
    return {"question": prompts.yes_no or f"Does the picture show: {prompts.goal[0]}?",
            "pair_question": f"Which picture is closer to: {prompts.goal[0]}?"}


class LabelPost(BaseModel):
    handle: str
    kind: str
    item: str
    value: str


def create_app(source: ItemSource) -> FastAPI:
    """The page and its API over ``source``."""
    app = FastAPI(title=source.title, docs_url=None, redoc_url=None, openapi_url=None)
    page = resources.files("vlmbench.web").joinpath("page.html").read_text(encoding="utf-8")

    def _checked(handle: str, kind: str) -> str:
        if kind not in KINDS:
            raise HTTPException(422, f"kind '{kind}': use 'state' or 'pair'")
        try:
            return check_handle(handle)
        except VlmbenchError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict:
        return source.info()

    @app.get("/api/next")
    def next_item(handle: str = Query(...), kind: str = Query("state")) -> dict:
        """The handle's first unlabelled item of ``kind`` (state or pair), and its progress."""
        return source.next(kind, _checked(handle, kind))

    @app.post("/api/labels", status_code=201)
    def post_label(post: LabelPost) -> dict:
        who = _checked(post.handle, post.kind)
        try:
            source.post(post.kind, who, post.item, post.value)
        except Rejected as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return source.next(post.kind, who)

    @app.get("/api/agreement")
    def agreement_table() -> dict:
        return source.agreement()

    @app.get("/frames/{name}")
    def frame(name: str) -> FileResponse:
        try:
            path, media_type = source.image(name)
        except Rejected as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return FileResponse(path, media_type=media_type)

    return app
