"""Save a simulator state and restore it later, exactly, so that it re-renders bit for bit.

Three kinds, chosen per environment:
- mujoco: MuJoCo's full physics state (mj_getState / mj_setState);
- vector: a classic-control env's ``state`` attribute (CartPole, MountainCar, Acrobot, Pendulum);
- replay: the reset seed and the actions since reset, replayed on restore (anything else, e.g. Box2D).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class SimState:
    """A restorable snapshot. ``observation`` is the env's observation in that state."""

    kind: Literal["mujoco", "vector", "replay"]
    observation: np.ndarray
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    reset_seed: int | None = None
    actions: tuple = ()
    step: int = 0
    absorbed: bool = False

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "observation": np.asarray(self.observation).tolist(),
            "values": np.asarray(self.values).tolist(),
            "reset_seed": self.reset_seed,
            "actions": [np.asarray(a).tolist() for a in self.actions],
            "step": self.step,
            "absorbed": self.absorbed,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SimState:
        return cls(
            kind=d["kind"],
            observation=np.asarray(d["observation"]),
            values=np.asarray(d["values"], dtype=np.float64),
            reset_seed=d["reset_seed"],
            actions=tuple(np.asarray(a) for a in d["actions"]),
            step=d["step"],
            absorbed=d["absorbed"],
        )


def state_kind(unwrapped_env) -> Literal["mujoco", "vector", "replay"]:
    if hasattr(unwrapped_env, "model") and hasattr(unwrapped_env, "data"):
        return "mujoco"
    if isinstance(getattr(unwrapped_env, "state", None), (np.ndarray, tuple, list)):
        return "vector"
    return "replay"


def mujoco_state(model, data) -> np.ndarray:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    values = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, values, spec)
    return values


def restore_mujoco_state(model, data, values: np.ndarray) -> None:
    import mujoco

    mujoco.mj_setState(model, data, np.asarray(values, dtype=np.float64), mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(model, data)
