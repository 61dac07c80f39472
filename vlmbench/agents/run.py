"""`vlmbench run`: train an agent whose only reward comes from a judge, then evaluate it.

Stages: (1) the main stage, with the reward path the judge supports (score relabelling, or reward
learning from preferences or ratings); (2) optionally PPO on the frozen reward model (the GPT-4V
preference study's SAC-then-PPO); then evaluation by the task's success detector. Every stage
checkpoints, and a restarted run resumes from its latest checkpoint without re-buying labels.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.utils import set_random_seed

from vlmbench.agents.algorithms import make_algorithm, resolve_algorithm
from vlmbench.agents.checkpoints import (
    CheckpointCallback,
    ProgressCallback,
    load_agent,
    runtime_path,
    save_agent,
    save_runtime,
)
from vlmbench.agents.config import RunConfig
from vlmbench.agents.feedback import FeedbackLoop
from vlmbench.agents.relabel import LearnedRewardCallback, ScoreRelabelCallback
from vlmbench.agents.vec_env import JudgeRewardVecEnv, embedding_inputs, make_vec_env, observation_inputs
from vlmbench.errors import VlmbenchError
from vlmbench.files import atomic_write, write_json
from vlmbench.judges.base import Judge, Question
from vlmbench.judges.registry import build_judge
from vlmbench.learning.reward_nets import RewardEnsemble
from vlmbench.metrics.success import EvalResult, evaluate, summarise
from vlmbench.plots import learning_curves
from vlmbench.results.record import RunRecord, check_run_name, config_digest, library_versions, session_info
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
            if judge.can_answer(needs[mode]) and not (mode == "score" and judge.interactive):
                return mode
        raise VlmbenchError(f"judge '{judge.name}' answers no question a reward can be built from")
    if requested == "score" and judge.interactive:
        raise VlmbenchError(f"--reward score would ask judge '{judge.name}' about every environment step, and a "
                            "person answers it; use --reward preference")
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
    env_return_meaningful: bool  # False where the env's return is constant (termination never/absorbing)


def judge_usage(lines: list[dict]) -> dict:
    """What the judge's answers in a query log cost: answers, those from the judge's own cache, tokens in
    and out, dollars, and abstentions by reason (score batches count each frame as an answer)."""
    usage = {"answers": 0, "cache_hits": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "abstained": {}}
    abstained: dict[str, int] = {}
    for line in lines:
        provenance = line.get("provenance") or {}
        if "frames" in line:  # a relabelled rollout's summary line
            usage["answers"] += line["frames"]
            usage["cache_hits"] += line.get("cached", 0)
            usage["input_tokens"] += line.get("input_tokens", 0)
            usage["output_tokens"] += line.get("output_tokens", 0)
            usage["cost_usd"] += line.get("cost_usd", 0.0)
            if line.get("abstained"):
                reason = "; ".join(line.get("abstain_reasons") or []) or "no reason given"
                abstained[reason] = abstained.get(reason, 0) + line["abstained"]
            continue
        usage["answers"] += 1
        usage["cache_hits"] += bool(provenance.get("cached"))
        usage["input_tokens"] += provenance.get("input_tokens", 0)
        usage["output_tokens"] += provenance.get("output_tokens", 0)
        usage["cost_usd"] += provenance.get("cost_usd", 0.0)
        if line.get("value") is None:
            reason = line.get("abstain_reason") or "no reason given"
            abstained[reason] = abstained.get(reason, 0) + 1
    usage["cost_usd"] = round(usage["cost_usd"], 6)
    usage["abstained"] = abstained
    return usage


def default_run_name(task: TaskSpec, judge: str, mode: str, algorithm: str, config: RunConfig) -> str:
    """'<task>--<judge>--<reward mode>--<algorithm>--seed<N>--<config digest>': runs whose configs
    differ never share a folder, and a resume with more timesteps finds its run."""
    digest = config_digest(config.model_dump(mode="json"))[:6]
    return f"{task.id}--{judge}--{mode}--{algorithm}--seed{config.seed}--{digest}"


class Run:
    """One run: builds its parts from the config and the record folder, then executes the stages.

    Everything that can be wrong with the inputs is checked before the record folder exists.
    """

    def __init__(self, config: RunConfig, results_dir: Path, *, name: str | None, resume: bool, overwrite: bool,
                 log: Callable[[str], None] | None = None):
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
        self.header = {
            "config": config.model_dump(mode="json"), "algorithm": self.algorithm, "task": self.task.model_dump(mode="json"),
            "judge": judge_config.model_dump(mode="json"), "reward_mode": self.mode, "versions": library_versions(),
            "session": session_info(),
        }
        self.folder = results_dir / (check_run_name(name) if name else
                                     default_run_name(self.task, judge_config.name, self.mode, self.algorithm, config))
        self.resume, self.overwrite = resume, overwrite
        self.log = log
        self.eval_episodes = config.eval_episodes or self.task.evaluation.episodes
        self.loop: FeedbackLoop | None = None
        self.ensemble: RewardEnsemble | None = None
        self.score_callback: ScoreRelabelCallback | None = None
        self.latest_success: tuple[float, int] | None = None  # (rate, steps) of the last checkpoint evaluation
        self._next_eval = 0

    # -- bookkeeping ------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    @property
    def _stages_path(self) -> Path:
        return self.record.checkpoints / "stages.json"

    def _done_timesteps(self) -> dict[str, int]:
        """Timesteps each finished stage was trained for."""
        return json.loads(self._stages_path.read_text())["done"] if self._stages_path.exists() else {}

    def _mark_done(self, stage: str, timesteps: int) -> None:
        write_json(self._stages_path, {"done": {**self._done_timesteps(), stage: timesteps}})

    def _stage_done(self, stage: str, timesteps: int) -> bool:
        return self._done_timesteps().get(stage, -1) >= timesteps

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
        if self.latest_success is not None:  # named with its step: a rate measured earlier is no final result
            rate, steps = self.latest_success
            text += f", success {rate:.0%} at step {steps:,}"
        return text

    def policy_of(self, model: BaseAlgorithm):
        return lambda obs: model.predict(obs, deterministic=True)[0]

    def _evaluate_into_curves(self, model: BaseAlgorithm, row: dict) -> None:
        result = evaluate(self.task, self.policy_of(model), episodes=max(1, self.eval_episodes // 4),
                          seed=self.config.seed + EVAL_SEED_OFFSET)
        row.update(success_rate=result.success_rate, mean_progress=result.mean_progress,
                   mean_env_return=result.mean_env_return)
        self.latest_success = (result.success_rate, int(row["timesteps"]))

    def checkpoint_eval(self, stage: str, total: int):
        def on_checkpoint(model: BaseAlgorithm, checkpoint_bytes: int) -> None:
            if self.loop is not None:
                self.loop.save()
            row = {"timesteps": model.num_timesteps, "stage": stage, **self.counters(),
                   "checkpoint_mb": round(checkpoint_bytes / 2**20, 3)}
            every = self.config.eval_every
            if every and model.num_timesteps >= self._next_eval:
                self._next_eval = (model.num_timesteps // every + 1) * every
                self._evaluate_into_curves(model, row)
            self.record.log_curve(row)
            self.record.tick()
            self._say(f"{stage}: {model.num_timesteps:,}/{total:,} steps, {self.status()}, "
                      f"checkpoint {row['checkpoint_mb']:.1f} MB")
        return on_checkpoint

    def _first_eval_due(self, stage: str, model: BaseAlgorithm) -> int:
        """The next evaluation's timestep, from the evaluations curves.csv already holds for ``stage``."""
        every = self.config.eval_every
        if not every:  # evaluations at the end only
            return 2**62
        evaluated = [int(r["timesteps"]) for r in self.record.curve_rows() if r["stage"] == stage and r["success_rate"]]
        if evaluated:
            return (max(evaluated) // every + 1) * every
        return every if model.num_timesteps > 0 else 0

    # -- building ---------------------------------------------------------------------------
    def _env(self, *, collect: bool) -> JudgeRewardVecEnv:
        c = self.config
        pixel_inputs = self.mode != "score" and c.feedback.inputs == "image_embedding"
        render = pixel_inputs or (self.judge.needs_pixels and (self.mode == "score" or collect))
        venv = make_vec_env(self.task, n_envs=c.n_envs, render=render, subprocess=c.subprocess_envs)
        return JudgeRewardVecEnv(
            venv,
            attach_inputs=self.mode != "score",
            inputs_fn=embedding_inputs(self.embedder.embed) if pixel_inputs
            else observation_inputs(c.feedback.inputs == "observation+action"),
            segment_length=c.feedback.segment_length,
            on_segment=self.loop.add_segment if collect and self.loop is not None else None,
            keep_pixels=self.judge.needs_pixels,
            collecting=self.loop.wants_segments if collect and self.loop is not None else lambda: True,
            frames_only_for_segments=render and not pixel_inputs and self.mode != "score",
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
        for note in self.loop.load():  # a new run finds nothing to load
            self._say(f"note: {note}")

    def _model(self, stage: str, algorithm: str, env: JudgeRewardVecEnv) -> BaseAlgorithm:
        notes: list[str] = []
        model = load_agent(algorithm, self.record.checkpoints, stage, env, self.config.device, notes)
        for note in notes:
            self._say(f"note: {note}")
        if model is not None:
            return model
        return make_algorithm(algorithm, env, seed=self.config.seed, kwargs=self.config.algo_kwargs,
                              tensorboard_log=str(self.record.folder / "tensorboard"), device=self.config.device)

    # -- stages -----------------------------------------------------------------------------
    def _train_stage(self, stage: str, algorithm: str, timesteps: int, progress, *, collect: bool) -> BaseAlgorithm:
        env = self._env(collect=collect)
        try:
            model = self._model(stage, algorithm, env)
            self._next_eval = self._first_eval_due(stage, model)
            if stage == "agent" and self._next_eval == 0:  # a curve starts where learning starts
                row = {"timesteps": 0, "stage": stage, **self.counters()}
                self._evaluate_into_curves(model, row)
                self.record.log_curve(row)
                self._next_eval = self.config.eval_every
            callbacks = []
            if self.mode == "score":
                if self.score_callback is None:
                    self.score_callback = ScoreRelabelCallback(self.task, self.judge, self.record)
                    self.score_callback.restore_counts()
                callbacks.append(self.score_callback)
            else:  # the rollout is rewarded by the model it was collected under, before a round may refit it
                callbacks.append(LearnedRewardCallback(self.ensemble, refits=lambda: self.loop.state.rounds_done))
                if collect:
                    callbacks.append(self.loop)
            job = progress.add_task(f"{stage} ({algorithm})", total=timesteps, completed=model.num_timesteps,
                                    status=self.status()) if progress is not None else None
            callbacks += [
                CheckpointCallback(self.record.checkpoints, stage, self.config.checkpoint_every,
                                   self.checkpoint_eval(stage, timesteps)),
                ProgressCallback(progress, job, self.status),
            ]
            remaining = timesteps - model.num_timesteps
            if remaining > 0:
                model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=model.num_timesteps == 0,
                            tb_log_name=stage)
            save_agent(model, self.record.checkpoints, stage)
            save_runtime(model, runtime_path(self.record.checkpoints, stage))
            if self.loop is not None:
                self.loop.save()
            self._say(f"{stage}: finished {model.num_timesteps:,} steps, {self.status()}")
        finally:
            env.close()
        return model

    def stages(self) -> list[tuple[str, str, int]]:
        """(name, algorithm, timesteps) of each training stage."""
        stages = [("agent", self.algorithm, self.config.timesteps)]
        if self.config.final_ppo_timesteps and self.mode != "score":
            stages.append(("final_ppo", "ppo", self.config.final_ppo_timesteps))
        return stages

    def execute(self, progress=None) -> RunResult:
        """Open (or reopen) the record under its lock, then train and evaluate what is not done yet."""
        self.record, self.resumed = RunRecord.open(self.folder, self.header, resume=self.resume,
                                                   overwrite=self.overwrite)
        try:
            return self._execute(progress)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise
            raise VlmbenchError(f"cannot write the run record {self.folder}: {exc.strerror}; every answer bought "
                                "so far is kept: make room, then continue with --resume") from None
        except BaseException:
            if not self.resumed and self.record.is_untouched():
                self.record.discard()  # a run rejected at its start leaves no half-made folder
            raise
        finally:
            self.record.close()

    def _execute(self, progress) -> RunResult:
        if self.resume and not self.resumed:  # a mistyped --name must not look like a resumed run
            self._say(f"note: {self.record.folder} held no run to resume; starting one")
        for note in self.record.notes:
            self._say(f"note: {note}")
        stages = self.stages()
        trained = all(self._stage_done(name, steps) for name, _, steps in stages)
        if trained and (self.record.folder / "eval.json").exists():
            if all((self.record.folder / name).exists() for name in finishing_files(self.config)):
                return self.finished_result()  # resuming a finished run leaves its record as it was
            self.record.begin_session(self.header["session"])
            name, algorithm, _ = stages[-1]
            self._finish_media(load_agent(algorithm, self.record.checkpoints, name, None, self.config.device))
            self.record.tick(finished=True)
            self.record.finish()
            return self.finished_result()
        self.record.begin_session(self.header["session"])
        if self.mode != "score":
            self._build_feedback()
            if self.loop.reused:
                self._say(f"note: reused {self.loop.reused} answers already in queries.jsonl")
        model = None
        for i, (name, algorithm, timesteps) in enumerate(stages):
            set_random_seed(self.config.seed + i)
            model = self._train_stage(name, algorithm, timesteps, progress, collect=name == "agent")
            self._mark_done(name, timesteps)
        result = self.evaluate(model)
        usage = judge_usage(self.record.queries())
        self.record.write_json("judge_usage.json", usage)
        reasons = ", ".join(f"{n} {reason}" for reason, n in usage["abstained"].items())
        self._say(f"judge: {usage['answers']} answers ({usage['cache_hits']} from its cache), tokens in "
                  f"{usage['input_tokens']:,} out {usage['output_tokens']:,}, ${usage['cost_usd']:.4f}, abstained "
                  f"{sum(usage['abstained'].values())}{f' ({reasons})' if reasons else ''}")
        self.record.tick(finished=True)
        self.record.finish()
        c = self.counters()
        return RunResult(self.record.folder, result, int(c.get("labels", 0)), int(c.get("abstained", 0)),
                         self.task.env.termination == "keep")

    def finished_result(self) -> RunResult:
        saved = json.loads((self.record.folder / "eval.json").read_text())
        evaluation = EvalResult(**{k: saved[k] for k in ("success_rate", "mean_progress", "mean_env_return", "episodes")})
        final = self.record.curve_rows()[-1]
        return RunResult(self.record.folder, evaluation, int(final.get("labels") or 0),
                         int(final.get("abstained") or 0), self.task.env.termination == "keep")

    def evaluate(self, model: BaseAlgorithm) -> EvalResult:
        result = evaluate(self.task, self.policy_of(model), episodes=self.eval_episodes,
                          seed=self.config.seed + EVAL_SEED_OFFSET)
        self.record.log_curve({"timesteps": model.num_timesteps, "stage": "final", **self.counters(),
                               "success_rate": result.success_rate, "mean_progress": result.mean_progress,
                               "mean_env_return": result.mean_env_return})
        self.record.write_json("eval.json", {"task": self.task.id, "judge": self.config.judge,
                                             "success_fraction_required": self.task.evaluation.success_fraction,
                                             **result.to_dict()})
        self._finish_media(model)
        return result

    def _finish_media(self, model: BaseAlgorithm) -> None:
        """The files a finished run shows besides eval.json: curves.png, and an episode's GIF and contact sheet."""
        from vlmbench.envs.rollout import rollout

        if self.config.media:
            seed = self.config.seed + EVAL_SEED_OFFSET
            shown = rollout(self.task, episodes=1, seed=seed, policy=self.policy_of(model), render=True,
                            keep_states=False)
            save_episode_media(self.task, shown[0], summarise(self.task, shown), self.record.folder)
        learning_curves(self.record.folder / "curves.csv", self.record.folder / "curves.png",
                        f"{self.task.id} with {self.config.judge} ({self.mode}, {self.algorithm}, seed {self.config.seed})")


def finishing_files(config: RunConfig) -> tuple[str, ...]:
    """The files a run writes once it is trained and evaluated (after eval.json)."""
    return ("curves.png", "timing.json") + (("episode.gif", "episode.png") if config.media else ())


def save_episode_media(task: TaskSpec, episode, summary: EvalResult, folder: Path) -> None:
    """A GIF of one evaluation episode and a contact sheet of 12 of its frames."""
    import imageio.v3 as iio

    from vlmbench.plots import captioned, contact_sheet, save

    atomic_write(folder / "episode.gif", lambda tmp: iio.imwrite(tmp, np.stack(episode.frames), duration=50, loop=0))
    picks = np.linspace(0, len(episode) - 1, min(12, len(episode))).round().astype(int)
    tiles = [captioned(episode.frames[t], [f"step {t + 1}", f"progress {episode.progress[t]:.2f}"],
                       highlight=episode.successes[t]) for t in picks]
    verdict = "success" if summary.episodes[0]["success"] else "failure"
    shown = summary.episodes[0]
    title = (f"{task.id}: evaluation episode ({verdict}, goal held in {shown['success_fraction']:.0%} "
             f"of its {shown['horizon']} steps)")
    save(contact_sheet(tiles, columns=6, title=title), folder / "episode.png")


def train(config: RunConfig, *, results_dir: Path, name: str | None = None, resume: bool = False,
          overwrite: bool = False, progress=None, log: Callable[[str], None] | None = None) -> RunResult:
    """Run ``config`` to the end; ``progress`` (a rich Progress) or ``log`` (plain lines) show how it goes."""
    torch.set_num_threads(config.torch_threads)
    return Run(config, results_dir, name=name, resume=resume, overwrite=overwrite, log=log).execute(progress)
