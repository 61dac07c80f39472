"""The run config: which task, judge and algorithm, and how judge feedback becomes reward."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Seeds of runs, envs and evaluation episodes (seed + 1,000,000 + i) must stay below numpy's 2**32.
MAX_SEED = 2**31 - 1


class FeedbackConfig(BaseModel):
    """Reward learning from compare or rate judges (ignored for score judges)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    label_budget: int = Field(default=200, ge=1, description="most judge labels bought in the whole run")
    initial_fraction: float = Field(default=0.25, gt=0, le=1, description="share of the budget in round one")
    rounds: int = Field(default=10, ge=1, description="feedback rounds (round one included)")
    until_fraction: float = Field(
        default=0.5, gt=0, le=1, description="rounds are spread over this leading share of the timesteps"
    )
    segment_length: int = Field(default=1, ge=1, description="frames per segment (the GPT-4V study used 1)")
    buffer_capacity: int = Field(
        default=2048,
        ge=2,
        description="recent segments kept for querying. The GPT-4V study kept 100 with one env; with "
        "n_envs envs a buffer must span whole episodes, or every pair comes from the same few steps",
    )
    sampler: Literal["uniform", "disagreement"] = "uniform"
    inputs: Literal["observation", "observation+action", "image_embedding"] = Field(
        default="observation",
        description="what the reward model reads; image_embedding: frozen embeddings of rendered frames",
    )
    embedder: str = Field(
        default="clip-vit-b32", description="judge config of a CLIP judge whose image encoder embeds frames"
    )
    members: int = Field(default=3, ge=1, description="reward-model ensemble size")
    hidden: tuple[int, ...] = (64, 64, 64, 64)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    mistake_prob: float | Literal["fit"] = Field(
        default=0.0,
        description="preference model P = (1 - e) sigmoid(R1 - R2) + e / 2: the judge's chance e (0 to 0.5) of a "
        "random label, bounding what a wrong label can cost; 'fit': learned with the reward model",
    )
    label_smoothing: float = Field(default=0.0, ge=0, le=1, description="preference labels p -> (1 - s) p + s / 2")
    contradicted_weight: float = Field(
        default=1.0, ge=0, le=1,
        description="weight of a preference the ensemble contradicts with at least contradicted_confidence "
        "(0: dropped), re-decided every epoch",
    )
    contradicted_confidence: float = Field(default=0.9, gt=0.5, lt=1)
    position: Literal["random", "swap-tie", "swap-drop"] = Field(
        default="random",
        description="random: each pair shown once, in random order (recorded in the query log), so a judge's "
        "first-position bias becomes symmetric noise; swap-tie / swap-drop: each pair asked in both orders "
        "(two labels of the budget), agreeing answers kept, disagreeing ones a tie (0.5) or dropped",
    )
    rating_loss: Literal["ce", "mae"] = "ce"
    rating_weighted: bool = True

    @field_validator("mistake_prob", mode="before")
    @classmethod
    def _mistake_prob_in_range(cls, value):
        if value == "fit":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 0.5:
            raise ValueError("must be 'fit' or a number from 0 to 0.5")
        return float(value)


class RunConfig(BaseModel):
    """Everything that determines a run; saved in its record and checked on resume."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    task: str
    judge: str
    algorithm: Literal["auto", "ppo", "sac", "dqn"] = Field(
        default="auto", description="auto: SAC for continuous actions (as VLM-RM), PPO for discrete ones"
    )
    reward: Literal["auto", "score", "preference", "rating"] = Field(
        default="auto", description="auto: score if the judge scores, else preference, else rating"
    )
    timesteps: int = Field(default=80_000, ge=1, description="agent steps (VLM-RM's humanoid runs used 10M)")
    final_ppo_timesteps: int = Field(default=0, ge=0, description="extra PPO stage on the frozen reward model")
    n_envs: int = Field(default=8, ge=1)
    subprocess_envs: bool = Field(default=False, description="step (and render) envs in worker processes")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seeds the agent, the envs and the reward model")
    algo_kwargs: dict[str, object] = Field(default_factory=dict, description="passed to the SB3 constructor")
    feedback: FeedbackConfig = FeedbackConfig()
    eval_episodes: int | None = Field(default=None, ge=1, description="default: the task's evaluation.episodes")
    eval_every: int = Field(
        default=20_000, ge=0, description="timesteps between checkpoint evaluations (0: at the end only)"
    )
    checkpoint_every: int = Field(default=10_000, ge=1, description="timesteps between checkpoints")
    media: bool = Field(default=True, description="a finished run renders one evaluation episode into episode.gif "
                        "and its contact sheet episode.png (seconds per run; grids of many runs may skip them)")
    device: str = "auto"
    torch_threads: int = Field(default=1, ge=1, description="CPU threads for torch (small MLPs run best on one)")
