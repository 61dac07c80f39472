"""Judges: interchangeable reward judges over rendered frames (score, compare, rate)."""

from vlmbench.judges.base import Answer, Clip, Frame, Judge, Provenance, Question

__all__ = ["Answer", "Clip", "Frame", "Judge", "Provenance", "Question"]
