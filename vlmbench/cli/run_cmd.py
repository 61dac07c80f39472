"""`vlmbench run`: train an agent whose only reward comes from a judge, then evaluate it."""

from __future__ import annotations


def run() -> None:
    """Train and evaluate (see vlmbench.agents)."""
    raise NotImplementedError
