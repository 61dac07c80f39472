"""EPIC distance: sample-based canonicalisation against a loop-by-loop reading of the definition, the
invariances that define it, and the VLM-RM closed form against the Pearson distance it stands for."""

import math
import tracemalloc

import numpy as np
import pytest

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.epic import (Coverage, Transitions, canonicalise, epic_distance, epic_goal_distance,
                                   epic_state_distance, goal_correlation)


def reward(s, a, s2):
    """Couples state, action and next state non-linearly, so that every canonicalisation term differs."""
    return np.sin(s2[:, 0]) * a[:, 0] + s[:, 1] ** 2 - 0.5 * s2[:, 2] * a[:, 1] + s[:, 0] * s2[:, 1]


def potential(x):
    return np.cos(x[:, 0]) + x[:, 1] * x[:, 2]


def samples(rng, n, dim_s=3, dim_a=2):
    return (rng.normal(size=(n, dim_s)) + 0.3, rng.normal(size=(n, dim_a)) - 0.2, rng.normal(size=(n, dim_s)) * 1.5)


def setting(seed=0, n=200, pairs=64):
    rng = np.random.default_rng(seed)
    transitions = Transitions(*samples(rng, n))
    coverage = Coverage(*samples(rng, pairs))
    return transitions, coverage


def naive_canonical(reward_fn, transitions, coverage, gamma):
    """C(R)(s,a,s') = R(s,a,s') + gamma E[R(s',A,S')] - E[R(s,A,S')] - gamma E[R(S,A,S')], one reward at a time."""
    def r(s, a, s2):
        return float(reward_fn(s[None], a[None], s2[None])[0])

    def mean_from(x):
        total = 0.0
        for j in range(len(coverage.actions)):
            total += r(x, coverage.actions[j], coverage.next_states[j])
        return total / len(coverage.actions)

    overall = 0.0
    for k in range(len(coverage.states)):
        overall += mean_from(coverage.states[k])
    overall /= len(coverage.states)
    out = []
    for i in range(len(transitions)):
        s, a, s2 = transitions.states[i], transitions.actions[i], transitions.next_states[i]
        out.append(r(s, a, s2) + gamma * mean_from(s2) - mean_from(s) - gamma * overall)
    return out


def naive_pearson_distance(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((x[i] - mx) * (y[i] - my) for i in range(n))
    sxx = sum((x[i] - mx) ** 2 for i in range(n))
    syy = sum((y[i] - my) ** 2 for i in range(n))
    return math.sqrt((1 - sxy / math.sqrt(sxx * syy)) / 2)


@pytest.mark.parametrize("batch", [7, 40, 1 << 16])  # column chunks smaller than the pairs; row chunks; one call
def test_canonical_rewards_match_the_definition_computed_one_reward_at_a_time(batch):
    rng = np.random.default_rng(3)
    transitions = Transitions(*samples(rng, 12))
    coverage = Coverage(rng.normal(size=(9, 3)), rng.normal(size=(15, 2)), rng.normal(size=(15, 3)))
    got = canonicalise(reward, transitions, coverage, gamma=0.9, batch=batch)
    np.testing.assert_allclose(got, naive_canonical(reward, transitions, coverage, 0.9), rtol=1e-12, atol=1e-12)


def test_epic_distance_matches_the_naive_definition_on_small_random_rewards():
    rng = np.random.default_rng(4)
    transitions = Transitions(*samples(rng, 15))
    coverage = Coverage(*samples(rng, 11))
    table_a, table_b = rng.normal(size=(3, 3)), rng.normal(size=(2, 3))

    def reward_a(s, a, s2):
        return np.einsum("ij,jk,ik->i", s, table_a, s2) + a[:, 0]

    def reward_b(s, a, s2):
        return np.einsum("ij,jk,ik->i", a, table_b, s2) - s[:, 2] ** 2

    got = epic_distance(reward_a, reward_b, transitions, coverage, gamma=0.7, rng=rng, resamples=0)
    expected = naive_pearson_distance(naive_canonical(reward_a, transitions, coverage, 0.7),
                                      naive_canonical(reward_b, transitions, coverage, 0.7))
    assert got.value == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.9  # far from the 0 / sqrt(1/2) / 1 a broken formula tends to give
    assert got.n == 15


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
def test_potential_shaping_and_positive_rescaling_leave_the_distance_at_zero(gamma):
    transitions, coverage = setting()

    def shaped(s, a, s2):
        return 2.5 * (reward(s, a, s2) + gamma * potential(s2) - potential(s)) + 4.0

    d = epic_distance(reward, shaped, transitions, coverage, gamma=gamma, rng=np.random.default_rng(0), resamples=0)
    assert d.value < 1e-6


def test_shaping_with_another_discount_is_not_invisible():
    transitions, coverage = setting()

    def shaped(s, a, s2):
        return reward(s, a, s2) + 0.5 * potential(s2) - potential(s)

    d = epic_distance(reward, shaped, transitions, coverage, gamma=0.99, rng=np.random.default_rng(0), resamples=0)
    assert d.value > 0.05


def test_a_reward_is_at_zero_from_itself_and_at_one_from_its_negation():
    transitions, coverage = setting()
    rng = np.random.default_rng(0)
    assert epic_distance(reward, reward, transitions, coverage, gamma=0.9, rng=rng, resamples=0).value < 1e-7
    negated = epic_distance(reward, lambda s, a, s2: -reward(s, a, s2), transitions, coverage, gamma=0.9, rng=rng,
                            resamples=0)
    assert negated.value == pytest.approx(1.0, abs=1e-9)


def test_independent_rewards_are_sqrt_half_apart_within_sampling_error():
    rng = np.random.default_rng(5)
    transitions, coverage = Transitions(*samples(rng, 4096)), Coverage(*samples(rng, 256))
    d = epic_distance(lambda s, a, s2: s2[:, 0] * a[:, 0], lambda s, a, s2: s2[:, 1] * a[:, 1], transitions,
                      coverage, gamma=0.9, rng=rng, resamples=200)
    # rho has standard error 1/sqrt(4096) = 0.016 and dD/drho = -1/(4 D): D within +-0.006 (1 sigma) of sqrt(1/2)
    assert d.value == pytest.approx(math.sqrt(0.5), abs=0.025)
    assert d.ci_low < d.value < d.ci_high and d.ci_high - d.ci_low < 0.05


def test_mean_terms_are_computed_in_chunks_without_the_full_matrix():
    rng = np.random.default_rng(6)
    transitions, coverage = Transitions(*samples(rng, 1024)), Coverage(*samples(rng, 1024))
    tracemalloc.start()
    canonicalise(reward, transitions, coverage, gamma=0.9, batch=8192)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full_matrix = (2 * 1024 + 1024) * 1024 * 8  # every mean-term reward at once, as float64: 25 MB
    assert peak < full_matrix / 8


def test_coverage_from_transitions_shuffles_actions_and_next_states_apart():
    rng = np.random.default_rng(7)
    transitions = Transitions(*samples(rng, 500))
    coverage = Coverage.from_transitions(transitions, rng)
    assert coverage.states is transitions.states
    moved = {}
    for name in ("actions", "next_states"):
        shuffled, original = getattr(coverage, name), getattr(transitions, name)
        np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(original, axis=0))
        moved[name] = np.mean(np.all(shuffled == original, axis=1))
        assert moved[name] < 0.05
    pairs_kept = np.mean(np.all(coverage.actions == transitions.actions, axis=1)
                         & np.all(coverage.next_states == transitions.next_states, axis=1))
    assert pairs_kept < 0.01  # one permutation for both would keep every (action, next state) pair together


def state_only_setting(seed=8, states=40, n=300):
    """Discrete states 0..states-1 as 1-element rows; a state reward table and a goal set."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=states)
    goal = rng.random(states) < 0.35
    table[goal] += 0.8  # correlated with the goal, but far from perfectly

    def rows(k):
        return rng.integers(0, states, size=(k, 1))

    transitions = Transitions(rows(n), rng.normal(size=(n, 2)), rows(n))
    coverage = Coverage(rows(50), rng.normal(size=(60, 2)), rows(60))
    return table, goal, transitions, coverage


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.99, 1.0])
def test_closed_form_equals_sampled_epic_for_a_state_reward_against_goal_labels(gamma):
    """For R(s,a,s') = r(s') every mean term is the constant mean of r over the coverage next states, so the
    canonical reward is r(s') shifted: sampled EPIC equals the closed form on the next states, for any gamma."""
    table, goal, transitions, coverage = state_only_setting()
    on_next = transitions.next_states[:, 0]
    rng = np.random.default_rng(0)
    sampled = epic_distance(lambda s, a, s2: table[s2[:, 0]], lambda s, a, s2: goal[s2[:, 0]].astype(float),
                            transitions, coverage, gamma=gamma, rng=rng, resamples=0)
    closed = epic_goal_distance(table[on_next], goal[on_next], rng=rng, resamples=0)
    pearson = np.corrcoef(table[on_next], goal[on_next].astype(float))[0, 1]
    assert closed.value == pytest.approx(math.sqrt((1 - pearson) / 2), abs=1e-12)
    assert sampled.value == pytest.approx(closed.value, abs=1e-12)
    assert 0.1 < closed.value < 0.6


def test_closed_form_uses_population_variance_as_the_goal_labels_do():
    """With 20 states the sample-variance (n - 1) version would be off by a factor sqrt(19/20) in rho."""
    rng = np.random.default_rng(9)
    rewards = rng.normal(size=20)
    goal = np.arange(20) < 7
    rewards[goal] += 1.0
    expected = np.corrcoef(rewards, goal.astype(float))[0, 1]
    assert goal_correlation(rewards, goal) == pytest.approx(expected, abs=1e-12)
    assert goal_correlation(rewards, goal) == pytest.approx(
        math.sqrt(0.35 * 0.65 / np.var(rewards)) * (rewards[goal].mean() - rewards[~goal].mean()), abs=1e-12)


def test_state_reward_distance_is_the_pearson_distance_of_the_values():
    rng = np.random.default_rng(10)
    a = rng.normal(size=300)
    b = 0.6 * a + rng.normal(size=300)
    got = epic_state_distance(a, b, rng=rng, resamples=0)
    assert got.value == pytest.approx(math.sqrt((1 - np.corrcoef(a, b)[0, 1]) / 2), abs=1e-12)
    goal = a > 0.5
    assert epic_state_distance(b, goal, rng=rng, resamples=0).value == pytest.approx(
        epic_goal_distance(b, goal, rng=rng, resamples=0).value, abs=1e-12)


def test_goal_distance_interval_brackets_the_value_and_shrinks_with_more_states():
    rng = np.random.default_rng(11)
    widths = []
    for n in (200, 5000):
        rewards = rng.normal(size=n)
        goal = rewards + rng.normal(size=n) > 1.0
        d = epic_goal_distance(rewards, goal, rng=np.random.default_rng(1))
        assert d.ci_low < d.value < d.ci_high and d.n == n
        widths.append(d.ci_high - d.ci_low)
    assert widths[1] < widths[0] / 3  # 1/sqrt(n): 5x narrower expected


def test_undefined_distances_are_reported_as_not_measured():
    rng = np.random.default_rng(0)
    no_goal = epic_goal_distance(np.arange(5.0), np.zeros(5, bool), rng=rng)
    assert no_goal.value is None and no_goal.n == 5 and "no state is a goal" in no_goal.note
    every_goal = epic_goal_distance(np.arange(5.0), np.ones(5, bool), rng=rng)
    assert every_goal.value is None and "every state is a goal" in every_goal.note
    flat = epic_goal_distance(np.ones(5), np.array([1, 0, 0, 1, 0]), rng=rng)
    assert flat.value is None and "constant" in flat.note
    empty = epic_goal_distance(np.array([]), np.array([], bool), rng=rng)
    assert empty.value is None and empty.n == 0 and empty.note
    transitions, coverage = setting(n=30, pairs=10)
    shaping_only = epic_distance(reward, lambda s, a, s2: 0.9 * potential(s2) - potential(s), transitions, coverage,
                                 gamma=0.9, rng=rng)
    assert shaping_only.value is None and "reward_b canonicalises to a constant" in shaping_only.note
    assert epic_state_distance([], [], rng=rng).value is None


def test_bad_inputs_are_one_line_errors():
    rng = np.random.default_rng(0)
    transitions, coverage = setting(n=10, pairs=5)
    with pytest.raises(VlmbenchError, match="returned shape"):
        epic_distance(reward, lambda s, a, s2: np.zeros((len(s), 1)), transitions, coverage, gamma=0.9, rng=rng)
    with pytest.raises(VlmbenchError, match="gamma"):
        canonicalise(reward, transitions, coverage, gamma=1.5)
    with pytest.raises(VlmbenchError, match="one row per sample"):
        Transitions(np.zeros((3, 2)), np.zeros((4, 1)), np.zeros((3, 2)))
    with pytest.raises(VlmbenchError, match="one per state"):
        epic_goal_distance(np.zeros(3), np.zeros(4, bool), rng=rng)
    with pytest.raises(VlmbenchError, match="booleans or 0/1"):
        epic_goal_distance(np.arange(3.0), np.array([0.0, 0.5, 1.0]), rng=rng)
    with pytest.raises(VlmbenchError, match="non-finite"):
        epic_state_distance([1.0, np.nan], [1.0, 2.0], rng=rng)
