"""Success-rate evaluation: episodes judged by the task's own success detector, never by a judge."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vlmbench.envs.rollout import Episode, Policy, rollout
from vlmbench.specs.task import TaskSpec


@dataclass(frozen=True)
class EvalResult:
    success_rate: float
    mean_progress: float
    mean_env_return: float
    episodes: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(task: TaskSpec, episodes: list[Episode]) -> EvalResult:
    """An episode succeeds when the goal holds in at least ``task.evaluation.success_fraction`` of the
    steps it was given (``Episode.horizon``): steps cut off by an early termination count against it."""
    rows = [
        {
            "seed": ep.seed,
            "steps": len(ep),
            "horizon": ep.horizon,
            "success_fraction": ep.success_fraction(),
            "success": ep.success_fraction() >= task.evaluation.success_fraction,
            "mean_progress": float(np.mean(ep.progress)),
            "env_return": float(np.sum(ep.env_rewards)),
        }
        for ep in episodes
    ]
    return EvalResult(
        success_rate=float(np.mean([r["success"] for r in rows])),
        mean_progress=float(np.mean([r["mean_progress"] for r in rows])),
        mean_env_return=float(np.mean([r["env_return"] for r in rows])),
        episodes=rows,
    )


def evaluate(task: TaskSpec, policy: Policy, *, episodes: int, seed: int, workers: int = 1) -> EvalResult:
    """Run ``episodes`` episodes of ``policy`` without rendering and summarise them."""
    return summarise(task, rollout(task, episodes=episodes, seed=seed, policy=policy, workers=workers,
                                   render=False, keep_states=False))
