"""EPIC distance at evaluation scale: the closed form over 1,000,000 states, and sampled EPIC at 4096 x 4096.

Closed form (``epic_goal_distance``): a state reward against goal labels over --states states; target < 1 s for
the distance itself. Its percentile-bootstrap interval costs one pass over the states per resample, so it is
timed apart, with --resamples resamples.

Sampled EPIC (``epic_distance``): two rewards over (s, a, s') with 8-D states and 2-D actions, --samples
evaluation transitions, --samples coverage states and --samples coverage (action, next state) pairs:
(2 x 4096 + 4096) x 4096 = 50M reward evaluations per reward, made in batches. Timed without tracing, then run
again under tracemalloc for its peak memory, next to the size of the matrix of all mean-term rewards that the
batching avoids holding.

    python bench/bench_epic.py
    python bench/bench_epic.py --states 1000000 --samples 4096 --resamples 1000
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from rich.console import Console
from rich.table import Table

from vlmbench.metrics.epic import BATCH, Coverage, Transitions, epic_distance, epic_goal_distance

TARGET_SECONDS = 1.0
STATE_DIM, ACTION_DIM = 8, 2
TARGET = np.array([0.5, -0.3])
DIRECTION = np.linspace(-1.0, 1.0, STATE_DIM)


def distance_reward(s, a, s2):
    """Reacher-like: negative squared distance of the next state's first two coordinates from a target."""
    return -np.sum((s2[:, :2] - TARGET) ** 2, axis=1) - 0.01 * np.sum(a ** 2, axis=1)


def learned_like_reward(s, a, s2):
    """The distance reward, shaped by a potential and bent by a term of its own: some distance away."""
    def potential(x):
        return np.tanh(x @ DIRECTION)
    return distance_reward(s, a, s2) + 0.99 * potential(s2) - potential(s) + np.sin(3.0 * s2[:, 2] * a[:, 0])


def samples(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rng.normal(size=(n, STATE_DIM)), rng.uniform(-1, 1, size=(n, ACTION_DIM)), rng.normal(size=(n, STATE_DIM))


def timed(call):
    began = time.perf_counter()
    result = call()
    return result, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--states", type=int, default=1_000_000, help="states for the closed form")
    parser.add_argument("--samples", type=int, default=4096, help="transitions, coverage states and pairs")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    rng = np.random.default_rng(args.seed)

    rewards = rng.normal(size=args.states)
    goal = rewards + rng.normal(size=args.states) > 1.0
    closed, closed_s = timed(lambda: epic_goal_distance(rewards, goal, rng=rng, resamples=0))
    closed_ci, closed_ci_s = timed(lambda: epic_goal_distance(rewards, goal, rng=rng, resamples=args.resamples))

    transitions = Transitions(*samples(rng, args.samples))
    coverage = Coverage(*samples(rng, args.samples))

    def sampled():
        return epic_distance(distance_reward, learned_like_reward, transitions, coverage, gamma=0.99,
                             rng=np.random.default_rng(args.seed), resamples=args.resamples)

    sampled_epic, sampled_s = timed(sampled)
    tracemalloc.start()
    sampled()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    full_matrix = (2 * len(transitions) + len(coverage.states)) * coverage.pairs * 8

    table = Table(title="EPIC distance at evaluation scale")
    for column in ("case", "size", "distance [interval]", "seconds", "seconds / target", "peak memory"):
        table.add_column(column, justify="left" if column in ("case", "size") else "right")

    def shown(metric):
        interval = f" [{metric.ci_low:.4f}, {metric.ci_high:.4f}]" if metric.ci_low is not None else ""
        return f"{metric.value:.4f}{interval}"

    table.add_row("closed form", f"{args.states:,} states", shown(closed), f"{closed_s:.3f}",
                  f"{closed_s / TARGET_SECONDS:.3f} (< {TARGET_SECONDS:g} s)", "-")
    table.add_row(f"closed form, {args.resamples} resamples", f"{args.states:,} states", shown(closed_ci),
                  f"{closed_ci_s:.1f}", "-", "-")
    table.add_row(f"sampled, {args.resamples} resamples", f"{args.samples:,} x {args.samples:,}", shown(sampled_epic),
                  f"{sampled_s:.2f}", "-", f"{peak / 2**20:.1f} MiB")
    console.print(table)
    console.print(f"closed form: {closed.note}")
    console.print(f"sampled: gamma 0.99, {STATE_DIM}-D states, {ACTION_DIM}-D actions, {BATCH:,} transitions per "
                  f"reward call; all mean-term rewards at once would take {full_matrix / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
