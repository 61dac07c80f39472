"""Rating-based reward learning (White et al. 2023, "Rating-Based Reinforcement Learning").

A batch's predicted segment returns are min-max normalised to [0, 1]; the unit interval is cut at
the quantiles matching the batch's label proportions, and a segment's probability of class k is
Q(k) = softmax_k(-sharpness * (r - b_k) * (r - b_{k+1})), largest when r lies inside [b_k, b_{k+1}].
"""

from __future__ import annotations

import math
from os import PathLike
from typing import Literal

import numpy as np
import torch

from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.learning.segments import Segment, SegmentTable, masked_returns

# The k of the RbRL reference code. Normalised returns lie in [0, 1], so the exponents span about
# [-k, k/4]; with k near 1 every Q is close to uniform and the loss barely constrains the returns.
DEFAULT_SHARPNESS = 30.0


class RatingDataset:
    """Segments with a class label (0 = worst); each segment stored once per key."""

    def __init__(self) -> None:
        self.table = SegmentTable()
        self._rows: list[int] = []
        self._labels: list[int] = []

    def add(self, segment: Segment, label: int) -> None:
        if label < 0:
            raise ValueError(f"rating labels are class indices >= 0, got {label}")
        self._rows.append(self.table.index(segment))
        self._labels.append(int(label))

    def __len__(self) -> int:
        return len(self._labels)

    def ratings(self) -> tuple[np.ndarray, np.ndarray]:
        """Row of ``table`` for each rating, and its label (both int64)."""
        return np.array(self._rows, dtype=np.int64), np.array(self._labels, dtype=np.int64)

    def class_counts(self, n_classes: int) -> np.ndarray:
        labels = self.ratings()[1]
        if labels.size and labels.max() >= n_classes:
            raise ValueError(f"label {labels.max()} is out of range for {n_classes} classes")
        return np.bincount(labels, minlength=n_classes)

    def save(self, path: str | PathLike) -> None:
        """Write an .npz (to exactly ``path``): the segment table plus rows and labels."""
        rows, labels = self.ratings()
        with open(path, "wb") as f:
            np.savez(f, **self.table.to_arrays(), rows=rows, labels=labels)

    @classmethod
    def load(cls, path: str | PathLike) -> RatingDataset:
        with np.load(path) as arrays:
            dataset = cls()
            dataset.table = SegmentTable.from_arrays(arrays)
            dataset._rows = arrays["rows"].tolist()
            dataset._labels = arrays["labels"].tolist()
        return dataset


def rating_probabilities(
    returns: torch.Tensor, proportions: torch.Tensor, *, sharpness: float = DEFAULT_SHARPNESS
) -> torch.Tensor:
    """Class probabilities (B, K) of a batch of segment returns (B,) given label proportions (K,)
    (or counts: they are normalised).

    Boundaries are quantiles of the normalised returns, detached (as in the reference code).
    An absent class (zero proportion) has b_k == b_{k+1}; equal returns normalise to 0. Neither
    divides by zero.
    """
    low, high = returns.min(), returns.max()
    r = (returns - low) / (high - low).clamp_min(1e-8)
    proportions = proportions.to(r)
    cumulative = (torch.cumsum(proportions, 0) / proportions.sum().clamp_min(1e-12)).clamp(0.0, 1.0)
    inner = torch.quantile(r.detach(), cumulative[:-1])
    bounds = torch.cat([r.new_zeros(1), inner, r.new_ones(1)])
    r = r.unsqueeze(-1)
    return torch.softmax(-sharpness * (r - bounds[:-1]) * (r - bounds[1:]), dim=-1)


def rating_loss(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: Literal["ce", "mae"] = "ce",
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over samples of w[label] * loss: ``ce`` = -log Q(label); ``mae`` = sum_k |Q_k - onehot_k|
    = 2 (1 - Q(label)), robust to label noise. Unweighted when ``class_weights`` is None."""
    chosen = probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if kind == "ce":
        per_sample = -torch.log(chosen.clamp_min(1e-12))
    elif kind == "mae":
        per_sample = 2.0 * (1.0 - chosen)
    else:
        raise ValueError(f"unknown rating loss '{kind}' (expected 'ce' or 'mae')")
    if class_weights is not None:
        per_sample = per_sample * class_weights.to(per_sample)[labels]
    return per_sample.mean()


def class_weights(counts, n_classes: int) -> torch.Tensor:
    """Inverse class frequency, mean 1 over present classes; 0 for absent ones."""
    padded = np.zeros(n_classes)
    given = np.asarray(counts, dtype=np.float64)[:n_classes]
    padded[: len(given)] = given
    counts = torch.as_tensor(padded, dtype=torch.float32)
    present = counts > 0
    weights = torch.where(present, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    return weights / weights[present].mean() if present.any() else weights


def stratified_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of index batches (sizes differ by at most 1), each holding every class in proportion.

    Each class is shuffled and spread evenly over the epoch (sample i of a class of size c sits at
    (i + u) / c, u uniform); the order by position is cut into ceil(N / batch_size) batches.
    """
    labels = np.asarray(labels)
    position = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        position[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    order = np.argsort(position, kind="stable")
    return list(np.array_split(order, math.ceil(len(labels) / batch_size))) if len(labels) else []


def train_on_ratings(
    ensemble: RewardEnsemble,
    dataset: RatingDataset,
    *,
    n_classes: int,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-3,
    loss: Literal["ce", "mae"] = "ce",
    weighted: bool = True,
    rng: np.random.Generator,
) -> dict:
    """Fit each member, with Adam, on stratified batches of its own bootstrap resample of the ratings.

    Class weights (if ``weighted``) come from the whole dataset's counts; each batch's boundaries
    from its own label proportions. Returns the final loss on the whole dataset (mean over members),
    the accuracy of the ensemble-mean return's most likely class, and the number of ratings. Does
    not refit the ensemble's output normalisation.
    """
    n = len(dataset)
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan, "ratings": 0}
    device = ensemble.reward_mean.device
    padded, lengths = (torch.from_numpy(a).to(device) for a in dataset.table.padded())
    rows_np, labels_np = dataset.ratings()
    rows, labels = torch.from_numpy(rows_np).to(device), torch.from_numpy(labels_np).to(device)
    weights = class_weights(dataset.class_counts(n_classes), n_classes).to(device) if weighted else None

    def member_loss(member_returns: torch.Tensor, member_labels: torch.Tensor) -> torch.Tensor:
        proportions = torch.bincount(member_labels, minlength=n_classes).float()
        probs = rating_probabilities(member_returns, proportions)
        return rating_loss(probs, member_labels, kind=loss, class_weights=weights)

    optimiser = torch.optim.Adam(ensemble.parameters(), lr=lr)
    bootstrap = rng.integers(n, size=(ensemble.members, n))
    for _ in range(epochs):
        schedules = [
            [sample[b] for b in stratified_batches(labels_np[sample], batch_size, rng)] for sample in bootstrap
        ]
        for member_batches in zip(*schedules, strict=True):  # same batch sizes for every member
            idx = torch.from_numpy(np.stack(member_batches)).to(device)
            returns = masked_returns(ensemble.each_member(padded[rows[idx]]), lengths[rows[idx]])
            # summed over members: each member's gradient is that of its own mean loss
            total = sum(member_loss(r, y) for r, y in zip(returns, labels[idx], strict=True))
            optimiser.zero_grad()
            total.backward()
            optimiser.step()

    with torch.no_grad():
        returns = masked_returns(ensemble.member_rewards(padded), lengths)[:, rows]  # (members, N)
        final_loss = float(np.mean([member_loss(r, labels).item() for r in returns]))
        proportions = torch.bincount(labels, minlength=n_classes).float()
        predicted = rating_probabilities(returns.mean(0), proportions).argmax(-1)
        accuracy = (predicted == labels).float().mean().item()
    return {"loss": final_loss, "accuracy": accuracy, "ratings": n}
