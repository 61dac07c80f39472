"""The labelling page's API (through FastAPI's TestClient), its label store, agreement and export."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from console import one_line_error, vlmbench
from vlmbench.datasets.build import build_dataset
from vlmbench.datasets.format import load_dataset, save_dataset
from vlmbench.datasets.render import frames
from vlmbench.errors import VlmbenchError
from vlmbench.specs.catalogue import resolve_task
from vlmbench.web.app import create_app
from vlmbench.web.dataset_labelling import DatasetSource, draw_pairs, state_order
from vlmbench.web.labels import LabelStore, agreement, cohen_kappa, store_path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    task = resolve_task("cartpole-upright")
    built = build_dataset(task, n=12, goal_fraction=0.4, seed=3, trajectories=1, trajectory_length=3)
    return save_dataset(built, tmp_path_factory.mktemp("data") / "cartpole.parquet")


@pytest.fixture
def store(dataset, tmp_path):
    return LabelStore(store_path(dataset, tmp_path / "labels"), dataset)


def client(dataset, store, tmp_path, pairs=6):
    app = create_app(DatasetSource(dataset, resolve_task(dataset.task), store, pairs=pairs, frames_dir=tmp_path / "frames"))
    return TestClient(app)


def post(api, handle, kind, item, value):
    return api.post("/api/labels", json={"handle": handle, "kind": kind, "item": item, "value": value})


def stored(store):
    with sqlite3.connect(store.path) as db:
        return (db.execute("SELECT state_id, handle, value FROM state_labels ORDER BY rowid").fetchall(),
                db.execute("SELECT pair, handle, value FROM pair_labels ORDER BY rowid").fetchall())


def test_label_and_resume_where_the_handle_stopped(dataset, store, tmp_path):
    order = [row.state_id for row in state_order(dataset)]
    api = client(dataset, store, tmp_path)
    first = api.get("/api/next", params={"handle": "ann"}).json()
    assert (first["done"], first["total"], first["next"]["item"]) == (0, len(dataset.rows), order[0])
    for state_id, value in zip(order[:3], ["goal", "not-goal", "skip"]):
        response = post(api, "ann", "state", state_id, value)
        assert response.status_code == 201, response.text
    assert response.json()["next"]["item"] == order[3] and response.json()["done"] == 3

    # A new server on the same label file: ann resumes at her fourth state, bob starts at the first.
    again = client(dataset, LabelStore(store.path, dataset), tmp_path)
    assert again.get("/api/next", params={"handle": "ann"}).json()["next"]["item"] == order[3]
    assert again.get("/api/next", params={"handle": "bob"}).json()["next"]["item"] == order[0]

    rows, _ = stored(store)
    assert rows == [(order[0], "ann", "goal"), (order[1], "ann", "not-goal"), (order[2], "ann", "skip")]
    label = store.state_labels("ann")[0]
    assert datetime.fromisoformat(label.created).utcoffset().total_seconds() == 0
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_label_file_belongs_to_one_dataset(dataset, store, tmp_path):
    other = save_dataset(replace(dataset, rows=dataset.rows[:5], path=None), tmp_path / "other.parquet")
    with pytest.raises(VlmbenchError, match=f"holds labels of dataset cartpole-upright {dataset.digest}, not of"):
        LabelStore(store.path, other)
    assert store_path(other, tmp_path) != store_path(dataset, tmp_path)


def test_pairs_label_and_resume(dataset, store, tmp_path):
    api = client(dataset, store, tmp_path, pairs=4)
    assert api.get("/api/next", params={"handle": "ann", "kind": "pair"}).json()["next"]["item"] == "0"
    assert post(api, "ann", "pair", "0", "left").status_code == 201
    assert post(api, "ann", "pair", "1", "neither").status_code == 201
    state = api.get("/api/next", params={"handle": "ann", "kind": "pair"}).json()
    left, right = draw_pairs(dataset, 4)[2]
    assert state["next"] == {"item": "2", "frames": [f"/frames/{left.state_id}.png", f"/frames/{right.state_id}.png"]}
    assert (state["done"], state["total"]) == (2, 4)
    first = draw_pairs(dataset, 4)[0]
    assert [(p.pair, p.left_id, p.right_id, p.value) for p in store.pair_labels("ann")][0] == (
        0, first[0].state_id, first[1].state_id, "left")


@pytest.mark.parametrize("body, status", [
    ({"handle": "ann", "kind": "state", "item": "no-such-state", "value": "goal"}, 404),
    ({"handle": "ann", "kind": "pair", "item": "99", "value": "left"}, 404),
    ({"handle": "ann", "kind": "pair", "item": "-1", "value": "left"}, 404),
    ({"handle": "ann", "kind": "state", "item": "FIRST", "value": "yes"}, 422),
    ({"handle": "ann", "kind": "state", "item": "FIRST", "value": "left"}, 422),
    ({"handle": "ann", "kind": "pair", "item": "0", "value": "goal"}, 422),
    ({"handle": "ann", "kind": "rating", "item": "FIRST", "value": "goal"}, 422),
    ({"handle": "detector", "kind": "state", "item": "FIRST", "value": "goal"}, 422),
    ({"handle": "", "kind": "state", "item": "FIRST", "value": "goal"}, 422),
    ({"handle": "a b", "kind": "state", "item": "FIRST", "value": "goal"}, 422),
    ({"handle": "ann", "kind": "state", "item": "FIRST"}, 422),
])
def test_bad_posts_are_4xx_with_a_message_and_store_nothing(dataset, store, tmp_path, body, status):
    api = client(dataset, store, tmp_path)
    body = {key: (dataset.rows[0].state_id if value == "FIRST" else value) for key, value in body.items()}
    response = api.post("/api/labels", json=body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert stored(store) == ([], [])


def test_duplicate_posts_are_409_and_keep_the_first_label(dataset, store, tmp_path):
    api = client(dataset, store, tmp_path)
    state_id = dataset.rows[0].state_id
    assert post(api, "ann", "state", state_id, "goal").status_code == 201
    assert post(api, "ann", "pair", "0", "right").status_code == 201
    for kind, item, value in [("state", state_id, "not-goal"), ("state", state_id, "goal"), ("pair", "0", "left")]:
        response = post(api, "ann", kind, item, value)
        assert response.status_code == 409 and "already" in response.json()["detail"]
    assert post(api, "bob", "state", state_id, "not-goal").status_code == 201  # another handle may
    assert stored(store) == ([(state_id, "ann", "goal"), (state_id, "bob", "not-goal")], [(0, "ann", "right")])


def test_pairs_are_seeded_distinct_lone_states_of_different_progress(dataset):
    pairs = draw_pairs(dataset, 20)
    lone = {row.state_id for row in dataset.lone()}
    keys = [(left.state_id, right.state_id) for left, right in pairs]
    assert len(pairs) == 20 and len({frozenset(k) for k in keys}) == 20
    assert all(left.progress != right.progress and {left.state_id, right.state_id} <= lone for left, right in pairs)
    assert keys == [(a.state_id, b.state_id) for a, b in draw_pairs(dataset, 20)]
    assert keys[:5] == [(a.state_id, b.state_id) for a, b in draw_pairs(dataset, 5)]
    assert keys != [(a.state_id, b.state_id) for a, b in draw_pairs(dataset, 20, seed=1)]
    position = {row.state_id: i for i, row in enumerate(dataset.lone())}
    earlier_left = [position[left.state_id] < position[right.state_id] for left, right in pairs]
    assert any(earlier_left) and not all(earlier_left)  # sides are shuffled too


def test_everyone_sees_the_states_in_one_shuffled_order(dataset):
    ids = [row.state_id for row in state_order(dataset)]
    assert sorted(ids) == sorted(row.state_id for row in dataset.rows)
    assert ids == [row.state_id for row in state_order(dataset)]
    assert ids != [row.state_id for row in dataset.rows]  # the builder's order groups states by sampler


def _binary_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa of two binary raters from the 2x2 table: 2(ad - bc) / ((a+b)(b+d) + (a+c)(c+d))."""
    both = sum(x == 1 and y == 1 for x, y in zip(a, b))
    first_only = sum(x == 1 and y == 0 for x, y in zip(a, b))
    second_only = sum(x == 0 and y == 1 for x, y in zip(a, b))
    neither = sum(x == 0 and y == 0 for x, y in zip(a, b))
    return 2 * (both * neither - first_only * second_only) / (
        (both + first_only) * (first_only + neither) + (both + second_only) * (second_only + neither))


# 10 items: both goal 5, only the first 2, only the second 1, neither 2. Observed agreement 0.7; chance
# 0.7 * 0.6 + 0.3 * 0.4 = 0.54; kappa 0.16 / 0.46 = 8/23. Scott's pi (pooled marginals) gives 0.341,
# the observed agreement 0.7.
ANN = [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
BOB = [1, 1, 1, 1, 1, 0, 0, 1, 0, 0]


def test_cohen_kappa_against_the_two_by_two_formula():
    assert cohen_kappa(ANN, BOB) == pytest.approx(8 / 23)
    assert _binary_kappa(ANN, BOB) == pytest.approx(8 / 23)
    assert cohen_kappa(BOB, ANN) == pytest.approx(8 / 23)
    assert cohen_kappa([1, 1, 0], [1, 1, 0]) == pytest.approx(1.0)
    assert cohen_kappa([1, 1], [1, 1]) is None and cohen_kappa([], []) is None


def test_agreement_on_the_page_between_handles_and_with_the_detector(dataset, store, tmp_path):
    api = client(dataset, store, tmp_path)
    ids = [row.state_id for row in state_order(dataset)]
    word = {1: "goal", 0: "not-goal"}
    for state_id, ann, bob in zip(ids, ANN, BOB):
        assert post(api, "ann", "state", state_id, word[ann]).status_code == 201
        assert post(api, "bob", "state", state_id, word[bob]).status_code == 201
    # Skips and states only one handle labelled do not count between handles.
    assert post(api, "ann", "state", ids[10], "skip").status_code == 201
    assert post(api, "bob", "state", ids[10], "goal").status_code == 201
    assert post(api, "bob", "state", ids[11], "goal").status_code == 201
    table = api.get("/api/agreement").json()
    assert table["handles"] == [{"a": "ann", "b": "bob", "n": 10, "kappa": pytest.approx(8 / 23)}]

    detector = {row.state_id: row.label for row in dataset.rows}
    bob_ids = ids[:12]
    bob_labels = BOB + [1, 1]
    truth = [detector[s] for s in bob_ids]
    assert 0 < sum(truth) < len(truth)  # the detector says both: its kappa is defined
    assert table["detector"]["bob"] == {
        "n": 12, "agree": pytest.approx(np.mean([x == y for x, y in zip(bob_labels, truth)])),
        "kappa": pytest.approx(_binary_kappa(bob_labels, truth))}
    assert table["detector"]["ann"]["n"] == 10

    # Pairs: ann picks the state of higher progress twice and lower once; "neither" does not count.
    pairs = draw_pairs(dataset, 6)
    higher = ["left" if left.progress > right.progress else "right" for left, right in pairs]
    lower = {"left": "right", "right": "left"}
    for item, value in enumerate([higher[0], lower[higher[1]], higher[2], "neither"]):
        assert post(api, "ann", "pair", str(item), value).status_code == 201
    table = api.get("/api/agreement").json()
    assert table["progress"] == {"ann": {"n": 3, "agree": pytest.approx(2 / 3)}}
    assert agreement(dataset, store) == table


def test_frames_are_the_rendered_states_as_png(dataset, store, tmp_path):
    api = client(dataset, store, tmp_path)
    row = dataset.rows[4]
    response = api.get(f"/frames/{row.state_id}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    [expected] = frames(dataset, resolve_task(dataset.task), [row], cache=None)
    assert np.array_equal(shown, expected)
    assert api.get("/frames/nope.png").status_code == 404
    assert "ArrowLeft" in api.get("/").text


def _plain(row):
    """A row's fields as JSON, comparable with ==."""
    return json.loads(json.dumps({**vars(row), "state": row.state.to_dict()}, default=str))


def test_export_round_trip_through_load_dataset(dataset, tmp_path):
    labels = tmp_path / "labels"
    store = LabelStore(store_path(dataset, labels), dataset)
    api = client(dataset, store, tmp_path)
    flipped, kept, skipped = dataset.rows[0], dataset.rows[1], dataset.rows[2]
    assert post(api, "ann", "state", flipped.state_id, "not-goal" if flipped.label else "goal").status_code == 201
    assert post(api, "ann", "state", kept.state_id, "goal" if kept.label else "not-goal").status_code == 201
    assert post(api, "ann", "state", skipped.state_id, "skip").status_code == 201
    assert post(api, "ann", "pair", "0", "left").status_code == 201

    out = tmp_path / "ann.parquet"
    proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(labels), "--export", str(out))
    assert proc.returncode == 0, proc.stderr
    copy = load_dataset(out)
    assert [row.state_id for row in copy.rows] == [row.state_id for row in dataset.rows]
    by_id = {row.state_id: row for row in copy.rows}
    assert (by_id[flipped.state_id].label, by_id[flipped.state_id].labeller) == (1 - flipped.label, "ann")
    assert (by_id[kept.state_id].label, by_id[kept.state_id].labeller) == (kept.label, "ann")
    untouched = [row for row in dataset.rows if row.state_id not in (flipped.state_id, kept.state_id)]
    assert all(_plain(by_id[row.state_id]) == _plain(row) for row in untouched)  # skips, unlabelled: as they were
    assert _plain(by_id[flipped.state_id])["state"] == _plain(flipped)["state"]
    assert "2 of 15 states labelled by 'ann'" in copy.notes[-1] and copy.build == dataset.build

    assert post(api, "bob", "state", kept.state_id, "goal").status_code == 201
    proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(labels), "--export", str(out),
                    "--overwrite")
    assert proc.returncode == 2 and "several handles have labelled states: ann, bob" in one_line_error(proc)
    proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(labels), "--export", str(out),
                    "--handle", "bob")
    assert proc.returncode == 2 and "exists; pass --overwrite" in one_line_error(proc)
    proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(labels), "--export", str(out),
                    "--handle", "bob", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert [row.labeller for row in load_dataset(out).rows].count("bob") == 1


def test_cli_usage_errors_are_one_line(dataset, tmp_path):
    proc = vlmbench("label", "--dataset", str(tmp_path / "missing.parquet"))
    assert proc.returncode == 2 and "missing.parquet does not exist" in one_line_error(proc)
    proc = vlmbench("label", "--dataset", str(dataset.path), "--handle", "detector", "--labels", str(tmp_path))
    assert proc.returncode == 2 and "handle 'detector'" in one_line_error(proc)
    proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(tmp_path), "--export",
                    str(tmp_path / "out.csv"))
    assert proc.returncode == 2 and "ends in .parquet" in one_line_error(proc)
    proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(tmp_path), "--export",
                    str(tmp_path / "out.parquet"))
    assert proc.returncode == 2 and "no one has labelled states" in one_line_error(proc)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = vlmbench("label", "--dataset", str(dataset.path), "--labels", str(tmp_path), "--port", str(port),
                        timeout=60)
    assert proc.returncode == 2 and f"--port {port}: cannot listen there" in one_line_error(proc)
