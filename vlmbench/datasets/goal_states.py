"""Hand-built goal states for the task catalogue: one that satisfies each task's success detector.

``put_in_success_state(env)`` moves a freshly reset ``TaskEnv`` (from ``make_env``) into a state
where its task's goal holds. The dataset builder perturbs these states to sample goal states and
near misses; the tests check the detector says True in them and save a contact sheet of the
poses. How each kind of environment is set:

- MuJoCo (humanoid, Walker2d, Swimmer): joint angles are written into ``data.qpos`` (velocities
  zeroed), every angle inside its joint's range, then the body is lowered onto the floor so
  that its lowest geom sinks 2 mm into it (MuJoCo reports a contact) and ``mj_forward``
  recomputes positions and contacts. The poses were found by searching joint angles within
  their limits for the task's shape and checked by eye: no limbs through the floor or through
  each other beyond a few millimetres, the centre of mass over the supporting parts.
- CartPole: ``env.unwrapped.state`` is written (features read it directly).
- MountainCar: the car is put just short of the flag, moving right, and stepped once with the
  'push right' action, so it reaches the flag through the env's own dynamics and the task's
  absorbing termination freezes it there (features read the observation).
- LunarLander (Box2D, no state vector): the lander and both legs are moved rigidly to the
  upper-left region, levelled and stopped, then stepped once with 'do nothing', so the
  observation comes from the env itself (one step of gravity leaves it almost at rest). This
  state cannot be saved as a replayable SimState (it is not reached by actions alone).

Only the MuJoCo and classic-control states update the wrapped env; ``TaskEnv.features()`` then
reads them, but ``TaskEnv.get_state()`` still holds the observation of the last reset or step
until the env is stepped.

``GOAL_HOLDS_AT_RESET`` lists tasks whose goal is to keep the starting condition (the pole
starts upright), and ``put_in_failure_state`` builds a state where their goal fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

import vlmbench.envs  # noqa: F401  (chooses the headless GL backend before MuJoCo is imported)
import mujoco  # noqa: E402

# Tasks whose goal already holds in the reset state: their task is to keep it.
GOAL_HOLDS_AT_RESET = frozenset({"cartpole-upright", "cartpole-balance"})


# -- MuJoCo helpers ------------------------------------------------------------------------------
def _quat(axis, degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=float)
    a /= np.linalg.norm(a)
    half = math.radians(degrees) / 2
    return np.r_[math.cos(half), math.sin(half) * a]


def _quat_mul(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = p
    w2, x2, y2, z2 = q
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])


def _lowest_point(model, data, geom: int) -> float:
    """The lowest z of a sphere or capsule geom (other types, e.g. the floor plane, are skipped)."""
    kind, size = model.geom_type[geom], model.geom_size[geom]
    z = data.geom_xpos[geom][2]
    if kind == mujoco.mjtGeom.mjGEOM_SPHERE:
        return z - size[0]
    if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
        axis_z = data.geom_xmat[geom].reshape(3, 3)[2, 2]
        return z - abs(axis_z) * size[1] - size[0]
    return math.inf


def _joint_address(model, name: str) -> tuple[int, float, float]:
    joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if joint < 0:
        raise KeyError(f"no joint '{name}'")
    lo, hi = model.jnt_range[joint] if model.jnt_limited[joint] else (-math.inf, math.inf)
    return int(model.jnt_qposadr[joint]), float(lo), float(hi)


def set_pose(env, joints_deg: dict[str, float], *, root: dict[str, float] | None = None,
             penetration: float = 0.002) -> None:
    """Set hinge joints (degrees, within their ranges) and rest the body on the floor.

    ``root`` sets the humanoid's free joint orientation as yaw/pitch/roll in degrees, or a
    planar model's root hinge (e.g. Walker2d's 'rooty') by joint name. The model is then moved
    vertically (free joint z or 'rootz' slide) so its lowest geom is ``penetration`` below z=0.
    """
    model, data = env.unwrapped.model, env.unwrapped.data
    data.qpos[:] = model.qpos0
    data.qvel[:] = 0.0
    root = dict(root or {})
    free = model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
    if free:
        q = _quat_mul(_quat([0, 0, 1], root.pop("yaw", 0.0)),
                      _quat_mul(_quat([0, 1, 0], root.pop("pitch", 0.0)), _quat([1, 0, 0], root.pop("roll", 0.0))))
        data.qpos[3:7] = q
    for name, degrees in {**root, **joints_deg}.items():
        address, lo, hi = _joint_address(model, name)
        value = math.radians(degrees)
        if not lo - 1e-9 <= value <= hi + 1e-9:
            raise ValueError(f"{name}={degrees} degrees is outside its range [{math.degrees(lo)}, {math.degrees(hi)}]")
        data.qpos[address] = value
    mujoco.mj_forward(model, data)
    if penetration is not None:
        rest_on_floor(model, data, penetration)


def rests_on_floor(model) -> bool:
    """Whether the model has a vertical root coordinate to lower: a free joint or a 'rootz' slide."""
    return model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE or mujoco.mj_name2id(
        model, mujoco.mjtObj.mjOBJ_JOINT, "rootz") >= 0


def rest_on_floor(model, data, penetration: float = 0.002) -> None:
    """Move the model vertically (free joint z or 'rootz' slide) so its lowest sphere or capsule is
    ``penetration`` below z=0, and recompute positions and contacts."""
    mujoco.mj_forward(model, data)
    lowest = min(_lowest_point(model, data, g) for g in range(model.ngeom))
    if model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:
        data.qpos[2] -= lowest + penetration
    else:
        address, _, _ = _joint_address(model, "rootz")
        data.qpos[address] -= lowest + penetration
    mujoco.mj_forward(model, data)


def _mirror_arms(shoulder1: float, shoulder2: float, elbow: float) -> dict[str, float]:
    """Both arms in mirror image: the left arm's shoulder axes are the right's reflected."""
    return dict(right_shoulder1=shoulder1, right_shoulder2=shoulder2, right_elbow=elbow,
                left_shoulder1=-shoulder1, left_shoulder2=-shoulder2, left_elbow=elbow)


def _both_legs(**angles: float) -> dict[str, float]:
    """The same angle for both legs' joints (the left hip's x and z axes are mirrored)."""
    return {f"{side}_{name}": value for name, value in angles.items() for side in ("right", "left")}


# -- humanoid poses (Humanoid-v5, facing +x) ----------------------------------------------------
def humanoid_standing(env) -> None:
    """The rest pose, feet flat on the floor."""
    set_pose(env, {})


def humanoid_kneel(env) -> None:
    """Tall kneeling: thighs and torso vertical, shins flat on the floor behind the knees (bent
    95 degrees so the knees, not the toes, carry the weight), centre of mass over the knees."""
    set_pose(env, _both_legs(knee=-95))


def humanoid_lotus(env) -> None:
    """Cross-legged seat: thighs flexed 42 degrees and swung 60 degrees outwards, knees folded
    fully so the shins lie on the floor with the feet tucked in under the seat, torso upright."""
    set_pose(env, {"abdomen_y": -15.3, **_both_legs(hip_x=-18.6, hip_z=-60, hip_y=-42.4, knee=-160)},
             root={"pitch": 0.8})


def humanoid_splits(env) -> None:
    """Seated straddle split: legs straight and swung 60 degrees out to each side, lying on the
    floor about 1.5 m apart at the feet, butt on the floor, torso leaning back slightly."""
    set_pose(env, {"abdomen_y": 4.4, **_both_legs(hip_x=-25, hip_z=-60, hip_y=-60.6, knee=-2)},
             root={"pitch": -24.6})


def humanoid_arms_raised(env) -> None:
    """Standing, both arms raised in a V about 0.35 m above the head."""
    set_pose(env, _mirror_arms(-85, 22.3, -90))


def humanoid_hands_on_hips(env) -> None:
    """Standing, hands on the sides of the pelvis with the elbows out (akimbo)."""
    set_pose(env, _mirror_arms(44.5, -73.8, -18.4))


def humanoid_arms_crossed(env) -> None:
    """Standing, forearms crossed in an X in front of the chest, each hand on the other side."""
    set_pose(env, dict(right_shoulder1=60, right_shoulder2=41.6, right_elbow=-90,
                       left_shoulder1=-60, left_shoulder2=-29.9, left_elbow=-83.2))


def humanoid_one_leg(env) -> None:
    """Standing on the right foot, left knee raised in front (hip flexed 50, knee bent 95
    degrees, the left foot about 0.3 m off the floor); the stance leg angled in and the waist
    shifted so the centre of mass is over the right foot."""
    set_pose(env, dict(left_hip_y=-50, left_knee=-95, right_hip_x=-0.9, left_hip_x=-10.5,
                       abdomen_x=8.8, abdomen_y=-8.1), root={"pitch": 4.2, "roll": 0.5})


# -- other MuJoCo models --------------------------------------------------------------------------
def walker_splits(env) -> None:
    """Walker2d in a split: torso leaning back 62.5 degrees, the brown leg along the torso's axis
    (62.5 degrees forward of vertical), the purple thigh swung 130 degrees back from it (67.5
    degrees behind vertical), knees straight, ankles turned to put both feet on the floor
    about 1.8 m apart with the centre of mass between them."""
    set_pose(env, dict(thigh_joint=0, leg_joint=0, foot_joint=-45,
                       thigh_left_joint=-130, leg_left_joint=0, foot_left_joint=45),
             root={"rooty": -62.5})


def swimmer_letter_m(env) -> None:
    """Swimmer bent into a zig-zag: +75 then -75 degrees at its two joints."""
    set_pose(env, dict(motor1_rot=75, motor2_rot=-75), penetration=None)


# -- classic control and Box2D --------------------------------------------------------------------
def cartpole_balanced(env) -> None:
    """Cart at the centre, pole exactly vertical, at rest."""
    env.unwrapped.state = np.array([0.0, 0.0, 0.0, 0.0])


def cartpole_fallen(env) -> None:
    """Pole tipped 30 degrees, cart 1 m off centre: no balancing or upright goal holds."""
    env.unwrapped.state = np.array([1.0, 0.0, math.radians(30), 0.0])


def mountaincar_at_flag(env) -> None:
    """The car just short of the flag moving right; one 'push right' step carries it to the flag,
    where the absorbing termination keeps it."""
    env.unwrapped.state = np.array([0.49, 0.03])
    env.step(2)


# Where a lander task's goal region is centred, in observation coordinates (x, y).
LANDER_GOALS: dict[str, tuple[float, float]] = {"lunarlander-top-left": (-0.72, 1.12)}


def lunarlander_top_left(env) -> None:
    """The lander (and its legs, rigidly) moved to observation (-0.72, 1.12), level and at rest,
    then one 'do nothing' step so the observation is the env's own."""
    from gymnasium.envs.box2d import lunar_lander as ll

    lander = env.unwrapped.lander
    half_w, half_h = ll.VIEWPORT_W / ll.SCALE / 2, ll.VIEWPORT_H / ll.SCALE / 2
    x, y = LANDER_GOALS["lunarlander-top-left"]
    target = (half_w + x * half_w, env.unwrapped.helipad_y + ll.LEG_DOWN / ll.SCALE + y * half_h)
    offset = (target[0] - lander.position[0], target[1] - lander.position[1])
    for body in [lander, *env.unwrapped.legs]:
        body.position = (body.position[0] + offset[0], body.position[1] + offset[1])
        body.linearVelocity = (0.0, 0.0)
        body.angularVelocity = 0.0
    lander.angle = 0.0
    env.step(0)


SUCCESS_STATES: dict[str, Callable] = {
    "cartpole-upright": cartpole_balanced,
    "cartpole-balance": cartpole_balanced,
    "mountaincar-flag": mountaincar_at_flag,
    "lunarlander-top-left": lunarlander_top_left,
    "humanoid-standing": humanoid_standing,
    "humanoid-kneel": humanoid_kneel,
    "humanoid-lotus": humanoid_lotus,
    "humanoid-splits": humanoid_splits,
    "humanoid-arms-raised": humanoid_arms_raised,
    "humanoid-hands-on-hips": humanoid_hands_on_hips,
    "humanoid-arms-crossed": humanoid_arms_crossed,
    "humanoid-one-leg": humanoid_one_leg,
    "walker-splits": walker_splits,
    "swimmer-letter-m": swimmer_letter_m,
}

FAILURE_STATES: dict[str, Callable] = {
    "cartpole-upright": cartpole_fallen,
    "cartpole-balance": cartpole_fallen,
}


def put_in_success_state(env) -> None:
    """Move a reset ``TaskEnv`` into a state where its task's goal holds."""
    SUCCESS_STATES[env.task.id](env)


def put_in_failure_state(env) -> None:
    """For tasks in GOAL_HOLDS_AT_RESET: a state where the goal does not hold."""
    FAILURE_STATES[env.task.id](env)
