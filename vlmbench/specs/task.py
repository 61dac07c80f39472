"""The task spec: what to simulate, how to film it, what to ask judges and how to check success."""

from __future__ import annotations

import keyword
import math
from functools import cached_property
from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationInfo,
    field_validator,
)

from vlmbench.errors import VlmbenchError
from vlmbench.specs.expressions import CONSTANTS, FUNCTIONS, Expression, ExpressionError

SOURCES = {
    "vlm-rm": "Rocamonde et al., Vision-Language Models are Zero-Shot Reward Models for RL (2023)",
    "gpt4v-preferences": "Wong, Lu, Qi, Reward Modeling from GPT4-Vision Preferences",
    "erl-vlm": "Luu et al., Enhancing Rating-Based RL with Feedback from Large VLMs (2025)",
    "rewarddance": "RewardDance: Reward Scaling in Visual Generation",
    "user": "a task written by the user",
}


MAX_EPISODE_LENGTH = 10_000_000
MAX_EVALUATION_EPISODES = 10_000
# gymnasium.make's own arguments and the render mode: vlmbench sets these itself
RESERVED_KWARGS = {
    "max_episode_steps": "use env.episode_length",
    "disable_env_checker": "vlmbench decides whether the env checker runs",
    "render_mode": "vlmbench chooses the render mode",
}


class Strict(BaseModel):
    """Unknown fields are errors and floats must be finite (numeric fields are StrictInt or StrictFloat:
    never converted from strings or booleans, and no int from a float)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _kwarg_name(name: str) -> str:
    if name in RESERVED_KWARGS:
        raise ValueError(f"'{name}' cannot be set here: {RESERVED_KWARGS[name]}")
    return name


def _no_nan(value: object) -> object:
    """Reject NaN anywhere inside a free-form value (infinities are allowed: some envs take them)."""
    pending, seen = [value], set()
    while pending:
        item = pending.pop()
        if isinstance(item, float) and math.isnan(item):
            raise ValueError("NaN is not allowed")
        if isinstance(item, (dict, list, tuple)) and id(item) not in seen:
            seen.add(id(item))
            pending.extend([*item.keys(), *item.values()] if isinstance(item, dict) else item)
    return value


def _feature_name(name: str) -> str:
    if not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"feature name '{name}' must be an identifier not starting with '_'")
    if keyword.iskeyword(name):
        raise ValueError(f"feature name '{name}' is a Python keyword")
    if name in FUNCTIONS or name in CONSTANTS:
        kind = "function" if name in FUNCTIONS else "constant"
        raise ValueError(f"feature name '{name}' is taken by the expression {kind} '{name}'")
    return name


class EnvSpec(Strict):
    """The gymnasium environment, its length and how its own termination is treated."""

    id: str = Field(description="gymnasium environment id, e.g. 'Humanoid-v5'")
    kwargs: dict[Annotated[str, AfterValidator(_kwarg_name)], Annotated[object, AfterValidator(_no_nan)]] = Field(
        default_factory=dict, description="passed to gymnasium.make, checked against the env's constructor"
    )
    episode_length: StrictInt = Field(
        gt=0, le=MAX_EPISODE_LENGTH, description="steps per episode (a time limit, never success)"
    )
    termination: Literal["keep", "never", "absorbing"] = Field(
        default="keep",
        description="keep: the env's own termination; never: ignore it (the episode runs to "
        "episode_length); absorbing: the terminal state is frozen until episode_length",
    )


class CameraSpec(Strict):
    """A MuJoCo free or tracking camera."""

    distance: StrictFloat = Field(gt=0)
    azimuth: StrictFloat = 90.0
    elevation: StrictFloat = -20.0
    lookat: tuple[StrictFloat, StrictFloat, StrictFloat] = Field(
        default=(0.0, 0.0, 1.0),
        description="point looked at; with track_body, x and y are offsets from the body and z is absolute",
    )
    track_body: str | None = Field(default=None, description="body followed horizontally, if any")


class TextureSpec(Strict):
    """A procedural texture: MuJoCo's builtins, or 'noise' (a generated PNG, e.g. grass)."""

    pattern: Literal["checker", "gradient", "flat", "noise"]
    rgb1: tuple[StrictFloat, StrictFloat, StrictFloat]
    rgb2: tuple[StrictFloat, StrictFloat, StrictFloat] = (0.0, 0.0, 0.0)
    size: StrictInt = Field(default=512, ge=8, le=4096)
    repeat: StrictFloat = Field(default=8.0, gt=0, description="tiles across the floor")

    @field_validator("rgb1", "rgb2")
    @classmethod
    def _unit_colour(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.0 <= c <= 1.0 for c in v):
            raise ValueError("colour components must lie in [0, 1]")
        return v


class ThemeSpec(Strict):
    """A visual theme for MuJoCo scenes: floor and sky textures."""

    floor: TextureSpec | None = None
    sky: TextureSpec | None = None


# Built-in themes, by name (all procedural: see vlmbench.envs.themes).
THEMES: dict[str, ThemeSpec] = {
    "grass-sky": ThemeSpec(
        floor=TextureSpec(pattern="noise", rgb1=(0.20, 0.42, 0.14), rgb2=(0.42, 0.58, 0.22), size=512, repeat=6),
        sky=TextureSpec(pattern="gradient", rgb1=(0.45, 0.68, 0.95), rgb2=(0.92, 0.95, 1.0), size=256),
    ),
    "sand-sky": ThemeSpec(
        floor=TextureSpec(pattern="noise", rgb1=(0.70, 0.60, 0.42), rgb2=(0.86, 0.78, 0.60), size=512, repeat=6),
        sky=TextureSpec(pattern="gradient", rgb1=(0.50, 0.70, 0.95), rgb2=(0.95, 0.95, 1.0), size=256),
    ),
    "checker-studio": ThemeSpec(
        floor=TextureSpec(pattern="checker", rgb1=(0.25, 0.25, 0.28), rgb2=(0.75, 0.75, 0.78), size=256, repeat=20),
        sky=TextureSpec(pattern="gradient", rgb1=(0.85, 0.85, 0.88), rgb2=(0.35, 0.35, 0.40), size=256),
    ),
}


class RenderSpec(Strict):
    width: StrictInt = Field(default=224, ge=16, le=4096)
    height: StrictInt = Field(default=224, ge=16, le=4096)
    camera: CameraSpec | None = Field(default=None, description="MuJoCo scenes only")
    shadow_size: StrictInt = Field(
        default=1024,
        ge=0,
        le=16384,
        description="MuJoCo shadow-map resolution; 0 turns shadows off. At 224x224, 1024 looks the same as "
        "MuJoCo's usual 4096 and renders ~1.5x faster in software GL; no shadows is ~2.8x faster, but "
        "whether a body touches the floor is then hard to see",
    )
    theme: Annotated[
        Union[Annotated[str, Tag("name")], Annotated[ThemeSpec, Tag("inline")]],
        Discriminator(lambda v: "name" if isinstance(v, str) else "inline"),
    ] | None = Field(default=None, description="a built-in theme name (see vlmbench.envs.themes) or an inline theme")

    @field_validator("theme")
    @classmethod
    def _known_theme(cls, v: str | ThemeSpec | None) -> str | ThemeSpec | None:
        if isinstance(v, str) and v not in THEMES:
            raise ValueError(f"unknown theme '{v}'; built-in themes: {', '.join(THEMES)}")
        return v


class RatingPrompt(Strict):
    question: str
    classes: list[str] = Field(min_length=2, description="ordered from worst to best")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("rating classes must be distinct")
        return v


class PromptSpec(Strict):
    goal: list[str] = Field(min_length=1, description="goal prompts; their embeddings are averaged")
    baseline: list[str] = Field(default_factory=list, description="baseline prompts (VLM-RM)")
    pairwise: str | None = Field(default=None, description="question for pairwise judges")
    rating: RatingPrompt | None = None
    yes_no: str | None = Field(default=None, description="question a yes-probability judge answers")

    @field_validator("goal", "baseline", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class _Feature(Strict):
    description: str = ""


class ObservationFeature(_Feature):
    kind: Literal["observation"]
    index: StrictInt = Field(ge=0)


class StateFeature(_Feature):
    """An entry of a classic-control env's internal ``state`` vector."""

    kind: Literal["state"]
    index: StrictInt = Field(ge=0)


class JointFeature(_Feature):
    """A MuJoCo joint's position (qpos) or velocity (qvel); ``index`` selects within free/ball joints."""

    kind: Literal["joint_position", "joint_velocity"]
    joint: str
    index: StrictInt = Field(default=0, ge=0)


class BodyPositionFeature(_Feature):
    kind: Literal["body_position"]
    body: str
    axis: Literal["x", "y", "z"]


class BodyUprightFeature(_Feature):
    """Cosine between a body's local axis and the world z axis (1 upright, -1 upside down)."""

    kind: Literal["body_upright"]
    body: str
    local_axis: Literal["x", "y", "z"] = "z"


class BodyDistanceFeature(_Feature):
    kind: Literal["body_distance"]
    body: str
    other: str
    axes: Literal["xyz", "xy", "z"] = "xyz"


class ContactFeature(_Feature):
    """1.0 when any geom of ``body`` touches any geom of ``other`` (a body, or 'floor'), else 0.0."""

    kind: Literal["contact"]
    body: str
    other: str = "floor"


Feature = Annotated[
    ObservationFeature | StateFeature | JointFeature | BodyPositionFeature
    | BodyUprightFeature | BodyDistanceFeature | ContactFeature,
    Field(discriminator="kind"),
]


class EvaluationSpec(Strict):
    success_fraction: StrictFloat = Field(
        default=0.5, gt=0, le=1, description="an episode succeeds when the goal holds this often"
    )
    episodes: StrictInt = Field(default=20, gt=0, le=MAX_EVALUATION_EPISODES)


class TaskSpec(Strict):
    """A declarative task: environment, camera, prompts and success detector."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: StrictInt = Field(default=1, ge=1)
    aliases: list[str] = Field(default_factory=list)
    description: str = Field(min_length=1, description="the task, and its success detector in words")
    source: str = Field(description=f"one of: {', '.join(SOURCES)}")
    env: EnvSpec
    render: RenderSpec = RenderSpec()
    prompts: PromptSpec
    features: dict[Annotated[str, AfterValidator(_feature_name)], Feature] = Field(min_length=1)
    success: str = Field(description="boolean expression over features: the goal holds")
    progress: str = Field(description="expression over features in [0, 1]: closeness to the goal")
    evaluation: EvaluationSpec = EvaluationSpec()

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v not in SOURCES:
            raise ValueError(f"unknown source '{v}'; one of: {', '.join(SOURCES)}")
        return v

    @field_validator("success", "progress")
    @classmethod
    def _expression_compiles(cls, v: str, info: ValidationInfo) -> str:
        features = info.data.get("features")
        if features is None:  # the features themselves are invalid and reported on their own
            return v
        try:
            Expression(v, features)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return v

    @cached_property
    def success_expression(self) -> Expression:
        return Expression(self.success, self.features)

    @cached_property
    def progress_expression(self) -> Expression:
        return Expression(self.progress, self.features)

    def is_success(self, features: dict[str, float]) -> bool:
        return bool(self._evaluate("success", self.success_expression, features))

    def progress_of(self, features: dict[str, float]) -> float:
        return float(self._evaluate("progress", self.progress_expression, features))

    def _evaluate(self, field: str, expression: Expression, features: dict[str, float]) -> float | bool:
        try:
            return expression(features)
        except ExpressionError as exc:
            error = VlmbenchError(f"task '{self.id}': {field}: {exc}")
            error.field = (field,)
            raise error from None
