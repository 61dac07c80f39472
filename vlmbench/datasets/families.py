"""How the dataset builder reaches goal states, near misses and goal-ending trajectories, per family of
environments. A random policy almost never reaches most goals (the humanoid never kneels), so each
family starts from the task's constructed goal state (vlmbench.datasets.goal_states) or, where no
state can be constructed by actions, from a scripted policy that flies to the goal.

Perturbing families search along one random direction per attempt: the goal state is moved by
growing steps (``SCALES``, x1.25 each, times the family's unit along the direction) until the
detector first says no. The near miss is drawn uniformly between that step and twice as far
(that step itself if the goal holds again there), a goal state from the stretch before it.
Where the goal needs a contact (feet, shins or butt on the floor), most near misses are a
support lifted a few millimetres off the floor by the perturbation: what the detector says,
though a picture may hardly show it.

- pose (MuJoCo: humanoid, Walker2d, Swimmer): every hinge joint of the goal pose turns by 1 degree
  per unit (clipped to its range) and a free root by 0.5 degrees per unit about a random axis; the
  body is rested on the floor (2 mm into it) and the pose is followed by three zero-action steps
  so the contacts settle. Trajectories blend the pose of a random-policy state (after a random
  number of steps from a reset with the attempt's seed) into the goal pose (hinges linearly, a
  free root's orientation by slerp, the root's horizontal position kept), each blended pose
  rested and settled the same way, starting from rest: a path of poses, not a motion the physics
  produced.
- cartpole: the goal state vector (cart at the centre, pole upright, at rest) moves by 1 cm,
  1 cm/s, 0.1 degree and 0.01 rad/s per unit, clipped to the observation bounds. Trajectories are
  random-policy falls played backwards (velocities negated): from a few steps after the goal
  first fails back to the upright reset state, frames the env rendered, in reverse.
- mountaincar: the state vector (position, velocity) of the car that just reached the flag moves
  by 0.002 and 0.0002 per unit, clipped to the observation bounds and to one step's travel (0.07)
  past the flag: the episode stops at the first step at the flag, so no car gets further.
  Trajectories follow an energy-pumping policy (push in the direction of travel) from the reset
  state until the car reaches the flag: the env's own dynamics.
- lander (LunarLander, whose states are replayed actions and cannot be constructed): a hovering
  controller aimed at a point up to 0.35 from the goal region's centre in x and y; goal states
  and near misses (detector says no, progress at least 0.7) are drawn from the states it passes
  through. Trajectories follow the controller aimed at the centre, from reset to the goal.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mujoco
import numpy as np

from vlmbench.datasets import goal_states
from vlmbench.datasets.goal_states import _quat, _quat_mul, rest_on_floor, rests_on_floor
from vlmbench.envs.sim_state import SimState
from vlmbench.envs.task_env import TaskEnv

SCALES = 1.25 ** np.arange(31)  # steps tried along a direction, in the family's units (1 to about 800)
NEAR_MISS_REACH = 2.0  # near misses lie between the first step where the goal fails and this many times it
SETTLE_STEPS = 3  # zero-action steps after each constructed MuJoCo pose
FALL_MARGIN = 5  # steps a reversed cartpole fall starts after the goal first fails
NEAR_PROGRESS = 0.7  # the least progress of a lander near miss
TARGET_SPREAD = 0.35  # lander controller targets: up to this far from the goal centre in x and y


class Family:
    """Goal states, near misses and trajectories of one task; every method leaves ``env`` in some state
    it visited, and returns restorable states."""

    name = ""
    samplers: dict[str, str] = {}  # goal, near-miss, trajectory -> how it finds states (stored in the metadata)

    def __init__(self, env: TaskEnv):
        self.env = env
        self.task = env.task

    def goal_holds(self) -> bool:
        return self.task.is_success(self.env.features())

    def goal_and_near_miss(self, seed: int) -> tuple[SimState | None, SimState | None]:
        """A goal state and a near miss (either None when this attempt found none), drawn by ``seed``."""
        raise NotImplementedError

    def trajectory(self, seed: int, length: int) -> list[SimState] | None:
        """``length`` states approaching the goal, drawn by ``seed``; None when this attempt failed."""
        raise NotImplementedError


class Perturbed(Family):
    """Goal states and near misses along random directions away from the constructed goal state."""

    def direction(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def place(self, direction: np.ndarray, scale: float) -> SimState:
        """Put the env in the goal state moved ``scale`` units along ``direction``; return that state."""
        raise NotImplementedError

    def goal_and_near_miss(self, seed: int) -> tuple[SimState | None, SimState | None]:
        rng = np.random.default_rng(seed)
        direction = self.direction(rng)
        last_goal, first_miss = None, None
        for scale in SCALES:
            self.place(direction, scale)
            if not self.goal_holds():
                first_miss = scale
                break
            last_goal = scale
        near_miss = None
        if first_miss is not None:
            near_miss = self.place(direction, first_miss * rng.uniform(1.0, NEAR_MISS_REACH))
            if self.goal_holds():  # the goal region need not be convex along the direction
                near_miss = self.place(direction, first_miss)
        if last_goal is None:
            return None, near_miss
        goal = self.place(direction, rng.uniform(0.0, last_goal))
        if not self.goal_holds():
            goal = self.place(direction, last_goal)
        return goal, near_miss


# -- MuJoCo poses ---------------------------------------------------------------------------------
JOINT_UNIT_DEG = 1.0
ROOT_UNIT_DEG = 0.5


def _slerp(q0: np.ndarray, q1: np.ndarray, w: float) -> np.ndarray:
    """Spherical interpolation between unit quaternions, the short way round."""
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + w * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    return (math.sin((1 - w) * theta) * q0 + math.sin(w * theta) * q1) / math.sin(theta)


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


class PoseFamily(Perturbed):
    name = "pose"
    samplers = {
        "goal": "the constructed goal pose with its hinges turned (1 degree per unit) and a free root tilted "
                "(0.5 degrees per unit) along a random direction, short of where the detector says no; rested "
                "on the floor, then 3 zero-action steps",
        "near-miss": "a pose along such a direction between the first step (x1.25 each) where the detector says "
                     "no and twice as far",
        "trajectory": "poses blended from a random-policy state (after a random number of steps) to the goal "
                      "pose (hinges linearly, root "
                      "orientation by slerp, root position kept), each rested on the floor and settled from rest",
    }

    def __init__(self, env: TaskEnv, construct: Callable):
        super().__init__(env)
        self.model, self.data = env.unwrapped.model, env.unwrapped.data
        env.reset(seed=0)
        construct(env)
        self.goal_qpos = self.data.qpos.copy()
        self.free = self.model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
        self.rests = rests_on_floor(self.model)
        self.hinges = [(int(self.model.jnt_qposadr[j]), bool(self.model.jnt_limited[j]), *self.model.jnt_range[j])
                       for j in range(self.model.njnt) if self.model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE]
        self.zero_action = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)

    def pose(self, qpos: np.ndarray) -> SimState:
        """The env in pose ``qpos`` at rest, rested on the floor and settled; its state."""
        self.env.reset(seed=0)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = 0.0
        if self.rests:
            rest_on_floor(self.model, self.data)
        else:
            mujoco.mj_forward(self.model, self.data)
        for _ in range(SETTLE_STEPS):
            self.env.step(self.zero_action)
        return self.env.get_state()

    def direction(self, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(len(self.hinges) + (3 if self.free else 0))

    def place(self, direction: np.ndarray, scale: float) -> SimState:
        qpos = self.goal_qpos.copy()
        for (address, limited, lo, hi), z in zip(self.hinges, direction):
            value = qpos[address] + math.radians(JOINT_UNIT_DEG * scale * z)
            qpos[address] = np.clip(value, lo, hi) if limited else value
        if self.free:
            rotation = math.radians(ROOT_UNIT_DEG * scale) * direction[len(self.hinges):]
            angle = float(np.linalg.norm(rotation))
            if angle > 0:
                turned = _quat_mul(_quat(rotation / angle, math.degrees(angle)), qpos[3:7])
                qpos[3:7] = turned / np.linalg.norm(turned)
        return self.pose(qpos)

    def trajectory(self, seed: int, length: int) -> list[SimState] | None:
        self.env.reset(seed=seed)  # the start: after a random number of random-policy steps
        self.env.action_space.seed(seed)
        for _ in range(int(np.random.default_rng(seed).integers(1, self.task.env.episode_length + 1))):
            self.env.step(self.env.action_space.sample())
        start = self.data.qpos.copy()  # slides (the root's horizontal position) keep these values
        path = []
        for w in np.linspace(0.0, 1.0, length):
            qpos = start.copy()
            for address, limited, _, _ in self.hinges:
                gap = start[address] - self.goal_qpos[address]
                qpos[address] = self.goal_qpos[address] + (1 - w) * (gap if limited else _wrap(gap))
            if self.free:
                qpos[3:7] = _slerp(start[3:7], self.goal_qpos[3:7], float(w))
            path.append(self.pose(qpos))
        return path


# -- classic control: state vectors -----------------------------------------------------------------
class VectorFamily(Perturbed):
    """Classic-control envs whose observation is their state vector (CartPole, MountainCar)."""

    unit = np.zeros(0)  # one unit of perturbation of each state entry

    def __init__(self, env: TaskEnv, construct: Callable):
        super().__init__(env)
        env.reset(seed=0)
        construct(env)
        self.goal = np.array(env.unwrapped.state, dtype=np.float64)
        space = env.observation_space
        self.dtype = space.dtype
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)

    def vector_state(self, values: np.ndarray, step: int = 0) -> SimState:
        return SimState("vector", observation=values.astype(self.dtype), values=values, step=step)

    def direction(self, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(self.goal.shape)

    def place(self, direction: np.ndarray, scale: float) -> SimState:
        state = self.vector_state(np.clip(self.goal + scale * self.unit * direction, self.low, self.high))
        self.env.set_state(state)
        return state


class CartPoleFamily(VectorFamily):
    name = "cartpole"
    samplers = {
        "goal": "the balanced state (0, 0, 0, 0) moved along a random direction (per unit: 1 cm, 1 cm/s, 0.1 "
                "degree, 0.01 rad/s), short of where the detector says no",
        "near-miss": "a state along such a direction between the first step (x1.25 each) where the detector says "
                     "no and twice as far",
        "trajectory": f"a random-policy fall played backwards (velocities negated), from {FALL_MARGIN} steps after "
                      "the goal first fails back to the reset state",
    }
    # CartPole's state: cart position, cart velocity, pole angle, pole angular velocity
    unit = np.array([0.01, 0.01, math.radians(0.1), 0.01])
    VELOCITIES = [1, 3]

    def trajectory(self, seed: int, length: int) -> list[SimState] | None:
        env = self.env
        env.reset(seed=seed)
        env.action_space.seed(seed)
        states, failed_at = [env.get_state()], None
        for _ in range(self.task.env.episode_length):
            *_, terminated, truncated, info = env.step(env.action_space.sample())
            states.append(env.get_state())
            if failed_at is None and not info["success"]:
                failed_at = len(states) - 1
            if terminated or truncated or (failed_at is not None and len(states) > failed_at + FALL_MARGIN):
                break
        picks = np.unique(np.round(np.linspace(0, len(states) - 1, length)).astype(int))
        if failed_at is None or len(picks) < length:
            return None
        return [self.reversed(states[i]) for i in picks[::-1]]

    def reversed(self, state: SimState) -> SimState:
        values = np.array(state.values, dtype=np.float64)
        values[self.VELOCITIES] *= -1
        return self.vector_state(values, step=state.step)


def scripted_trajectory(env: TaskEnv, policy: Callable[[np.ndarray], int], seed: int,
                        length: int) -> list[SimState] | None:
    """``length`` states evenly spaced from the reset state to the first goal state ``policy`` reaches."""
    obs, _ = env.reset(seed=seed)
    states = [env.get_state()]
    for _ in range(env.task.env.episode_length):
        obs, _, terminated, truncated, info = env.step(policy(obs))
        states.append(env.get_state())
        if info["success"]:
            picks = np.unique(np.round(np.linspace(0, len(states) - 1, length)).astype(int))
            return [states[i] for i in picks] if len(picks) == length else None
        if terminated or truncated:
            return None
    return None


def pump(obs: np.ndarray) -> int:
    """MountainCar: push in the direction the car moves (right when at rest)."""
    return 2 if obs[1] >= 0 else 0


class MountainCarFamily(VectorFamily):
    name = "mountaincar"
    samplers = {
        "goal": "the car just past the flag moved along a random direction (per unit: position 0.002, velocity "
                "0.0002), short of where the detector says no",
        "near-miss": "a state along such a direction between the first step (x1.25 each) where the detector says "
                     "no and twice as far",
        "trajectory": "an energy-pumping policy (push in the direction of travel) from reset to the flag",
    }

    unit = np.array([0.002, 0.0002])  # position, velocity

    def __init__(self, env: TaskEnv, construct: Callable):
        super().__init__(env, construct)
        # An episode stops at the first step at the flag, at most one step's travel (the top speed) past it.
        car = env.unwrapped
        self.high[0] = min(self.high[0], car.goal_position + car.max_speed)

    def trajectory(self, seed: int, length: int) -> list[SimState] | None:
        return scripted_trajectory(self.env, pump, seed, length)


# -- LunarLander: a hovering controller ------------------------------------------------------------
def hover(obs: np.ndarray, target: tuple[float, float]) -> int:
    """LunarLander's discrete action that flies towards ``target`` (x, y) and hovers: gymnasium's landing
    heuristic with the target point in place of the pad (it settles about 0.1 below the target height)."""
    x, y, vx, vy, angle, angular_velocity = obs[:6]
    angle_target = float(np.clip((x - target[0]) * 1.0 + vx * 1.5, -0.4, 0.4))
    angle_todo = (angle_target - angle) * 0.5 - angular_velocity * 1.0
    hover_todo = (target[1] - y) * 1.0 - vy * 0.5
    if hover_todo > abs(angle_todo) and hover_todo > 0.05:
        return 2  # main engine
    if angle_todo < -0.05:
        return 3  # right engine: turns clockwise
    if angle_todo > 0.05:
        return 1  # left engine
    return 0


class LanderFamily(Family):
    name = "lander"
    samplers = {
        "goal": f"states where the detector says yes, along a hovering controller's flight to a point up to "
                f"{TARGET_SPREAD} from the goal region's centre in x and y",
        "near-miss": f"states where the detector says no and progress is at least {NEAR_PROGRESS}, along such "
                     "a flight",
        "trajectory": "the controller aimed at the goal region's centre, from reset to the first goal state",
    }

    def __init__(self, env: TaskEnv, centre: tuple[float, float]):
        super().__init__(env)
        self.centre = np.asarray(centre, dtype=np.float64)

    def goal_and_near_miss(self, seed: int) -> tuple[SimState | None, SimState | None]:
        rng = np.random.default_rng(seed)
        target = tuple(self.centre + rng.uniform(-TARGET_SPREAD, TARGET_SPREAD, 2))
        obs, _ = self.env.reset(seed=seed)
        goals, misses = [], []
        for _ in range(self.task.env.episode_length):
            obs, _, terminated, truncated, info = self.env.step(hover(obs, target))
            if info["success"]:
                goals.append(self.env.get_state())
            elif info["progress"] >= NEAR_PROGRESS:
                misses.append(self.env.get_state())
            if terminated or truncated:
                break
        goal = goals[int(rng.integers(len(goals)))] if goals else None
        near_miss = misses[int(rng.integers(len(misses)))] if misses else None
        return goal, near_miss

    def trajectory(self, seed: int, length: int) -> list[SimState] | None:
        centre = tuple(self.centre)
        return scripted_trajectory(self.env, lambda obs: hover(obs, centre), seed, length)


def family_for(env: TaskEnv) -> Family | None:
    """The family that samples goal states for ``env``'s task, or None where vlmbench knows no way."""
    task = env.task
    if task.id in goal_states.LANDER_GOALS:
        return LanderFamily(env, goal_states.LANDER_GOALS[task.id])
    construct = goal_states.SUCCESS_STATES.get(task.id)
    if construct is None:
        return None
    if env.kind == "mujoco":
        return PoseFamily(env, construct)
    if env.observation_space.shape != np.shape(getattr(env.unwrapped, "state", None)):
        return None  # perturbing a state vector needs the observation to be that vector
    if task.env.id.startswith("CartPole"):
        return CartPoleFamily(env, construct)
    if task.env.id.startswith("MountainCar"):
        return MountainCarFamily(env, construct)
    return None
