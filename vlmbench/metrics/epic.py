"""EPIC distance between reward functions (Gleave et al., 2021, "Quantifying differences in reward functions").

Sample-based canonicalisation, with S, A, S' drawn independently from a coverage distribution:

    C(R)(s, a, s') = R(s, a, s') + gamma E[R(s', A, S')] - E[R(s, A, S')] - gamma E[R(S, A, S')]

then the Pearson distance D = sqrt((1 - rho) / 2) between C(R_a) and C(R_b) over evaluation transitions.
D is 0 for rewards equal up to potential shaping and positive rescaling, 1 for a reward and its negation, and
sqrt(1/2) for rewards whose canonical forms are uncorrelated.

State-only rewards R(s, a, s') = r(s'): every expectation above is then the same constant E[r(S')], so
C(R)(s, a, s') = r(s') - E[r(S')] whatever gamma is (in the sample version too, with the sample mean), and as
Pearson correlation ignores shifts, EPIC is the Pearson distance between r_a and r_b on the next states
(``epic_state_distance``). Against the goal indicator 1[s' in goal] this is the closed form of the VLM-RM paper
(Rocamonde et al., 2024, Lemma 1), ``epic_goal_distance``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.bootstrap import (LEVEL, RESAMPLES, Metric, finite_vector, goal_labels, measure,
                                       same_length)

RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""Rewards of a batch of transitions: (states, actions, next_states), each with the batch along axis 0 -> (batch,)."""

BATCH = 1 << 16  # transitions per reward call when computing mean terms; memory grows with it


@dataclass(frozen=True, eq=False)
class Transitions:
    """Evaluation transitions (s, a, s'), one per row of each array."""

    states: np.ndarray
    actions: np.ndarray
    next_states: np.ndarray

    def __post_init__(self) -> None:
        _as_arrays(self)
        _same_rows("transitions", states=self.states, actions=self.actions, next_states=self.next_states)

    def __len__(self) -> int:
        return len(self.states)


@dataclass(frozen=True, eq=False)
class Coverage:
    """Samples of the coverage distribution behind the mean terms: ``states`` are draws of S (for
    E[R(S, A, S')]); ``actions[j]`` with ``next_states[j]`` is the j-th draw of (A, S'). Draw them independently:
    a transition's action and next state are not (``from_transitions`` shuffles them apart)."""

    states: np.ndarray
    actions: np.ndarray
    next_states: np.ndarray

    def __post_init__(self) -> None:
        _as_arrays(self)
        _same_rows("coverage action/next-state pairs", actions=self.actions, next_states=self.next_states)
        if self.states.ndim == 0 or len(self.states) == 0 or self.pairs == 0:
            raise VlmbenchError("coverage needs at least one state and one (action, next state) pair")

    @property
    def pairs(self) -> int:
        return len(self.actions)

    @classmethod
    def from_transitions(cls, transitions: Transitions, rng: np.random.Generator) -> Coverage:
        """Coverage from the transitions' own marginals: states as they are, actions and next states each
        shuffled by its own permutation, so that A, S' and S are drawn independently."""
        return cls(transitions.states, transitions.actions[rng.permutation(len(transitions))],
                   transitions.next_states[rng.permutation(len(transitions))])


def canonicalise(reward: RewardFn, transitions: Transitions, coverage: Coverage, *, gamma: float,
                 batch: int = BATCH) -> np.ndarray:
    """C(R) on each transition, with the expectations replaced by means over the coverage samples."""
    return _canonical(reward, transitions, coverage, gamma, batch)[0]


def pearson_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length samples; NaN when either is constant."""
    if len(x) < 2 or x.min() == x.max() or y.min() == y.max():
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip(np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc)), -1.0, 1.0))


def pearson_distance(x: np.ndarray, y: np.ndarray) -> float:
    """sqrt((1 - rho) / 2): 0 for perfectly correlated samples, 1 for perfectly anti-correlated; NaN if undefined."""
    return float(np.sqrt((1.0 - pearson_correlation(x, y)) / 2.0))


def epic_distance(reward_a: RewardFn, reward_b: RewardFn, transitions: Transitions, coverage: Coverage, *,
                  gamma: float, rng: np.random.Generator, resamples: int = RESAMPLES, level: float = LEVEL,
                  batch: int = BATCH) -> Metric:
    """EPIC distance between two rewards given as batched callables. Both are canonicalised with the same
    coverage samples. The interval resamples the evaluation transitions; the coverage samples behind the mean
    terms stay fixed. Cost: (2 len(transitions) + len(coverage.states)) x coverage.pairs reward evaluations,
    made ``batch`` at a time."""
    name = "epic_distance"
    if len(transitions) == 0:
        return Metric.not_measured(name, 0, "no evaluation transitions")
    canonical = {}
    for label, reward in (("reward_a", reward_a), ("reward_b", reward_b)):
        values, scale = _canonical(reward, transitions, coverage, gamma, batch)
        if np.ptp(values) <= 1e-12 * scale:
            return Metric.not_measured(name, len(transitions), f"{label} canonicalises to a constant on these "
                                       "transitions (a constant or potential-shaping reward): no correlation")
        canonical[label] = values
    a, b = canonical["reward_a"], canonical["reward_b"]
    return measure(name, lambda i: pearson_distance(a[i], b[i]), len(a), rng=rng, resamples=resamples,
                   level=level)


def epic_state_distance(rewards_a: np.ndarray, rewards_b: np.ndarray, *, rng: np.random.Generator,
                        resamples: int = RESAMPLES, level: float = LEVEL) -> Metric:
    """EPIC distance between state-only rewards r_a(s'), r_b(s') given as values on the same next states
    (drawn from the coverage distribution): their Pearson distance, for any gamma (see the module docstring)."""
    name = "epic_distance"
    a = finite_vector("rewards_a", rewards_a)
    b = finite_vector("rewards_b", rewards_b)
    same_length(("rewards_a", a), ("rewards_b", b), of="state")
    if len(a) == 0:
        return Metric.not_measured(name, 0, "no states")
    for label, values in (("rewards_a", a), ("rewards_b", b)):
        if values.min() == values.max():
            return Metric.not_measured(name, len(a), f"{label} is constant on these states: no correlation")
    return measure(name, lambda i: pearson_distance(a[i], b[i]), len(a), rng=rng, resamples=resamples, level=level)


def goal_correlation(rewards: np.ndarray, goal: np.ndarray) -> float:
    """Lemma 1 of VLM-RM: rho = sqrt(p (1 - p) / Var R) (E[R | goal] - E[R | not goal]), p the goal fraction,
    Var R the population variance (divisor n, as p (1 - p) is the population variance of the labels). It is
    the Pearson correlation of R with the 0/1 labels. NaN without goal states, without other states, or for a
    constant R."""
    n = len(rewards)
    goals = int(np.count_nonzero(goal))
    if goals in (0, n) or rewards.min() == rewards.max():
        return float("nan")
    p = goals / n
    variance = np.mean((rewards - rewards.mean()) ** 2)
    gap = rewards[goal].mean() - rewards[~goal].mean()
    return float(np.clip(np.sqrt(p * (1.0 - p) / variance) * gap, -1.0, 1.0))


def epic_goal_distance(rewards: np.ndarray, goal: np.ndarray, *, rng: np.random.Generator,
                       resamples: int = RESAMPLES, level: float = LEVEL) -> Metric:
    """EPIC distance of a state reward from the binary goal reward, in closed form: sqrt((1 - rho) / 2) with
    rho from ``goal_correlation``, over states drawn from the coverage distribution. Resamples in which every
    state or no state is a goal are undefined and left out of the interval (the note counts them)."""
    name = "epic_goal_distance"
    r = finite_vector("rewards", rewards)
    g = goal_labels("goal", goal)
    same_length(("rewards", r), ("goal", g), of="state")
    if len(r) == 0:
        return Metric.not_measured(name, 0, "no states")
    goals = int(np.count_nonzero(g))
    if goals == 0 or goals == len(g):
        return Metric.not_measured(name, len(r), f"{'no' if goals == 0 else 'every'} state is a goal state: "
                                   "the goal reward is constant")
    if r.min() == r.max():
        return Metric.not_measured(name, len(r), "rewards are constant on these states: no correlation")
    return measure(name, lambda i: float(np.sqrt((1.0 - goal_correlation(r[i], g[i])) / 2.0)), len(r), rng=rng,
                   resamples=resamples, level=level, note=f"{goals} of {len(r)} states are goal states")


def _canonical(reward: RewardFn, transitions: Transitions, coverage: Coverage, gamma: float,
               batch: int) -> tuple[np.ndarray, float]:
    """C(R) on the transitions, and the largest |reward or mean term| (the scale of its rounding error)."""
    if not (np.isfinite(gamma) and 0.0 <= gamma <= 1.0):
        raise VlmbenchError(f"gamma must lie in [0, 1], got {gamma!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VlmbenchError(f"batch must be a whole number >= 1, got {batch!r}")
    n = len(transitions)
    direct = _evaluate(reward, transitions.states, transitions.actions, transitions.next_states)
    means = _coverage_means(reward, np.concatenate([transitions.states, transitions.next_states, coverage.states]),
                            coverage, batch)
    from_state, from_next, overall = means[:n], means[n:2 * n], means[2 * n:].mean()
    canonical = direct + gamma * from_next - from_state - gamma * overall
    scale = max(np.abs(direct).max(initial=0.0), np.abs(means).max(initial=0.0))
    return canonical, float(scale)


def _coverage_means(reward: RewardFn, points: np.ndarray, coverage: Coverage, batch: int) -> np.ndarray:
    """mean_j R(x, A_j, S'_j) for each row x of ``points``, evaluated ``batch`` triples at a time and never
    holding the len(points) x pairs matrix."""
    width = min(coverage.pairs, batch)
    rows = max(1, batch // width)
    sums = np.zeros(len(points))
    for c0 in range(0, coverage.pairs, width):
        actions, next_states = coverage.actions[c0:c0 + width], coverage.next_states[c0:c0 + width]
        k = len(actions)
        tiled_actions = np.tile(actions, (rows,) + (1,) * (actions.ndim - 1))
        tiled_next = np.tile(next_states, (rows,) + (1,) * (next_states.ndim - 1))
        for r0 in range(0, len(points), rows):
            x = points[r0:r0 + rows]
            h = len(x)
            values = _evaluate(reward, np.repeat(x, k, axis=0), tiled_actions[:h * k], tiled_next[:h * k])
            sums[r0:r0 + h] += values.reshape(h, k).sum(axis=1)
    return sums / coverage.pairs


def _evaluate(reward: RewardFn, states: np.ndarray, actions: np.ndarray, next_states: np.ndarray) -> np.ndarray:
    values = np.asarray(reward(states, actions, next_states), dtype=float)
    if values.shape != (len(states),):
        raise VlmbenchError(f"the reward function returned shape {values.shape} for a batch of {len(states)} "
                            f"transitions; it must return one reward per transition, shape ({len(states)},)")
    if not np.all(np.isfinite(values)):
        raise VlmbenchError("the reward function returned a non-finite reward (inf or nan)")
    return values


def _as_arrays(samples: Transitions | Coverage) -> None:
    for f in fields(samples):
        object.__setattr__(samples, f.name, np.asarray(getattr(samples, f.name)))


def _same_rows(what: str, **arrays: np.ndarray) -> None:
    counts = {name: len(array) if array.ndim else None for name, array in arrays.items()}
    if None in counts.values() or len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {'a scalar' if c is None else c}" for name, c in counts.items())
        raise VlmbenchError(f"{what} need one row per sample in each array, got {listed}")
