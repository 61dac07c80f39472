"""Judge configs: a named judge type with its parameters (validated by the type's own model)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JudgeConfig(BaseModel):
    """One entry of judges/: ``type`` names a registered judge class, ``params`` its settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    type: str = Field(description="a built-in judge type or one from the 'vlmbench.judges' entry points")
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    params: dict[str, object] = Field(default_factory=dict)
    default_reward: Literal["score", "preference", "rating"] | None = Field(
        default=None, description="reward path `vlmbench run --reward auto` takes with this judge"
    )
