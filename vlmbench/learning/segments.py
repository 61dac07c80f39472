"""Segments (what is labelled), a bounded buffer of recent ones, and samplers of pairs to compare."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from vlmbench.learning.reward_nets import RewardEnsemble


@dataclass(frozen=True, eq=False)
class Segment:
    """A stretch of experience: ``inputs`` (L, D) for the reward model, ``frames`` for a judge.

    ``key`` identifies the segment: datasets store each key's inputs once. Frames are not saved
    with datasets; loaded segments have ``frames == ()``.
    """

    key: str
    inputs: np.ndarray
    frames: tuple = ()

    def __post_init__(self) -> None:
        inputs = np.asarray(self.inputs, dtype=np.float32)
        if inputs.ndim != 2 or len(inputs) == 0:
            raise ValueError(f"segment '{self.key}': inputs must be (L >= 1, D), got shape {inputs.shape}")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "frames", tuple(self.frames))

    def __len__(self) -> int:
        return len(self.inputs)


class SegmentTable:
    """Unique segments (by key), stored once however many labels refer to them."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.segments)

    def index(self, segment: Segment) -> int:
        """The row of ``segment``'s key, adding it if new."""
        if segment.key not in self._index:
            self._index[segment.key] = len(self.segments)
            self.segments.append(segment)
        return self._index[segment.key]

    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs zero-padded to the longest segment, (S, L_max, D) float32, and lengths (S,) int64."""
        return pad_segments(self.segments)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Ragged storage: all inputs concatenated along time, plus keys and lengths."""
        inputs = [s.inputs for s in self.segments]
        return {
            "segment_keys": np.array([s.key for s in self.segments], dtype=str),
            "segment_inputs": np.concatenate(inputs) if inputs else np.zeros((0, 0), np.float32),
            "segment_lengths": np.array([len(s) for s in self.segments], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays) -> SegmentTable:
        """Inverse of ``to_arrays``; ``arrays`` may be an open NpzFile (each array is read once)."""
        table, inputs, lengths = cls(), arrays["segment_inputs"], arrays["segment_lengths"]
        for key, end, length in zip(arrays["segment_keys"], np.cumsum(lengths), lengths, strict=True):
            table.index(Segment(str(key), inputs[end - length : end]))
        return table


def pad_segments(segments: list[Segment]) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded inputs (N, L_max, D) float32 and lengths (N,) int64."""
    lengths = np.array([len(s) for s in segments], dtype=np.int64)
    dim = segments[0].inputs.shape[1] if segments else 0
    padded = np.zeros((len(segments), int(lengths.max(initial=0)), dim), dtype=np.float32)
    for row, segment in zip(padded, segments, strict=True):
        row[: len(segment)] = segment.inputs
    return padded, lengths


def masked_returns(rewards: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Sum of per-step ``rewards`` (..., L) over each segment's first ``lengths`` (...) steps."""
    mask = torch.arange(rewards.shape[-1], device=rewards.device) < lengths.unsqueeze(-1)
    return (rewards * mask).sum(-1)


Pair = tuple[Segment, Segment]


class SegmentBuffer:
    """The ``capacity`` most recently added segments."""

    def __init__(self, capacity: int = 100):
        self._segments: deque[Segment] = deque(maxlen=capacity)

    def add(self, segment: Segment) -> None:
        self._segments.append(segment)

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def segments(self) -> list[Segment]:
        """Oldest first."""
        return list(self._segments)


def _random_pairs(size: int, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``n`` distinct unordered pairs of distinct indices below ``size``, each in random order."""
    total = size * (size - 1) // 2
    pairs = []
    for k in rng.choice(total, size=min(n, total), replace=False) if total else []:
        i = (1 + math.isqrt(1 + 8 * int(k))) // 2  # pair k is (i, j) with j < i and k = i(i-1)/2 + j
        pairs.append((i, int(k) - i * (i - 1) // 2))
    swap = rng.random(len(pairs)) < 0.5
    return [(j, i) if s else (i, j) for (i, j), s in zip(pairs, swap, strict=True)]


class UniformPairSampler:
    """Pairs drawn uniformly without replacement from the buffer, each in random order."""

    def sample(self, buffer: SegmentBuffer, n: int, rng: np.random.Generator) -> list[Pair]:
        segments = buffer.segments
        return [(segments[i], segments[j]) for i, j in _random_pairs(len(segments), n, rng)]


class DisagreementPairSampler:
    """Of ``n * candidates_per_pair`` uniform candidate pairs, the ``n`` whose predicted
    P(first better) = sigmoid(R1 - R2) has the largest std across ensemble members (most first)."""

    def __init__(self, ensemble: RewardEnsemble, candidates_per_pair: int = 10):
        self.ensemble = ensemble
        self.candidates_per_pair = candidates_per_pair

    def sample(self, buffer: SegmentBuffer, n: int, rng: np.random.Generator) -> list[Pair]:
        segments = buffer.segments
        candidates = _random_pairs(len(segments), n * self.candidates_per_pair, rng)
        if not candidates:
            return []
        padded, lengths = pad_segments(segments)
        rewards = torch.from_numpy(self.ensemble.member_rewards_numpy(padded))
        returns = masked_returns(rewards, torch.from_numpy(lengths))  # (members, S)
        first, second = (torch.tensor(side) for side in zip(*candidates, strict=True))
        spread = torch.sigmoid(returns[:, first] - returns[:, second]).std(dim=0, unbiased=False)
        keep = torch.argsort(spread, descending=True, stable=True)[:n]
        return [(segments[candidates[k][0]], segments[candidates[k][1]]) for k in keep.tolist()]
