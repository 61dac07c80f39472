"""Training throughput of the judge reward paths against their plain baselines, side by side in one run.

(1) PPO on cartpole-upright, environment steps per second: with the learned-reward path as the
    feedback loop's runs have it (JudgeRewardVecEnv handing on each step's reward-model inputs and
    cutting the stream into segments; LearnedRewardCallback rewarding each rollout in one
    RewardEnsemble.predict) against the plain wrapper (no reward model, no segments), same PPO
    settings and seed. Target: the learned-reward path at least 0.95x as fast
    (also given from process CPU time). Feedback rounds (buying labels, refitting the ensemble) are
    left out: they are scheduled work, not a per-step cost. The three agents train in turns of
    --ppo-chunk steps, so the machine's slow spells fall on all of them alike.
(2) SAC on humanoid-kneel scored by a CLIP judge on a tiny random open_clip model (frames rendered
    at every step, each rollout relabelled in one batch by ScoreRelabelCallback), against
    (b) rendering alone: a random-policy rollout of the same number of frames, and (c) SAC on the
    same envs without rendering or judge. Timed once each (rendering dominates and varies little).

    python bench/bench_training.py
    python bench/bench_training.py --ppo-steps 20000 --sac-steps 2000 --sac-envs 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from vlmbench.agents import vec_env
from vlmbench.agents.algorithms import make_algorithm
from vlmbench.agents.relabel import LearnedRewardCallback, ScoreRelabelCallback
from vlmbench.agents.vec_env import JudgeRewardVecEnv, make_vec_env
from vlmbench.envs.rollout import rollout
from vlmbench.judges.clip import ClipJudge, ClipParams
from vlmbench.learning import RewardEnsemble, Segment, SegmentBuffer
from vlmbench.results.record import RunRecord
from vlmbench.specs.catalogue import resolve_task

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def wrap(venv, *, learned: bool = False, on_segment=None, keep_pixels: bool = False, rounds_to_come: bool = True
         ) -> JudgeRewardVecEnv:
    """The run's wrapper around ``venv``, with observation inputs (the default reward-model inputs)."""
    return JudgeRewardVecEnv(venv, attach_inputs=learned, inputs_fn=vec_env.observation_inputs(False),
                             segment_length=1, on_segment=on_segment, keep_pixels=keep_pixels,
                             collecting=lambda: rounds_to_come)


class Segments:
    """What FeedbackLoop.add_segment does with each finished segment: key it and buffer it."""

    def __init__(self, capacity: int = 2048):
        self.buffer, self.seen = SegmentBuffer(capacity), 0

    def add(self, inputs: np.ndarray, frames: tuple) -> None:
        self.seen += 1
        self.buffer.add(Segment(key=f"s{self.seen}", inputs=inputs.astype(np.float32), frames=frames))


def time_learn(make_env, algorithm: str, steps: int, seed: int, kwargs: dict | None = None, callback=None,
               cpu: list | None = None) -> float:
    """Wall seconds of ``steps`` of learning; the process's CPU seconds are appended to ``cpu`` if given."""
    env = make_env()
    model = make_algorithm(algorithm, env, seed=seed, kwargs=kwargs or {}, tensorboard_log=None, device="cpu")
    began, began_cpu = time.perf_counter(), time.process_time()
    model.learn(steps, callback=callback() if callback else None)
    seconds = time.perf_counter() - began
    if cpu is not None:
        cpu.append(time.process_time() - began_cpu)
    env.close()
    return seconds


def bench_ppo(args, console: Console) -> None:
    task = resolve_task("cartpole-upright")
    ensemble = RewardEnsemble(4, members=3, hidden=(64, 64, 64, 64), seed=0)  # the default FeedbackConfig's
    segments = Segments()

    def learned():
        return wrap(make_vec_env(task, n_envs=args.ppo_envs, render=False, subprocess=False),
                    learned=True, on_segment=segments.add)

    def plain():
        return wrap(make_vec_env(task, n_envs=args.ppo_envs, render=False, subprocess=False))

    def after_rounds():
        return wrap(make_vec_env(task, n_envs=args.ppo_envs, render=False, subprocess=False),
                    learned=True, on_segment=segments.add, rounds_to_come=False)

    def rewarded():
        return LearnedRewardCallback(ensemble)

    # variant: (its envs, its callback)
    variants = {"(a) learned reward + segments": (learned, rewarded), "(b) plain wrapper": (plain, None),
                "(c) learned reward, rounds over": (after_rounds, rewarded)}
    time_learn(plain, "ppo", 512, args.seed)  # warm up: imports, first allocations
    segments.seen = 0
    # One agent per variant, trained in turns of --ppo-chunk steps, so that a slow spell of the
    # machine falls on all three alike rather than on whichever variant was running.
    models = {name: make_algorithm("ppo", make(), seed=args.seed, kwargs={}, tensorboard_log=None, device="cpu")
              for name, (make, _) in variants.items()}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for turn in range(-(-args.ppo_steps // args.ppo_chunk)):
        for name, (_, callback) in variants.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            models[name].learn(args.ppo_chunk, callback=callback() if callback else None, reset_num_timesteps=turn == 0)
            wall[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
    steps = {name: model.num_timesteps for name, model in models.items()}
    for model in models.values():
        model.get_env().close()
    total = {name: sum(times) for name, times in wall.items()}
    rate = {name: steps[name] / seconds for name, seconds in total.items()}
    table = Table(title=f"(1) PPO on cartpole-upright: {steps[next(iter(steps))]:,} steps per variant in turns of "
                  f"{args.ppo_chunk:,}, {args.ppo_envs} envs, {torch.get_num_threads()} torch thread(s)")
    for column, justify in (("variant", "left"), ("seconds", "right"), ("env steps/s", "right"),
                            ("CPU seconds", "right")):
        table.add_column(column, justify=justify)
    for name, seconds in total.items():
        table.add_row(name, f"{seconds:.2f}", f"{rate[name]:,.0f}", f"{sum(cpu[name]):.2f}")
    console.print(table)
    a, b, c = rate.values()
    cpu_a, cpu_b, cpu_c = (sum(times) for times in cpu.values())
    console.print(f"learned-reward path over plain (a/b): {a / b:.3f}x  (target >= 0.95)  "
                  f"[(a) collected {segments.seen:,} segments]")
    console.print(f"the same from process CPU time: {cpu_b / cpu_a:.3f}x")
    name_a, name_b, _ = variants
    turns = np.array(wall[name_b]) / np.array(wall[name_a])
    console.print(f"a/b turn by turn: median {np.median(turns):.3f}x, middle half {np.quantile(turns, 0.25):.3f}x "
                  f"to {np.quantile(turns, 0.75):.3f}x (the spread is the machine's noise)")
    console.print(f"after the last feedback round, no segments (c/b): {c / b:.3f}x, from CPU time {cpu_b / cpu_c:.3f}x")
    # The default schedule buys its rounds over the first half of the steps: (a) then (c).
    whole = 2 / (1 / a + 1 / c)
    console.print(f"a whole run with the default schedule (half (a), half (c)) over plain: {whole / b:.3f}x, "
                  f"from CPU time {cpu_b / ((cpu_a + cpu_c) / 2):.3f}x  (target >= 0.95)")


def bench_sac(args, console: Console) -> None:
    task = resolve_task("humanoid-kneel")
    folder = Path(tempfile.mkdtemp(prefix="bench_training_"))
    (folder / "tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    judge = ClipJudge("clip-tiny", ClipParams.model_validate(
        {"model": "tiny-clip", "model_config": str(folder / "tiny-clip.json"), "device": "cpu"}))
    record = RunRecord(folder)
    # VLM-RM's SAC (gamma 0.95, lr 6e-4, one update per transition), starting updates early so that a
    # short run trains at all; rollouts of train_freq steps per env are relabelled as they end.
    sac = dict(learning_starts=args.sac_envs * args.train_freq, train_freq=args.train_freq,
               gradient_steps=args.sac_envs * args.train_freq)
    callbacks: list[ScoreRelabelCallback] = []

    def relabel():
        callbacks.append(ScoreRelabelCallback(task, judge, record))
        return callbacks[-1]

    judge.score(task, rollout(task, episodes=1, seed=99, steps=2, keep_states=False)[0].judge_frames())  # load
    steps = args.sac_steps
    seconds = {}
    seconds["(a) SAC + render + CLIP score"] = time_learn(
        lambda: wrap(make_vec_env(task, n_envs=args.sac_envs, render=True, subprocess=False), keep_pixels=True),
        "sac", steps, args.seed, sac, relabel)
    frames = callbacks[-1].queries  # SB3 finishes the last rollout, so this may exceed --sac-steps
    began = time.perf_counter()
    length = task.env.episode_length
    rendered = rollout(task, episodes=-(-frames // length), seed=args.seed, render=True, keep_states=False,
                       steps=min(length, frames))
    seconds["(b) rendering alone (random policy)"] = (time.perf_counter() - began) * frames / sum(map(len, rendered))
    seconds["(c) SAC, no rendering, no judge"] = time_learn(
        lambda: wrap(make_vec_env(task, n_envs=args.sac_envs, render=False, subprocess=False)),
        "sac", steps, args.seed, sac)
    rate = {name: frames / s for name, s in seconds.items()}
    table = Table(title=f"(2) SAC on humanoid-kneel: {frames} env steps ({args.sac_envs} envs, update every "
                  f"{args.train_freq} steps per env), CLIP {judge.describe_model()} (tiny, random) on cpu")
    for column, justify in (("variant", "left"), ("seconds", "right"), ("env steps/s", "right")):
        table.add_column(column, justify=justify)
    for name, s in seconds.items():
        table.add_row(name, f"{s:.2f}", f"{rate[name]:,.1f}")
    console.print(table)
    a, b, c = seconds.values()
    console.print(f"SAC + CLIP over rendering alone (b/a, throughput ratio): {b / a:.3f}x")
    console.print(f"SAC + CLIP over SAC without rendering (c/a): {c / a:.3f}x")
    console.print(f"left for CLIP scoring and relabelling, a - b - c: {a - b - c:.2f} s "
                  f"({(a - b - c) / a:.0%} of a)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ppo-steps", type=int, default=49152, help="PPO env steps per variant")
    parser.add_argument("--ppo-chunk", type=int, default=2048, help="PPO env steps per turn of a variant")
    parser.add_argument("--sac-steps", type=int, default=400, help="SAC env steps (all rendered in (a))")
    parser.add_argument("--ppo-envs", type=int, default=8, help="PPO envs (the run default)")
    parser.add_argument("--sac-envs", type=int, default=4, help="SAC envs (rendered in-process, one at a time)")
    parser.add_argument("--train-freq", type=int, default=25, help="SAC: steps per env between updates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (runs use 1 by default)")
    parser.add_argument("--only", choices=("ppo", "sac"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    if args.only in (None, "ppo"):
        bench_ppo(args, console)
    if args.only in (None, "sac"):
        bench_sac(args, console)


if __name__ == "__main__":
    main()
