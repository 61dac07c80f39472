"""Stable-baselines3 algorithms with defaults that suit judge-reward runs on small machines."""

from __future__ import annotations

import gymnasium as gym
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv

from vlmbench.errors import VlmbenchError

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "dqn": DQN}

# PPO and DQN follow rl-zoo's CartPole settings; SAC follows VLM-RM's humanoid settings
# (gamma 0.95, lr 6e-4, 100 updates every 100 steps).
DEFAULTS: dict[str, dict[str, object]] = {
    "ppo": dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0),
    "sac": dict(learning_rate=6e-4, gamma=0.95, train_freq=100, gradient_steps=100, learning_starts=1000, batch_size=256),
    "dqn": dict(
        learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000, gamma=0.99,
        target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
        exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]),
    ),
}


def resolve_algorithm(name: str, action_space: gym.spaces.Space) -> str:
    """The algorithm for ``name`` ('auto' chooses by action space), refusing ones that cannot act there."""
    discrete = isinstance(action_space, gym.spaces.Discrete)
    if name == "auto":
        return "ppo" if discrete else "sac"
    if name == "sac" and discrete:
        raise VlmbenchError("--algorithm sac needs continuous actions; this task's are discrete (use ppo or dqn)")
    if name == "dqn" and not discrete:
        raise VlmbenchError("--algorithm dqn needs discrete actions; this task's are continuous (use sac or ppo)")
    return name


def make_algorithm(
    name: str, env: VecEnv, *, seed: int, kwargs: dict[str, object], tensorboard_log: str | None, device: str
) -> BaseAlgorithm:
    cls = ALGORITHMS[name]
    settings = {**DEFAULTS[name], **kwargs}
    if name == "ppo":  # one rollout must fill at least one minibatch
        settings["batch_size"] = min(int(settings["batch_size"]), int(settings["n_steps"]) * env.num_envs)
    try:
        model = cls("MlpPolicy", env, seed=seed, verbose=0, tensorboard_log=tensorboard_log, device=device, **settings)
    except (TypeError, ValueError, AssertionError) as exc:  # SB3 checks its settings with asserts too
        raise VlmbenchError(f"algo_kwargs: {name} rejects these settings: {exc}") from None
    if tensorboard_log is None:  # log nowhere: SB3's default logger leaves an empty folder in the temp dir per learn()
        model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def load_algorithm(name: str, path: str, env: VecEnv, device: str) -> BaseAlgorithm:
    return ALGORITHMS[name].load(path, env=env, device=device)
