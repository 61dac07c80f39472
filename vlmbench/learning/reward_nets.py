"""An ensemble of MLP reward models, one scalar reward per input row, all members in one batched pass."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_PREDICT_BATCH = 65536
_LEGACY_KEY = re.compile(r"nets\.(\d+)\.(\d+)\.(weight|bias)")  # per-member nn.Sequential of older checkpoints


class RewardEnsemble(nn.Module):
    """``members`` independent MLPs (len(hidden) + 1 linear layers, LeakyReLU) mapping (..., D) -> (...).

    Layer l's weights of all members are stacked in ``weights[l]`` (members, in, out) and
    ``biases[l]`` (members, out), so every member is evaluated in one batched matmul per layer.
    Initialisation is seeded by ``seed`` alone (each member as torch's nn.Linear would initialise it)
    and leaves torch's global RNG untouched. ``predict`` returns the ensemble-mean reward standardised
    by ``fit_normalisation`` (identity until that is called).
    """

    def __init__(
        self, input_dim: int, members: int = 3, hidden: tuple[int, ...] = (64, 64, 64, 64), seed: int = 0
    ):
        super().__init__()
        self.input_dim, self.members = input_dim, members
        widths = [input_dim, *hidden, 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            linears = [[nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:], strict=True)] for _ in range(members)]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m[layer].weight.detach().T for m in linears])) for layer in range(len(widths) - 1)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m[layer].bias.detach() for m in linears])) for layer in range(len(widths) - 1)
        )
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def _layers(self, h: torch.Tensor) -> torch.Tensor:
        """Layers 1.. on member-batched activations (members, N, width) -> rewards (members, N)."""
        for weight, bias in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(bias.unsqueeze(1), F.leaky_relu(h), weight)
        return h.squeeze(-1)

    def member_rewards(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rewards of every member on the same inputs: (members, *x.shape[:-1])."""
        flat = x.reshape(-1, self.input_dim)
        # layer 0 for all members as one (N, D) x (D, members * width) product
        first = (flat @ self.weights[0].permute(1, 0, 2).reshape(self.input_dim, -1)).view(len(flat), self.members, -1)
        return self._layers(first.transpose(0, 1) + self.biases[0].unsqueeze(1)).reshape(self.members, *x.shape[:-1])

    forward = member_rewards

    def each_member(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rewards where member m scores its own inputs ``x[m]``: (members, *x.shape[1:-1])."""
        flat = x.reshape(self.members, -1, self.input_dim)
        return self._layers(torch.baddbmm(self.biases[0].unsqueeze(1), flat, self.weights[0])).reshape(x.shape[:-1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Accept the per-member layout of older checkpoints (``nets.<member>.<2 * layer>.weight``)."""
        legacy = {k: v for k, v in state_dict.items() if k.startswith(prefix) and _LEGACY_KEY.fullmatch(k[len(prefix):])}
        if legacy:
            converted = _from_legacy({k[len(prefix):]: v for k, v in legacy.items()}, self.members, len(self.weights))
            for key in legacy:
                del state_dict[key]
            state_dict.update({prefix + k: v for k, v in converted.items()})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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


def _from_legacy(legacy: dict[str, torch.Tensor], members: int, layers: int) -> dict[str, torch.Tensor]:
    """Stack per-member ``nets.<m>.<2 l>.weight|bias`` tensors into ``weights.<l>`` / ``biases.<l>``."""
    found = {(int(m), int(i) // 2, kind) for m, i, kind in (_LEGACY_KEY.fullmatch(k).groups() for k in legacy)}
    expected = {(m, layer, kind) for m in range(members) for layer in range(layers) for kind in ("weight", "bias")}
    if found != expected:
        saved_members = 1 + max(m for m, _, _ in found)
        saved_layers = 1 + max(layer for _, layer, _ in found)
        raise ValueError(f"saved reward model has {saved_members} members of {saved_layers} layers; this ensemble "
                         f"has {members} members of {layers} layers")
    return {
        **{f"weights.{layer}": torch.stack([legacy[f"nets.{m}.{2 * layer}.weight"].T for m in range(members)])
           for layer in range(layers)},
        **{f"biases.{layer}": torch.stack([legacy[f"nets.{m}.{2 * layer}.bias"] for m in range(members)])
           for layer in range(layers)},
    }
