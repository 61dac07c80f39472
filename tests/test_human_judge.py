"""The human judge: questions wait on the labelling page, a person's answers come back as judge answers,
none is lost or asked twice, and runs and evaluations wait for them."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from console import one_line_error, vlmbench
from vlmbench.datasets.build import build_dataset
from vlmbench.datasets.format import save_dataset
from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Frame
from vlmbench.judges.human import HumanJudge, HumanParams
from vlmbench.specs.catalogue import resolve_task

TASK = "cartpole-upright"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def frame(seed: int) -> Frame:
    return Frame(np.random.default_rng(seed).integers(0, 256, size=(24, 32, 3), dtype=np.uint8))


def judge(tmp_path, **params) -> HumanJudge:
    settings = {"port": free_port(), "queue": str(tmp_path / "queue"), "poll_seconds": 0.05, **params}
    return HumanJudge("human", HumanParams(**settings))


class Person:
    """Answers the page's questions over HTTP, as the page does: ``choose(kind, item)`` gives the value."""

    def __init__(self, url: str, choose, handle: str = "ann"):
        self.url, self.choose, self.handle = url, choose, handle
        self.answered: list[tuple[str, str, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                idle = True
                for kind in ("state", "pair"):
                    try:
                        item = client.get("/api/next", params={"handle": self.handle, "kind": kind}).json()["next"]
                    except httpx.HTTPError:
                        item = None  # the page is not up yet
                    if item is not None:
                        idle = False
                        for src in item["frames"]:
                            assert client.get(src).status_code == 200
                        value = self.choose(kind, item)
                        response = client.post("/api/labels", json={"handle": self.handle, "kind": kind,
                                                                    "item": item["item"], "value": value})
                        assert response.status_code == 201, response.text
                        self.answered.append((kind, item["item"], value))
                if idle:
                    time.sleep(0.05)

    def __enter__(self) -> Person:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def test_answers_on_the_page_become_judge_answers(tmp_path):
    task = resolve_task(TASK)
    human = judge(tmp_path)
    human.warm_up()
    values = iter(["left", "neither", "right", "goal", "skip", "not-goal"])
    with Person(human.url, lambda kind, item: next(values)):
        pairs = human.compare(task, [([frame(1)], [frame(2)]), ([frame(3)], [frame(4)]), ([frame(5)], [frame(6)])])
        scores = human.score(task, [frame(7), frame(8), frame(9)])
    assert [a.value for a in pairs] == [1.0, 0.5, 0.0]
    assert [a.value for a in scores] == [1.0, None, 0.0]
    assert scores[1].abstain_reason == "skipped on the page by ann"
    assert {a.provenance.model for a in pairs + scores} == {"human:ann"}
    with sqlite3.connect(human.queue.path) as db:
        stored = db.execute("SELECT kind, task, value, handle FROM questions ORDER BY id").fetchall()
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stored == [("pair", TASK, "left", "ann"), ("pair", TASK, "neither", "ann"), ("pair", TASK, "right", "ann"),
                      ("state", TASK, "goal", "ann"), ("state", TASK, "skip", "ann"),
                      ("state", TASK, "not-goal", "ann")]


def test_a_clip_of_several_frames_is_shown_as_an_animated_gif(tmp_path):
    task = resolve_task(TASK)
    human = judge(tmp_path)
    human.warm_up()
    seen = []

    def choose(kind, item):
        seen.extend(item["frames"])
        return "left"

    with Person(human.url, choose):
        [answer] = human.compare(task, [([frame(1), frame(2), frame(3)], [frame(4), frame(5), frame(6)])])
    assert answer.value == 1.0
    assert len(seen) == 2 and all(src.endswith(".gif") for src in seen)
    from PIL import Image

    with Image.open(human.queue.images / seen[0].rsplit("/", 1)[1]) as gif:
        assert gif.n_frames == 3


def test_an_answer_never_handed_over_is_reused_and_a_delivered_one_is_asked_again(tmp_path):
    task = resolve_task(TASK)
    first = judge(tmp_path)
    first.warm_up()
    with Person(first.url, lambda kind, item: "right"):
        assert first.compare(task, [([frame(1)], [frame(2)])])[0].value == 0.0
    # The process died before logging that answer: a new judge on the same queue takes it without asking.
    again = judge(tmp_path, timeout_minutes=0.002)
    [reused] = again.compare(task, [([frame(1)], [frame(2)])])
    assert reused.value == 0.0 and reused.detail["question_id"] == 1
    # Handed over and logged (the judge was called again): the same pair is now a new question (a repeat).
    [repeat] = again.compare(task, [([frame(1)], [frame(2)])])
    assert repeat.abstained and "no answer on the page within 0.002 minutes" in repeat.abstain_reason
    assert repeat.detail["question_id"] == 2


def test_one_call_asking_the_same_pair_twice_asks_two_questions(tmp_path):
    task = resolve_task(TASK)
    human = judge(tmp_path)
    human.warm_up()
    with Person(human.url, lambda kind, item: "left") as person:
        answers = human.compare(task, [([frame(1)], [frame(2)]), ([frame(1)], [frame(2)])])
    assert [a.detail["question_id"] for a in answers] == [1, 2] and len(person.answered) == 2


def test_an_unanswered_question_is_withdrawn_at_the_timeout_and_the_page_refuses_it(tmp_path):
    task = resolve_task(TASK)
    human = judge(tmp_path, timeout_minutes=0.002)
    human.warm_up()
    [answer] = human.score(task, [frame(1)])
    assert answer.abstained and answer.detail["question_id"] == 1
    with httpx.Client(base_url=human.url) as client:
        assert client.get("/api/next", params={"handle": "ann", "kind": "state"}).json()["next"] is None
        response = client.post("/api/labels", json={"handle": "ann", "kind": "state", "item": "1", "value": "goal"})
    assert response.status_code == 410 and "no longer asked" in response.json()["detail"]


@pytest.mark.parametrize("body, status", [
    ({"kind": "state", "item": "7", "value": "goal"}, 404),
    ({"kind": "pair", "item": "1", "value": "left"}, 404),  # question 1 is a state
    ({"kind": "state", "item": "x", "value": "goal"}, 404),
    ({"kind": "state", "item": "1", "value": "left"}, 422),
    ({"kind": "rating", "item": "1", "value": "goal"}, 422),
    ({"kind": "state", "item": "1", "value": "goal", "handle": "detector"}, 422),
])
def test_bad_answers_are_4xx_and_store_nothing(tmp_path, body, status):
    task = resolve_task(TASK)
    human = judge(tmp_path)
    human.warm_up()
    human.queue.ask("state", task.id, "?", "", [[frame(1).pixels]])
    with httpx.Client(base_url=human.url) as client:
        response = client.post("/api/labels", json={"handle": "ann", **body})
        assert response.status_code == status and response.json()["detail"], response.text
        assert client.get("/frames/../questions.sqlite").status_code == 404
    with sqlite3.connect(human.queue.path) as db:
        assert db.execute("SELECT value FROM questions").fetchall() == [(None,)]


def test_a_second_answer_to_a_question_is_409(tmp_path):
    task = resolve_task(TASK)
    human = judge(tmp_path)
    human.warm_up()
    human.queue.ask("state", task.id, "?", "", [[frame(1).pixels]])
    with httpx.Client(base_url=human.url) as client:
        post = {"kind": "state", "item": "1", "value": "goal"}
        assert client.post("/api/labels", json={"handle": "ann", **post}).status_code == 201
        second = client.post("/api/labels", json={"handle": "bob", **post, "value": "not-goal"})
    assert second.status_code == 409
    assert human.queue.get([1])[1].handle == "ann"


def test_the_page_of_the_same_queue_is_shared_and_a_foreign_port_is_an_error(tmp_path):
    serving = judge(tmp_path)
    serving.warm_up()
    sharing = judge(tmp_path, port=serving.params.port)
    sharing.warm_up()  # the same queue answers there already: no second server
    assert sharing._server is None
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        foreign = judge(tmp_path / "elsewhere", port=other.getsockname()[1])
        with pytest.raises(VlmbenchError, match="is in use by something other than this judge's page"):
            foreign.warm_up()


def write_judge(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "human.yaml"
    path.write_text(yaml.safe_dump({"name": "human", "type": "human", "default_reward": "preference",
                                    "params": {"port": port, "queue": str(tmp_path / "queue"), "poll_seconds": 0.05}}))
    return path


def test_a_run_refuses_score_rewards_from_a_person(tmp_path):
    proc = vlmbench("run", "--task", TASK, "--judge", str(write_judge(tmp_path, free_port())), "--reward", "score",
                    "--results", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "--reward preference" in one_line_error(proc)
    assert not (tmp_path / "runs").exists()


def test_vlmbench_eval_waits_for_a_person_on_the_page(tmp_path):
    task = resolve_task(TASK)
    dataset = save_dataset(build_dataset(task, n=6, goal_fraction=0.5, seed=2, trajectories=0), tmp_path / "d.parquet")
    port = free_port()
    args = ("eval", "--task", TASK, "--judge", str(write_judge(tmp_path, port)), "--dataset", str(dataset.path),
            "--pairs", "2", "--probes", "none", "--results", str(tmp_path / "evals"))
    with Person(f"http://127.0.0.1:{port}/", lambda kind, item: "goal" if kind == "state" else "left") as person:
        proc = vlmbench(*args, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert f"answer on http://127.0.0.1:{port}/" in proc.stdout
    summary = json.loads((tmp_path / "evals" / f"{TASK}--human" / "summary.json").read_text())
    assert summary["calls"] == len(person.answered) == len(dataset.rows) + 2
    assert [k for k, _, _ in person.answered].count("pair") == 2
    # Every state was called a goal, so the reward is constant: EPIC is not measured, ROC-AUC is 0.5.
    assert summary["metrics"]["goal_roc_auc"]["value"] == pytest.approx(0.5)
    again = vlmbench(*args, timeout=240)  # resumed: every answer is in the record, nobody is asked
    assert again.returncode == 0 and json.loads((tmp_path / "evals" / f"{TASK}--human" / "summary.json")
                                                 .read_text())["calls"] == 0


def test_arrow_keys_on_the_page_answer_a_waiting_judge_in_chromium(tmp_path):
    from test_labelling_browser import BROWSERS, _browser

    browser_path = _browser()
    if browser_path is None:
        pytest.skip(f"no Chromium found (looked for {', '.join(BROWSERS)} on the PATH and $VLMBENCH_CHROMIUM)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    task = resolve_task(TASK)
    human = judge(tmp_path, handle="ann")
    human.warm_up()
    got = {}
    asking = threading.Thread(target=lambda: got.update(
        pairs=human.compare(task, [([frame(1)], [frame(2)]), ([frame(3)], [frame(4)])]),
        states=human.score(task, [frame(5)])), daemon=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(human.url)
            count = page.locator("#count")
            playwright_api.expect(page.locator("#finished")).to_contain_text("Waiting for a run or an evaluation")
            asking.start()  # questions arrive while the page is open: it finds them by itself
            playwright_api.expect(count).to_have_text("pairs answered by ann: 0, waiting: 2")
            page.wait_for_function("[...document.querySelectorAll('#frames img')].length === 2 && "
                                   "[...document.querySelectorAll('#frames img')].every(i => i.naturalWidth > 0)")
            page.screenshot(path=str(tmp_path / "human-pair.png"))
            playwright_api.expect(page.locator("#question")).to_contain_text(f"{TASK}: Which picture is closer")
            page.keyboard.press("ArrowLeft")
            playwright_api.expect(count).to_have_text("pairs answered by ann: 1, waiting: 1")
            page.keyboard.press("ArrowDown")
            playwright_api.expect(page.locator("#tab-state")).to_have_text("States (1)")
            playwright_api.expect(count).to_have_text("states answered by ann: 0, waiting: 1")  # switched by itself
            page.keyboard.press("ArrowRight")
            playwright_api.expect(count).to_have_text("states answered by ann: 1, waiting: 0")
            page.screenshot(path=str(tmp_path / "human.png"))
        finally:
            browser.close()
    asking.join(timeout=30)
    assert [a.value for a in got["pairs"]] == [1.0, 0.5] and got["states"][0].value == 0.0
    with sqlite3.connect(human.queue.path) as db:
        assert db.execute("SELECT kind, value, handle FROM questions ORDER BY id").fetchall() == [
            ("pair", "left", "ann"), ("pair", "neither", "ann"), ("state", "not-goal", "ann")]


def test_a_run_trains_on_a_persons_preferences(tmp_path):
    from vlmbench.agents.config import FeedbackConfig, RunConfig
    from vlmbench.agents.run import train

    port = free_port()
    config = RunConfig(task=TASK, judge=str(write_judge(tmp_path, port)), timesteps=512, n_envs=4, eval_episodes=1,
                       checkpoint_every=10_000, feedback=FeedbackConfig(label_budget=6, rounds=2, epochs=5))
    with Person(f"http://127.0.0.1:{port}/", lambda kind, item: "left") as person:
        result = train(config, results_dir=tmp_path / "runs")
    logged = [json.loads(line) for line in (result.folder / "queries.jsonl").read_text().splitlines()]
    assert result.labels == len(logged) == len(person.answered) == 6
    assert {line["value"] for line in logged} == {1.0}
    assert {line["provenance"]["model"] for line in logged} == {"human:ann"}


def test_building_the_judge_writes_nothing_and_an_unusable_queue_is_one_line(tmp_path):
    judge(tmp_path / "untouched")
    assert not (tmp_path / "untouched").exists()
    (tmp_path / "file").write_text("not a folder")
    config = tmp_path / "bad-queue.yaml"
    config.write_text(yaml.safe_dump({"name": "human", "type": "human",
                                      "params": {"port": free_port(), "queue": str(tmp_path / "file" / "queue")}}))
    proc = vlmbench("eval", "--task", TASK, "--judge", str(config), "--results", str(tmp_path / "evals"))
    assert proc.returncode == 2 and "params.queue" in one_line_error(proc)
    assert not (tmp_path / "evals").exists()
