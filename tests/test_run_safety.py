"""Run records under stress: unsafe names, concurrent processes, kills at the worst moment, damaged or
unwritable files, resumes that must finish what a run lacks. Nothing bought may be lost or bought twice."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from console import SCRIPT, one_line_error, vlmbench
from stable_baselines3.common.buffers import ReplayBuffer
from test_training import TOY_FEEDBACK, curves, queries, toy_config

import vlmbench.agents.feedback as feedback_module
from vlmbench.agents.checkpoints import load_replay_buffer, save_replay_buffer
from vlmbench.agents.config import RunConfig
from vlmbench.agents.feedback import FeedbackLoop
from vlmbench.agents.run import train
from vlmbench.errors import VlmbenchError
from vlmbench.files import FolderLock
from vlmbench.judges.oracle import OracleJudge, OracleParams
from vlmbench.results.record import config_digest

# 40 labels in 2 rounds of 20 (two chunks each: 16 + 4), over 2048 steps with a checkpoint every 512.
SMALL = TOY_FEEDBACK.model_copy(update={"label_budget": 40, "rounds": 2, "initial_fraction": 0.5, "epochs": 5})


def small_config(**overrides):
    return toy_config(**{"timesteps": 2048, "checkpoint_every": 512, "feedback": SMALL, **overrides})


class CountingOracle(OracleJudge):
    """The noise-free oracle, counting the pairs it is asked about (what an API judge would bill)."""

    asked = 0

    def __init__(self) -> None:
        super().__init__("oracle", OracleParams())

    def _compare(self, task, pairs):
        CountingOracle.asked += len(pairs)
        return super()._compare(task, pairs)


@pytest.fixture
def counting_judge(monkeypatch):
    CountingOracle.asked = 0
    monkeypatch.setattr("vlmbench.agents.run.build_judge", lambda config, source=None: CountingOracle())
    return CountingOracle


def assert_bought_once(folder: Path, budget: int) -> None:
    lines = queries(folder)
    ids = [line["query_id"] for line in lines]
    assert len(ids) == len(set(ids)) == budget, f"{len(ids)} query lines ({len(set(ids))} distinct), budget {budget}"


# -- names and overwrite ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../victim", "/tmp/victim-abs", "a/b", "..", ".hidden", "-flag"])
def test_unsafe_run_names_are_refused_and_touch_nothing(tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--results", str(tmp_path / "runs"),
                    "--name", name, "--overwrite", cwd=tmp_path)
    assert proc.returncode == 2
    assert "a run name is one folder name" in one_line_error(proc)
    assert (victim / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "runs").exists()


def test_overwrite_deletes_only_run_records(tmp_path):
    folder = tmp_path / "runs" / "notes"
    folder.mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--results", str(tmp_path / "runs"),
                    "--name", "notes", "--overwrite")
    assert proc.returncode == 2 and "is not a vlmbench run record" in one_line_error(proc)
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_resume_with_overwrite_is_refused_and_keeps_the_run(tmp_path):
    train(small_config(timesteps=256), results_dir=tmp_path, name="kept")
    before = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir() if p.is_file()}
    proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--results", str(tmp_path),
                    "--name", "kept", "--timesteps", "256", "--resume", "--overwrite")
    assert proc.returncode == 2
    assert one_line_error(proc) == "error: --resume continues the run record that --overwrite deletes: pass one of them"
    assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir() if p.is_file()} == before


# -- locks, kills and damaged files ---------------------------------------------------------------------
def test_a_second_process_on_a_run_folder_is_refused(tmp_path):
    config = small_config(timesteps=256)
    train(config, results_dir=tmp_path, name="busy")
    lock = FolderLock(tmp_path / "busy").acquire()  # as a live run holds it
    try:
        proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--results", str(tmp_path),
                        "--name", "busy", "--resume", "--timesteps", "512")
    finally:
        lock.release()
    assert proc.returncode == 2
    assert f"run folder {tmp_path / 'busy'} is in use by PID {os.getpid()}" in one_line_error(proc)


def interrupt_writing(monkeypatch, suffix: str):
    """Atomic writes of files whose names end with ``suffix`` die as a kill -9 would; returns the real writer."""
    original = feedback_module.atomic_write

    def dying(path, write, **kwargs):
        if path.name.endswith(suffix):
            raise KeyboardInterrupt
        return original(path, write, **kwargs)

    monkeypatch.setattr(feedback_module, "atomic_write", dying)
    return original


def test_answers_logged_before_a_kill_are_reused_not_bought_again(tmp_path, monkeypatch, counting_judge):
    config = small_config()
    real = interrupt_writing(monkeypatch, "round-0001.pkl")  # round two is asked and logged, never filed
    with pytest.raises(KeyboardInterrupt):
        train(config, results_dir=tmp_path, name="kill")
    assert len(queries(tmp_path / "kill")) == 40 and counting_judge.asked == 40
    monkeypatch.setattr(feedback_module, "atomic_write", real)
    result = train(config, results_dir=tmp_path, name="kill", resume=True)
    assert counting_judge.asked == 40  # nothing asked twice
    assert_bought_once(result.folder, 40)
    assert result.labels == 40


def test_a_kill_between_chunks_buys_only_the_rest_of_the_round(tmp_path, monkeypatch, counting_judge):
    config = small_config()
    calls = []
    original = CountingOracle._compare

    def dies_on_second_chunk(self, task, pairs):
        calls.append(len(pairs))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, task, pairs)

    monkeypatch.setattr(CountingOracle, "_compare", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        train(config, results_dir=tmp_path, name="chunks")
    assert len(queries(tmp_path / "chunks")) == 16  # the first chunk of round one
    monkeypatch.setattr(CountingOracle, "_compare", original)
    result = train(config, results_dir=tmp_path, name="chunks", resume=True)
    assert counting_judge.asked == 40
    assert_bought_once(result.folder, 40)


def test_a_torn_last_query_line_is_dropped_and_reported(tmp_path, monkeypatch):
    config = small_config()
    monkeypatch.setattr(FeedbackLoop, "_train", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train(config, results_dir=tmp_path, name="torn")
    monkeypatch.undo()
    log = tmp_path / "torn" / "queries.jsonl"
    with open(log, "a") as fh:
        fh.write('{"query_id": "r1-q0", "value": 1.0, "quest')  # a write cut short by a kill
    notes = []
    result = train(config, results_dir=tmp_path, name="torn", resume=True, log=notes.append)
    assert any("dropped a torn last line" in note for note in notes)
    assert_bought_once(result.folder, 40)


def test_a_damaged_loop_state_falls_back_to_the_previous_one_keeping_every_label(tmp_path, monkeypatch):
    config = small_config()
    killed_after_three_checkpoints(config, tmp_path, "damaged", monkeypatch)
    state = tmp_path / "damaged" / "checkpoints" / "feedback" / "state.pkl"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # as a full disk once left it
    notes = []
    result = train(config, results_dir=tmp_path, name="damaged", resume=True, log=notes.append)
    assert any("state.pkl is damaged" in note and "previous state" in note for note in notes)
    assert_bought_once(result.folder, 40)
    assert result.labels == 40


def test_a_full_disk_stops_the_run_cleanly_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    config = small_config()
    saves = []
    original_dumps = pickle.dumps

    def disk_full_on_third_save(obj, *args, **kwargs):
        if isinstance(obj, dict) and "buffer" in obj:
            saves.append(1)
            if len(saves) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return original_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(feedback_module.pickle, "dumps", disk_full_on_third_save)
    with pytest.raises(VlmbenchError, match="No space left on device.*every answer bought so far is kept"):
        train(config, results_dir=tmp_path, name="full")
    monkeypatch.undo()
    folder = tmp_path / "full"
    assert not list(folder.rglob(".*.tmp-*"))  # no half-written temporary files left
    with open(folder / "checkpoints" / "feedback" / "state.pkl", "rb") as fh:
        pickle.load(fh)  # the previous checkpoint is whole
    result = train(config, results_dir=tmp_path, name="full", resume=True)
    assert_bought_once(result.folder, 40)


def test_an_unwritable_results_folder_fails_before_the_judge_is_asked(tmp_path, counting_judge):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(VlmbenchError, match="cannot create the run folder"):
        train(small_config(), results_dir=blocker / "runs", name="x")
    assert counting_judge.asked == 0


# -- checkpoints ---------------------------------------------------------------------------------------
def test_replay_checkpoints_grow_with_steps_taken_not_capacity(tmp_path):
    import gymnasium as gym

    space = gym.spaces.Box(-1, 1, (300,), dtype=np.float32)
    buffer = ReplayBuffer(200_000, space, gym.spaces.Box(-1, 1, (17,), dtype=np.float32), device="cpu", n_envs=2)
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs = rng.standard_normal((2, 300)).astype(np.float32)
        buffer.add(obs, obs + 1, rng.standard_normal((2, 17)), rng.standard_normal(2), np.zeros(2), [{}, {}])
    path = tmp_path / "replay.npz"
    save_replay_buffer(buffer, path)
    assert path.stat().st_size < 2 * 50 * 2 * (300 + 300 + 17 + 3) * 4  # 50 filled rows, not 200,000
    restored = ReplayBuffer(200_000, space, gym.spaces.Box(-1, 1, (17,), dtype=np.float32), device="cpu", n_envs=2)
    load_replay_buffer(restored, path)
    assert restored.pos == 50 and not restored.full
    for name in ("observations", "next_observations", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(restored, name)[:50], getattr(buffer, name)[:50])


# -- resume finishes what a run lacks -------------------------------------------------------------------
def test_resume_finishes_a_run_killed_after_its_evaluation(tmp_path):
    config = small_config(timesteps=512)
    first = train(config, results_dir=tmp_path, name="finish")
    kept = {name: (first.folder / name).read_bytes() for name in ("queries.jsonl", "eval.json", "curves.csv")}
    for name in ("episode.gif", "episode.png", "curves.png", "timing.json"):
        (first.folder / name).unlink()
    again = train(config, results_dir=tmp_path, name="finish", resume=True)
    for name in ("episode.gif", "episode.png", "curves.png", "timing.json"):
        assert (again.folder / name).is_file(), name
    assert kept == {name: (first.folder / name).read_bytes() for name in kept}
    assert again.evaluation == first.evaluation


def test_timing_adds_up_sessions_and_evaluations_fall_where_an_uninterrupted_run_has_them(tmp_path, monkeypatch):
    config = small_config(timesteps=3072, eval_every=1024, eval_episodes=1)
    whole = train(config, results_dir=tmp_path, name="whole")
    killed_after_three_checkpoints(config, tmp_path, "parts", monkeypatch)
    parts = train(config, results_dir=tmp_path, name="parts", resume=True)

    def evaluated(folder):
        return [int(r["timesteps"]) for r in curves(folder) if r["success_rate"] and r["stage"] == "agent"]

    assert evaluated(parts.folder) == evaluated(whole.folder) == [0, 1024, 2048]
    # restored generators, env states and feedback state: the resumed run is the uninterrupted one
    for name in ("queries.jsonl", "curves.csv", "eval.json"):
        assert (parts.folder / name).read_bytes() == (whole.folder / name).read_bytes(), name
    timing = json.loads((parts.folder / "timing.json").read_text())
    assert len(timing["sessions"]) == 2 and timing["resumed"] is True
    assert timing["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in timing["sessions"]), abs=1e-3)
    assert all(s["wall_seconds"] > 0 for s in timing["sessions"])


def test_a_run_without_media_renders_nothing_and_counts_as_finished(tmp_path):
    config = small_config(timesteps=512, media=False)
    first = train(config, results_dir=tmp_path, name="plain")
    assert (first.folder / "curves.png").is_file() and (first.folder / "summary.json").is_file()
    assert not (first.folder / "episode.gif").exists() and not (first.folder / "episode.png").exists()
    timing = (first.folder / "timing.json").read_bytes()
    again = train(config, results_dir=tmp_path, name="plain", resume=True)
    assert (again.folder / "timing.json").read_bytes() == timing  # finished: no new session, nothing rendered
    assert not (again.folder / "episode.gif").exists() and again.evaluation == first.evaluation
    shown = train(config.model_copy(update={"media": True}), results_dir=tmp_path, name="plain", resume=True)
    assert (shown.folder / "episode.gif").is_file() and (shown.folder / "episode.png").is_file()  # the same run
    assert json.loads((shown.folder / "header.json").read_text())["config"]["media"] is True
    assert shown.evaluation == first.evaluation


def test_records_made_before_the_media_setting_keep_their_identity():
    config = RunConfig(task="cartpole-upright", judge="oracle").model_dump(mode="json")
    before = {k: v for k, v in config.items() if k != "media"}
    assert config_digest(before) == config_digest(config) == config_digest({**config, "media": False})
    assert config_digest({**config, "seed": 1}) != config_digest(config)


def test_resume_with_more_timesteps_extends_a_finished_run(tmp_path):
    config = small_config(timesteps=1024)
    first = train(config, results_dir=tmp_path, name="extend")
    longer = config.model_copy(update={"timesteps": 2048})
    with pytest.raises(VlmbenchError, match="--resume"):
        train(longer, results_dir=tmp_path, name="extend")
    result = train(longer, results_dir=tmp_path, name="extend", resume=True)
    assert json.loads((result.folder / "checkpoints" / "stages.json").read_text())["done"] == {"agent": 2048}
    assert int(curves(result.folder)[-1]["timesteps"]) >= 2048
    assert json.loads((result.folder / "header.json").read_text())["config"]["timesteps"] == 2048
    assert_bought_once(result.folder, result.labels)
    assert result.labels >= first.labels


def test_a_resume_never_shortens_a_run(tmp_path):
    config = _write(tmp_path / "c.yaml", "checkpoint_every: 512\nfeedback: {rounds: 2, epochs: 3}\n")

    def run(*extra):
        return vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--eval-episodes", "1",
                        "--label-budget", "20", "--results", str(tmp_path), "--config", str(config), "--name", "long",
                        *extra)

    assert run("--timesteps", "1024").returncode == 0

    def files():  # the record, less the lock file (the last PID to hold it)
        return {p.name: p.read_bytes() for p in (tmp_path / "long").iterdir() if p.is_file() and p.name != ".lock"}

    saved = files()
    proc = run("--timesteps", "512", "--resume")
    assert proc.returncode == 2
    assert "holds a run of timesteps 1,024; a resume may extend it, not shorten it to 512" in one_line_error(proc)
    assert files() == saved


# -- labels follow the run's length ----------------------------------------------------------------------
def test_a_one_step_run_buys_only_its_first_round(tmp_path, counting_judge):
    result = train(toy_config(timesteps=1), results_dir=tmp_path, name="short")
    first_round = round(TOY_FEEDBACK.label_budget * TOY_FEEDBACK.initial_fraction)
    assert result.labels == counting_judge.asked == first_round


# -- the command line --------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "99999999999"])
def test_out_of_range_seeds_are_refused_without_a_folder(tmp_path, seed):
    proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--seed", seed,
                    "--results", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "seed" in one_line_error(proc)
    assert not (tmp_path / "runs").exists()


def test_a_bad_value_names_its_flag_or_its_config_line(tmp_path):
    config = _write(tmp_path / "c.yaml", "eval_episodes: 5\nfeedback: {rounds: 0}\n")
    proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--label-budget", "-1", "--n-envs", "0",
                    "--config", str(config), "--results", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert sorted(one_line_error(proc).splitlines()) == [
        "error: --label-budget -1: Input should be greater than or equal to 1",
        "error: --n-envs 0: Input should be greater than or equal to 1",
        f"error: {config}:2: feedback.rounds: Input should be greater than or equal to 1"]


@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_bad_judge_param_names_its_line_in_the_judge_file(tmp_path, command):
    judge = _write(tmp_path / "mine.yaml", "name: mine\ntype: oracle\nparams:\n  temperature: 0.1\n  temprature: 0.2\n")
    proc = vlmbench(command, "--task", "cartpole-upright", "--judge", str(judge), "--results", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert one_line_error(proc) == f"error: {judge}:5: params.temprature: unknown field"
    assert not (tmp_path / "out").exists()


def test_rejected_runs_leave_no_half_made_folder(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("task: cartpole-upright\njudge: oracle\nalgo_kwargs: {no_such_setting: 1}\n")
    proc = vlmbench("run", "--config", str(config), "--results", str(tmp_path / "runs"))
    assert proc.returncode == 2 and "algo_kwargs" in one_line_error(proc)
    assert not list((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


def test_ctrl_c_says_how_to_continue_and_exits_130(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(SCRIPT)] if SCRIPT.exists() else ["python", "-m", "vlmbench"]
    # A suite started in the background by a shell inherits SIGINT ignored; a person's terminal does not.
    proc = subprocess.Popen([*command, "run", "--task", "cartpole-upright", "--judge", "oracle", "--results",
                             str(tmp_path), "--name", "ctrl-c"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.readline()  # the first checkpoint's plain line: training is under way
    assert first.startswith("agent: "), first + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "interrupted; continue with --resume" in err and "Traceback" not in err


def test_plain_lines_per_checkpoint_without_a_terminal(tmp_path):
    proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--timesteps", "1024",
                    "--eval-episodes", "1", "--label-budget", "20", "--results", str(tmp_path), "--config",
                    str(_write(tmp_path / "c.yaml", "checkpoint_every: 512\nfeedback: {rounds: 2, epochs: 3}\n")),
                    "--name", "new", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert f"note: {tmp_path / 'new'} held no run to resume; starting one" in proc.stdout.splitlines()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("agent: ")]
    assert lines[0].startswith("agent: 512/1,024 steps, answers ") and "checkpoint " in lines[0]
    assert lines[-1].startswith("agent: finished 1,024 steps") and len(lines) == 2
    assert "env return" not in proc.stdout  # constant on a task that never ends early


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_default_names_differ_where_the_config_does(tmp_path):
    for reward in ("preference", "rating"):
        proc = vlmbench("run", "--task", "cartpole-upright", "--judge", "oracle", "--reward", reward, "--timesteps",
                        "256", "--eval-episodes", "1", "--results", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and "--preference--" in names[0] and "--rating--" in names[1]


def test_config_files_may_name_their_run_and_print_config_shows_every_field(tmp_path):
    config = _write(tmp_path / "named.yaml", "task: cartpole-upright\njudge: oracle\nname: my-run\ntimesteps: 256\n"
                                               "eval_episodes: 1\n")
    shown = vlmbench("run", "--config", str(config), "--print-config")
    assert shown.returncode == 0 and "label_budget: 200" in shown.stdout and "timesteps: 256" in shown.stdout
    proc = vlmbench("run", "--config", str(config), "--results", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs" / "my-run" / "eval.json").is_file()


def test_a_damaged_agent_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch):
    config = small_config()
    killed_after_three_checkpoints(config, tmp_path, "agent", monkeypatch)
    agent = tmp_path / "agent" / "checkpoints" / "agent.zip"
    assert (tmp_path / "agent" / "checkpoints" / "agent.prev.zip").is_file()
    agent.write_bytes(b"PK\x03\x04 not a zip any more")
    notes = []
    result = train(config, results_dir=tmp_path, name="agent", resume=True, log=notes.append)
    assert any("agent.zip" in note and "damaged" in note and "agent.prev.zip" in note for note in notes)
    assert_bought_once(result.folder, 40)


def killed_after_three_checkpoints(config, tmp_path: Path, name: str, monkeypatch) -> None:
    """Run ``config`` until a kill at the rollout end at 1,792 steps (after checkpoints at 512, 1,024, 1,536)."""
    original = FeedbackLoop._on_rollout_end

    def dying(self):
        if self.num_timesteps >= 1792:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(FeedbackLoop, "_on_rollout_end", dying)
    with pytest.raises(KeyboardInterrupt):
        train(config, results_dir=tmp_path, name=name)
    monkeypatch.undo()
