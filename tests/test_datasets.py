"""Labelled-state datasets: build, save and load round trip; labels are the detector's on restored
states; re-rendered frames are bit for bit the frames the env showed; bad files are one-line errors;
the shipped datasets load and match their tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vlmbench.envs  # noqa: F401  (headless GL backend before MuJoCo loads)
from vlmbench.datasets import render
from vlmbench.datasets.build import build_dataset
from vlmbench.datasets.families import family_for
from vlmbench.datasets.format import (
    FORMAT_VERSION,
    METADATA_KEY,
    load_dataset,
    resolve_dataset,
    save_dataset,
    shipped_dir,
    shipped_path,
)
from vlmbench.envs.rollout import rollout
from vlmbench.envs.task_env import make_env
from vlmbench.errors import VlmbenchError
from vlmbench.specs import catalogue

from console import one_line_error, vlmbench

TASK_IDS = catalogue.tasks().names()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Small saved datasets, built once: task id -> Dataset (loaded back from its file)."""
    folder = tmp_path_factory.mktemp("datasets")
    cache: dict[str, object] = {}

    def get(task_id: str, n: int = 12):
        if task_id not in cache:
            task = catalogue.resolve_task(task_id)
            dataset = build_dataset(task, n=n, goal_fraction=0.5, seed=7, trajectories=1, trajectory_length=4)
            cache[task_id] = (dataset, save_dataset(dataset, folder / f"{task_id}.parquet"))
        return cache[task_id]

    return get


def _same_state(a, b) -> bool:
    return json.dumps(a.to_dict()) == json.dumps(b.to_dict())


# -- build, save, load -------------------------------------------------------------------------------
def test_build_save_load_round_trip(built):
    dataset, saved = built("cartpole-balance")
    loaded = load_dataset(saved.path)
    assert (loaded.task, loaded.task_version) == ("cartpole-balance", 1)
    assert loaded.build == dataset.build and loaded.notes == dataset.notes
    assert loaded.created == saved.created and loaded.vlmbench_version == saved.vlmbench_version
    assert len(loaded.rows) == len(dataset.rows) == 12 + 4
    for before, after in zip(dataset.rows, loaded.rows):
        assert _same_state(before.state, after.state)
        assert np.array_equal(before.state.values, after.state.values)
        assert before.features == after.features
        assert (before.state_id, before.label, before.progress, before.labeller, before.sampler, before.seed,
                before.episode, before.step, before.trajectory, before.t, before.rating) == \
               (after.state_id, after.label, after.progress, after.labeller, after.sampler, after.seed,
                after.episode, after.step, after.trajectory, after.t, after.rating)
    info = json.loads(pq.read_schema(saved.path).metadata[METADATA_KEY])
    assert info["format_version"] == FORMAT_VERSION and info["task"] == "cartpole-balance"


@pytest.mark.parametrize("task_id, goal_fraction", [("cartpole-balance", 0.1), ("cartpole-upright", 0.9),
                                                    ("mountaincar-flag", 0.5)])
def test_random_states_never_overfill_a_label(task_id, goal_fraction):
    """Random-policy states mostly hold cartpole-balance's goal and mostly miss cartpole-upright's: the
    share of goal states is still the one asked for."""
    dataset = build_dataset(catalogue.resolve_task(task_id), n=20, goal_fraction=goal_fraction, seed=1,
                            trajectories=0)
    assert sum(row.label for row in dataset.lone()) == round(20 * goal_fraction)
    assert any(row.sampler == "random" for row in dataset.rows)


def test_build_meets_the_goal_fraction_and_is_deterministic():
    task = catalogue.resolve_task("cartpole-balance")
    first, again, other = (build_dataset(task, n=20, goal_fraction=0.3, seed=seed, trajectories=2,
                                         trajectory_length=3) for seed in (5, 5, 6))
    lone = first.lone()
    assert len(lone) == 20 and sum(row.label for row in lone) == 6
    assert {row.sampler for row in lone} == {"random", "goal", "near-miss"}
    assert [(r.sampler, r.seed, r.label, r.state.to_dict()) for r in first.rows] == \
           [(r.sampler, r.seed, r.label, r.state.to_dict()) for r in again.rows]
    assert [r.state.to_dict() for r in first.rows] != [r.state.to_dict() for r in other.rows]
    paths = first.trajectories()
    assert [len(rows) for rows in paths.values()] == [3, 3]
    for rows in paths.values():
        assert [row.t for row in rows] == [0, 1, 2] and rows[0].label == 0 and rows[-1].label == 1


@pytest.mark.parametrize("task_id", ["cartpole-upright", "mountaincar-flag", "lunarlander-top-left",
                                     "humanoid-kneel", "walker-splits", "swimmer-letter-m"])
def test_labels_are_the_detector_on_reloaded_states(task_id, built):
    _, saved = built(task_id)
    dataset = load_dataset(saved.path)
    task = catalogue.resolve_task(task_id)
    env = make_env(task, render=False)
    env.reset(seed=123)
    try:
        for row in dataset.rows:
            env.set_state(row.state)
            features = env.features()
            assert features == row.features, row.state_id
            assert row.label == int(task.is_success(features)) and row.progress == task.progress_of(features)
    finally:
        env.close()
    lone = dataset.lone()
    assert sum(row.label for row in lone) == 6, "half of the 12 lone states hold the goal"
    assert any(row.sampler == "near-miss" for row in lone) and all(
        row.label == 0 for row in lone if row.sampler == "near-miss")


def test_near_misses_lie_just_past_the_goal_boundary():
    """cartpole-balance's goal: |pole angle| < 6 degrees and |cart position| < 0.5, around the balanced
    state (0, 0, 0, 0); a near miss is 1 to 2 steps of x1.25 past that boundary along its direction."""
    dataset = build_dataset(catalogue.resolve_task("cartpole-balance"), n=40, goal_fraction=0.5, seed=2,
                            trajectories=0)
    def past(row) -> float:  # how far out of the goal region, in multiples of the boundary
        x, _, angle, _ = row.state.values
        return max(abs(angle) / np.radians(6), abs(x) / 0.5)

    near = [past(row) for row in dataset.rows if row.sampler == "near-miss"]
    goals = [past(row) for row in dataset.rows if row.sampler == "goal"]
    assert len(near) >= 10 and all(1 <= p <= 2 * 1.25 for p in near)
    assert max(near) > 1.5, "near misses spread past the first failing step"
    assert len(goals) >= 10 and all(p < 1 for p in goals) and min(goals) < 0.5


@pytest.mark.parametrize("task_id", ["humanoid-kneel", "cartpole-balance", "lunarlander-top-left"])
def test_goals_near_misses_and_trajectories_are_reproduced_from_their_seed(task_id, built):
    _, saved = built(task_id)
    env = make_env(catalogue.resolve_task(task_id), render=False)
    env.reset(seed=0)
    try:
        family = family_for(env)
        for sampler, index in (("goal", 0), ("near-miss", 1)):
            row = next(r for r in saved.rows if r.sampler == sampler)
            assert _same_state(family.goal_and_near_miss(row.seed)[index], row.state)
        (path,) = saved.trajectories().values()
        again = family.trajectory(path[0].seed, len(path))
        assert all(_same_state(a, row.state) for a, row in zip(again, path, strict=True))
    finally:
        env.close()


def test_cartpole_trajectories_are_random_falls_played_backwards(built):
    """Each state of a cartpole trajectory is the state after ``step`` random actions of the episode its
    seed starts, with the velocities negated, and later states come from earlier steps."""
    _, saved = built("cartpole-balance")
    (path,) = saved.trajectories().values()
    env = make_env(catalogue.resolve_task("cartpole-balance"), render=False)
    try:
        env.reset(seed=path[0].seed)
        env.action_space.seed(path[0].seed)
        forward = {0: np.array(env.unwrapped.state, dtype=np.float64)}
        for step in range(1, path[0].step + 1):
            env.step(env.action_space.sample())
            forward[step] = np.array(env.unwrapped.state, dtype=np.float64)
    finally:
        env.close()
    assert [row.step for row in path] == sorted((row.step for row in path), reverse=True) and path[-1].step == 0
    for row in path:
        x, x_dot, angle, angle_dot = forward[row.step]
        assert np.array_equal(row.state.values, [x, -x_dot, angle, -angle_dot])


def test_restoring_a_replayed_reset_state_restores_its_observation():
    env = make_env(catalogue.resolve_task("lunarlander-top-left"), render=False)
    try:
        env.reset(seed=1)
        at_reset = env.get_state()
        for _ in range(30):
            env.step(0)
        assert not np.array_equal(env.features()["y"], at_reset.observation[1])
        assert np.array_equal(env.set_state(at_reset), at_reset.observation)
        assert env.features()["y"] == float(at_reset.observation[1])
    finally:
        env.close()


# -- re-rendering ------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", ["cartpole-upright", "humanoid-kneel"])
def test_rerendered_frames_are_the_sampled_frames(task_id, built, tmp_path):
    """A random-policy state re-renders as the frame its rollout rendered; a perturbed goal state as the
    frame the env showed right after the sampler placed it; and twice the same."""
    dataset, saved = built(task_id)
    task = catalogue.resolve_task(task_id)
    random_row = min((r for r in saved.rows if r.sampler == "random"), key=lambda r: (r.episode, r.step))
    episode = rollout(task, episodes=random_row.episode + 1, seed=random_row.seed, steps=random_row.step)[-1]
    assert _same_state(episode.states[-1], random_row.state)

    goal_row = next(r for r in saved.rows if r.sampler == "goal")
    env = make_env(task, render=True)
    env.reset(seed=0)
    try:
        family = family_for(env)
        goal, _ = family.goal_and_near_miss(goal_row.seed)
        shown = env.render()
    finally:
        env.close()
    assert _same_state(goal, goal_row.state)

    once = render.frames(saved, task, [random_row, goal_row], cache=None)
    twice = render.frames(saved, task, [random_row, goal_row], cache=None)
    assert np.array_equal(once[0], episode.frames[-1]) and np.array_equal(once[1], shown)
    assert np.array_equal(once[0], twice[0]) and np.array_equal(once[1], twice[1])
    assert not np.array_equal(once[0], once[1])


def test_frames_come_from_the_cache_once_rendered(built, tmp_path, monkeypatch):
    _, saved = built("cartpole-upright")
    task = catalogue.resolve_task("cartpole-upright")
    rows = saved.rows[:3]
    first = render.frames(saved, task, rows, cache=tmp_path)
    folder = render.cache_folder(saved, task, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{row.state_id}.png" for row in rows)

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    with monkeypatch.context() as patch:
        patch.setattr(render, "render_states", lambda task, states, **kw: [] if not states else no_rendering())
        again = render.frames(saved, task, rows, cache=tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    wider = task.model_copy(update={"render": task.render.model_copy(update={"width": 160})})
    assert render.cache_folder(saved, wider, tmp_path) != folder


def test_parallel_rendering_gives_the_same_frames(built):
    _, saved = built("cartpole-upright")
    task = catalogue.resolve_task("cartpole-upright")
    rows = saved.rows[:render.CHUNK + 3]
    alone = render.frames(saved, task, rows, cache=None)
    parallel = render.frames(saved, task, rows, cache=None, workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(alone, parallel))


# -- the command line --------------------------------------------------------------------------------
def _rewrite(source: Path, target: Path, table_change=None, info_change=None) -> Path:
    table = pq.read_table(source)
    info = json.loads(table.schema.metadata[METADATA_KEY])
    if info_change:
        info.update(info_change)
    if table_change:
        table = table_change(table)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(info)}), target)
    return target


def _broken_files(source: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, words its one-line error must hold)."""
    text = folder / "text.parquet"
    text.write_text("state_id,label\n0,1\n")
    truncated = folder / "truncated.parquet"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    plain = folder / "plain.parquet"
    pq.write_table(pa.table({"label": [1]}), plain)
    return {
        "missing": (folder / "missing.parquet", "does not exist"),
        "not parquet": (text, "not a readable Parquet file"),
        "truncated": (truncated, "not a readable Parquet file"),
        "no metadata": (plain, "not a vlmbench dataset"),
        "missing columns": (_rewrite(source, folder / "cols.parquet", lambda t: t.drop(["label", "state"])),
                            "missing columns: state, label"),
        "old task version": (_rewrite(source, folder / "v2.parquet", info_change={"task_version": 2}),
                             "built for version 2 of task 'cartpole-upright', which is now version 1"),
        "unknown task": (_rewrite(source, folder / "other.parquet", info_change={"task": "no-such-task"}),
                         "task 'no-such-task', which is not in the task catalogue"),
        "newer format": (_rewrite(source, folder / "f9.parquet", info_change={"format_version": 9}),
                         "format version 9 is newer"),
        "no rows": (_rewrite(source, folder / "empty.parquet", lambda t: t.slice(0, 0)), "holds no states"),
        "bad label": (_rewrite(source, folder / "label.parquet", lambda t: t.set_column(
            t.schema.get_field_index("label"), "label", pa.array([2] * t.num_rows, pa.int8()))),
            "label 2 is neither"),
    }


def test_bad_dataset_files_are_one_line_errors_naming_the_file(built, tmp_path):
    _, saved = built("cartpole-upright")
    for name, (path, words) in _broken_files(saved.path, tmp_path).items():
        proc = vlmbench("dataset", "show", str(path), "--sheet", str(tmp_path / "sheet.png"))
        line = one_line_error(proc)
        assert proc.returncode == 2 and "\n" not in line, (name, proc.stderr)
        assert str(path) in line and words in line, (name, line)
        with pytest.raises(VlmbenchError, match=words):
            load_dataset(path)


def test_naming_and_task_mistakes_are_one_line_errors(built, tmp_path):
    _, saved = built("cartpole-upright")
    cases = [
        (["dataset", "show", "no-such-dataset"], "unknown dataset 'no-such-dataset'"),
        (["dataset", "show", str(saved.path), "--task", "cartpole-balance"],
         f"{saved.path}: holds states of task 'cartpole-upright', not 'cartpole-balance'"),
        (["dataset", "build", "--task", "cartpole-upright", "--n", "5", "--goal-fraction", "1.5"],
         "--goal-fraction 1.5: give a share from 0 to 1"),
        (["dataset", "build", "--task", "cartpole-upright", "--n", "5", "--out", str(saved.path)],
         f"{saved.path} exists; pass --overwrite"),
        (["dataset", "build", "--task", "no-such-task", "--n", "5"], "unknown task 'no-such-task'"),
    ]
    for args, words in cases:
        proc = vlmbench(*args, cwd=tmp_path)
        line = one_line_error(proc)
        assert proc.returncode == 2 and "\n" not in line and words in line, (args, line)


def test_build_show_and_list_through_the_console(tmp_path):
    build = vlmbench("dataset", "build", "--task", "cartpole", "--n", "10", "--goal-fraction", "0.4",
                     "--trajectories", "1", "--trajectory-length", "3", cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    path = tmp_path / "results/datasets/cartpole-upright.parquet"
    assert "build cartpole-upright: 13/13" in build.stdout and f"saved {path.relative_to(tmp_path)}" in build.stdout
    dataset = load_dataset(path)
    assert sum(row.label for row in dataset.lone()) == 4 and len(dataset.trajectories()) == 1

    show = vlmbench("dataset", "show", str(path), "--sample", "4", cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "10 states, 4 goal, 6 not goal" in show.stdout and "1 trajectories of 3 states" in show.stdout
    sheet = tmp_path / "results/datasets/cartpole-upright.png"
    from PIL import Image

    with Image.open(sheet) as image:  # 4 sampled states and the 3-state trajectory: two rows of 224-pixel frames
        assert image.size[0] == 6 * 224 and image.size[1] > 2 * 224
    assert len(list(render.cache_folder(dataset, catalogue.resolve_task("cartpole-upright"),
                                        tmp_path / "results/frames").glob("*.png"))) == 7

    listing = vlmbench("dataset", "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    for task_id in TASK_IDS:
        assert task_id in listing.stdout
    assert "results/datasets/cartpole-upright.parquet" in listing.stdout.replace("\n", "")


# -- shipped datasets --------------------------------------------------------------------------------
def test_every_task_ships_a_small_dataset():
    assert sorted(p.stem for p in shipped_dir().glob("*.parquet")) == TASK_IDS
    assert sum(p.stat().st_size for p in shipped_dir().glob("*.parquet")) < 4_000_000


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_shipped_dataset_loads_and_matches_its_task(task_id):
    task = catalogue.resolve_task(task_id)
    assert resolve_dataset(task_id) == shipped_path(task_id)
    dataset = load_dataset(shipped_path(task_id))
    assert (dataset.task, dataset.task_version) == (task.id, task.version)
    labels = {row.label for row in dataset.lone()}
    assert labels == {0, 1} and not dataset.notes
    assert len(dataset.lone()) >= 100 and len(dataset.trajectories()) >= 3
    for rows in dataset.trajectories().values():
        assert rows[0].label == 0 and rows[-1].label == 1
