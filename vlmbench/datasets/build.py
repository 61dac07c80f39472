"""Build a task's labelled-state dataset: no rendering, only env stepping and state setting.

Of the ``n`` lone states, a third comes from uniform-random-policy episodes (``random``); goal
states (``goal``) and near misses (``near-miss``: hard negatives, just past where the detector
says no) from the task's family in vlmbench.datasets.families fill up the rest, so that a share
``goal_fraction`` of the ``n`` holds the goal. Then ``trajectories`` trajectories of
``trajectory_length`` states (``trajectory``) are added, each starting where the goal does not
hold and ending where it does. Every label and progress value is the task's detector evaluated
after restoring the saved state, as a later reader of the dataset would see it.

Provenance: ``seed`` with ``sampler`` reproduces a row. Random rows come from
``rollout(task, episodes=episode + 1, seed=seed)`` (vlmbench.envs.rollout), the state after step
``step`` of episode ``episode``; for the other samplers ``seed`` is the attempt's seed (the
family's ``goal_and_near_miss(seed)`` or ``trajectory(seed, length)``) and ``episode`` the attempt's
number. The build is deterministic given its arguments.

A task without a family (one vlmbench knows no way to reach the goal of) gets random states only,
and the dataset's notes say so; so do they when a sampler found fewer states than asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from vlmbench.datasets.families import Family, family_for
from vlmbench.datasets.format import Dataset, Row
from vlmbench.envs.rollout import rollout
from vlmbench.envs.sim_state import SimState
from vlmbench.envs.task_env import TaskEnv, make_env
from vlmbench.errors import VlmbenchError
from vlmbench.specs.task import TaskSpec

RANDOM_SHARE = 1 / 3  # of the lone states, drawn from random-policy episodes
STATES_PER_EPISODE = 4  # random-policy episodes run: enough for this many states each
ATTEMPTS_PER_STATE = 10  # a sampler gives up after this many attempts per state asked for (plus 20)
RANDOM_SAMPLER = "states of uniform-random-policy episodes (after a termination, only the first absorbed state)"


def check_build_settings(n: int, goal_fraction: float, trajectories: int, trajectory_length: int) -> None:
    if n < 1:
        raise VlmbenchError(f"--n {n}: give at least 1 state")
    if not 0.0 <= goal_fraction <= 1.0:
        raise VlmbenchError(f"--goal-fraction {goal_fraction}: give a share from 0 to 1")
    if trajectories < 0:
        raise VlmbenchError(f"--trajectories {trajectories}: give 0 or more")
    if trajectory_length < 2:
        raise VlmbenchError(f"--trajectory-length {trajectory_length}: give at least 2 states")


class _Labeller:
    """Rows labelled by the detector in the restored state; ``add`` numbers them in the order added."""

    def __init__(self, env: TaskEnv, progress: Callable[[int], None] | None):
        self.env, self.task, self.rows, self.progress = env, env.task, [], progress

    def row(self, state: SimState, sampler: str, seed: int, episode: int, **where) -> Row:
        self.env.set_state(state)
        features = self.env.features()
        return Row(state_id="", state=state, features=features,
                   label=int(self.task.is_success(features)), progress=self.task.progress_of(features),
                   labeller="detector", sampler=sampler, seed=seed, episode=episode, step=state.step, **where)

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            self.rows.append(replace(row, state_id=f"{len(self.rows):04d}"))
        if self.progress is not None:
            self.progress(len(rows))


def _random_pool(task: TaskSpec, episodes: int, seed: int) -> list[tuple[int, SimState, bool]]:
    """(episode, state, goal held) of random-policy episodes; of a run of absorbed states only the first."""
    pool = []
    for e, episode in enumerate(rollout(task, episodes=episodes, seed=seed, render=False, keep_states=True)):
        for t, (state, success) in enumerate(zip(episode.states, episode.successes)):
            if state.absorbed and t > 0 and episode.states[t - 1].absorbed:
                continue
            pool.append((e, state, success))
    return pool


def build_dataset(task: TaskSpec, *, n: int, goal_fraction: float = 0.3, seed: int = 0, trajectories: int = 4,
                  trajectory_length: int = 8, progress: Callable[[int], None] | None = None) -> Dataset:
    """Sample and label ``n`` lone states and ``trajectories`` trajectories of ``task`` (unsaved).
    ``progress`` is called with the number of rows just added (``n + trajectories * trajectory_length``
    in all when every sampler succeeds)."""
    check_build_settings(n, goal_fraction, trajectories, trajectory_length)
    streams = np.random.SeedSequence(seed).spawn(4)
    random_seed = int(np.random.default_rng(streams[0]).integers(2**31 - 1))
    env = make_env(task, render=False)
    try:
        env.reset(seed=0)
        labeller = _Labeller(env, progress)
        wanted_goals = round(goal_fraction * n)
        wanted_random = max(1, round(RANDOM_SHARE * n))
        pool = _random_pool(task, -(-n // STATES_PER_EPISODE), random_seed)
        family = family_for(env)
        notes: list[str] = []
        if family is None:
            wanted_random = n
            notes.append(f"no way is known to reach the goal of task '{task.id}': random-policy states only, "
                         "no trajectories, labels as they fall")

        # random-policy states, within the goal and not-goal quotas (any labels when no family)
        caps = [n - wanted_goals, wanted_goals] if family is not None else [n, n]
        taken = [0, 0]
        rows = []
        for i in np.random.default_rng(streams[1]).permutation(len(pool)):
            episode, state, success = pool[i]
            if len(rows) == wanted_random:
                break
            if taken[success] < caps[success]:
                row = labeller.row(state, "random", random_seed, episode)
                taken[row.label] += 1
                rows.append(row)
        labeller.add(rows)
        if len(rows) < wanted_random:
            notes.append(f"random: {len(pool)} random-policy states held {len(rows)} within the quotas, "
                         f"not {wanted_random}")

        if family is not None:
            notes += _goals_and_near_misses(family, labeller, streams[2], wanted_goals - taken[1],
                                            n - wanted_goals - taken[0])
            notes += _trajectories(family, labeller, streams[3], trajectories, trajectory_length)
    finally:
        env.close()
    build = {
        "n": n, "goal_fraction": goal_fraction, "seed": seed, "trajectories": trajectories,
        "trajectory_length": trajectory_length, "family": family.name if family else None,
        "samplers": {"random": RANDOM_SAMPLER, **(family.samplers if family else {})},
    }
    return Dataset(task.id, task.version, labeller.rows, build, notes)


def _goals_and_near_misses(family: Family, labeller: _Labeller, stream: np.random.SeedSequence,
                           goals: int, near_misses: int) -> list[str]:
    rng = np.random.default_rng(stream)
    wanted = {"goal": max(goals, 0), "near-miss": max(near_misses, 0)}
    found = {"goal": 0, "near-miss": 0}
    attempts = ATTEMPTS_PER_STATE * sum(wanted.values()) + 20
    attempt = 0
    while attempt < attempts and any(found[k] < wanted[k] for k in wanted):
        attempt_seed = int(rng.integers(2**31 - 1))
        rows = []
        for sampler, state, label in zip(wanted, family.goal_and_near_miss(attempt_seed), (1, 0)):
            if state is not None and found[sampler] < wanted[sampler]:
                row = labeller.row(state, sampler, attempt_seed, attempt)
                if row.label == label:
                    rows.append(row)
                    found[sampler] += 1
        labeller.add(rows)
        attempt += 1
    return [f"{sampler}: found {found[sampler]} of the {wanted[sampler]} states asked for in {attempt} attempts"
            for sampler in wanted if found[sampler] < wanted[sampler]]


def _trajectories(family: Family, labeller: _Labeller, stream: np.random.SeedSequence, count: int,
                  length: int) -> list[str]:
    rng = np.random.default_rng(stream)
    made, attempt = 0, 0
    while made < count and attempt < ATTEMPTS_PER_STATE * count + 20:
        attempt_seed = int(rng.integers(2**31 - 1))
        path = family.trajectory(attempt_seed, length)
        if path is not None:
            rows = [labeller.row(state, "trajectory", attempt_seed, attempt, trajectory=made, t=t)
                    for t, state in enumerate(path)]
            if rows[0].label == 0 and rows[-1].label == 1:
                labeller.add(rows)
                made += 1
        attempt += 1
    if made < count:
        return [f"trajectory: made {made} of the {count} trajectories asked for in {attempt} attempts "
                "(each must start where the goal fails and end where it holds)"]
    return []
