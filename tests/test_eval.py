"""`vlmbench eval` end to end at toy scale: score, compare-only and rate-only judges, bias probes that flag
the first-biased oracle and pass the noise-free one, resuming without buying twice, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from console import one_line_error, vlmbench

from vlmbench.datasets.format import load_dataset, resolve_dataset
from vlmbench.judges.base import Answer, Question
from vlmbench.judges.oracle import OracleJudge, OracleParams
from vlmbench.metrics.judge_eval import EvalSettings, JudgeEvaluation
from vlmbench.metrics.judge_quality import average_ranks
from vlmbench.specs.catalogue import resolve_task

TASK = "cartpole-upright"


@pytest.fixture(scope="module")
def task():
    return resolve_task(TASK)


@pytest.fixture(scope="module")
def dataset(task):
    return load_dataset(resolve_dataset(TASK), task)


class MemoryLog:
    """The answer log in memory, counting what was added."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def known(self) -> dict[str, Answer]:
        return {line["query_id"]: Answer.from_dict(line) for line in self.lines}

    def add(self, lines: list[dict]) -> None:
        self.lines.extend(lines)


class OnlyAnswers(OracleJudge):
    """The oracle restricted to one kind of question, as a pairwise or rating API judge is."""

    def __init__(self, question: Question, **params) -> None:
        super().__init__(f"oracle-{question.value}-only", OracleParams(**params))
        self.answers = frozenset({question})


def evaluate(task, dataset, judge, log=None, **settings):
    log = log or MemoryLog()
    settings = EvalSettings(**{"pairs": 60, "identical_pairs": 20, "epochs": 60, **settings})
    return JudgeEvaluation(task, judge, dataset, log, None, settings).run(), log


def measured(result, name: str) -> float:
    metric = result.metrics[name]
    assert metric.value is not None, f"{name} not measured: {metric.note}"
    return metric.value


def test_score_judge_metrics_match_an_independent_computation(task, dataset):
    result, _ = evaluate(task, dataset, OracleJudge("oracle", OracleParams()))
    lone = dataset.lone()
    reward = np.array([row.progress for row in lone])  # the oracle's score is the task's progress
    goal = np.array([row.label == 1 for row in lone])
    assert [s["state_id"] for s in result.states] == [row.state_id for row in lone]
    np.testing.assert_allclose([s["reward"] for s in result.states], reward)
    rho = np.corrcoef(reward, goal.astype(float))[0, 1]
    assert measured(result, "epic_goal_distance") == pytest.approx(np.sqrt((1 - rho) / 2), abs=1e-9)
    ranks = average_ranks(reward)
    auc = (ranks[goal].sum() - goal.sum() * (goal.sum() + 1) / 2) / (goal.sum() * (~goal).sum())
    assert measured(result, "goal_roc_auc") == pytest.approx(auc)
    assert measured(result, "pairwise_accuracy") == 1.0
    assert result.position_bias["biased"] is False


def test_the_first_biased_oracle_is_flagged_and_the_noise_free_one_is_not(task, dataset):
    biased, _ = evaluate(task, dataset, OracleJudge("oracle-first-biased", OracleParams(first_bias=0.3)))
    assert biased.position_bias["biased"] is True
    assert measured(biased, "identical_pair_bias") > 0.1
    assert measured(biased, "accuracy_better_first") > measured(biased, "accuracy_better_second")
    fair, _ = evaluate(task, dataset, OracleJudge("oracle", OracleParams()))
    assert fair.position_bias["biased"] is False and measured(fair, "position_consistency") == 1.0


def test_noisy_answers_lower_accuracy_and_repetition_really_asks_again(task, dataset):
    noisy, log = evaluate(task, dataset, OracleJudge("oracle-noisy", OracleParams(mistake_prob=0.3, seed=1)))
    assert 0.5 < measured(noisy, "pairwise_accuracy") < 0.9
    assert measured(noisy, "repetition_stability") < 1.0  # a cached answer would always agree with itself
    assert len({line["query_id"] for line in log.lines}) == len(log.lines)


@pytest.mark.parametrize("question", [Question.COMPARE, Question.RATE])
def test_compare_and_rate_only_judges_are_scored_through_a_learned_reward(task, dataset, question):
    result, log = evaluate(task, dataset, OnlyAnswers(question))
    assert {line["question"] for line in log.lines} == {question.value}
    held_out = {s["state_id"] for s in result.states}
    assert held_out and held_out.isdisjoint({sid for line in log.lines for sid in line["states"]}
                                            if question is Question.RATE else set())
    assert measured(result, "goal_roc_auc") > 0.8  # the reward model learned the goal from the answers
    assert measured(result, "progress_spearman") > 0.5


def test_a_judge_that_always_abstains_leaves_metrics_not_measured(task, dataset):
    class Abstaining(OnlyAnswers):
        def _compare(self, task, pairs):
            return [Answer(Question.COMPARE, None, a.provenance, abstain_reason="refused")
                    for a in super()._compare(task, pairs)]

    result, _ = evaluate(task, dataset, Abstaining(Question.COMPARE), probes=())
    assert result.metrics["pairwise_accuracy"].value is None and result.metrics["pairwise_accuracy"].note
    assert result.metrics["goal_roc_auc"].value is None
    assert result.abstained == {"refused": 60}


def test_a_second_evaluation_reuses_every_answer(task, dataset):
    judge = OracleJudge("oracle-noisy", OracleParams(mistake_prob=0.2))
    first, log = evaluate(task, dataset, judge)
    again, _ = evaluate(task, dataset, OracleJudge("oracle-noisy", OracleParams(mistake_prob=0.2, seed=99)), log)
    assert again.calls == 0 and again.reused == first.calls
    assert {k: m.value for k, m in again.metrics.items()} == {k: m.value for k, m in first.metrics.items()}


def test_eval_command_writes_its_record_and_resumes_for_free(tmp_path):
    args = ("eval", "--task", TASK, "--judge", "oracle-first-biased", "--pairs", "40", "--results", str(tmp_path))
    proc = vlmbench(*args)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / f"{TASK}--oracle-first-biased"
    for name in ("header.json", "summary.json", "states.jsonl", "pairs.jsonl", "answers.jsonl", "rewards.png",
                 "bias.png"):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["position_bias"]["biased"] is True and summary["calls"] > 0
    states = [json.loads(line) for line in (folder / "states.jsonl").read_text().splitlines()]
    assert summary["metrics"]["epic_goal_distance"]["n"] == len(states)
    again = vlmbench(*args)
    assert again.returncode == 0 and json.loads((folder / "summary.json").read_text())["calls"] == 0
    other = vlmbench(*args[:-4], "--pairs", "41", "--results", str(tmp_path))
    assert other.returncode == 2 and "--overwrite" in one_line_error(other)


def test_eval_bad_input_is_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    cases = [
        (["--dataset", str(tmp_path / "missing.parquet")], "missing.parquet"),
        (["--dataset", str(corrupt)], "corrupt.parquet"),
        (["--dataset", "mountaincar-flag"], "mountaincar-flag"),
        (["--probes", "swap,bogus"], "bogus"),
    ]
    for extra, named in cases:
        proc = vlmbench("eval", "--task", TASK, "--judge", "oracle", "--results", str(tmp_path / "evals"), *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert named in one_line_error(proc)
    assert not (tmp_path / "evals").exists()


def test_a_tiny_random_clip_is_scored_on_re_rendered_frames(task, dataset, tmp_path):
    from test_clip_judge import TINY

    from vlmbench.datasets.render import frames
    from vlmbench.judges.clip import ClipJudge, ClipParams

    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY))
    judge = ClipJudge("clip-tiny", ClipParams.model_validate({"model": "tiny-clip", "model_config": str(config)}))
    rendered = []

    def render(rows):
        rendered.extend(rows)
        return frames(dataset, task, rows, cache=tmp_path / "frames")

    result = JudgeEvaluation(task, judge, dataset, MemoryLog(), render, EvalSettings(pairs=20, probes=())).run()
    assert len(rendered) == len(dataset.rows)  # every state's frame, rendered once
    assert result.metrics["epic_goal_distance"].n == len(dataset.lone())
    assert result.metrics["epic_goal_distance"].value is not None  # untrained, but measured
    assert result.calls == len(dataset.rows) + 20
