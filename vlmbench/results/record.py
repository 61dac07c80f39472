"""One run's record on disk (the layout every later tool reads).

    <run>/header.json       config, task and judge specs, seeds, library versions
    <run>/queries.jsonl     one line per judge query: what was asked, the answer, its provenance
    <run>/curves.csv        timesteps, labels, reward-model fit, success at each checkpoint
    <run>/eval.json         the final evaluation, per episode
    <run>/curves.png        curves.csv plotted; episode.gif and episode.png show one evaluation episode
    <run>/timing.json       wall-clock times (kept apart so seeded runs compare byte for byte)
    <run>/checkpoints/      agent, reward model, labels, feedback state
    <run>/tensorboard/      TensorBoard logs
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Answer

LIBRARIES = ("vlmbench", "torch", "stable-baselines3", "gymnasium", "mujoco", "numpy", "open_clip_torch")
CURVE_FIELDS = ("timesteps", "stage", "labels", "abstained", "judge_cost_usd", "reward_model_loss",
                "reward_model_accuracy", "success_rate", "mean_progress", "mean_env_return")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


class RunRecord:
    """Creates or reopens a run folder; appends queries and curve rows as they happen."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.checkpoints = folder / "checkpoints"
        self._started = time.time()

    @classmethod
    def open(cls, folder: Path, header: dict, *, resume: bool) -> tuple[RunRecord, bool]:
        """A new record, or the existing one when resuming the same config; returns (record, resumed)."""
        record = cls(folder)
        path = folder / "header.json"
        header = {**header, "config_digest": _digest(header["config"])}
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("config_digest") != header["config_digest"]:
                raise VlmbenchError(
                    f"{folder} holds a run with a different config; choose another --name or pass --overwrite"
                )
            if not resume:
                raise VlmbenchError(f"{folder} already holds this run; pass --resume to continue it or --overwrite")
            return record, True
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        with open(folder / "curves.csv", "w", newline="") as fh:
            csv.writer(fh).writerow(CURVE_FIELDS)
        (folder / "queries.jsonl").touch()
        return record, False

    @property
    def header(self) -> dict:
        return json.loads((self.folder / "header.json").read_text())

    def log_query(self, round_index: int, timesteps: int, segment_keys: list[str], answer: Answer) -> None:
        line = {"round": round_index, "timesteps": timesteps, "segments": segment_keys, **answer.to_dict()}
        line["provenance"] = {k: v for k, v in line["provenance"].items() if k != "seconds"}
        with open(self.folder / "queries.jsonl", "a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")

    def log_score_batch(self, timesteps: int, answers: list[Answer]) -> None:
        """Score judges answer thousands of frames: one summary line per relabelled rollout."""
        values = [a.value for a in answers if not a.abstained]
        reasons = sorted({a.abstain_reason for a in answers if a.abstained})
        line = {
            "timesteps": timesteps, "question": "score", "frames": len(answers),
            "cached": sum(a.provenance.cached for a in answers), "abstained": len(answers) - len(values),
            "abstain_reasons": reasons, "mean": sum(values) / len(values) if values else None,
            "min": min(values, default=None), "max": max(values, default=None),
            "cost_usd": sum(a.provenance.cost_usd for a in answers),
        }
        with open(self.folder / "queries.jsonl", "a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")

    def score_batches(self) -> list[dict]:
        """The summary lines of relabelled rollouts logged so far."""
        with open(self.folder / "queries.jsonl") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
        return [line for line in lines if line.get("question") == "score" and "frames" in line]

    def log_curve(self, row: dict) -> None:
        with open(self.folder / "curves.csv", "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in CURVE_FIELDS])

    def final_curve_row(self) -> dict:
        """The last row of curves.csv (the final evaluation's)."""
        with open(self.folder / "curves.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return rows[-1] if rows else {}

    def write_json(self, name: str, data: dict) -> Path:
        path = self.folder / name
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    def finish(self, timing: dict) -> None:
        self.write_json("timing.json", {**timing, "wall_seconds_this_session": round(time.time() - self._started, 3)})
