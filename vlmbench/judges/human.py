"""The human judge: a person answers on the labelling page while the run or evaluation waits.

``warm_up`` serves the page (vlmbench.web) for the judge's question queue at ``host:port`` and
prints its address; if a page for the same queue is already served there (say, by another run
waiting on a person too), that one is used. Each question then waits on the page until someone
answers it:

- score (a state): goal is 1, not goal 0, skip an abstention;
- compare (a pair of clips): left is 1 (the first), right 0, neither 0.5.

A person cannot rate every environment step, so runs refuse score rewards with this judge
(``interactive``). With ``timeout_minutes`` set, a question nobody answers in time is withdrawn
from the page and becomes an abstention; otherwise the judge waits until it is answered. See
vlmbench.web.questions for why no answer is lost or asked twice.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from pydantic import Field

from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Answer, Clip, Frame, Judge, JudgeParams, Provenance, Question, prompt_hash
from vlmbench.specs.task import TaskSpec
from vlmbench.web.app import create_app, questions
from vlmbench.web.questions import QUEUE_DIR, QuestionQueue, QueueSource

STATE_VALUE = {"goal": 1.0, "not-goal": 0.0}
PAIR_VALUE = {"left": 1.0, "right": 0.0, "neither": 0.5}


class HumanParams(JudgeParams):
    host: str = Field(default="127.0.0.1", description="address the page is served on")
    port: int = Field(default=8766, ge=1, le=65535, description="port the page is served on")
    queue: str = Field(default=str(QUEUE_DIR), description="folder of the question queue (SQLite and images)")
    handle: str | None = Field(default=None, description="handle the page starts with")
    timeout_minutes: float | None = Field(default=None, gt=0, description="withdraw unanswered questions after this")
    poll_seconds: float = Field(default=0.5, gt=0, description="how often the judge looks for new answers")


class HumanJudge(Judge):
    """Waits for a person's answers on the labelling page."""

    answers = frozenset({Question.SCORE, Question.COMPARE})
    interactive = True
    Params = HumanParams

    def __init__(self, name: str, params: HumanParams):
        super().__init__(name, params)
        self._queue: QuestionQueue | None = None
        self.url = f"http://{params.host}:{params.port}/"
        self._server = None
        self._handed_over: list[int] = []  # answers returned by the last call, delivered once called again

    def describe_model(self) -> str:
        return "a person on the labelling page"

    @property
    def queue(self) -> QuestionQueue:
        """The question queue, created when first needed (building the judge writes nothing)."""
        if self._queue is None:
            try:
                self._queue = QuestionQueue(Path(self.params.queue))
            except (OSError, sqlite3.Error) as exc:
                raise VlmbenchError(f"judge '{self.name}': params.queue {self.params.queue}: cannot keep questions "
                                    f"there ({exc})") from None
        return self._queue

    def warm_up(self) -> None:
        if self._server is None and not self._served_elsewhere():
            self._serve()
        print(f"human judge: answer on {self.url} (questions wait there; this process waits for answers)", flush=True)

    def _served_elsewhere(self) -> bool:
        """True if the page of this very queue already answers at the address; an error if something else does."""
        p = self.params
        try:
            with socket.create_connection((p.host, p.port), timeout=1):
                pass
        except OSError:
            return False
        try:
            with urllib.request.urlopen(self.url + "api/info", timeout=5) as response:
                store = json.load(response).get("store")
        except (OSError, ValueError, AttributeError):
            store = None
        if store is not None and Path(store).resolve() == self.queue.path.resolve():
            return True
        raise VlmbenchError(f"judge '{self.name}': {p.host}:{p.port} is in use by something other than this judge's "
                            f"page; set params.port in a copy of its config (vlmbench judges show {self.name})")

    def _serve(self) -> None:
        import uvicorn

        p = self.params
        config = uvicorn.Config(create_app(QueueSource(self.queue, p.handle)), host=p.host, port=p.port,
                                log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="human-judge-page", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise VlmbenchError(f"judge '{self.name}': cannot serve the page on {p.host}:{p.port}; "
                                    "set params.host and params.port in a copy of its config")
            time.sleep(0.05)
        self._server = server

    # -- asking ----------------------------------------------------------------------------------
    def _ask(self, task: TaskSpec, kind: str, text: str, clips_per_question: list[list[Clip]]) -> list[int]:
        self.queue.delivered(self._handed_over)  # the caller logged them before asking again
        self._handed_over = []
        if self._server is None:
            self.warm_up()
        ids: list[int] = []
        for clips in clips_per_question:
            pixels = [[_pixels(frame) for frame in clip] for clip in clips]
            ids.append(self.queue.ask(kind, task.id, text, task.description, pixels, exclude=set(ids)))
        return ids

    def _wait(self, ids: list[int], kind: str) -> dict:
        """The answered questions of ``ids``, waiting for a person; unanswered ones withdrawn at the timeout."""
        p = self.params
        deadline = None if p.timeout_minutes is None else time.monotonic() + 60 * p.timeout_minutes
        found = self.queue.get(ids)
        open_count = sum(found[qid].value is None for qid in ids)
        if open_count:
            print(f"human judge: waiting for {open_count} {kind} answer{'s' if open_count > 1 else ''} on {self.url}",
                  flush=True)
        while any(found[qid].value is None for qid in ids):
            if deadline is not None and time.monotonic() > deadline:
                self.queue.withdraw([qid for qid in ids if found[qid].value is None])
                found = self.queue.get(ids)  # an answer may have come in just before the withdrawal
                break
            time.sleep(p.poll_seconds)
            found = self.queue.get(ids)
        self._handed_over = [qid for qid in ids if found[qid].value is not None]
        return found

    def _answer(self, question: Question, found, values: dict[str, float], text: str) -> Answer:
        seconds = 0.0
        if found.answered is not None:
            seconds = (datetime.fromisoformat(found.answered) - datetime.fromisoformat(found.asked)).total_seconds()
        provenance = Provenance(self.name, self.version, f"human:{found.handle or 'nobody'}", prompt_hash(text),
                                seconds=seconds)
        detail = {"question_id": found.id, "handle": found.handle, "value": found.value}
        if found.value is None:
            return Answer(question, None, provenance, f"no answer on the page within {self.params.timeout_minutes} "
                                                      "minutes", detail)
        if found.value not in values:
            return Answer(question, None, provenance, f"skipped on the page by {found.handle}", detail)
        return Answer(question, values[found.value], provenance, detail=detail)

    def _score(self, task: TaskSpec, frames: list[Frame]) -> list[Answer]:
        text = questions(task)["question"]
        ids = self._ask(task, "state", text, [[[frame]] for frame in frames])
        found = self._wait(ids, "state")
        return [self._answer(Question.SCORE, found[qid], STATE_VALUE, text) for qid in ids]

    def _compare(self, task: TaskSpec, pairs: list[tuple[Clip, Clip]]) -> list[Answer]:
        text = questions(task)["pair_question"]
        ids = self._ask(task, "pair", text, [[list(a), list(b)] for a, b in pairs])
        found = self._wait(ids, "pair")
        return [self._answer(Question.COMPARE, found[qid], PAIR_VALUE, text) for qid in ids]


def _pixels(frame: Frame):
    if frame.pixels is None:
        raise VlmbenchError("the human judge needs rendered frames")
    return frame.pixels


__all__ = ["HumanJudge", "HumanParams"]
