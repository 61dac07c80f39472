"""Success rates: an episode succeeds when the goal holds in at least the task's success_fraction of
the steps it was given, steps cut off by an early termination counting as steps without the goal."""

from __future__ import annotations

import numpy as np
import pytest

from vlmbench.envs.rollout import Episode, rollout
from vlmbench.metrics.success import evaluate, summarise
from vlmbench.specs.catalogue import resolve_task
from vlmbench.specs.task import EvaluationSpec


@pytest.fixture(scope="module")
def balance():
    return resolve_task("cartpole-balance")


def push_left(observations: np.ndarray) -> np.ndarray:
    return np.zeros(len(observations), dtype=np.int64)


def episode(goal: str, horizon: int) -> Episode:
    """An episode from a string of steps: '1' where the goal held, '0' where it did not."""
    successes = [c == "1" for c in goal]
    return Episode(seed=0, horizon=horizon, successes=successes, progress=[0.5] * len(goal),
                   env_rewards=[1.0] * len(goal), actions=[np.zeros(1)] * len(goal))


# Each case separates the fraction rule from a plausible wrong one, at a threshold of 0.5 or 0.8.
CASES = [  # (goal per step, horizon, success_fraction, success)
    ("0001000000", 10, 0.5, False),  # held at one step only: "held at any step" would say yes
    ("1111100000", 10, 0.5, True),   # exactly the threshold, last step without the goal
    ("0000001111", 10, 0.5, False),  # goal at the last step but below the threshold
    ("1111111100", 10, 0.8, True),   # exactly 0.8
    ("1111111000", 10, 0.8, False),
    ("111", 10, 0.5, False),         # terminated after 3 steps, all with the goal: 3 of 10
    ("11111", 10, 0.5, True),        # terminated after 5 steps: 5 of 10 is the threshold
    ("1111111111", 10, 0.5, True),
]


@pytest.mark.parametrize("goal, horizon, threshold, expected", CASES)
def test_an_episode_succeeds_when_the_goal_holds_in_enough_of_its_horizon(balance, goal, horizon, threshold,
                                                                          expected):
    task = balance.model_copy(update={"evaluation": EvaluationSpec(success_fraction=threshold)})
    row = summarise(task, [episode(goal, horizon)]).episodes[0]
    assert row["success_fraction"] == goal.count("1") / horizon
    assert (row["steps"], row["horizon"], row["success"]) == (len(goal), horizon, expected)


def test_the_success_rate_is_the_share_of_successful_episodes(balance):
    episodes = [episode(goal, horizon) for goal, horizon, threshold, _ in CASES if threshold == 0.5]
    expected = [success for *_, threshold, success in CASES if threshold == 0.5]
    result = summarise(balance, episodes)
    assert result.success_rate == pytest.approx(np.mean(expected))
    assert [row["success"] for row in result.episodes] == expected


def test_episodes_are_given_the_task_length_or_the_rollout_cap(balance):
    full, capped = (rollout(balance, episodes=1, seed=0, policy=push_left, render=False, keep_states=False,
                            steps=steps)[0] for steps in (None, 5))
    assert (full.horizon, capped.horizon, len(capped)) == (balance.env.episode_length, 5, 5)
    assert len(full) < 20 and full.success_fraction() == sum(full.successes) / balance.env.episode_length


def test_pushing_left_on_cartpole_balance_never_succeeds(balance):
    """CartPole-v1 ends these episodes after about 10 steps; the goal holds in most of them."""
    assert balance.env.termination == "keep"
    result = evaluate(balance, push_left, episodes=10, seed=0)
    assert all(row["steps"] < 20 and row["horizon"] == 500 for row in result.episodes)
    assert all(row["success_fraction"] > 0 for row in result.episodes)
    assert result.success_rate == 0.0


def test_mountaincar_succeeds_when_the_car_reaches_the_flag_at_all():
    """MountainCar-v0's own criterion: the flag reached within the 200 steps, however late; a
    pumping policy (push the way the car moves) arrives after step 100 in some episodes."""
    task = resolve_task("mountaincar-flag")

    def pump(observations: np.ndarray) -> np.ndarray:
        return np.where(observations[:, 1] >= 0, 2, 0)

    result = evaluate(task, pump, episodes=6, seed=0)
    fractions = [row["success_fraction"] for row in result.episodes]
    assert result.success_rate == 1.0 and min(fractions) > 0
    assert min(fractions) < 0.5  # a late arrival, which the default fraction of 0.5 would fail
    assert summarise(task, [episode("0" * 199 + "1", 200), episode("0" * 200, 200)]).success_rate == 0.5
