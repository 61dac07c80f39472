"""`vlmbench run`: train an agent whose only reward comes from a judge, then evaluate it.

Stages: (1) the main stage, with the reward path the judge supports (score relabelling, or reward
learning from preferences or ratings); (2) optionally PPO on the frozen reward model (the GPT-4V
preference study's SAC-then-PPO); then evaluation by the task's success detector. Every stage
checkpoints, and a restarted run resumes from its latest checkpoint without re-buying labels.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed

from vlmbench.agents.algorithms import load_algorithm, make_algorithm, resolve_algorithm
from vlmbench.agents.checkpoints import CheckpointCallback, ProgressCallback, save_agent
from vlmbench.agents.config import RunConfig
from vlmbench.agents.feedback import FeedbackLoop
from vlmbench.agents.score_relabel import ScoreRelabelCallback
from vlmbench.agents.vec_env import JudgeRewardVecEnv, embedding_inputs, make_vec_env, observation_inputs
from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Judge, Question
from vlmbench.judges.registry import build_judge
from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.metrics.success import EvalResult, evaluate, summarise
from vlmbench.plots import learning_curves
from vlmbench.results.record import RunRecord, library_versions
from vlmbench.specs.catalogue import resolve_judge, resolve_task
from vlmbench.specs.task import TaskSpec

EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes never reuse training seeds


def reward_mode(requested: str, judge: Judge, default: str | None = None) -> str:
    """The reward path: 'score', 'preference' or 'rating', checked against what the judge answers.

    'auto' takes the judge config's ``default_reward``, else the first of score, preference, rating
    that the judge answers.
    """
    needs = {"score": Question.SCORE, "preference": Question.COMPARE, "rating": Question.RATE}
    if requested == "auto" and default is not None:
        requested = default
    if requested == "auto":
        for mode in ("score", "preference", "rating"):
            if judge.can_answer(needs[mode]):
                return mode
        raise VlmbenchError(f"judge '{judge.name}' answers no question a reward can be built from")
    if not judge.can_answer(needs[requested]):
        raise VlmbenchError(f"--reward {requested} needs a judge that answers '{needs[requested].value}'; "
                            f"'{judge.name}' does not")
    return requested


def task_spaces(task: TaskSpec) -> tuple[gym.spaces.Space, gym.spaces.Space]:
    """The task env's (observation, action) spaces, from an env built without rendering."""
    probe = gym.make(task.env.id, **task.env.kwargs)
    spaces = probe.observation_space, probe.action_space
    probe.close()
    return spaces


@dataclass
class RunResult:
    folder: Path
    evaluation: EvalResult
    labels: int
    abstained: int


class Run:
    """One run: builds its parts from the config and the record folder, then executes the stages."""

    def __init__(self, config: RunConfig, results_dir: Path, *, name: str | None, resume: bool, overwrite: bool):
        self.config = config
        self.task: TaskSpec = resolve_task(config.task)
        judge_config = resolve_judge(config.judge)
        self.judge = build_judge(judge_config, source=config.judge)
        self.mode = reward_mode(config.reward, self.judge, judge_config.default_reward)
        if self.mode == "rating" and self.task.prompts.rating is None:
            raise VlmbenchError(f"task '{self.task.id}' has no prompts.rating, so it cannot be trained from ratings")
        self.observation_space, self.action_space = task_spaces(self.task)
        self.algorithm = resolve_algorithm(config.algorithm, self.action_space)
        self.judge.warm_up()  # missing weights or clients fail here, before a record exists
        if self.mode != "score" and config.feedback.inputs == "image_embedding":
            self.embedder.warm_up()
        header = {
            "config": config.model_dump(mode="json"), "algorithm": self.algorithm, "task": self.task.model_dump(mode="json"),
            "judge": judge_config.model_dump(mode="json"), "reward_mode": self.mode, "versions": library_versions(),
        }
        # default name: '<task id>--<judge name>--<algorithm>--seed<N>', from the resolved specs (never a path)
        folder = results_dir / (name or f"{self.task.id}--{judge_config.name}--{self.algorithm}--seed{config.seed}")
        if overwrite and folder.exists():
            shutil.rmtree(folder)
        self.record, self.resumed = RunRecord.open(folder, header, resume=resume)
        self.eval_episodes = config.eval_episodes or self.task.evaluation.episodes
        self.loop: FeedbackLoop | None = None
        self.ensemble: RewardEnsemble | None = None
        self.score_callback: ScoreRelabelCallback | None = None
        self.stage_state = self._read_stage_state()
        self.latest_success: float | None = None  # from the last checkpoint evaluation, for the progress bar
        self._next_eval = config.eval_every

    # -- bookkeeping ------------------------------------------------------------------------
    def _read_stage_state(self) -> dict:
        path = self.record.checkpoints / "stages.json"
        return json.loads(path.read_text()) if path.exists() else {"done": []}

    def _mark_done(self, stage: str) -> None:
        if stage in self.stage_state["done"]:
            return
        self.stage_state["done"].append(stage)
        self.record.checkpoints.mkdir(parents=True, exist_ok=True)
        (self.record.checkpoints / "stages.json").write_text(json.dumps(self.stage_state))

    def counters(self) -> dict:
        if self.loop is not None:
            s = self.loop.state
            return {"labels": s.labels_bought, "abstained": s.abstained, "judge_cost_usd": round(s.cost_usd, 6),
                    **{f"reward_model_{k}": v for k, v in s.last_metrics.items() if k in ("loss", "accuracy")}}
        if self.score_callback is not None:
            c = self.score_callback
            return {"labels": c.queries, "abstained": c.abstained, "judge_cost_usd": round(c.cost_usd, 6)}
        return {}

    def status(self) -> str:
        c = self.counters()
        text = f"answers {c.get('labels', 0)}, abstained {c.get('abstained', 0)}, ${c.get('judge_cost_usd', 0):.2f}"
        if self.latest_success is not None:
            text += f", success {self.latest_success:.0%}"
        return text

    def policy_of(self, model: BaseAlgorithm):
        return lambda obs: model.predict(obs, deterministic=True)[0]

    def checkpoint_eval(self, stage: str):
        def on_checkpoint(model: BaseAlgorithm) -> None:
            if self.loop is not None:
                self.loop.save(self.record.checkpoints / "feedback")
            row = {"timesteps": model.num_timesteps, "stage": stage, **self.counters()}
            every = self.config.eval_every
            if every and model.num_timesteps >= self._next_eval:
                self._next_eval = (model.num_timesteps // every + 1) * every
                result = evaluate(self.task, self.policy_of(model), episodes=max(1, self.eval_episodes // 4),
                                  seed=self.config.seed + EVAL_SEED_OFFSET)
                row.update(success_rate=result.success_rate, mean_progress=result.mean_progress,
                           mean_env_return=result.mean_env_return)
                self.latest_success = result.success_rate
            self.record.log_curve(row)
        return on_checkpoint

    # -- building ---------------------------------------------------------------------------
    def _env(self, *, collect: bool) -> JudgeRewardVecEnv:
        c = self.config
        pixel_inputs = self.mode != "score" and c.feedback.inputs == "image_embedding"
        render = pixel_inputs or (self.judge.needs_pixels and (self.mode == "score" or collect))
        venv = make_vec_env(self.task, n_envs=c.n_envs, render=render, subprocess=c.subprocess_envs)
        return JudgeRewardVecEnv(
            venv,
            reward_fn=None if self.mode == "score" else self.ensemble.predict,
            inputs_fn=embedding_inputs(self.embedder.embed) if pixel_inputs
            else observation_inputs(c.feedback.inputs == "observation+action"),
            segment_length=c.feedback.segment_length,
            on_segment=self.loop.add_segment if collect and self.loop is not None else None,
            keep_pixels=self.judge.needs_pixels,
        )

    @cached_property
    def embedder(self):
        """The frozen image encoder of the pixel variant: a CLIP judge's, shared with its cache."""
        embedder = build_judge(resolve_judge(self.config.feedback.embedder), source=self.config.feedback.embedder)
        if not hasattr(embedder, "embed"):
            raise VlmbenchError(f"feedback.embedder: judge '{embedder.name}' has no image encoder to embed frames")
        return embedder

    def _reward_model_inputs(self) -> int:
        if self.config.feedback.inputs == "image_embedding":
            return int(self.embedder.embedding_dim)
        dim = int(np.prod(self.observation_space.shape))
        if self.config.feedback.inputs == "observation+action":
            dim += int(np.prod(self.action_space.shape)) or 1
        return dim

    def _build_feedback(self) -> None:
        f = self.config.feedback
        self.ensemble = RewardEnsemble(self._reward_model_inputs(), members=f.members, hidden=f.hidden,
                                       seed=self.config.seed)
        self.loop = FeedbackLoop(
            task=self.task, judge=self.judge, mode=self.mode, ensemble=self.ensemble, config=f,
            total_timesteps=self.config.timesteps, seed=self.config.seed, record=self.record,
            save_to=self.record.checkpoints / "feedback",
        )
        if (self.record.checkpoints / "feedback" / "feedback.pkl").exists():
            self.loop.load(self.record.checkpoints / "feedback")

    def _model(self, stage: str, algorithm: str, env: JudgeRewardVecEnv) -> BaseAlgorithm:
        path = self.record.checkpoints / f"{stage}.zip"
        if path.exists():
            model = load_algorithm(algorithm, str(path), env, self.config.device)
            replay = self.record.checkpoints / f"{stage}_replay.pkl"
            if isinstance(model, OffPolicyAlgorithm) and replay.exists():
                model.load_replay_buffer(replay)
            return model
        return make_algorithm(algorithm, env, seed=self.config.seed, kwargs=self.config.algo_kwargs,
                              tensorboard_log=str(self.record.folder / "tensorboard"), device=self.config.device)

    # -- stages -----------------------------------------------------------------------------
    def _train_stage(self, stage: str, algorithm: str, timesteps: int, progress, *, collect: bool) -> BaseAlgorithm:
        env = self._env(collect=collect)
        model = self._model(stage, algorithm, env)
        remaining = timesteps - model.num_timesteps
        callbacks = []
        if self.mode == "score":
            if self.score_callback is None:
                self.score_callback = ScoreRelabelCallback(self.task, self.judge, self.record)
                self.score_callback.restore_counts()
            callbacks.append(self.score_callback)
        elif collect:
            callbacks.append(self.loop)
        job = progress.add_task(f"{stage} ({algorithm})", total=timesteps, completed=model.num_timesteps,
                                status=self.status()) if progress is not None else None
        callbacks += [
            CheckpointCallback(self.record.checkpoints, stage, self.config.checkpoint_every, self.checkpoint_eval(stage)),
            ProgressCallback(progress, job, self.status),
        ]
        if remaining > 0:
            model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=model.num_timesteps == 0,
                        tb_log_name=stage)
        save_agent(model, self.record.checkpoints, stage)
        if self.loop is not None:
            self.loop.save(self.record.checkpoints / "feedback")
        env.close()
        return model

    def stages(self) -> list[tuple[str, str, int]]:
        """(name, algorithm, timesteps) of each training stage."""
        stages = [("agent", self.algorithm, self.config.timesteps)]
        if self.config.final_ppo_timesteps and self.mode != "score":
            stages.append(("final_ppo", "ppo", self.config.final_ppo_timesteps))
        return stages

    def execute(self, progress=None) -> RunResult:
        eval_path = self.record.folder / "eval.json"
        if all(name in self.stage_state["done"] for name, _, _ in self.stages()) and eval_path.exists():
            return self.finished_result()  # resuming a finished run leaves its record as it was
        started = time.time()
        if self.mode != "score":
            self._build_feedback()
        model = None
        for i, (name, algorithm, timesteps) in enumerate(self.stages()):
            set_random_seed(self.config.seed + i)
            model = self._train_stage(name, algorithm, timesteps, progress, collect=name == "agent")
            self._mark_done(name)
        result = self.evaluate(model)
        self.record.finish({"seconds": round(time.time() - started, 3), "resumed": self.resumed})
        c = self.counters()
        return RunResult(self.record.folder, result, int(c.get("labels", 0)), int(c.get("abstained", 0)))

    def finished_result(self) -> RunResult:
        saved = json.loads((self.record.folder / "eval.json").read_text())
        evaluation = EvalResult(**{k: saved[k] for k in ("success_rate", "mean_progress", "mean_env_return", "episodes")})
        final = self.record.final_curve_row()
        return RunResult(self.record.folder, evaluation, int(final.get("labels") or 0), int(final.get("abstained") or 0))

    def evaluate(self, model: BaseAlgorithm) -> EvalResult:
        from vlmbench.envs.rollout import rollout

        policy = self.policy_of(model)
        seed = self.config.seed + EVAL_SEED_OFFSET
        result = evaluate(self.task, policy, episodes=self.eval_episodes, seed=seed)
        self.record.write_json("eval.json", {"task": self.task.id, "judge": self.config.judge,
                                             "success_fraction_required": self.task.evaluation.success_fraction,
                                             **result.to_dict()})
        self.record.log_curve({"timesteps": model.num_timesteps, "stage": "final", **self.counters(),
                               "success_rate": result.success_rate, "mean_progress": result.mean_progress,
                               "mean_env_return": result.mean_env_return})
        shown = rollout(self.task, episodes=1, seed=seed, policy=policy, render=True, keep_states=False)
        save_episode_media(self.task, shown[0], summarise(self.task, shown), self.record.folder)
        learning_curves(self.record.folder / "curves.csv", self.record.folder / "curves.png",
                        f"{self.task.id} with {self.config.judge} ({self.mode}, {self.algorithm}, seed {self.config.seed})")
        return result


def save_episode_media(task: TaskSpec, episode, summary: EvalResult, folder: Path) -> None:
    """A GIF of one evaluation episode and a contact sheet of 12 of its frames."""
    import imageio.v3 as iio

    from vlmbench.plots import captioned, contact_sheet, save

    iio.imwrite(folder / "episode.gif", np.stack(episode.frames), duration=50, loop=0)
    picks = np.linspace(0, len(episode) - 1, min(12, len(episode))).round().astype(int)
    tiles = [captioned(episode.frames[t], [f"step {t + 1}", f"progress {episode.progress[t]:.2f}"],
                       highlight=episode.successes[t]) for t in picks]
    verdict = "success" if summary.episodes[0]["success"] else "failure"
    title = f"{task.id}: evaluation episode ({verdict}, goal held {episode.success_fraction():.0%} of steps)"
    save(contact_sheet(tiles, columns=6, title=title), folder / "episode.png")


def train(config: RunConfig, *, results_dir: Path, name: str | None = None, resume: bool = False,
          overwrite: bool = False, progress=None) -> RunResult:
    torch.set_num_threads(config.torch_threads)
    return Run(config, results_dir, name=name, resume=resume, overwrite=overwrite).execute(progress)
