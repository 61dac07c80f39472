"""Preference-based reward learning: a dataset of judged pairs, the Bradley-Terry loss, a trainer."""

from __future__ import annotations

import math
from os import PathLike
from typing import Literal

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
    member_first_returns: torch.Tensor,
    member_second_returns: torch.Tensor,
    p_first: torch.Tensor,
    *,
    mistake_prob: float | torch.Tensor = 0.0,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy between the model's P(first better) and the label [p, 1 - p]; returns (..., B), p (B,).

    The model is Bradley-Terry with a mistake probability e: P = (1 - e) sigmoid(R1 - R2) + e / 2
    (e = 0: softmax([R1, R2])), so a confidently contradicted label costs at most -log(e / 2).
    ``label_smoothing`` s moves each label to (1 - s) p + s / 2. With ``weights`` (B,), each row
    of ``...`` is a weighted mean over its pairs; the result is the mean over rows.
    """
    diff = member_first_returns - member_second_returns
    p = p_first * (1 - label_smoothing) + label_smoothing / 2
    if not isinstance(mistake_prob, torch.Tensor) and mistake_prob == 0:
        per_pair = p * F.softplus(-diff) + (1 - p) * F.softplus(diff)
    else:
        e = torch.as_tensor(mistake_prob, dtype=diff.dtype, device=diff.device)
        log_kept, log_random = torch.log1p(-e), torch.log(e / 2)
        log_first = torch.logaddexp(log_kept + F.logsigmoid(diff), log_random)
        log_second = torch.logaddexp(log_kept + F.logsigmoid(-diff), log_random)
        per_pair = -(p * log_first + (1 - p) * log_second)
    if weights is None:
        return per_pair.mean()
    return ((per_pair * weights).sum(-1) / weights.sum(-1).clamp_min(1e-12)).mean()


def contradicted_weights(
    member_first_returns: torch.Tensor, member_second_returns: torch.Tensor, p_first: torch.Tensor, *,
    confidence: float, weight: float,
) -> torch.Tensor:
    """Per-pair weights (B,): ``weight`` where the label is decided (p != 0.5) and the ensemble-mean
    P(first better) = mean over members of sigmoid(R1 - R2) gives the labelled side at most 1 - confidence;
    1 elsewhere."""
    predicted_first = torch.sigmoid(member_first_returns - member_second_returns).mean(0)
    label_side = torch.where(p_first > 0.5, predicted_first, 1 - predicted_first)
    contradicted = (p_first != 0.5) & (label_side <= 1 - confidence)
    return torch.where(contradicted, torch.full_like(label_side, weight), torch.ones_like(label_side))


FIT_MISTAKE_PROB_START = 0.1  # where a fitted mistake probability starts, each fit


def train_on_preferences(
    ensemble: RewardEnsemble,
    dataset: PreferenceDataset,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    mistake_prob: float | Literal["fit"] = 0.0,
    label_smoothing: float = 0.0,
    contradicted_weight: float = 1.0,
    contradicted_confidence: float = 0.9,
    rng: np.random.Generator,
) -> dict:
    """Fit each member, with Adam, on its own bootstrap resample of the pairs.

    ``mistake_prob`` and ``label_smoothing`` go to ``preference_loss``; ``"fit"`` learns one
    mistake probability in (0, 0.5) with the members, starting at 0.1. Before each epoch, a decided
    pair whose label the ensemble-mean P(first) contradicts with at least ``contradicted_confidence``
    counts ``contradicted_weight`` times (0: dropped; 1: as any other pair).

    Returns the final loss on the whole dataset (mean over members), the ensemble-mean return's
    accuracy on non-tie pairs (NaN if there are none), the number of pairs, and the mistake
    probability used (fitted or fixed). Does not refit the ensemble's output normalisation.
    """
    n = len(dataset)
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan, "pairs": 0}
    device = ensemble.reward_mean.device
    padded, lengths = (torch.from_numpy(a).to(device) for a in dataset.table.padded())
    first, second, p_first = (torch.from_numpy(a).to(device) for a in dataset.pairs())
    decided = p_first != 0.5

    def returns(rows: torch.Tensor) -> torch.Tensor:  # rows (members, b) -> each member's own returns
        return masked_returns(ensemble.each_member(padded[rows]), lengths[rows])

    parameters = list(ensemble.parameters())
    if mistake_prob == "fit":  # e = sigmoid(logit) / 2, starting at FIT_MISTAKE_PROB_START
        mistake_logit = torch.tensor(math.log(2 * FIT_MISTAKE_PROB_START / (1 - 2 * FIT_MISTAKE_PROB_START)),
                                     device=device, requires_grad=True)
        parameters.append(mistake_logit)

    def mistake() -> float | torch.Tensor:
        return torch.sigmoid(mistake_logit) / 2 if mistake_prob == "fit" else float(mistake_prob)

    def pair_weights() -> torch.Tensor | None:
        if contradicted_weight == 1.0:
            return None
        with torch.no_grad():
            segment_returns = masked_returns(ensemble.member_rewards(padded), lengths)
            return contradicted_weights(segment_returns[:, first], segment_returns[:, second], p_first,
                                        confidence=contradicted_confidence, weight=contradicted_weight)

    optimiser = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    bootstrap = rng.integers(n, size=(ensemble.members, n))
    for _ in range(epochs):
        order = torch.from_numpy(rng.permuted(bootstrap, axis=1)).to(device)
        weights = pair_weights()
        for start in range(0, n, batch_size):
            idx = order[:, start : start + batch_size]
            # times members: each member's gradient is that of its own mean loss
            loss = preference_loss(returns(first[idx]), returns(second[idx]), p_first[idx],
                                   mistake_prob=mistake(), label_smoothing=label_smoothing,
                                   weights=None if weights is None else weights[idx]) * ensemble.members
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    with torch.no_grad():
        segment_returns = masked_returns(ensemble.member_rewards(padded), lengths)  # (members, S)
        r1, r2 = segment_returns[:, first], segment_returns[:, second]
        used = float(mistake())
        loss = preference_loss(r1, r2, p_first, mistake_prob=used, label_smoothing=label_smoothing).item()
        correct = torch.sign((r1 - r2).mean(0)) == torch.sign(p_first - 0.5)
        accuracy = correct[decided].float().mean().item() if decided.any() else math.nan
    return {"loss": loss, "accuracy": accuracy, "pairs": n, "mistake_prob": used}
