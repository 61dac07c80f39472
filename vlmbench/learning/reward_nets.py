"""An ensemble of MLP reward models, one scalar reward per input row, all members in one batched pass."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_PREDICT_BATCH = 65536
_NUMPY_ROWS = 256  # predict() takes up to this many rows (the per-step case, a row per env) through numpy
LEAKY_SLOPE = 0.01  # torch's default, explicit because the numpy path applies it too
_LEGACY_KEY = re.compile(r"nets\.(\d+)\.(\d+)\.(weight|bias)")  # per-member nn.Sequential of older checkpoints


class RewardEnsemble(nn.Module):
    """``members`` independent MLPs (len(hidden) + 1 linear layers, LeakyReLU) mapping (..., D) -> (...).

    Layer l's weights of all members are stacked in ``weights[l]`` (members, in, out) and
    ``biases[l]`` (members, out), so every member is evaluated in one batched matmul per layer.
    Initialisation is seeded by ``seed`` alone (each member as torch's nn.Linear would initialise it)
    and leaves torch's global RNG untouched. ``predict`` returns the ensemble-mean reward standardised
    by ``fit_normalisation`` (identity until that is called).
    """

    _views: tuple | None = None  # numpy views of the CPU parameters, built by _member_rewards_small

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

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Member m's MLP on x[m]: (members, N, D) -> (members, N); x may be an expanded (stride-0) view."""
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(bias.unsqueeze(1), F.leaky_relu(x, LEAKY_SLOPE) if layer else x, weight)
        return x.squeeze(-1)

    def member_rewards(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rewards of every member on the same inputs: (members, *x.shape[:-1])."""
        flat = x.reshape(-1, self.input_dim)
        return self._forward(flat.expand(self.members, *flat.shape)).reshape(self.members, *x.shape[:-1])

    forward = member_rewards

    def each_member(self, x: torch.Tensor) -> torch.Tensor:
        """Raw rewards where member m scores its own inputs ``x[m]``: (members, *x.shape[1:-1])."""
        return self._forward(x.reshape(self.members, -1, self.input_dim)).reshape(x.shape[:-1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Accept the per-member layout of older checkpoints (``nets.<member>.<2 * layer>.weight``)."""
        self._views = None  # loading with assign=True replaces the parameters
        legacy = {k: v for k, v in state_dict.items() if k.startswith(prefix) and _LEGACY_KEY.fullmatch(k[len(prefix):])}
        if legacy:
            converted = _from_legacy({k[len(prefix):]: v for k, v in legacy.items()}, self.members, len(self.weights))
            for key in legacy:
                del state_dict[key]
            state_dict.update({prefix + k: v for k, v in converted.items()})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.inference_mode()
    def member_rewards_numpy(self, inputs: np.ndarray) -> np.ndarray:
        """Raw member rewards for (..., D) inputs, batched: (members, ...) float32."""
        inputs = np.asarray(inputs, dtype=np.float32)
        flat = torch.from_numpy(inputs.reshape(-1, self.input_dim)).to(self.reward_mean.device)
        if len(flat) <= _PREDICT_BATCH:  # the per-step case: one pass, nothing to join
            rewards = self.member_rewards(flat)
        else:
            rewards = torch.cat([self.member_rewards(flat[i : i + _PREDICT_BATCH])
                                 for i in range(0, len(flat), _PREDICT_BATCH)], dim=1)
        return rewards.cpu().numpy().reshape(self.members, *inputs.shape[:-1])

    def fit_normalisation(self, inputs: np.ndarray) -> None:
        """Set predict()'s affine map so the ensemble-mean reward on ``inputs`` has mean 0 and std 1."""
        mean_reward = self.member_rewards_numpy(inputs).mean(axis=0).astype(np.float64)
        self.reward_mean.fill_(float(mean_reward.mean()))
        self.reward_std.fill_(max(float(mean_reward.std()), 1e-6))

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Standardised ensemble-mean reward, shape inputs.shape[:-1], float32."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.size <= _NUMPY_ROWS * self.input_dim and self.reward_mean.device.type == "cpu":
            member_rewards = self._member_rewards_small(inputs.reshape(-1, self.input_dim))
        else:
            member_rewards = self.member_rewards_numpy(inputs)
        standardised = (member_rewards.mean(axis=0) - self.reward_mean.item()) / self.reward_std.item()
        return standardised.astype(np.float32, copy=False).reshape(inputs.shape[:-1])

    def _member_rewards_small(self, flat: np.ndarray) -> np.ndarray:
        """``member_rewards`` of a few (N, D) rows in numpy, (members, N), at under half of torch's
        per-operation overhead. The views share the parameters' memory, so in-place updates
        (training, ``load_state_dict``) show through."""
        if self._views is None:
            self._views = ([w.detach().numpy() for w in self.weights],
                           [b.detach().numpy()[:, None, :] for b in self.biases])
        weights, biases = self._views
        x = np.matmul(flat, weights[0])
        x += biases[0]
        for weight, bias in zip(weights[1:], biases[1:], strict=True):
            np.maximum(x, LEAKY_SLOPE * x, out=x)  # leaky ReLU, as the slope is < 1
            x = np.matmul(x, weight)
            x += bias
        return x[..., 0]

    def _apply(self, *args, **kwargs):
        """Moving or casting (``to``, ``double``, ...) replaces the parameters: drop the numpy views."""
        self._views = None
        return super()._apply(*args, **kwargs)

    def __getstate__(self):
        """Copies and pickles rebuild their own views (a copied view would not follow the copy's parameters)."""
        return {**super().__getstate__(), "_views": None}

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
