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
# entries a joint has in qpos and in qvel, by mujoco.mjtJoint: free, ball, slide, hinge
_JOINT_WIDTHS = {0: ("free", 7, 6), 1: ("ball", 4, 3), 2: ("slide", 1, 1), 3: ("hinge", 1, 1)}
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


def _check_index(name: str, index: int, size: int, what: str) -> None:
    if index >= size:
        entries = "1 entry (index 0)" if size == 1 else f"{size} entries (0 to {size - 1})"
        raise FeatureError(f"feature '{name}': index {index} is out of range: {what} has {entries}")


def _reader(name: str, spec, env) -> Reader:
    if isinstance(spec, ObservationFeature):
        shape = env.observation_space.shape
        if shape is None:
            raise FeatureError(f"feature '{name}': the observation is not an array ({env.observation_space})")
        _check_index(name, spec.index, int(np.prod(shape)), "the observation")
        return lambda _env, obs: float(np.asarray(obs).ravel()[spec.index])
    if isinstance(spec, StateFeature):
        try:
            state = np.asarray(env.state, dtype=np.float64).ravel()
        except AttributeError:
            raise FeatureError(f"feature '{name}': environment has no 'state' vector") from None
        except (TypeError, ValueError):
            raise FeatureError(f"feature '{name}': the environment's 'state' is not a vector of numbers") from None
        _check_index(name, spec.index, state.size, "the state vector")
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
        joint_type, qpos_width, qvel_width = _JOINT_WIDTHS[int(model.jnt_type[joint])]
        if spec.kind == "joint_position":
            _check_index(name, spec.index, qpos_width, f"the qpos of {joint_type} joint '{spec.joint}'")
            address = model.jnt_qposadr[joint] + spec.index
            return lambda e, _obs: float(e.data.qpos[address])
        _check_index(name, spec.index, qvel_width, f"the qvel of {joint_type} joint '{spec.joint}'")
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
