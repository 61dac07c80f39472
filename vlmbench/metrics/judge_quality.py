"""How well a judge's answers track the truth: goal AUC, rank correlation with progress, value-order
correlation of trajectories (GVL), and pairwise accuracy with ties and abstentions counted apart.

A pairwise answer is P(first clip better) in [0, 1], or None when the judge abstained. Its verdict is "first"
above 0.5, "second" below, and a tie at exactly 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.bootstrap import (LEVEL, RESAMPLES, Metric, finite_vector, goal_labels, measure,
                                       same_length)
from vlmbench.metrics.epic import pearson_correlation

FIRST, SECOND, TIE = 1.0, -1.0, 0.0  # verdict codes; an abstention is NaN


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    n = len(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], n]
    ranks = np.empty(n)
    ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    return ranks


def spearman_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of average ranks; NaN when either sample is constant."""
    return pearson_correlation(average_ranks(x), average_ranks(y))


def answer_array(name: str, answers: Sequence[float | None]) -> np.ndarray:
    """Pairwise answers as floats, NaN for an abstention (None); anything outside [0, 1] is an error."""
    try:
        array = np.array([np.nan if a is None else a for a in answers], dtype=float)
    except (TypeError, ValueError):
        raise VlmbenchError(f"{name} must be probabilities P(first better) in [0, 1] or None (abstained)") from None
    if array.ndim != 1:
        raise VlmbenchError(f"{name} must be a flat sequence of answers, got shape {array.shape}")
    given = array[[a is not None for a in answers]]
    bad = given[~((given >= 0.0) & (given <= 1.0))]  # NaN fails both comparisons: only None abstains
    if len(bad):
        raise VlmbenchError(f"{name} must be probabilities P(first better) in [0, 1] or None (abstained), "
                            f"got {bad[0]}")
    return array


def verdicts(answers: np.ndarray) -> np.ndarray:
    """FIRST, SECOND or TIE per answer, NaN where the judge abstained."""
    return np.sign(answers - 0.5)


def roc_auc(rewards: np.ndarray, goal: np.ndarray, *, rng: np.random.Generator, resamples: int = RESAMPLES,
            level: float = LEVEL) -> Metric:
    """P(reward of a goal state > reward of a non-goal state), ties counting half (Mann-Whitney U from average
    ranks). The interval resamples goal and non-goal states separately, keeping their counts."""
    name = "goal_auc"
    r = finite_vector("rewards", rewards)
    g = goal_labels("goal", goal)
    same_length(("rewards", r), ("goal", g), of="state")
    goals = int(np.count_nonzero(g))
    if goals == 0 or goals == len(g):
        return Metric.not_measured(name, len(r), "no goal states" if goals == 0 else "no states outside the goal")

    def auc(i: np.ndarray) -> float:
        ranks, positive = average_ranks(r[i]), g[i]
        n1 = np.count_nonzero(positive)
        n0 = len(i) - n1
        return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))

    return measure(name, auc, len(r), rng=rng, resamples=resamples, level=level,
                   strata=[np.flatnonzero(g), np.flatnonzero(~g)],
                   note=f"{goals} goal and {len(r) - goals} other states")


def progress_spearman(rewards: np.ndarray, progress: np.ndarray, *, rng: np.random.Generator,
                      resamples: int = RESAMPLES, level: float = LEVEL) -> Metric:
    """Spearman rank correlation of reward with task progress over states (ties take average ranks)."""
    name = "progress_spearman"
    r = finite_vector("rewards", rewards)
    p = finite_vector("progress", progress)
    same_length(("rewards", r), ("progress", p), of="state")
    if len(r) == 0:
        return Metric.not_measured(name, 0, "no states")
    for label, values in (("rewards", r), ("progress", p)):
        if values.min() == values.max():
            return Metric.not_measured(name, len(r), f"{label} constant on these states: no rank correlation")
    return measure(name, lambda i: spearman_correlation(r[i], p[i]), len(r), rng=rng, resamples=resamples,
                   level=level)


def value_order_correlation(trajectories: Sequence[np.ndarray], *, rng: np.random.Generator,
                            resamples: int = RESAMPLES, level: float = LEVEL) -> Metric:
    """Value-order correlation (GVL, Ma et al. 2024): the mean over trajectories of Spearman(per-frame reward,
    frame index). Pass only successful trajectories, whose progress should rise with time. A trajectory with
    a constant reward expresses no order and counts as 0 (the note says how many did). n is the number of
    trajectories, which the interval resamples."""
    name = "value_order_correlation"
    per_trajectory = []
    constant = 0
    for t, frames in enumerate(trajectories):
        rewards = finite_vector(f"trajectory {t}", frames)
        if len(rewards) < 2:
            raise VlmbenchError(f"trajectory {t} has {len(rewards)} frame(s); a value order needs at least 2")
        if rewards.min() == rewards.max():
            constant += 1
            per_trajectory.append(0.0)
        else:
            per_trajectory.append(spearman_correlation(rewards, np.arange(len(rewards), dtype=float)))
    if not per_trajectory:
        return Metric.not_measured(name, 0, "no successful trajectories")
    values = np.array(per_trajectory)
    note = f"{constant} trajectories with a constant reward counted as 0" if constant else ""
    return measure(name, lambda i: float(values[i].mean()), len(values), rng=rng, resamples=resamples,
                   level=level, note=note)


@dataclass(frozen=True)
class PairwiseAccuracy:
    """Accuracy over decided answers on pairs with a true order; ties and abstentions as shares of those
    pairs, never folded into the accuracy; and the pairs left out for having no true order."""

    accuracy: Metric
    tie_rate: Metric
    abstain_rate: Metric
    unordered_pairs: int


def ordered_pairs(answers: Sequence[float | None], progress_delta: np.ndarray,
                  min_gap: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Verdicts and true orders (FIRST or SECOND) of the pairs whose progress differs by more than ``min_gap``,
    and how many pairs did not."""
    a = answer_array("answers", answers)
    delta = finite_vector("progress_delta", progress_delta)
    same_length(("answers", a), ("progress_delta", delta), of="pair")
    if not (np.isfinite(min_gap) and min_gap >= 0.0):
        raise VlmbenchError(f"min_gap must be a number >= 0, got {min_gap!r}")
    ordered = np.abs(delta) > min_gap
    return verdicts(a[ordered]), np.sign(delta[ordered]), int(np.count_nonzero(~ordered))


def decided_correctness(verdict: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the decided verdicts (FIRST or SECOND) only: 1.0 where right, 0.0 where wrong; and the true order."""
    decided = (verdict == FIRST) | (verdict == SECOND)
    return (verdict[decided] == truth[decided]).astype(float), truth[decided]


def pairwise_accuracy(answers: Sequence[float | None], progress_delta: np.ndarray, *, rng: np.random.Generator,
                      min_gap: float = 0.0, resamples: int = RESAMPLES, level: float = LEVEL) -> PairwiseAccuracy:
    """``answers[k]`` is P(first better) for pair k (None: abstained); ``progress_delta[k]`` is the first clip's
    progress minus the second's. Pairs with |delta| <= ``min_gap`` have no true order and are left out."""
    verdict, truth, unordered = ordered_pairs(answers, progress_delta, min_gap)
    correct, _ = decided_correctness(verdict, truth)
    ties = (verdict == TIE).astype(float)
    abstained = np.isnan(verdict).astype(float)
    left_out = f"{unordered} pairs without a true order left out" if unordered else ""

    def share(metric: str, flags: np.ndarray, why_none: str) -> Metric:
        return measure(metric, lambda i: float(flags[i].mean()), len(flags), rng=rng, resamples=resamples,
                       level=level, note=why_none if len(flags) == 0 else left_out)

    return PairwiseAccuracy(
        accuracy=share("pairwise_accuracy", correct,
                       f"no decided answers on the {len(verdict)} pairs with a true order"),
        tie_rate=share("pairwise_tie_rate", ties, "no pairs with a true order"),
        abstain_rate=share("pairwise_abstain_rate", abstained, "no pairs with a true order"),
        unordered_pairs=unordered,
    )
