"""Judge-quality metrics against brute-force counts written out here (scipy is not a dependency)."""

import math

import numpy as np
import pytest

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.judge_quality import (average_ranks, pairwise_accuracy, progress_spearman, roc_auc,
                                            value_order_correlation)


def rng():
    return np.random.default_rng(0)


def brute_ranks(values):
    """Rank = 1 + number of smaller values + half the number of other equal values."""
    return [1 + sum(v < x for v in values) + (sum(v == x for v in values) - 1) / 2 for x in values]


def brute_pearson(x, y):
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def brute_spearman(x, y):
    return brute_pearson(brute_ranks(list(x)), brute_ranks(list(y)))


def tied_values(generator, n, levels):
    return generator.integers(0, levels, size=n) / 2.0


def test_average_ranks_share_the_mean_rank_of_a_tie():
    values = tied_values(np.random.default_rng(1), 60, 9)
    np.testing.assert_allclose(average_ranks(values), brute_ranks(list(values)))
    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4, 1, 4, 2, 4])


def test_auc_is_the_share_of_goal_over_non_goal_pairs_with_ties_counting_half():
    generator = np.random.default_rng(2)
    goal = generator.random(80) < 0.3
    rewards = tied_values(generator, 80, 6) + 0.5 * goal  # many ties across the classes
    wins = ties = 0
    for i in np.flatnonzero(goal):
        for j in np.flatnonzero(~goal):
            wins += rewards[i] > rewards[j]
            ties += rewards[i] == rewards[j]
    pairs = goal.sum() * (~goal).sum()
    auc = roc_auc(rewards, goal, rng=rng())
    assert ties > 0.1 * pairs
    assert auc.value == pytest.approx((wins + 0.5 * ties) / pairs, abs=1e-12)
    assert auc.n == 80 and auc.ci_low < auc.value < auc.ci_high
    assert auc.note == f"{goal.sum()} goal and {80 - goal.sum()} other states"


def test_auc_extremes_and_missing_classes():
    goal = np.array([True, False, True, False])
    assert roc_auc(np.array([2.0, 1.0, 3.0, 0.0]), goal, rng=rng()).value == 1.0
    assert roc_auc(np.array([0.0, 1.0, 0.5, 3.0]), goal, rng=rng()).value == 0.0
    assert roc_auc(np.ones(4), goal, rng=rng()).value == 0.5
    rare = roc_auc(np.arange(40.0), np.arange(40) >= 38, rng=rng())
    assert rare.note == "2 goal and 38 other states"  # resampled within each class: never a draw without goals
    missing = roc_auc(np.arange(3.0), np.zeros(3, bool), rng=rng())
    assert missing.value is None and missing.n == 3 and missing.note == "no goal states"


def test_progress_spearman_against_pearson_of_brute_force_ranks():
    generator = np.random.default_rng(3)
    progress = tied_values(generator, 70, 10)
    rewards = np.round(progress + generator.normal(0, 1.5, 70), 0)  # ties in both
    got = progress_spearman(rewards, progress, rng=rng())
    assert got.value == pytest.approx(brute_spearman(rewards, progress), abs=1e-12)
    assert 0.2 < got.value < 0.9 and got.n == 70
    assert progress_spearman(-np.exp(progress), progress, rng=rng()).value == pytest.approx(-1.0)
    flat = progress_spearman(np.ones(5), np.arange(5.0), rng=rng())
    assert flat.value is None and "rewards constant" in flat.note


def test_value_order_correlation_is_the_mean_per_trajectory_rank_correlation_with_time():
    generator = np.random.default_rng(4)
    trajectories = [np.round(np.linspace(0, 1, k) + generator.normal(0, 0.4, k), 1) for k in (5, 9, 14, 30)]
    trajectories.append(np.full(6, 0.3))  # no order expressed: counts 0
    expected = sum(brute_spearman(t, range(len(t))) for t in trajectories[:4]) / 5
    got = value_order_correlation(trajectories, rng=rng())
    assert got.value == pytest.approx(expected, abs=1e-12)
    assert got.n == 5 and got.note == "1 trajectories with a constant reward counted as 0"
    assert value_order_correlation([np.arange(4.0), np.arange(7.0)], rng=rng()).value == 1.0
    assert value_order_correlation([np.arange(4.0)[::-1]], rng=rng()).value == -1.0
    none = value_order_correlation([], rng=rng())
    assert none.value is None and none.n == 0
    with pytest.raises(VlmbenchError, match="trajectory 1 has 1 frame"):
        value_order_correlation([np.arange(3.0), np.array([0.2])], rng=rng())


def test_pairwise_accuracy_counts_ties_and_abstentions_apart():
    answers = [0.9, 0.2, 0.5, None, 0.7, 0.6, 0.0, 1.0]
    deltas = [0.3, 0.1, 0.2, 0.4, -0.5, 0.0, -0.2, 0.01]
    got = pairwise_accuracy(answers, deltas, rng=rng())
    # ordered pairs: all but the 6th; decided: 0.9 right, 0.2 wrong, 0.7 wrong, 0.0 right, 1.0 right
    assert (got.accuracy.value, got.accuracy.n) == (3 / 5, 5)
    assert (got.tie_rate.value, got.tie_rate.n) == (1 / 7, 7)
    assert (got.abstain_rate.value, got.abstain_rate.n) == (1 / 7, 7)
    assert got.unordered_pairs == 1 and got.accuracy.note == "1 pairs without a true order left out"
    gapped = pairwise_accuracy(answers, deltas, rng=rng(), min_gap=0.15)
    # the 0.2 answer (delta 0.1) and the 1.0 answer (delta 0.01) lose their true order too: 0.9, 0.7, 0.0 remain
    assert (gapped.accuracy.value, gapped.accuracy.n, gapped.unordered_pairs) == (2 / 3, 3, 3)


def test_pairwise_accuracy_against_a_loop_on_random_answers():
    generator = np.random.default_rng(5)
    deltas = np.round(generator.normal(0, 1, 300), 1)
    answers = [None if u < 0.1 else 0.5 if u < 0.2 else float(1 / (1 + np.exp(-(d + generator.normal(0, 1)))))
               for u, d in zip(generator.random(300), deltas)]
    right = decided = ordered = ties = abstained = 0
    for a, d in zip(answers, deltas):
        if d == 0:
            continue
        ordered += 1
        if a is None:
            abstained += 1
        elif a == 0.5:
            ties += 1
        else:
            decided += 1
            right += (a > 0.5) == (d > 0)
    got = pairwise_accuracy(answers, deltas, rng=rng())
    assert (got.accuracy.value, got.accuracy.n) == (pytest.approx(right / decided), decided)
    assert got.tie_rate.value == pytest.approx(ties / ordered) and got.abstain_rate.n == ordered
    assert got.abstain_rate.value == pytest.approx(abstained / ordered)
    assert 0.6 < got.accuracy.value < 0.9 and got.accuracy.ci_low < got.accuracy.value < got.accuracy.ci_high


def test_pairwise_accuracy_without_decided_answers_is_not_measured():
    got = pairwise_accuracy([None, 0.5], [1.0, -1.0], rng=rng())
    assert got.accuracy.value is None and got.accuracy.n == 0
    assert got.accuracy.note == "no decided answers on the 2 pairs with a true order"
    assert got.tie_rate.value == 0.5 and got.abstain_rate.value == 0.5
    unordered = pairwise_accuracy([0.9], [0.0], rng=rng())
    assert unordered.tie_rate.value is None and unordered.tie_rate.note == "no pairs with a true order"


def test_bad_answers_are_one_line_errors():
    with pytest.raises(VlmbenchError, match=r"in \[0, 1\] or None \(abstained\), got 1.5"):
        pairwise_accuracy([1.5], [1.0], rng=rng())
    with pytest.raises(VlmbenchError, match="got nan"):
        pairwise_accuracy([float("nan")], [1.0], rng=rng())
    with pytest.raises(VlmbenchError, match="one per pair"):
        pairwise_accuracy([0.2, 0.3], [1.0], rng=rng())
    with pytest.raises(VlmbenchError, match="one per state"):
        roc_auc(np.zeros(3), np.zeros(2, bool), rng=rng())
