"""Task environments: saved states re-render bit for bit, termination modes, parallel rollouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from vlmbench.envs.rollout import rollout
from vlmbench.envs.sim_state import SimState
from vlmbench.envs.task_env import make_env
from vlmbench.errors import VlmbenchError
from vlmbench.specs.catalogue import resolve_task

RESTORE_TASKS = ["humanoid-kneel", "cartpole-upright", "lunarlander-top-left"]  # mujoco, vector, replay states


def with_size(task_id: str, width: int, height: int):
    spec = resolve_task(task_id)
    return spec.model_copy(update={"render": spec.render.model_copy(update={"width": width, "height": height})})


# Rollouts first: worker processes are forked, best before this process holds a GL context.
def lean_left_right(obs: np.ndarray) -> np.ndarray:
    return (obs[:, 2] > 0).astype(np.int64)  # push the cart under the pole


@pytest.mark.parametrize(
    "policy",
    [pytest.param(lean_left_right, id="policy"),
     pytest.param(None, id="random")],
)
def test_rollout_same_with_two_workers(policy):
    spec = resolve_task("cartpole-upright")
    one, two = (rollout(spec, episodes=3, seed=5, workers=w, steps=6, policy=policy) for w in (1, 2))
    assert [ep.seed for ep in two] == [5, 6, 7] and [len(ep) for ep in two] == [6, 6, 6]
    for a, b in zip(one, two):
        assert [act.tolist() for act in a.actions] == [act.tolist() for act in b.actions]
        assert a.features == b.features and a.successes == b.successes
        assert all(np.array_equal(f, g) for f, g in zip(a.frames, b.frames))
        assert a.frames[0].shape == (spec.render.height, spec.render.width, 3)


@pytest.mark.parametrize("task_id", ["cartpole-upright", "cartpole-balance"])  # balance episodes end when the pole falls
def test_unrendered_episodes_run_side_by_side_as_they_run_alone(task_id):
    spec = resolve_task(task_id)
    calls = []

    def policy(obs):  # a shaky balancer: its actions hang on every digit of the observation
        calls.append(len(obs))
        return (obs[:, 2] + 0.5 * obs[:, 3] + 0.3 * np.sin(1000 * obs[:, 0]) > 0).astype(np.int64)

    together = rollout(spec, episodes=5, seed=11, policy=policy, render=False)
    assert max(calls) == 5  # one policy call per step for the five episodes
    calls.clear()
    alone = [rollout(spec, episodes=1, seed=11 + i, policy=policy, render=False)[0] for i in range(5)]
    assert set(calls) == {1}
    assert [len(ep) for ep in together] == [len(ep) for ep in alone]
    if task_id == "cartpole-balance":  # episodes that end at different steps
        assert len({len(ep) for ep in alone}) >= 3, [len(ep) for ep in alone]
    for a, b in zip(together, alone):
        assert a.seed == b.seed
        assert [act.tolist() for act in a.actions] == [act.tolist() for act in b.actions]
        assert a.features == b.features and a.progress == b.progress and a.env_rewards == b.env_rewards
        assert [x.to_dict() for x in a.states] == [y.to_dict() for y in b.states]


def test_rollout_mujoco_with_two_workers_finishes():
    """Run in a child process (its own session) so that a deadlock costs a timeout, not the test run."""
    script = textwrap.dedent("""
        from vlmbench.envs.rollout import rollout
        from vlmbench.specs.catalogue import resolve_task
        if __name__ == "__main__":
            spec = resolve_task("humanoid-kneel")
            spec = spec.model_copy(update={"render": spec.render.model_copy(update={"width": 32, "height": 32})})
            episodes = rollout(spec, episodes=2, seed=0, workers=2, steps=2)
            print("frames", sum(len(ep.frames) for ep in episodes))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=25)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too
        proc.communicate()
        pytest.fail("rollout(workers=2) on a MuJoCo task did not finish within 25 s")
    assert proc.returncode == 0 and "frames 4" in out, out


@pytest.mark.parametrize(
    "task_id, kind",
    [("humanoid-kneel", "mujoco"), ("cartpole-upright", "vector"), ("mountaincar-flag", "vector"),
     ("lunarlander-top-left", "replay")],
)
def test_state_kind(task_id, kind):
    env = make_env(resolve_task(task_id), render=False)
    env.reset(seed=0)
    assert env.get_state().kind == kind
    env.close()


@pytest.fixture(scope="module")
def envs():
    """Two rendering envs per task (the second to restore into), built on first use."""
    built: dict[str, tuple] = {}

    def get(task_id: str):
        if task_id not in built:
            spec = resolve_task(task_id)
            built[task_id] = (make_env(spec), make_env(spec))
        return built[task_id]

    yield get
    for pair in built.values():
        for env in pair:
            env.close()


def _random_steps(env, n: int) -> None:
    for _ in range(n):
        env.step(env.action_space.sample())


@pytest.mark.parametrize("task_id", RESTORE_TASKS)
def test_restore_rerenders_identically(task_id, envs):
    env, fresh = envs(task_id)
    spec = env.task
    env.reset(seed=1)
    env.action_space.seed(0)
    _random_steps(env, 5)
    state, frame, features = env.get_state(), env.render(), env.features()
    assert frame.shape == (spec.render.height, spec.render.width, 3) and frame.dtype == np.uint8
    action = env.action_space.sample()
    next_obs = env.step(action)[0]
    _random_steps(env, 5)
    assert not np.array_equal(env.render(), frame)  # the scene moved on

    assert np.array_equal(env.set_state(state), state.observation)
    assert np.array_equal(env.render(), frame) and env.features() == features
    assert np.array_equal(env.step(action)[0], next_obs)  # the dynamics continue exactly as before

    fresh.reset(seed=123)
    fresh.set_state(state)
    assert np.array_equal(fresh.render(), frame) and fresh.features() == features


@pytest.mark.parametrize("task_id", RESTORE_TASKS)
def test_state_survives_json(task_id, envs):
    env, fresh = envs(task_id)
    env.reset(seed=2)
    env.action_space.seed(3)
    _random_steps(env, 4)
    state = env.get_state()
    copy = SimState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert (copy.kind, copy.step, copy.absorbed, copy.reset_seed) == (state.kind, 4, False, state.reset_seed)
    assert np.array_equal(copy.values, state.values) and np.array_equal(copy.observation, state.observation)
    fresh.reset(seed=9)
    fresh.set_state(copy)
    assert np.array_equal(fresh.render(), env.render()) and fresh.features() == env.features()


def test_state_of_another_kind_is_refused(envs):
    humanoid, lander = envs("humanoid-kneel")[0], envs("lunarlander-top-left")[0]
    humanoid.reset(seed=0)
    lander.reset(seed=0)
    with pytest.raises(VlmbenchError, match="cannot restore a 'mujoco' state into a 'replay' environment"):
        lander.set_state(humanoid.get_state())


@pytest.mark.parametrize("task_id", ["cartpole-upright", "humanoid-kneel", "lunarlander-top-left"])
def test_frames_have_the_configured_shape(task_id):
    env = make_env(with_size(task_id, 96, 64))
    env.reset(seed=0)
    assert env.render().shape == (64, 96, 3)
    env.close()


def test_termination_never_runs_past_the_fall():
    spec = resolve_task("cartpole-upright")
    assert spec.env.termination == "never"
    env = make_env(spec, render=False)
    env.reset(seed=0)
    angles, truncations = [], []
    for _ in range(spec.env.episode_length):
        _, _, terminated, truncated, info = env.step(1)  # always push right: the pole falls
        assert not terminated
        angles.append(info["features"]["pole_angle"])
        truncations.append(truncated)
    assert truncations == [False] * (spec.env.episode_length - 1) + [True]
    assert abs(angles[20]) > np.radians(12)  # fallen (CartPole itself would have terminated)
    assert len(set(angles[20:])) == len(angles[20:])  # and it keeps moving: not frozen


def test_termination_keep_ends_the_episode():
    spec = resolve_task("cartpole-upright")
    spec = spec.model_copy(update={"env": spec.env.model_copy(update={"termination": "keep"})})
    env = make_env(spec, render=False)
    env.reset(seed=0)
    steps = next(t for t in range(1, 100) if env.step(1)[2])
    assert steps < 20


def test_termination_absorbing_freezes_at_the_goal():
    spec = resolve_task("mountaincar-flag")
    assert spec.env.termination == "absorbing"
    env = make_env(spec)
    env.reset(seed=0)
    env.unwrapped.state = np.array([0.49, 0.05])  # just short of the flag, moving right
    obs, reward, terminated, truncated, info = env.step(2)
    assert info["success"] and info["progress"] == 1.0 and not terminated and not truncated
    frame = env.render()
    assert env.get_state().absorbed
    for step in range(2, spec.env.episode_length + 1):
        o, r, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.array_equal(o, obs) and r == 0.0 and info["success"] and not terminated
        assert truncated == (step == spec.env.episode_length)
    assert np.array_equal(env.render(), frame)
    env.close()


def test_no_gl_backend_says_what_to_install(monkeypatch):
    import mujoco

    from vlmbench.envs.rendering import RenderError

    def no_gl(*args, **kwargs):
        raise mujoco.FatalError("gladLoadGL error")

    monkeypatch.setattr(mujoco, "Renderer", no_gl)
    with pytest.raises(RenderError, match=r"no working OpenGL backend.*apt-get install libegl1.*MUJOCO_GL=osmesa"):
        make_env(resolve_task("humanoid-kneel"), render=True)
    make_env(resolve_task("humanoid-kneel"), render=False).close()  # features need no GL at all


def test_loading_clip_after_rendering_does_not_crash():
    """Mesa's software GL and triton (pulled in by open_clip through torchvision) both carry LLVM:
    importing triton after a GL context exists used to kill the process with SIGSEGV."""
    script = textwrap.dedent("""
        from vlmbench.envs.task_env import make_env
        from vlmbench.specs.catalogue import resolve_task
        env = make_env(resolve_task("humanoid-kneel"), render=True)
        env.reset(seed=0)
        env.render()
        import open_clip  # noqa: F401
        print("survived")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "survived" in done.stdout, done.stderr[-2000:]


def test_shadow_size_sets_the_shadow_map_and_zero_turns_shadows_off():
    import mujoco

    spec = resolve_task("humanoid-kneel")
    frames = {}
    for size in (1024, 0):
        task = spec.model_copy(update={"render": spec.render.model_copy(update={"shadow_size": size})})
        env = make_env(task, render=True)
        env.reset(seed=0)
        assert bool(env.camera.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW]) == (size > 0)
        if size:
            assert env.unwrapped.model.vis.quality.shadowsize == size
        frames[size] = env.render()
        env.close()
    assert not np.array_equal(frames[1024], frames[0])
