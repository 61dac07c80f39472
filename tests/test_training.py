"""End-to-end training runs at toy scale: every reward path, records, budgets, abstentions, resume, CLI.

Each run is a few thousand CartPole steps (seconds on one CPU core); none of these tests checks that
an agent learns the task (bench/bench_oracle_cartpole.py does). What they check is the plumbing: the
judge's answers reach the reward model or the algorithm's buffers, every label is recorded once, a
run can be interrupted and resumed, and the learned reward model ranks held-out goal states above
states where the goal fails.
"""

from __future__ import annotations

import csv
import json
import pickle
import re
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vlmbench.agents.config import FeedbackConfig, RunConfig
from vlmbench.agents.feedback import FeedbackLoop
from vlmbench.agents.run import RunResult, train
from vlmbench.agents.relabel import LearnedRewardCallback, ScoreRelabelCallback
from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Answer, Question
from vlmbench.judges.oracle import OracleJudge, OracleParams
from vlmbench.learning import PreferenceDataset, RatingDataset, RewardEnsemble
from vlmbench.specs.catalogue import resolve_task

TASK = "cartpole-upright"
RECORD_FILES = ("header.json", "queries.jsonl", "curves.csv", "eval.json")
HELD_OUT_SEED = 424_242  # training envs and evaluation (seed + 1_000_000) never use these seeds

# Toy feedback: 80 labels in 4 rounds. Small batches and many epochs give the tiny label set enough
# gradient steps to shape the reward model (default settings suit 200 labels over 80k steps).
TOY_FEEDBACK = FeedbackConfig(label_budget=80, rounds=4, epochs=100, batch_size=16)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def toy_config(**overrides) -> RunConfig:
    settings = dict(task=TASK, judge="oracle", timesteps=3000, n_envs=8, eval_episodes=2, checkpoint_every=1000,
                    feedback=TOY_FEEDBACK)
    return RunConfig(**{**settings, **overrides})


def queries(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]


def curves(folder: Path) -> list[dict]:
    with open(folder / "curves.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_complete(result: RunResult, config: RunConfig) -> None:
    """The run trained for its timesteps and wrote its final record."""
    folder = result.folder
    for name in (*RECORD_FILES, "timing.json", "episode.gif", "episode.png", "curves.png"):
        assert (folder / name).is_file(), f"{name} missing from {folder}"
    final = curves(folder)[-1]
    assert final["stage"] == "final" and int(final["timesteps"]) >= config.timesteps
    evaluation = json.loads((folder / "eval.json").read_text())
    assert len(evaluation["episodes"]) == config.eval_episodes
    assert result.evaluation.success_rate == np.mean([e["success"] for e in evaluation["episodes"]])
    assert json.loads((folder / "checkpoints" / "stages.json").read_text())["done"] == {"agent": config.timesteps}


def saved_reward_model(folder: Path) -> dict:
    """The reward model's state dict in the feedback loop's checkpoint."""
    with open(folder / "checkpoints" / "feedback" / "state.pkl", "rb") as fh:
        return pickle.load(fh)["reward_model"]


def load_reward_model(folder: Path, config: RunConfig) -> RewardEnsemble:
    f = config.feedback
    ensemble = RewardEnsemble(4, members=f.members, hidden=f.hidden)  # CartPole: 4 observation numbers
    ensemble.load_state_dict(saved_reward_model(folder))
    return ensemble


def saved_replay(folder: Path) -> SimpleNamespace:
    """The agent's checkpointed replay buffer: its filled rows, position and fullness."""
    with np.load(folder / "checkpoints" / "agent_replay.npz") as saved:
        return SimpleNamespace(**{k: saved[k] for k in saved.files})


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counting half."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@pytest.fixture(scope="module")
def held_out_states() -> tuple[np.ndarray, np.ndarray]:
    """Observations and goal flags (the task's detector) of the first 60 steps of 20 random-policy
    episodes on seeds no run trains or evaluates on: the pole starts upright, falls and swings.

    Hand-built fallen poles at rest are not used: CartPole's angle is unwrapped and a pole lying still
    far from vertical never occurs in training, so a toy-scale reward model need not rank them."""
    from vlmbench.envs.rollout import rollout

    episodes = rollout(resolve_task(TASK), episodes=20, seed=HELD_OUT_SEED, steps=60, render=False, keep_states=False)
    observations = np.concatenate([np.stack(ep.observations) for ep in episodes]).astype(np.float32)
    goal = np.concatenate([np.array(ep.successes) for ep in episodes])
    assert 0.1 < goal.mean() < 0.9  # both kinds of state are well represented
    return observations, goal


def assert_ranks_goal_states_first(ensemble: RewardEnsemble, held_out_states) -> None:
    observations, goal = held_out_states
    reward = ensemble.predict(observations)
    assert auc(reward[goal], reward[~goal]) > 0.8
    assert reward[goal].mean() > reward[~goal].mean()
    # The same upright poles with the cart pushed off the 2.4 m track (|x| = 3 m): the goal fails.
    off_track = observations[goal].copy()
    off_track[:, 0] = np.where(off_track[:, 0] < 0, -3.0, 3.0)
    assert reward[goal].mean() > ensemble.predict(off_track).mean()


@pytest.fixture(scope="module")
def preference_run(tmp_path_factory) -> tuple[RunResult, RunConfig]:
    """One preference run (oracle judge, PPO), shared by the tests that only read its record."""
    config = toy_config()
    return train(config, results_dir=tmp_path_factory.mktemp("runs"), name="preference"), config


# -- reward paths -----------------------------------------------------------------------------------
def test_preference_path_learns_a_reward_that_ranks_goal_states_first(preference_run, held_out_states):
    result, config = preference_run
    assert_complete(result, config)
    header = json.loads((result.folder / "header.json").read_text())
    assert header["reward_mode"] == "preference" and header["algorithm"] == "ppo"
    lines = queries(result.folder)
    assert len(lines) == result.labels == config.feedback.label_budget and result.abstained == 0
    assert {line["question"] for line in lines} == {"compare"}
    assert sorted({line["round"] for line in lines}) == list(range(config.feedback.rounds))
    labels = PreferenceDataset.load(result.folder / "checkpoints" / "feedback" / "labels.npz")
    assert len(labels) == config.feedback.label_budget
    first, second, p_first = labels.pairs()
    keys = labels.table.to_arrays()["segment_keys"]
    recorded = {(line["segments"][0], line["segments"][1]): line["value"] for line in lines}
    assert {(keys[a], keys[b]): p for a, b, p in zip(first, second, p_first)} == recorded
    final = curves(result.folder)[-1]
    assert int(final["labels"]) == config.feedback.label_budget
    assert float(final["reward_model_accuracy"]) > 0.7
    assert_ranks_goal_states_first(load_reward_model(result.folder, config), held_out_states)


def test_rating_path_learns_a_reward_that_ranks_goal_states_first(tmp_path, held_out_states):
    config = toy_config(reward="rating")
    result = train(config, results_dir=tmp_path, name="rating")
    assert_complete(result, config)
    lines = queries(result.folder)
    assert len(lines) == config.feedback.label_budget and {line["question"] for line in lines} == {"rate"}
    assert all(len(line["segments"]) == 1 and line["value"] in (0, 1, 2) for line in lines)
    labels = RatingDataset.load(result.folder / "checkpoints" / "feedback" / "labels.npz")
    assert len(labels) == config.feedback.label_budget
    counts = labels.class_counts(3)
    assert (counts > 0).sum() >= 2, f"ratings all in one class: {counts}"
    assert_ranks_goal_states_first(load_reward_model(result.folder, config), held_out_states)


def test_score_path_relabels_ppo_rollouts_with_judge_scores(tmp_path, monkeypatch):
    """Oracle scores (the task's progress) replace the zero env reward in PPO's rollout buffer, and
    returns and advantages are recomputed from them."""
    checked = []
    relabel = ScoreRelabelCallback._on_rollout_end

    def checking_relabel(self: ScoreRelabelCallback) -> None:
        buffer = self.model.rollout_buffer
        before = buffer.rewards.copy()  # zero, but for SB3's time-limit bootstrap terms
        advantages = buffer.advantages.copy()
        progress = np.array([[self.task.progress_of(dict(f.features)) for f in step] for step in self._steps])
        relabel(self)
        np.testing.assert_allclose(buffer.rewards, before + progress, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(buffer.returns, buffer.advantages + buffer.values, rtol=1e-5, atol=1e-5)
        assert not np.allclose(buffer.advantages, advantages)
        checked.append(progress.size)

    monkeypatch.setattr(ScoreRelabelCallback, "_on_rollout_end", checking_relabel)
    config = toy_config(reward="score", timesteps=1024, checkpoint_every=512)
    result = train(config, results_dir=tmp_path, name="score")
    assert_complete(result, config)
    assert checked and sum(checked) == result.labels
    assert not (result.folder / "checkpoints" / "feedback").exists()  # no reward model on this path
    batches = queries(result.folder)
    assert [b["frames"] for b in batches] == checked and all(b["question"] == "score" for b in batches)
    assert all(0.0 <= b["min"] <= b["mean"] <= b["max"] <= 1.0 for b in batches)
    assert int(curves(result.folder)[-1]["labels"]) == sum(checked)


def test_learned_reward_path_rewards_each_rollout_with_the_model_it_was_collected_under(tmp_path, monkeypatch):
    """At each rollout's end the reward model's predictions of the states the steps reached are
    added to PPO's buffer (over SB3's time-limit bootstrap terms) and returns and advantages are
    recomputed; the model is the one the rollout was collected under, not one a round refits after."""
    checked, rounds_seen = [], set()
    probe = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    start, relabel = LearnedRewardCallback._on_rollout_start, LearnedRewardCallback._on_rollout_end

    def remembering_start(self: LearnedRewardCallback) -> None:
        start(self)
        self.probe_at_start = self.ensemble.predict(probe)

    def checking_relabel(self: LearnedRewardCallback) -> None:
        buffer = self.model.rollout_buffer
        before, advantages = buffer.rewards.copy(), buffer.advantages.copy()
        relabel(self)
        np.testing.assert_array_equal(self.ensemble.predict(probe), self.probe_at_start)
        # a step that did not end its episode reached the state the next step starts from
        steps, envs = buffer.rewards.shape
        for t in range(steps - 1):
            for e in range(envs):
                if not buffer.episode_starts[t + 1, e]:
                    expected = self.ensemble.predict(buffer.observations[t + 1, e][None])[0]
                    assert before[t, e] == 0.0
                    assert buffer.rewards[t, e] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(buffer.returns, buffer.advantages + buffer.values, rtol=1e-5, atol=1e-5)
        assert not np.allclose(buffer.advantages, advantages)
        rounds_seen.add(self.ensemble.reward_std.item())
        checked.append(steps * envs)

    monkeypatch.setattr(LearnedRewardCallback, "_on_rollout_start", remembering_start)
    monkeypatch.setattr(LearnedRewardCallback, "_on_rollout_end", checking_relabel)
    config = toy_config(timesteps=1024, checkpoint_every=512)
    result = train(config, results_dir=tmp_path, name="learned")
    assert_complete(result, config)
    assert sum(checked) >= config.timesteps
    assert len(rounds_seen) >= 2  # rounds refitted the model between rollouts


def test_rollout_rewards_are_added_to_the_time_limit_bootstrap_terms():
    """SB3 puts gamma * V(terminal state) into the reward of a step cut off by a time limit; the
    rollout's learned rewards must be added to it, not written over it."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    steps, envs = 4, 2
    buffer = RolloutBuffer(steps, spaces.Box(-1, 1, (3,)), spaces.Discrete(2), n_envs=envs, gamma=0.9, gae_lambda=1.0)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        buffer.add(rng.normal(size=(envs, 3)).astype(np.float32), np.zeros((envs, 1)), np.zeros(envs, np.float32),
                   np.zeros(envs, bool), torch.zeros(envs), torch.zeros(envs))
    buffer.rewards[2, 1] = 0.7  # a bootstrap term
    bootstrap = buffer.rewards.copy()
    ensemble = RewardEnsemble(3, members=2, hidden=(4,), seed=1)
    callback = LearnedRewardCallback(ensemble)
    callback.model = SimpleNamespace(rollout_buffer=buffer, logger=SimpleNamespace(record=lambda *args: None))
    callback.locals = {"values": torch.zeros(envs), "dones": np.zeros(envs, bool)}
    inputs = rng.normal(size=(steps, envs, 3)).astype(np.float32)
    callback._steps = list(inputs)
    callback._on_rollout_end()
    np.testing.assert_allclose(buffer.rewards, bootstrap + ensemble.predict(inputs), rtol=1e-6)
    # returns recomputed with gamma 0.9, lambda 1 and zero values: discounted sums of the new rewards
    expected = np.zeros(envs, np.float32)
    for t in reversed(range(steps)):
        expected = buffer.rewards[t] + 0.9 * expected
        np.testing.assert_allclose(buffer.returns[t], expected, rtol=1e-5)


def test_clip_score_path_renders_frames_and_relabels_dqn_replay_buffer(tmp_path):
    """A tiny random CLIP model scores rendered CartPole frames; DQN's replay buffer holds its scores."""
    pytest.importorskip("open_clip")
    (tmp_path / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    judge = tmp_path / "clip-tiny.yaml"
    judge.write_text(f"name: clip-tiny\ntype: clip\nparams:\n  model: tiny-clip\n"
                     f"  model_config: {tmp_path / 'tiny-clip.json'}\n  device: cpu\n")
    n_envs, train_freq = 4, 16
    config = toy_config(judge=str(judge), algorithm="dqn", timesteps=384, n_envs=n_envs, checkpoint_every=10_000,
                        algo_kwargs=dict(learning_starts=64, train_freq=train_freq, gradient_steps=2,
                                         buffer_size=1000))
    result = train(config, results_dir=tmp_path, name="clip-dqn")
    assert_complete(result, config)
    assert json.loads((result.folder / "header.json").read_text())["reward_mode"] == "score"
    batches = queries(result.folder)
    assert [b["frames"] for b in batches] == [n_envs * train_freq] * len(batches)
    assert sum(b["frames"] for b in batches) == result.labels >= config.timesteps
    replay = saved_replay(result.folder)
    assert replay.pos == len(batches) * train_freq and not replay.full
    rewards = replay.rewards[: replay.pos].reshape(len(batches), train_freq * n_envs)
    # each rollout's rows of the replay buffer hold exactly the scores of its batch
    np.testing.assert_allclose(rewards.mean(axis=1), [b["mean"] for b in batches], rtol=1e-5)
    np.testing.assert_allclose(rewards.min(axis=1), [b["min"] for b in batches], rtol=1e-5)
    np.testing.assert_allclose(rewards.max(axis=1), [b["max"] for b in batches], rtol=1e-5)
    assert np.ptp(rewards) > 0  # frames differ, so do their scores
    # every frame's reward is kept beside the query log, as the replay buffer holds it
    kept = [np.load(result.folder / b["scores_file"])["rewards"] for b in batches]
    np.testing.assert_allclose(np.stack([k.reshape(-1) for k in kept]), rewards, rtol=1e-6)


def cartpole_progress(observations: np.ndarray) -> np.ndarray:
    """cartpole-upright's progress expression on observations (x, x', angle, angle')."""
    x, angle = observations[..., 0], observations[..., 2]
    return ((1 + np.cos(angle)) / 2) ** 4 * np.clip((2.8 - np.abs(x)) / 0.4, 0, 1)


def dqn_score_config(**overrides) -> RunConfig:
    """Oracle scores for DQN: 4 envs, a 64-transition rollout every 16 steps, a checkpoint mid-rollout."""
    return toy_config(reward="score", algorithm="dqn", timesteps=512, n_envs=4, checkpoint_every=200,
                      algo_kwargs=dict(learning_starts=64, train_freq=16, gradient_steps=1, buffer_size=1000),
                      **overrides)


def assert_replay_rewards_are_scores(folder: Path) -> None:
    """Every stored transition's reward is the oracle's score of the state it reached."""
    replay = saved_replay(folder)
    stored = slice(0, len(replay.rewards))
    expected = cartpole_progress(replay.next_observations[stored])
    wrong = np.flatnonzero(np.abs(replay.rewards[stored] - expected).max(axis=1) > 1e-5)
    assert wrong.size == 0, f"replay rows {wrong.tolist()} hold {replay.rewards[wrong].tolist()}, not their scores"


def test_score_path_relabels_every_dqn_transition(tmp_path):
    config = dqn_score_config()
    result = train(config, results_dir=tmp_path, name="score-dqn")
    assert_complete(result, config)
    assert_replay_rewards_are_scores(result.folder)
    assert sum(b["frames"] for b in queries(result.folder)) == result.labels


def test_score_path_resume_keeps_judge_rewards_in_the_replay_buffer(tmp_path, monkeypatch):
    config = dqn_score_config()
    result = interrupted_then_resumed(config, tmp_path, monkeypatch, ScoreRelabelCallback, "_on_rollout_end", 5)  # after the checkpoint at 200
    assert_complete(result, config)
    assert_replay_rewards_are_scores(result.folder)


def test_score_path_resume_keeps_counting_judge_queries(tmp_path, monkeypatch):
    config = toy_config(reward="score", timesteps=1024, checkpoint_every=512)
    result = interrupted_then_resumed(config, tmp_path, monkeypatch, ScoreRelabelCallback, "_on_rollout_end", 3)  # after the checkpoint at 512
    assert_complete(result, config)
    scored = sum(b["frames"] for b in queries(result.folder))
    assert scored == config.timesteps  # rollouts 1-2 before the interruption, 3-4 after it
    assert result.labels == int(curves(result.folder)[-1]["labels"]) == scored


def dqn_learned_config(**overrides) -> RunConfig:
    """Oracle preferences for DQN: 64-transition rollouts; four rounds refit the reward model over
    the first half of the steps, so most stored transitions were rewarded by an earlier model."""
    return toy_config(algorithm="dqn", timesteps=1024, n_envs=4, checkpoint_every=300,
                      algo_kwargs=dict(learning_starts=64, train_freq=16, gradient_steps=1, buffer_size=2000),
                      **overrides)


def assert_replay_rewards_are_the_final_models(folder: Path, config: RunConfig) -> None:
    """Every stored transition holds the inputs of the state it reached and the final reward model's
    reward for them, not the reward of the model that was current when it was collected."""
    replay = saved_replay(folder)
    assert replay.reward_inputs_kept.all() and len(replay.rewards) == replay.pos
    np.testing.assert_array_equal(replay.reward_inputs, replay.next_observations)
    expected = load_reward_model(folder, config).predict(replay.reward_inputs)
    wrong = np.flatnonzero(np.abs(replay.rewards - expected).max(axis=1) > 1e-5)
    assert wrong.size == 0, f"replay rows {wrong.tolist()} keep the rewards of an earlier reward model"


def test_learned_reward_path_relabels_the_dqn_replay_buffer_after_each_refit(tmp_path):
    config = dqn_learned_config()
    result = train(config, results_dir=tmp_path, name="learned-dqn")
    assert_complete(result, config)
    assert_replay_rewards_are_the_final_models(result.folder, config)


def test_learned_reward_path_resume_relabels_the_loaded_replay_buffer(tmp_path, monkeypatch):
    config = dqn_learned_config()
    # interrupted after the checkpoint at 300 steps, with rounds still to come
    result = interrupted_then_resumed(config, tmp_path, monkeypatch, LearnedRewardCallback, "_on_rollout_end", 6)
    assert_complete(result, config)
    assert_replay_rewards_are_the_final_models(result.folder, config)


# -- the record ---------------------------------------------------------------------------------------
def test_seeded_runs_write_identical_records(preference_run, tmp_path):
    first, config = preference_run
    second = train(config, results_dir=tmp_path, name="again")
    for name in RECORD_FILES[1:]:
        assert (first.folder / name).read_bytes() == (second.folder / name).read_bytes(), name
    headers = [json.loads((run.folder / "header.json").read_text()) for run in (first, second)]
    sessions = [header.pop("session") for header in headers]  # when and how each was started
    assert all(set(session) == {"command", "started", "vlmbench", "git_commit"} for session in sessions)
    assert headers[0] == headers[1]


def test_small_budget_buys_exactly_the_budget_and_training_completes(tmp_path):
    """Six rounds but three labels: the schedule hands out what there is and later rounds buy nothing."""
    config = toy_config(timesteps=2048, feedback=TOY_FEEDBACK.model_copy(update={"label_budget": 3, "rounds": 6}))
    result = train(config, results_dir=tmp_path, name="budget")
    assert_complete(result, config)
    assert len(queries(result.folder)) == result.labels == 3
    assert len(PreferenceDataset.load(result.folder / "checkpoints" / "feedback" / "labels.npz")) == 3
    assert [int(row["labels"]) for row in curves(result.folder)][-1] == 3


class AbstainingOracle(OracleJudge):
    """The noise-free oracle, but it abstains on every third pair it is shown and charges a cent a pair."""

    def __init__(self) -> None:
        super().__init__("oracle", OracleParams())
        self.shown = 0

    def _compare(self, task, pairs):
        out = []
        for answer in super()._compare(task, pairs):
            self.shown += 1
            provenance = replace(answer.provenance, cost_usd=0.01)
            if self.shown % 3 == 0:
                answer = Answer(Question.COMPARE, None, provenance, abstain_reason="cannot tell them apart")
            out.append(replace(answer, provenance=provenance))
        return out


def test_abstentions_are_recorded_and_kept_out_of_the_labels(tmp_path, monkeypatch):
    judge = AbstainingOracle()
    monkeypatch.setattr("vlmbench.agents.run.build_judge", lambda config, source=None: judge)
    config = toy_config(timesteps=2048, feedback=TOY_FEEDBACK.model_copy(update={"label_budget": 30, "rounds": 3}))
    result = train(config, results_dir=tmp_path, name="abstain")
    assert_complete(result, config)
    lines = queries(result.folder)
    abstained = [line for line in lines if line["value"] is None]
    assert len(lines) == judge.shown == result.labels == 30  # an abstention still uses up a label
    assert len(abstained) == result.abstained == 10
    assert {line["abstain_reason"] for line in abstained} == {"cannot tell them apart"}
    labels = PreferenceDataset.load(result.folder / "checkpoints" / "feedback" / "labels.npz")
    assert len(labels) == 20
    first, second, _ = labels.pairs()
    keys = labels.table.to_arrays()["segment_keys"]
    answered = {tuple(line["segments"]) for line in lines if line["value"] is not None}
    assert {(keys[a], keys[b]) for a, b in zip(first, second)} == answered
    final = curves(result.folder)[-1]
    assert int(final["abstained"]) == 10 and int(final["labels"]) == 30
    assert float(final["judge_cost_usd"]) == pytest.approx(0.30)  # abstentions are paid for too


# -- interruption and resume ----------------------------------------------------------------------------
def interrupt_on_call(monkeypatch, cls, method: str, call: int) -> None:
    """Make ``cls.method`` raise KeyboardInterrupt (as Ctrl-C would) on its ``call``-th call."""
    original, calls = getattr(cls, method), []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, interrupted)


def interrupted_then_resumed(config: RunConfig, tmp_path: Path, monkeypatch, cls, method: str, call: int) -> RunResult:
    """Run until ``cls.method``'s ``call``-th call interrupts it, then resume the same run to the end."""
    interrupt_on_call(monkeypatch, cls, method, call)
    with pytest.raises(KeyboardInterrupt):
        train(config, results_dir=tmp_path, name="resume")
    monkeypatch.undo()
    return train(config, results_dir=tmp_path, name="resume", resume=True)


def assert_resumed_without_rebuying(result: RunResult, config: RunConfig) -> None:
    assert_complete(result, config)
    assert json.loads((result.folder / "timing.json").read_text())["resumed"] is True
    lines = queries(result.folder)
    budget = config.feedback.label_budget
    assert len(lines) == result.labels == budget, f"{len(lines)} queries recorded for a budget of {budget}"
    pairs = [tuple(line["segments"]) for line in lines]
    assert len(set(pairs)) == len(pairs), "a pair was labelled twice"
    labels = PreferenceDataset.load(result.folder / "checkpoints" / "feedback" / "labels.npz")
    assert len(labels) == budget
    # a key names one segment: the same key in two queries means the same inputs
    table = labels.table.to_arrays()
    assert len(set(table["segment_keys"].tolist())) == len(table["segment_keys"])
    rounds = [line["round"] for line in lines]
    assert rounds == sorted(rounds) and set(rounds) == set(range(config.feedback.rounds))


def test_resume_after_an_interruption_between_feedback_rounds(tmp_path, monkeypatch):
    config = toy_config()
    interrupt_on_call(monkeypatch, FeedbackLoop, "run_round", 3)
    with pytest.raises(KeyboardInterrupt):
        train(config, results_dir=tmp_path, name="resume")
    folder = tmp_path / "resume"
    kept = queries(folder)
    assert 0 < len(kept) < config.feedback.label_budget and not (folder / "eval.json").exists()
    monkeypatch.undo()
    with pytest.raises(VlmbenchError, match="--resume"):
        train(config, results_dir=tmp_path, name="resume")  # the folder holds this run: resume or overwrite
    result = train(config, results_dir=tmp_path, name="resume", resume=True)
    assert_resumed_without_rebuying(result, config)
    assert queries(folder)[: len(kept)] == kept  # the first rounds' queries were kept as they were


def test_resume_after_an_interruption_during_the_reward_model_fit(tmp_path, monkeypatch):
    config = toy_config()
    # round three's labels are bought and recorded, then the refit is interrupted
    result = interrupted_then_resumed(config, tmp_path, monkeypatch, FeedbackLoop, "_train", 3)
    assert_resumed_without_rebuying(result, config)


def test_resuming_a_finished_run_leaves_its_record_as_it_was(tmp_path):
    config = toy_config(timesteps=1024, checkpoint_every=512,
                        feedback=TOY_FEEDBACK.model_copy(update={"label_budget": 10, "rounds": 2, "epochs": 5}))
    first = train(config, results_dir=tmp_path, name="done")
    files = (*RECORD_FILES, "checkpoints/stages.json")
    before = {name: (first.folder / name).read_bytes() for name in files}
    again = train(config, results_dir=tmp_path, name="done", resume=True)
    assert again.labels == first.labels and again.evaluation == first.evaluation
    assert {name: (first.folder / name).read_bytes() for name in files} == before


SMALLER_BUDGET = TOY_FEEDBACK.model_copy(update={"label_budget": 40})


def test_existing_runs_are_never_silently_overwritten(preference_run):
    result, config = preference_run
    before = {name: (result.folder / name).read_bytes() for name in RECORD_FILES}
    with pytest.raises(VlmbenchError, match="already holds this run.*--resume"):
        train(config, results_dir=result.folder.parent, name=result.folder.name)
    others = {"seed: 0 there, 1 here": config.model_copy(update={"seed": 1}),
              "feedback.label_budget: 80 there, 40 here": config.model_copy(update={"feedback": SMALLER_BUDGET})}
    for difference, other in others.items():
        for resume in (False, True):
            with pytest.raises(VlmbenchError, match=rf"different config \({difference}\); choose another --name"):
                train(other, results_dir=result.folder.parent, name=result.folder.name, resume=resume)
    assert before == {name: (result.folder / name).read_bytes() for name in RECORD_FILES}


# -- the command line ------------------------------------------------------------------------------------
def test_cli_run_prints_the_success_table(tmp_path, capsys):
    from vlmbench.cli import main

    config = tmp_path / "toy.yaml"
    config.write_text("timesteps: 1024\ncheckpoint_every: 512\neval_episodes: 2\n"
                      "feedback:\n  label_budget: 12\n  rounds: 2\n  epochs: 5\n")
    argv = ["run", "--task", TASK, "--judge", "oracle", "--config", str(config), "--results", str(tmp_path),
            "--name", "cli", "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "success rate" in out and "judge answers" in out and "over 2 episodes" in out
    assert str(tmp_path / "cli") in out.replace("\n", "")
    header = json.loads((tmp_path / "cli" / "header.json").read_text())
    assert header["config"]["seed"] == 3 and header["config"]["feedback"]["label_budget"] == 12
    assert len(queries(tmp_path / "cli")) == 12
    assert main(argv) == 2  # the run exists: a one-line error, not a traceback
    err = capsys.readouterr().err
    assert "error:" in err and "--resume" in err


def test_cli_run_reports_bad_config_fields_with_their_lines(tmp_path, capsys):
    from vlmbench.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("task: cartpole-upright\njudge: oracle\ntimesteps: -5\nfeedback:\n  rounds: 0\n  colour: red\n")
    assert main(["run", "--config", str(config), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"{config}:3: timesteps:" in err
    assert f"{config}:5: feedback.rounds:" in err
    assert f"{config}:6: feedback.colour: unknown field" in err
    assert not list(tmp_path.glob("*/header.json"))  # nothing was started


def test_auto_algorithm_follows_the_action_space_and_mismatches_are_refused():
    from vlmbench.agents.algorithms import resolve_algorithm
    from vlmbench.agents.run import task_spaces
    from vlmbench.errors import VlmbenchError
    from vlmbench.specs.catalogue import resolve_task

    discrete = task_spaces(resolve_task("cartpole-upright"))[1]
    continuous = task_spaces(resolve_task("humanoid-kneel"))[1]
    assert resolve_algorithm("auto", discrete) == "ppo" and resolve_algorithm("auto", continuous) == "sac"
    with pytest.raises(VlmbenchError, match="sac needs continuous actions"):
        resolve_algorithm("sac", discrete)
    with pytest.raises(VlmbenchError, match="dqn needs discrete actions"):
        resolve_algorithm("dqn", continuous)


def test_progress_lines_name_the_step_of_the_success_rate_they_show(tmp_path):
    """A checkpoint's success rate, shown until the next one, must not read as the run's final result."""
    lines: list[str] = []
    config = toy_config(timesteps=2048, eval_every=1024, checkpoint_every=1024, feedback=TOY_FEEDBACK.model_copy(
        update=dict(label_budget=20, rounds=2, epochs=5)))
    train(config, results_dir=tmp_path, name="lines", log=lines.append)
    evaluated = {f"success {float(r['success_rate']):.0%} at step {int(r['timesteps']):,}"
                 for r in curves(tmp_path / "lines") if r["success_rate"]}
    shown = [re.search(r"success \d+% at step \d{1,3}(,\d{3})*", line)[0] for line in lines if ", success " in line]
    assert shown and set(shown) <= evaluated, (shown, evaluated)


def test_an_agent_without_a_tensorboard_folder_writes_nothing(tmp_path, monkeypatch):
    """SB3's default logger would make an empty folder in the temp dir on every learn()."""
    import tempfile

    from stable_baselines3.common.env_util import make_vec_env

    from vlmbench.agents.algorithms import make_algorithm

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = make_algorithm("ppo", make_vec_env("CartPole-v1", n_envs=1), seed=0, kwargs={"n_steps": 64},
                           tensorboard_log=None, device="cpu")
    model.learn(128)
    model.learn(64, reset_num_timesteps=False)
    assert model.num_timesteps == 192 and list(tmp_path.glob("SB3-*")) == []


def test_disagreement_sampling_longer_segments_with_actions_then_a_final_ppo_stage(tmp_path):
    feedback = TOY_FEEDBACK.model_copy(update=dict(
        sampler="disagreement", segment_length=3, inputs="observation+action", label_budget=30, rounds=3, epochs=10))
    config = toy_config(timesteps=2048, final_ppo_timesteps=1024, feedback=feedback)
    result = train(config, results_dir=tmp_path)
    folder = result.folder
    assert json.loads((folder / "checkpoints" / "stages.json").read_text())["done"] == {"agent": 2048, "final_ppo": 1024}
    assert {row["stage"] for row in curves(folder)} >= {"agent", "final"}
    asked = queries(folder)
    assert len(asked) == 30 and all(len(q["segments"]) == 2 for q in asked)
    labels = PreferenceDataset.load(folder / "checkpoints" / "feedback" / "labels.npz")
    first, _, _ = labels.pairs()
    inputs, lengths = labels.table.padded()
    assert inputs.shape[-1] == 4 + 1 and set(lengths[first].tolist()) == {3}  # observation + action, 3 steps
    ensemble = RewardEnsemble(5, members=feedback.members, hidden=feedback.hidden)
    ensemble.load_state_dict(saved_reward_model(folder))
    assert ensemble.predict(inputs[:, 0]).shape == (len(inputs),)


def test_rating_path_with_the_noise_robust_mae_loss(tmp_path):
    config = toy_config(reward="rating",
                        feedback=TOY_FEEDBACK.model_copy(update=dict(rating_loss="mae", label_budget=40, epochs=20)))
    result = train(config, results_dir=tmp_path)
    labels = RatingDataset.load(result.folder / "checkpoints" / "feedback" / "labels.npz")
    assert len(labels) == 40 and result.labels == 40
    final = curves(result.folder)[-1]
    assert final["reward_model_loss"] != "" and final["reward_model_accuracy"] != ""


def test_a_judge_that_cannot_load_fails_before_a_record_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: the weights cannot be found
    config = RunConfig(task="humanoid-kneel", judge="clip-vit-b32", timesteps=100)
    with pytest.raises(VlmbenchError, match="could not be downloaded or found"):
        train(config, results_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_segments_and_frames_stop_once_no_round_is_to_come():
    from vlmbench.agents.vec_env import JudgeRewardVecEnv, make_vec_env, observation_inputs

    task = resolve_task(TASK)
    steps, segments = [0], []
    venv = JudgeRewardVecEnv(make_vec_env(task, n_envs=2, render=True, subprocess=False), attach_inputs=False,
                             inputs_fn=observation_inputs(False), segment_length=1,
                             on_segment=lambda inputs, frames: segments.append(frames), keep_pixels=True,
                             collecting=lambda: steps[0] < 3, frames_only_for_segments=True)
    venv.reset()
    framed = []
    for _ in range(6):
        venv.step_async(np.array([0, 1]))
        _, _, _, infos = venv.step_wait()
        steps[0] += 1
        framed.append(all("frame" in info for info in infos))
    venv.close()
    assert len(segments) == 2 * 3 and all(frame.pixels is not None for (frame,) in segments)
    # The step that finds no round to come was rendered already; from the next one on, nothing is.
    assert framed == [True, True, True, True, False, False]
