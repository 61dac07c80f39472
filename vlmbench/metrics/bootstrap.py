"""One measured number with its percentile-bootstrap confidence interval, or the reason it was not measured;
and the input checks the metric modules share."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from vlmbench.errors import VlmbenchError

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Metric:
    """``value`` is None exactly when the metric was not measured; ``note`` then says why. ``n`` counts the
    units the value averages over (states, pairs, trajectories), which are also the units the bootstrap
    resamples. ``ci_low``/``ci_high`` are None when no interval was computed (see ``note``)."""

    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    note: str = ""

    def __post_init__(self) -> None:
        if self.value is None and not self.note:
            raise ValueError(f"metric '{self.name}' is not measured but its note gives no reason")
        if self.n == 0 and self.value is not None:
            raise ValueError(f"metric '{self.name}' has a value from no samples")
        for field in ("value", "ci_low", "ci_high"):
            number = getattr(self, field)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"metric '{self.name}': {field} is {number}, not a finite number")

    @classmethod
    def not_measured(cls, name: str, n: int, note: str) -> Metric:
        return cls(name, None, None, None, n, note)

    @property
    def measured(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict:
        return asdict(self)


def check_resampling(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise VlmbenchError(f"bootstrap resamples must be a whole number >= 0, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise VlmbenchError(f"confidence level must lie strictly between 0 and 1, got {level!r}")


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the bootstrap values (linear interpolation between order statistics)."""
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def measure(name: str, statistic: Callable[[np.ndarray], float], n: int, *, rng: np.random.Generator,
            resamples: int = RESAMPLES, level: float = LEVEL, strata: Sequence[np.ndarray] | None = None,
            note: str = "") -> Metric:
    """``statistic(indices)`` on all ``n`` units (``np.arange(n)``) with a percentile-bootstrap interval over
    ``resamples`` draws of ``n`` units with replacement. ``strata`` (index arrays that partition the units)
    makes each draw resample within each stratum, keeping stratum sizes fixed. A draw on which the statistic
    is undefined (NaN) is left out, and the note says how many were; with fewer than two defined draws the
    interval is None. The caller has checked that the statistic is defined on all units."""
    check_resampling(resamples, level)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy Generator (np.random.default_rng(seed)), so intervals are reproducible")
    if n == 0:
        return Metric.not_measured(name, 0, note or "no samples")
    value = float(statistic(np.arange(n)))
    if resamples == 0:
        return Metric(name, value, None, None, n, _join(note, "no interval: 0 bootstrap resamples"))
    groups = [np.asarray(s, dtype=np.intp) for s in strata or ()]
    draws = np.empty(resamples)
    for r in range(resamples):
        indices = (np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups]) if groups
                   else rng.integers(0, n, n))
        draws[r] = statistic(indices)
    defined = draws[np.isfinite(draws)]
    left_out = resamples - len(defined)
    if left_out:
        note = _join(note, f"{left_out} of {resamples} bootstrap resamples undefined and left out")
    if len(defined) < 2:
        return Metric(name, value, None, None, n, _join(note, "no interval: fewer than 2 defined resamples"))
    low, high = percentile_interval(defined, level)
    return Metric(name, value, low, high, n, note)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def finite_vector(name: str, values) -> np.ndarray:
    """``values`` as a 1-D float array; an error naming ``name`` if it is not one or holds inf or nan."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise VlmbenchError(f"{name} must be a 1-D array of numbers") from None
    if array.ndim != 1:
        raise VlmbenchError(f"{name} must be a 1-D array of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise VlmbenchError(f"{name} holds a non-finite value (inf or nan)")
    return array


def goal_labels(name: str, values) -> np.ndarray:
    """``values`` as a 1-D boolean array; booleans or 0/1 only."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise VlmbenchError(f"{name} must be a 1-D array of labels, got shape {array.shape}")
    if array.dtype != bool:
        if array.size and not np.all(np.isin(array, (0, 1))):
            raise VlmbenchError(f"{name} labels must be booleans or 0/1")
        array = array.astype(bool)
    return array


def same_length(first: tuple[str, np.ndarray], second: tuple[str, np.ndarray], *, of: str) -> None:
    """An error unless the two named arrays hold one value per ``of`` each (the same count)."""
    (first_name, a), (second_name, b) = first, second
    if len(a) != len(b):
        raise VlmbenchError(f"{first_name} has {len(a)} values but {second_name} has {len(b)}; give one per {of}")
