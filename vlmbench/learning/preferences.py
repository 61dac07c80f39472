"""Preference-based reward learning: a dataset of judged pairs, the Bradley-Terry loss, a trainer."""

from __future__ import annotations

import math
from os import PathLike

import numpy as np
import torch
import torch.nn.functional as F

from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.learning.segments import Segment, SegmentTable, masked_returns


class PreferenceDataset:
    """Pairs of segments with P(first better) in [0, 1] (0.5 = tie); each segment stored once per key."""

    def __init__(self) -> None:
        self.table = SegmentTable()
        self._first: list[int] = []
        self._second: list[int] = []
        self._p_first: list[float] = []

    def add(self, first: Segment, second: Segment, p_first: float) -> None:
        if not 0.0 <= p_first <= 1.0:
            raise ValueError(f"p_first must be in [0, 1], got {p_first}")
        self._first.append(self.table.index(first))
        self._second.append(self.table.index(second))
        self._p_first.append(float(p_first))

    def __len__(self) -> int:
        return len(self._p_first)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of ``table`` for each pair's first and second segment (int64), and p_first (float32)."""
        return (
            np.array(self._first, dtype=np.int64),
            np.array(self._second, dtype=np.int64),
            np.array(self._p_first, dtype=np.float32),
        )

    def save(self, path: str | PathLike) -> None:
        """Write an .npz (to exactly ``path``): the segment table plus pair indices and p_first."""
        first, second, p_first = self.pairs()
        with open(path, "wb") as f:
            np.savez(f, **self.table.to_arrays(), first=first, second=second, p_first=p_first)

    @classmethod
    def load(cls, path: str | PathLike) -> PreferenceDataset:
        with np.load(path) as arrays:
            dataset = cls()
            dataset.table = SegmentTable.from_arrays(arrays)
            dataset._first = arrays["first"].tolist()
            dataset._second = arrays["second"].tolist()
            dataset._p_first = arrays["p_first"].tolist()
        return dataset


def preference_loss(
    member_first_returns: torch.Tensor, member_second_returns: torch.Tensor, p_first: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy between softmax([R1, R2]) and [p, 1 - p]; returns (..., B), p (B,)."""
    diff = member_first_returns - member_second_returns
    return (p_first * F.softplus(-diff) + (1 - p_first) * F.softplus(diff)).mean()


def train_on_preferences(
    ensemble: RewardEnsemble,
    dataset: PreferenceDataset,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    rng: np.random.Generator,
) -> dict:
    """Fit each member, with Adam, on its own bootstrap resample of the pairs.

    Returns the final loss on the whole dataset (mean over members), the ensemble-mean return's
    accuracy on non-tie pairs (NaN if there are none) and the number of pairs. Does not refit
    the ensemble's output normalisation.
    """
    n = len(dataset)
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan, "pairs": 0}
    device = ensemble.reward_mean.device
    padded, lengths = (torch.from_numpy(a).to(device) for a in dataset.table.padded())
    first, second, p_first = (torch.from_numpy(a).to(device) for a in dataset.pairs())

    def returns(rows: torch.Tensor) -> torch.Tensor:  # rows (members, b) -> each member's own returns
        return masked_returns(ensemble.each_member(padded[rows]), lengths[rows])

    optimiser = torch.optim.Adam(ensemble.parameters(), lr=lr, weight_decay=weight_decay)
    bootstrap = rng.integers(n, size=(ensemble.members, n))
    for _ in range(epochs):
        order = torch.from_numpy(rng.permuted(bootstrap, axis=1)).to(device)
        for start in range(0, n, batch_size):
            idx = order[:, start : start + batch_size]
            # times members: each member's gradient is that of its own mean loss
            loss = preference_loss(returns(first[idx]), returns(second[idx]), p_first[idx]) * ensemble.members
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    with torch.no_grad():
        segment_returns = masked_returns(ensemble.member_rewards(padded), lengths)  # (members, S)
        r1, r2 = segment_returns[:, first], segment_returns[:, second]
        loss = preference_loss(r1, r2, p_first).item()
        decided = p_first != 0.5
        correct = torch.sign((r1 - r2).mean(0)) == torch.sign(p_first - 0.5)
        accuracy = correct[decided].float().mean().item() if decided.any() else math.nan
    return {"loss": loss, "accuracy": accuracy, "pairs": n}
