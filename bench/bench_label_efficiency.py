"""Label efficiency of preference learning under judge noise: success rate against label budget.

Each cell (task, judge, learner, budget, seed) is one `vlmbench run` without its rendered episode
(the package's train() with media off, named <task>--<judge>--<learner>--b<budget>--seed<N> under
--results), so a rerun skips every cell whose run record is finished and resumes an interrupted
one. Cells run in --jobs processes, each with one thread; Ctrl-C stops them all at once, and the
next run resumes the cells it cut short. A seed succeeds when its final
evaluation's success rate is at least --success; the table and the PNG give, per task, judge,
learner and budget, the mean success rate over seeds with a 95% percentile-bootstrap interval, and
the seeds that succeeded. The targets are printed, never asserted.

Learners (FeedbackConfig options; everything else at its default):
  default       the plain Bradley-Terry learner
  robust        Bradley-Terry with a 0.2 mistake probability, contradicted pairs dropped
  fit           Bradley-Terry with a fitted mistake probability
  swap          each pair asked in both orders; disagreeing answers become ties
  disagreement  the pairs the ensemble members disagree on most, instead of uniform ones

    python bench/bench_label_efficiency.py --quick
    python bench/bench_label_efficiency.py --jobs 2                      # the whole grid
    python bench/bench_label_efficiency.py --tasks cartpole-upright --budgets 50 200 \\
        --judges oracle-noisy oracle-mistakes-0.3 --learners default robust --jobs 1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

LEARNERS = {
    "default": {},
    "robust": {"mistake_prob": 0.2, "contradicted_weight": 0.0},
    "fit": {"mistake_prob": "fit"},
    "swap": {"position": "swap-tie"},
    "disagreement": {"sampler": "disagreement"},
}
JUDGES = ["oracle", "oracle-mistakes-0.1", "oracle-mistakes-0.2", "oracle-mistakes-0.3", "oracle-first-bias-0.3"]
TARGET_JUDGES = {"cartpole-upright": ["oracle-noisy"]}  # read by a target on that task alone
BUDGETS = [25, 50, 100, 200, 400]
# The agent per task. cartpole-upright: PPO with the run defaults learns its policy well within 40k
# steps. mountaincar-flag: DQN with rl-zoo's MountainCar-v0 settings, which reached the flag from the
# oracle's learned reward (200 labels) in 4 of 5 seeds at 80k steps, the fifth in 75% of its episodes
# (the run's DQN defaults: 3 of 5, some seeds forgetting it again); PPO with the run defaults settles
# on one action there, even with the true progress as its reward.
AGENTS = {
    "cartpole-upright": {"algorithm": "ppo", "timesteps": 40_000, "algo_kwargs": {}},
    "mountaincar-flag": {"algorithm": "dqn", "timesteps": 80_000, "algo_kwargs": dict(
        learning_rate=4e-3, batch_size=128, buffer_size=10_000, learning_starts=1000, gamma=0.98,
        target_update_interval=600, train_freq=16, gradient_steps=8, exploration_fraction=0.2,
        exploration_final_eps=0.07, policy_kwargs=dict(net_arch=[256, 256]))},
}


def cell_name(task: str, judge: str, learner: str, budget: int, seed: int) -> str:
    return f"{task}--{judge}--{learner}--b{budget}--seed{seed}"


def finished(folder: Path, agent: dict) -> bool:
    """Whether the cell's run record says its last session finished the run; a record trained with
    another algorithm or number of steps stops the benchmark rather than being counted."""
    timing = folder / "timing.json"
    if not ((folder / "eval.json").exists() and timing.exists()):
        return False
    header = json.loads((folder / "header.json").read_text())
    trained = {"algorithm": header["algorithm"],  # as resolved from 'auto'
               "timesteps": header["config"]["timesteps"], "algo_kwargs": header["config"]["algo_kwargs"]}
    if trained != json.loads(json.dumps(agent)):
        print(f"{folder}: trained with {trained}, not {agent}; give another --results", file=sys.stderr)
        raise SystemExit(2)
    sessions = json.loads(timing.read_text()).get("sessions") or [{}]
    return bool(sessions[-1].get("finished"))


def ignore_interrupts() -> None:
    """A worker leaves Ctrl-C to the parent, which stops every worker at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_cell(job: tuple[dict, str, int, dict]) -> dict:
    """Train one cell (or resume it), given (cell, results folder, episodes, agent); its success rate and wall time."""
    cell, results, episodes, agent = job
    os.environ["OMP_NUM_THREADS"] = "1"
    from vlmbench.agents.config import FeedbackConfig, RunConfig
    from vlmbench.agents.run import train

    config = RunConfig(task=cell["task"], judge=cell["judge"], seed=cell["seed"], **agent,
                       eval_episodes=episodes, eval_every=0, media=False,
                       feedback=FeedbackConfig(label_budget=cell["budget"], **LEARNERS[cell["learner"]]))
    began = time.perf_counter()
    result = train(config, results_dir=Path(results), name=cell_name(**cell), resume=True)
    return {**cell, "success_rate": result.evaluation.success_rate, "labels": result.labels,
            "seconds": time.perf_counter() - began}


def read_cell(cell: dict, results: Path) -> dict:
    saved = json.loads((results / cell_name(**cell) / "eval.json").read_text())
    return {**cell, "success_rate": saved["success_rate"]}


def summarise(rows: list[dict], success: float) -> dict:
    """Mean success rate with a 95% bootstrap interval over seeds, and the seeds that succeeded, per group."""
    rng = np.random.default_rng(0)
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["judge"], row["learner"], row["budget"]), []).append(row["success_rate"])
    out = {}
    for key, rates in groups.items():
        rates = np.array(rates)
        draws = rates[rng.integers(len(rates), size=(2000, len(rates)))].mean(1)
        out[key] = {"mean": float(rates.mean()), "low": float(np.quantile(draws, 0.025)),
                    "high": float(np.quantile(draws, 0.975)), "passed": int((rates >= success).sum()),
                    "seeds": len(rates)}
    return out


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(task, judge) for task, judge, _, _ in summary})
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
    for ax, (task, judge) in zip(axes.flat, panels, strict=False):
        shown = [lrn for lrn in LEARNERS if any(k[:3] == (task, judge, lrn) for k in summary)]
        for i, learner in enumerate(shown):
            points = sorted((b, s) for (t, j, lrn, b), s in summary.items() if (t, j, lrn) == (task, judge, learner))
            dodge = 1 + 0.05 * (i - (len(shown) - 1) / 2)  # learners side by side, so intervals do not overlap
            budgets = [b * dodge for b, _ in points]
            means, low, high = (np.array([s[k] for _, s in points]) for k in ("mean", "low", "high"))
            drawn = ax.errorbar(budgets, means, yerr=[means - low, high - means], marker="o", capsize=3,
                                label=learner)
            ax.fill_between(budgets, low, high, alpha=0.15, color=drawn.lines[0].get_color())
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted({b for *_, b in summary}), [str(b) for b in sorted({b for *_, b in summary})])
        ax.set_title(f"{task}\n{judge}", fontsize=9)
        ax.set_xlabel("label budget")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("success rate (mean, 95% CI)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def targets(summary: dict, console: Console) -> None:
    """The label-efficiency targets, on whatever cells the grid holds."""
    def best_budget(task: str, judge: str, learner: str, seeds_needed: int, most: int) -> str:
        cells = sorted((b, s) for (t, j, lrn, b), s in summary.items() if (t, j, lrn) == (task, judge, learner))
        cells = [(b, s) for b, s in cells if b <= most]
        if not cells:
            return "not measured"
        hit = [b for b, s in cells if s["passed"] >= seeds_needed and s["seeds"] >= 5]
        undecided = any(s["seeds"] < 5 and s["passed"] + 5 - s["seeds"] >= seeds_needed for _, s in cells)
        detail = ", ".join(f"{b}: {s['passed']}/{s['seeds']}" for b, s in cells)
        verdict = (f"[green]met[/green] from {hit[0]} labels" if hit else
                   "undecided (fewer than 5 seeds finished)" if undecided else "[red]not met[/red]")
        return f"{verdict} (seeds passing: {detail})"

    learners = sorted({lrn for _, _, lrn, _ in summary})
    for learner in learners:
        console.print(f"target, {learner}: oracle-noisy, >= 4 of 5 seeds from <= 200 preferences on cartpole-upright: "
                      + best_budget("cartpole-upright", "oracle-noisy", learner, 4, 200))
        console.print(f"target, {learner}: oracle, 5 of 5 seeds from <= 50 preferences on cartpole-upright: "
                      + best_budget("cartpole-upright", "oracle", learner, 5, 50))
    for task in sorted({t for t, *_ in summary}):
        default = {b: s for (t, j, lrn, b), s in summary.items() if (t, j, lrn) == (task, "oracle-mistakes-0.3", "default")}
        for learner in (lrn for lrn in learners if lrn != "default"):
            other = {b: s for (t, j, lrn, b), s in summary.items()
                     if (t, j, lrn) == (task, "oracle-mistakes-0.3", learner)}
            shared = sorted(set(default) & set(other))
            if not shared:
                continue
            better = [b for b in shared if other[b]["mean"] > default[b]["mean"]]
            verdict = "[green]met[/green]" if len(better) == len(shared) else "[red]not met[/red]"
            detail = ", ".join(f"{b}: {other[b]['mean']:.0%} vs {default[b]['mean']:.0%}" for b in shared)
            console.print(f"target, {task}: {learner} beats default at 30% mistakes at every budget: {verdict} ({detail})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(AGENTS))
    parser.add_argument("--judges", nargs="+", help="default: the noise levels on every task, and oracle-noisy on "
                        "cartpole-upright (a target reads it there)")
    parser.add_argument("--learners", nargs="+", default=["default", "robust"], choices=list(LEARNERS))
    parser.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 per cell")
    parser.add_argument("--episodes", type=int, default=20, help="final evaluation episodes per run")
    parser.add_argument("--timesteps", type=int, default=None, help="agent timesteps for every task (default: per task)")
    parser.add_argument("--success", type=float, default=0.9, help="success rate at which a seed counts as solved")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained in parallel processes")
    parser.add_argument("--results", default="results/label-efficiency", help="where the run records go")
    parser.add_argument("--report-only", action="store_true", help="summarise the finished cells; train nothing")
    parser.add_argument("--quick", action="store_true",
                        help="a CI-sized check: cartpole-upright, oracle and 30%% mistakes, budgets 25 and 50, "
                        "2 seeds, 4,096 timesteps, 4 evaluation episodes")
    args = parser.parse_args()
    from vlmbench.errors import VlmbenchError
    from vlmbench.specs.catalogue import resolve_judge, resolve_task

    if min(*args.budgets, args.seeds, args.episodes, args.jobs, args.timesteps or 1) < 1:
        parser.error("--budgets, --seeds, --episodes, --jobs and --timesteps must be at least 1")
    try:  # a misspelt name stops here, not in a worker process
        for name in args.tasks:
            resolve_task(name)
        for name in args.judges or []:
            resolve_judge(name)
    except VlmbenchError as exc:
        parser.error(str(exc))
    if args.quick:
        args.tasks, args.judges, args.budgets, args.seeds = ["cartpole-upright"], ["oracle", "oracle-mistakes-0.3"], [25, 50], 2
        args.timesteps, args.episodes = args.timesteps or 4096, 4
        args.results = str(Path(args.results) / "quick")
    agents = {task: {**AGENTS.get(task, {"algorithm": "ppo", "timesteps": 80_000, "algo_kwargs": {}}),
                     **({"timesteps": args.timesteps} if args.timesteps else {})} for task in args.tasks}
    results = Path(args.results)
    console = Console(width=160)
    # seeds outermost: a grid stopped early has every (task, judge, learner, budget) on its first seeds
    cells = [{"task": t, "judge": j, "learner": lrn, "budget": b, "seed": s} for s in range(args.seeds)
             for t in args.tasks for j in (args.judges or [*JUDGES, *TARGET_JUDGES.get(t, [])])
             for lrn in args.learners for b in args.budgets]
    done = [c for c in cells if finished(results / cell_name(**c), agents[c["task"]])]
    todo = [] if args.report_only else [c for c in cells if c not in done]
    console.print(f"{len(cells)} cells ({len(done)} finished, skipped), {len(todo)} to train in {args.jobs} process(es); "
                  f"agents {agents}; records in {results}")

    rows = [read_cell(c, results) for c in done]
    began = time.perf_counter()
    spent = []
    os.environ["OMP_NUM_THREADS"] = "1"
    jobs = [(c, str(results), args.episodes, agents[c["task"]]) for c in todo]
    if todo:
        with multiprocessing.get_context("spawn").Pool(args.jobs, initializer=ignore_interrupts) as pool:
            try:
                for row in pool.imap_unordered(run_cell, jobs):
                    rows.append(row)
                    spent.append(row["seconds"])
                    left = (time.perf_counter() - began) / len(spent) * (len(todo) - len(spent))
                    name = cell_name(**{k: row[k] for k in ("task", "judge", "learner", "budget", "seed")})
                    console.print(f"{name}: success {row['success_rate']:.0%}, {row['labels']} labels, "
                                  f"{row['seconds']:.0f} s ({len(spent)}/{len(todo)}, about {left / 60:.0f} min left)")
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stopping short
                pool.terminate()  # a run record survives its process being killed; the next run resumes it
                console.print(f"interrupted after {len(spent)} of {len(todo)} cells; run the same command to go on")
                raise SystemExit(130) from None
    if spent:
        console.print(f"trained {len(spent)} cells in {time.perf_counter() - began:.0f} s wall time "
                      f"({np.mean(spent):.0f} s per cell, {args.jobs} process(es))")

    summary = summarise(rows, args.success)
    table = Table(title=f"success rate against label budget (mean over seeds [95% CI]; seeds with success >= "
                  f"{args.success:.0%} / seeds finished)")
    for column in ("task", "judge", "learner", *map(str, sorted(args.budgets))):
        table.add_column(column, justify="left" if not column.isdigit() else "right")
    for task, judge, learner in sorted({k[:3] for k in summary}):
        cells_shown = []
        for budget in sorted(args.budgets):
            s = summary.get((task, judge, learner, budget))
            cells_shown.append("" if s is None else
                               f"{s['mean']:.0%} [{s['low']:.0%}, {s['high']:.0%}] {s['passed']}/{s['seeds']}")
        table.add_row(task, judge, learner, *cells_shown)
    console.print(table)
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text(json.dumps(
        [{"task": k[0], "judge": k[1], "learner": k[2], "budget": k[3], **v} for k, v in sorted(summary.items())],
        indent=1))
    plot(summary, results / "label_efficiency.png")
    console.print(f"curves: {results / 'label_efficiency.png'}; table: {results / 'summary.json'}")
    targets(summary, console)


if __name__ == "__main__":
    main()
