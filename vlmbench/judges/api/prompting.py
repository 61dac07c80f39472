"""Building the requests an API judge sends: images as PNG, layouts, reasoning styles and labels.

Every request ends with a line ``Answer with one of: L1, L2[, L3]`` naming the labels the reply
must end with, so any server (and the fake one) knows the allowed answers. A pairwise request
shows the two options either as separate images (a clip's frames in time order, the first
option's first) or as one picture with the options side by side, split by a red bar in the
middle. It asks for the label alone, for reasoning step by step ending in ``Answer: <label>``
(chain of thought), or in two stages: an analysis call, then a short labelling call that shows
the images again together with the analysis (RL-VLM-F's two-stage prompting).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from vlmbench.judges.base import Frame
from vlmbench.specs.task import TaskSpec

Layout = Literal["separate", "side_by_side"]
Reasoning = Literal["answer", "chain_of_thought", "two_stage"]
PairLabels = Literal["first-second", "left-right", "a-b", "1-2"]
Guide = Literal["spec", "task"]
PAIR_LABELS: dict[str, tuple[str, str]] = {
    "first-second": ("FIRST", "SECOND"), "left-right": ("LEFT", "RIGHT"), "a-b": ("A", "B"), "1-2": ("1", "2"),
}
TIE_LABEL = "NEITHER"
SEPARATOR_RGB = (220, 30, 30)

# Task-specific criteria for pairwise chain-of-thought prompts (the 'task' guide), by task id prefix.
TASK_GUIDES: dict[str, str] = {
    "cartpole": "Judge the pole first: the closer it stands to vertical, at a right angle to the track, the "
                "better. Only when both poles look equally upright, prefer the cart nearer the middle of its picture.",
    "lunarlander": "Find the purple lander in each picture. Prefer the one nearer the top left corner and flying "
                   "level; a lander outside the picture, or tipped with its nose towards the ground, is worse.",
    "swimmer": "Look at the chain of three rods from above. Prefer the one whose rods fold back and forth most "
               "sharply, so that the outline comes closest to a capital M.",
    "walker": "Look at the two legs of the robot. Prefer the one whose legs are spread furthest apart along the "
              "floor, one reaching forward and one back.",
    "mountaincar": "Find the car on the hill. Prefer the one higher up the right-hand slope, nearer the flag.",
    "humanoid": "Compare the posture of each robot, limb by limb, with the goal: {goal}. Prefer the one closer to "
                "it; balance matters only as far as the goal asks for it.",
}


@dataclass(frozen=True)
class Image:
    """A PNG-encoded picture and the SHA-256 of its bytes."""

    png: bytes
    digest: str

    @classmethod
    def of(cls, pixels: np.ndarray) -> Image:
        from PIL import Image as PILImage

        buffer = io.BytesIO()
        PILImage.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buffer, format="PNG", compress_level=1)
        data = buffer.getvalue()
        return cls(data, hashlib.sha256(data).hexdigest())

    media_type = "image/png"


@dataclass(frozen=True)
class Request:
    """One call's content (text and images in order) and generation settings."""

    parts: tuple[str | Image, ...]
    max_tokens: int
    temperature: float
    top_logprobs: int = 0  # 0: no logprobs asked for

    @property
    def text(self) -> str:
        return "\n".join(p for p in self.parts if isinstance(p, str))

    def identity(self) -> list:
        """What identifies the request: its text and image digests in order, and its settings."""
        parts = [["text", p] if isinstance(p, str) else ["image", p.digest] for p in self.parts]
        return [parts, self.max_tokens, self.temperature, self.top_logprobs]


@dataclass(frozen=True)
class Generation:
    temperature: float
    max_tokens: int  # reasoning and analysis calls
    answer_max_tokens: int  # calls that answer with a label alone
    top_logprobs: int


@dataclass(frozen=True)
class PairStyle:
    layout: Layout
    reasoning: Reasoning
    labels: tuple[str, ...]  # first option, second option, and the tie label where allowed
    guide: Guide
    separator_px: int


def pixels_of(clip: Sequence[Frame]) -> list[np.ndarray]:
    if any(f.pixels is None for f in clip):
        raise ValueError("API judges need frames with pixels")
    return [np.asarray(f.pixels) for f in clip]


def side_by_side(first: list[np.ndarray], second: list[np.ndarray], separator_px: int) -> np.ndarray:
    """One picture: the first option's frames in a row on the left, the second's on the right, a red bar between."""
    height = max(p.shape[0] for p in (*first, *second))

    def row(frames: list[np.ndarray]) -> np.ndarray:
        padded = [np.pad(p[..., :3], ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in frames]
        return np.concatenate(padded, axis=1)

    left, right = row(first), row(second)
    width = max(left.shape[1], right.shape[1])
    left, right = (np.pad(x, ((0, 0), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in (left, right))
    bar = np.empty((height, separator_px, 3), dtype=np.uint8)
    bar[:] = SEPARATOR_RGB
    return np.concatenate([left, bar, right], axis=1).astype(np.uint8)


def _without_answer_format(text: str) -> str:
    """A task's question without its own 'Answer X or Y' sentence (the judge states the labels itself)."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return " ".join(s for s in sentences if not re.match(r"(answer|output|reply|respond)\b", s, re.I)).strip()


def pairwise_question(task: TaskSpec) -> str:
    if task.prompts.pairwise:
        question = _without_answer_format(task.prompts.pairwise)
        if question:
            return question
    return f"Which of the two shows this better: {task.prompts.goal[0]}?"


def task_guide(task: TaskSpec) -> str:
    for prefix, text in TASK_GUIDES.items():
        if task.id.startswith(prefix):
            return text.format(goal=task.prompts.goal[0])
    return f"Prefer the one that comes closer to this goal: {task.prompts.goal[0]}."


def answer_line(labels: Sequence[str]) -> str:
    return f"Answer with one of: {', '.join(labels)}"


def _finish(reasoning: Reasoning) -> str:
    if reasoning == "chain_of_thought":
        return ("Think it through step by step: describe what each shows, compare them, then end with a final "
                "line 'Answer: <label>'.")
    return "Reply with the label alone."


class PairPrompt:
    """The requests for one pairwise question under a style."""

    def __init__(self, task: TaskSpec, style: PairStyle, generation: Generation):
        self.task, self.style, self.generation = task, style, generation

    def _images(self, first: list[np.ndarray], second: list[np.ndarray]) -> tuple[Image, ...]:
        if self.style.layout == "side_by_side":
            return (Image.of(side_by_side(first, second, self.style.separator_px)),)
        return tuple(Image.of(p) for p in (*first, *second))

    def _framing(self, frames_per_side: int) -> str:
        l1, l2 = self.style.labels[:2]
        item = "clip" if frames_per_side > 1 else "picture"
        if self.style.layout == "side_by_side":
            names = ("the left one", "the right one")
            where = f"The image shows two {item}s side by side, split by a red bar."
            if frames_per_side > 1:
                where += f" Each half holds {frames_per_side} frames in time order, left to right."
        else:
            names = ("the first", "the second")
            where = (f"The first {frames_per_side} images are the frames of one clip in time order, the next "
                     f"{frames_per_side} those of the other." if frames_per_side > 1
                     else "The first image is one option, the second image the other.")
        meaning = f"The labels: {l1} if {names[0]} is better, {l2} if {names[1]} is better"
        if len(self.style.labels) > 2:
            meaning += f", {self.style.labels[2]} if neither is"
        return f"{where} {meaning}."

    def _intro(self, frames_per_side: int) -> list[str]:
        lines = [pairwise_question(self.task), self._framing(frames_per_side)]
        if self.style.guide == "task":
            lines.append(task_guide(self.task))
        return lines

    def first(self, first: list[np.ndarray], second: list[np.ndarray]) -> Request:
        """The first (often only) request: an answer, a reasoned answer, or the analysis of two stages."""
        g, k = self.generation, len(first)
        images = self._images(first, second)
        if self.style.reasoning == "two_stage":
            text = [*self._intro(k), "Describe step by step what each shows and how far each has come towards the "
                    "goal. Do not give a verdict yet."]
            return Request((*images, "\n".join(text)), g.max_tokens, g.temperature)
        budget = g.max_tokens if self.style.reasoning == "chain_of_thought" else g.answer_max_tokens
        text = [*self._intro(k), _finish(self.style.reasoning), answer_line(self.style.labels)]
        return Request((*images, "\n".join(text)), budget, g.temperature, g.top_logprobs)

    def label(self, first: list[np.ndarray], second: list[np.ndarray], analysis: str) -> Request:
        """Stage two: the same images again, the analysis, and a request for the label alone."""
        g, k = self.generation, len(first)
        text = [*self._intro(k), "An analysis of them:", analysis.strip(),
                "Based on that analysis, reply with the label alone.", answer_line(self.style.labels)]
        return Request((*self._images(first, second), "\n".join(text)), g.answer_max_tokens, g.temperature,
                       g.top_logprobs)


def _clip_framing(frames: int) -> str:
    return f"The {frames} images are frames of one clip in time order." if frames > 1 else ""


def rating_request(task: TaskSpec, frames: list[np.ndarray], reasoning: Reasoning, generation: Generation) -> Request:
    """Rate one clip: the task's rating question, its classes worst to best."""
    rating = task.prompts.rating
    classes = list(rating.classes)
    lines = [rating.question, _clip_framing(len(frames)),
             f"The classes, from worst to best: {', '.join(classes)}.",
             _finish("chain_of_thought" if reasoning != "answer" else "answer").replace("the label", "the class"),
             answer_line(classes)]
    budget = generation.max_tokens if reasoning != "answer" else generation.answer_max_tokens
    images = tuple(Image.of(p) for p in frames)
    return Request((*images, "\n".join(line for line in lines if line)), budget, generation.temperature,
                   generation.top_logprobs)


def yes_no_question(task: TaskSpec) -> str:
    return task.prompts.yes_no or f"Does this picture show the following: {task.prompts.goal[0]}?"


def yes_no_request(task: TaskSpec, pixels: np.ndarray, generation: Generation) -> Request:
    """The yes/no question about one frame, answered by a single word whose logprobs give P(yes)."""
    text = "\n".join([yes_no_question(task), "Reply with yes or no alone.", answer_line(["yes", "no"])])
    return Request((Image.of(pixels), text), generation.answer_max_tokens, generation.temperature,
                   generation.top_logprobs)
