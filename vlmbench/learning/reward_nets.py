"""An ensemble of MLP reward models, one scalar reward per input row."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_PREDICT_BATCH = 65536


def _mlp(input_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(input_dim, width), nn.LeakyReLU()]
        input_dim = width
    layers.append(nn.Linear(input_dim, 1))
    return nn.Sequential(*layers)


class RewardEnsemble(nn.Module):
    """``members`` independent MLPs (len(hidden) + 1 linear layers, LeakyReLU) mapping (..., D) -> (...).

    Initialisation is seeded by ``seed`` alone and leaves torch's global RNG untouched.
    ``predict`` returns the ensemble-mean reward standardised by ``fit_normalisation``
    (identity until that is called).
    """

    def __init__(
        self, input_dim: int, members: int = 3, hidden: tuple[int, ...] = (64, 64, 64, 64), seed: int = 0
    ):
        super().__init__()
        self.input_dim, self.members = input_dim, members
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.nets = nn.ModuleList(_mlp(input_dim, tuple(hidden)) for _ in range(members))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def member_rewards(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rewards of every member on the same inputs: (members, *x.shape[:-1])."""
        return torch.stack([net(x).squeeze(-1) for net in self.nets])

    forward = member_rewards

    def each_member(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rewards where member m scores its own inputs ``x[m]``: (members, *x.shape[1:-1])."""
        return torch.stack([net(xm).squeeze(-1) for net, xm in zip(self.nets, x, strict=True)])

    @torch.no_grad()
    def member_rewards_numpy(self, inputs: np.ndarray) -> np.ndarray:
        """Raw member rewards for (..., D) inputs, batched: (members, ...) float32."""
        inputs = np.asarray(inputs, dtype=np.float32)
        flat = inputs.reshape(-1, self.input_dim)
        device = self.reward_mean.device
        out = [
            self.member_rewards(torch.from_numpy(flat[i : i + _PREDICT_BATCH]).to(device)).cpu()
            for i in range(0, len(flat), _PREDICT_BATCH)
        ]
        rewards = torch.cat(out, dim=1) if out else torch.zeros(self.members, 0)
        return rewards.numpy().reshape(self.members, *inputs.shape[:-1])

    def fit_normalisation(self, inputs: np.ndarray) -> None:
        """Set predict()'s affine map so the ensemble-mean reward on ``inputs`` has mean 0 and std 1."""
        mean_reward = self.member_rewards_numpy(inputs).mean(axis=0).astype(np.float64)
        self.reward_mean.fill_(float(mean_reward.mean()))
        self.reward_std.fill_(max(float(mean_reward.std()), 1e-6))

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Standardised ensemble-mean reward, shape inputs.shape[:-1], float32."""
        mean_reward = self.member_rewards_numpy(inputs).mean(axis=0)
        return ((mean_reward - self.reward_mean.item()) / self.reward_std.item()).astype(np.float32)

    def disagreement(self, inputs: np.ndarray) -> np.ndarray:
        """Std across members of the reward, in predict()'s units (divided by the normalisation std)."""
        return (self.member_rewards_numpy(inputs).std(axis=0) / self.reward_std.item()).astype(np.float32)
