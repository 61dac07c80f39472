"""Evaluation and run records written directly (no judge, no training), in the layout vlmbench writes."""

from __future__ import annotations

import json
from pathlib import Path

from vlmbench.results.eval_record import RECORD_KIND as EVAL_KIND
from vlmbench.results.record import CURVE_FIELDS
from vlmbench.results.record import RECORD_KIND as RUN_KIND


def metric(value, low=None, high=None, n=100) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high, "n": n, "note": ""}


def judge_config(judge: str, model: str | None = None) -> dict:
    if model is None:
        return {"name": judge, "type": "oracle", "params": {}}
    return {"name": judge, "type": "clip", "params": {"model": model}}


def write_eval(root: Path, task: str, judge: str, seed: int, metrics: dict, *, model: str | None = None,
               calls: int = 100, cost_usd: float = 0.0, abstained: int = 0, schema: int | None = 1) -> Path:
    """An evaluation record under ``root``/evals/seed<seed>/<task>--<judge> with the given metric dicts."""
    folder = root / "evals" / f"seed{seed}" / f"{task}--{judge}"
    folder.mkdir(parents=True, exist_ok=True)
    versioned = {} if schema is None else {"schema": schema}
    header = {"record": EVAL_KIND, **versioned, "task": {"id": task}, "judge": judge_config(judge, model),
              "settings": {"seed": seed}}
    (folder / "header.json").write_text(json.dumps(header))
    summary = {"record": EVAL_KIND, **versioned, "task": task, "judge": judge, "settings": {"seed": seed},
               "metrics": metrics, "calls": calls, "reused_answers": 0, "cost_usd": cost_usd,
               "total_calls": calls, "total_cost_usd": cost_usd, "abstained": {"refused": abstained} if abstained else {}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def write_run(root: Path, task: str, judge: str, seed: int, successes: list[bool], *, cost_usd: float = 0.0,
              labels: int = 50, timesteps: int = 1000, summary: bool = False) -> Path:
    """A finished run record: header.json, eval.json and curves.csv (and summary.json when ``summary``)."""
    from vlmbench.results.record import run_summary

    folder = root / "runs" / f"{task}--{judge}--seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    header = {"record": RUN_KIND, "schema": 1, "task": {"id": task}, "judge": judge_config(judge),
              "config": {"seed": seed, "timesteps": timesteps, "final_ppo_timesteps": 0},
              "reward_mode": "preference", "algorithm": "ppo"}
    (folder / "header.json").write_text(json.dumps(header))
    episodes = [{"success": s, "seed": i} for i, s in enumerate(successes)]
    rate = sum(successes) / len(successes)
    (folder / "eval.json").write_text(json.dumps({"success_rate": rate, "mean_progress": 0.5,
                                                  "mean_env_return": 0.0, "episodes": episodes}))
    final = {"timesteps": timesteps, "stage": "final", "labels": labels, "abstained": 0, "judge_cost_usd": cost_usd,
             "success_rate": rate}
    (folder / "curves.csv").write_text(",".join(CURVE_FIELDS) + "\n"
                                       + ",".join(str(final.get(k, "")) for k in CURVE_FIELDS) + "\n")
    if summary:
        (folder / "summary.json").write_text(json.dumps(run_summary(folder)))
    return folder
