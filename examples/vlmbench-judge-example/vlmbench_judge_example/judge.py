"""A pixel-rule score judge: how far a target-coloured part rises above an anchor-coloured part.

For each frame it finds the pixels within ``tolerance`` (per channel) of ``target_rgb`` and of
``anchor_rgb``, and scores

    clip((top row of anchor - top row of target) / length of target, 0, 1)

where the target's length is the diagonal of its bounding box. On cartpole-upright (target: the
brown pole, anchor: the black cart) this is about cos(pole angle) while the pole points up, and 0
once it points sideways or down. It needs no model and no network, so it costs nothing; it
abstains when the frame has no pixels or either colour is (almost) absent, e.g. the cart has left
the frame.
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from pydantic import Field

from vlmbench.judges.base import Answer, Frame, Judge, JudgeParams, Provenance, Question, prompt_hash
from vlmbench.specs.task import TaskSpec

Channel = Annotated[int, Field(ge=0, le=255)]
RGB = tuple[Channel, Channel, Channel]


class ColourHeightParams(JudgeParams):
    target_rgb: RGB = Field(default=(202, 152, 101), description="colour of the part that should stand up")
    anchor_rgb: RGB = Field(default=(0, 0, 0), description="colour of the part it should stand up from")
    tolerance: Channel = Field(default=24, description="largest per-channel difference counted as a match")
    min_pixels: int = Field(default=20, ge=1, description="abstain when either colour has fewer pixels")
    compare_temperature: float = Field(default=0.0, ge=0, description="temperature of score-derived comparisons")


class ColourHeightJudge(Judge):
    """Scores each frame by the target colour's rise above the anchor colour, relative to its length."""

    answers = frozenset({Question.SCORE})
    needs_pixels = True
    version = "1"
    Params = ColourHeightParams

    def describe_model(self) -> str:
        return "colour-height pixel rule (no model)"

    def _score(self, task: TaskSpec, frames: list[Frame]) -> list[Answer]:
        rule = prompt_hash(self.params.model_dump())
        out = []
        for frame in frames:
            start = time.perf_counter()
            value, reason, detail = self._measure(frame.pixels)
            provenance = Provenance(self.name, self.version, "colour-height", rule, seconds=time.perf_counter() - start)
            out.append(Answer(Question.SCORE, value, provenance, abstain_reason=reason, detail=detail))
        return out

    def _measure(self, pixels: np.ndarray | None) -> tuple[float | None, str | None, dict]:
        if pixels is None:
            return None, "frame has no pixels", {}
        p = self.params
        rgb = pixels[..., :3].astype(np.int16)
        target_rows, target_cols = np.nonzero(np.abs(rgb - p.target_rgb).max(axis=-1) <= p.tolerance)
        anchor_rows, _ = np.nonzero(np.abs(rgb - p.anchor_rgb).max(axis=-1) <= p.tolerance)
        detail = {"target_pixels": int(target_rows.size), "anchor_pixels": int(anchor_rows.size)}
        for part, count in (("target", target_rows.size), ("anchor", anchor_rows.size)):
            if count < p.min_pixels:
                return None, f"{part} colour not visible ({count} < {p.min_pixels} pixels)", detail
        rise = int(anchor_rows.min()) - int(target_rows.min())
        length = float(np.hypot(np.ptp(target_rows) + 1, np.ptp(target_cols) + 1))
        return float(np.clip(rise / length, 0.0, 1.0)), None, {**detail, "rise_px": rise, "length_px": length}
