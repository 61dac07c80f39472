"""Position debiasing for pairwise judges, and reading label probabilities out of logprobs.

A pairwise verdict is P(first option better): 1 for the first label, 0 for the second, 0.5 for the
tie label. With ``swap`` the pair is also asked in the other order; the two verdicts, the second
flipped (1 - v), give the answer when they agree, and a tie or an abstention (configurable) when
they do not. With ``swap_average`` both orders' P(first) come from the answer token's logprobs
(renormalised over the labels, a tie counting half) and the answer is their average,
(p_forward + 1 - p_backward) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MARKUP = " \t\n*_`#.:,;!\"'()[]"


def label_value(label: str, labels: Sequence[str]) -> float:
    """P(first better) that a label stands for: first 1, second 0, tie 0.5."""
    return (1.0, 0.0, 0.5)[list(labels).index(label)]


def token_label(token: str, labels: Sequence[str]) -> str | None:
    """The label a token spells (case-insensitive, markup stripped), or begins to spell unambiguously."""
    core = token.strip(MARKUP).lower()
    if not core:
        return None
    exact = [label for label in labels if label.lower() == core]
    if exact:
        return exact[0]
    starts = [label for label in labels if label.lower().startswith(core)]
    return starts[0] if len(core) >= 2 and len(starts) == 1 else None


def label_probabilities(logprobs: list | None, labels: Sequence[str]) -> dict[str, float] | None:
    """Each label's probability at the reply's last label token, from its top logprobs, renormalised over
    the labels (every spelling of a label adds up); None where no token spells a label."""
    if not logprobs:
        return None
    for token, logprob, top in reversed(logprobs):
        if token_label(token, labels) is None:
            continue
        mass = dict.fromkeys(labels, 0.0)
        alternatives = {alt: lp for alt, lp in top} | {token: logprob}
        for alt, lp in alternatives.items():
            label = token_label(alt, labels)
            if label is not None:
                mass[label] += math.exp(lp)
        total = sum(mass.values())
        return {label: m / total for label, m in mass.items()}
    return None


def p_first(probabilities: dict[str, float], labels: Sequence[str]) -> float:
    """P(first better) from label probabilities: the first label's, plus half the tie label's."""
    return sum(probabilities[label] * label_value(label, labels) for label in labels)


def swap_combine(forward: float, backward: float, on_disagreement: str) -> tuple[float | None, str | None]:
    """The verdict from both orders (``backward`` is about the swapped pair): agreement gives it; a
    disagreement gives a tie (0.5) or, with ``on_disagreement='abstain'``, an abstention."""
    flipped = 1.0 - backward
    if forward == flipped:
        return forward, None
    if on_disagreement == "tie":
        return 0.5, None
    return None, "swap disagreement: the two orders gave different verdicts"


def swap_average(forward: float, backward: float) -> float:
    return (forward + 1.0 - backward) / 2.0
