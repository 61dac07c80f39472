"""Read a task's named features (scalars) from an environment's current state."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.specs.task import (
    BodyDistanceFeature,
    BodyPositionFeature,
    BodyUprightFeature,
    ContactFeature,
    JointFeature,
    ObservationFeature,
    StateFeature,
    TaskSpec,
)

_AXIS = {"x": 0, "y": 1, "z": 2}
Reader = Callable[[object, np.ndarray], float]  # (unwrapped env, last observation) -> value


class FeatureError(VlmbenchError):
    """A feature names something the environment does not have."""


def _mujoco_point(model, name: str, feature: str):
    """A function returning the world position of a body (or, failing that, a geom) called ``name``."""
    import mujoco

    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    if body >= 0:
        return lambda data: data.xpos[body]
    geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
    if geom >= 0:
        return lambda data: data.geom_xpos[geom]
    bodies = [model.body(i).name for i in range(model.nbody)]
    raise FeatureError(f"feature '{feature}': no body or geom '{name}'; bodies: {', '.join(bodies)}")


def _geoms_of(model, name: str, feature: str) -> frozenset[int]:
    """Geom ids belonging to body ``name``, or the geom called ``name`` ('floor' is a geom)."""
    import mujoco

    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    if body >= 0:
        return frozenset(int(g) for g in np.flatnonzero(model.geom_bodyid == body))
    geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
    if geom >= 0:
        return frozenset([geom])
    raise FeatureError(f"feature '{feature}': no body or geom '{name}'")


def _reader(name: str, spec, env) -> Reader:
    if isinstance(spec, ObservationFeature):
        return lambda _env, obs: float(np.asarray(obs).ravel()[spec.index])
    if isinstance(spec, StateFeature):
        if not hasattr(env, "state"):
            raise FeatureError(f"feature '{name}': environment has no 'state' vector")
        return lambda e, _obs: float(np.asarray(e.state).ravel()[spec.index])
    model = getattr(env, "model", None)
    if model is None:
        raise FeatureError(f"feature '{name}' ({spec.kind}) needs a MuJoCo environment")
    import mujoco

    if isinstance(spec, JointFeature):
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, spec.joint)
        if joint < 0:
            joints = [model.joint(i).name for i in range(model.njnt)]
            raise FeatureError(f"feature '{name}': no joint '{spec.joint}'; joints: {', '.join(joints)}")
        if spec.kind == "joint_position":
            address = model.jnt_qposadr[joint] + spec.index
            return lambda e, _obs: float(e.data.qpos[address])
        address = model.jnt_dofadr[joint] + spec.index
        return lambda e, _obs: float(e.data.qvel[address])
    if isinstance(spec, BodyPositionFeature):
        point, axis = _mujoco_point(model, spec.body, name), _AXIS[spec.axis]
        return lambda e, _obs: float(point(e.data)[axis])
    if isinstance(spec, BodyUprightFeature):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, spec.body)
        if body < 0:
            raise FeatureError(f"feature '{name}': no body '{spec.body}'")
        column = _AXIS[spec.local_axis]
        return lambda e, _obs: float(e.data.xmat[body].reshape(3, 3)[2, column])
    if isinstance(spec, BodyDistanceFeature):
        a, b = _mujoco_point(model, spec.body, name), _mujoco_point(model, spec.other, name)
        axes = [_AXIS[c] for c in spec.axes]
        return lambda e, _obs: float(np.linalg.norm((a(e.data) - b(e.data))[axes]))
    if isinstance(spec, ContactFeature):
        mine, theirs = _geoms_of(model, spec.body, name), _geoms_of(model, spec.other, name)

        def touching(e, _obs) -> float:
            contacts = e.data.contact[: e.data.ncon]
            for g1, g2 in zip(contacts.geom1, contacts.geom2):
                if (g1 in mine and g2 in theirs) or (g2 in mine and g1 in theirs):
                    return 1.0
            return 0.0

        return touching
    raise FeatureError(f"feature '{name}': unsupported kind {spec.kind}")


class FeatureReader:
    """Computes all of a task's features from an unwrapped env and its latest observation."""

    def __init__(self, task: TaskSpec, unwrapped_env):
        self.readers = {}
        for name, spec in task.features.items():
            try:
                self.readers[name] = _reader(name, spec, unwrapped_env)
            except FeatureError as exc:
                exc.field = ("features", name)
                raise

    def __call__(self, unwrapped_env, observation: np.ndarray) -> dict[str, float]:
        return {name: read(unwrapped_env, observation) for name, read in self.readers.items()}
