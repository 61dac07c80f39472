"""One run's record on disk (the layout every later tool reads).

    <run>/header.json       what the run is: config, task and judge specs, library versions, how it started
    <run>/queries.jsonl     one line per judge query: what was asked, the answer, its provenance
    <run>/scores/           score judges: every frame's reward, one .npz per relabelled rollout
    <run>/curves.csv        timesteps, labels, reward-model fit, success at each checkpoint
    <run>/eval.json         the final evaluation, per episode
    <run>/curves.png        curves.csv plotted; episode.gif and episode.png show one evaluation episode
                            (unless the config sets media: false)
    <run>/timing.json       wall-clock times of every session (kept apart so seeded runs compare byte for byte)
    <run>/summary.json      written last, when the run is finished: task, judge, seed, success rate with its
                            interval, answers bought and their cost (what the results index reads)
    <run>/checkpoints/      agent, reward model, labels, feedback state
    <run>/tensorboard/      TensorBoard logs

The query log is append-only and flushed line by line: it is the record of what was bought.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.files import FolderLock, append_jsonl, append_lines, atomic_write, drop_torn_line, read_jsonl, write_json
from vlmbench.judges.base import Answer

RECORD_KIND = "vlmbench-run"
# The record layout's version, in every header.json and summary.json (records written before the field
# existed are version 1).
SCHEMA = 1
LIBRARIES = ("vlmbench", "torch", "stable-baselines3", "gymnasium", "mujoco", "numpy", "open_clip_torch")
CURVE_FIELDS = ("timesteps", "stage", "labels", "abstained", "judge_cost_usd", "reward_model_loss",
                "reward_model_accuracy", "success_rate", "mean_progress", "mean_env_return", "checkpoint_mb")
# Settings a resumed run may change: more timesteps extend a run rather than make another one.
EXTENDABLE = ("timesteps",)
# Settings of what a finished run shows, not of what it trains or measures: outside a run's identity,
# so a record made before such a setting existed, or with it changed, is still the same run.
PRESENTATION = ("media",)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def source_commit() -> str | None:
    """The git commit of the checkout vlmbench runs from (with '+dirty' for local changes), if any."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def session_info() -> dict:
    """How this process was started: the command line, the time, vlmbench's version and commit."""
    return {
        "command": shlex.join(["vlmbench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "vlmbench"
        else shlex.join(sys.argv),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "vlmbench": library_versions()["vlmbench"],
        "git_commit": source_commit(),
    }


def config_digest(config: dict) -> str:
    """Identifies a run's config, leaving out the settings a resume may extend or that only change
    what it shows."""
    kept = {k: v for k, v in config.items() if k not in EXTENDABLE + PRESENTATION}
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def _config_differences(old: object, new: dict) -> str:
    """' (setting: value there, value here; ...)' for the identity settings two run configs differ in."""
    def flat(config: dict, prefix: str = "") -> dict[str, object]:
        out = {}
        for key, value in config.items():
            if isinstance(value, dict) and value:
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    if not isinstance(old, dict):
        return ""
    there, here = flat(old), flat(new)
    changed = [key for key in sorted(set(there) | set(here))
               if key.split(".")[0] not in EXTENDABLE + PRESENTATION and there.get(key) != here.get(key)]
    listed = "; ".join(f"{key}: {there.get(key)} there, {here.get(key)} here" for key in changed)
    return f" ({listed})" if listed else ""


def check_run_name(name: str) -> str:
    """A run name is one plain folder name: never a path, '..', or something hidden."""
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise VlmbenchError(f"--name '{name}': a run name is one folder name of letters, digits and . _ + = - "
                            "(no '/', no leading '.' or '-')")
    return name


def is_run_record(folder: Path) -> bool:
    """True if ``folder`` holds a vlmbench run record (its header.json says so)."""
    try:
        header = json.loads((folder / "header.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and header.get("record") == RECORD_KIND


class RunRecord:
    """Creates or reopens a run folder, holding its lock; appends queries and curve rows as they happen."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.checkpoints = folder / "checkpoints"
        self.scores = folder / "scores"
        self.lock = FolderLock(folder)
        self.notes: list[str] = []  # repairs made while reopening, for the user to see
        self._started = time.time()
        self._sessions: list[dict] = []

    @classmethod
    def open(cls, folder: Path, header: dict, *, resume: bool, overwrite: bool = False) -> tuple[RunRecord, bool]:
        """A new record, or the existing one when resuming the same config; returns (record, resumed).

        The folder's lock is taken first, so two processes never share a run. ``overwrite`` deletes
        an existing folder only when it is a run record.
        """
        record = cls(folder)
        header = {"record": RECORD_KIND, "schema": SCHEMA, **header, "config_digest": config_digest(header["config"])}
        if folder.exists() and not folder.is_dir():
            raise VlmbenchError(f"{folder} exists and is not a folder")
        existing = bool(record.lock.others())
        if existing and not is_run_record(folder):
            raise VlmbenchError(f"{folder} exists and is not a vlmbench run record (no valid header.json); "
                                "choose another --name" + ("; --overwrite deletes only run records" if overwrite else ""))
        try:
            record.lock.acquire()
        except PermissionError as exc:
            raise VlmbenchError(f"cannot write to {folder}: {exc.strerror}") from None
        except OSError as exc:
            raise VlmbenchError(f"cannot create the run folder {folder}: {exc.strerror or exc}") from None
        try:
            if existing and overwrite:
                record.lock.clear_others()
            elif existing:
                return record, record._reopen(header, resume)
            record._create(header)
            return record, False
        except BaseException:
            record.lock.release()
            raise

    def _reopen(self, header: dict, resume: bool) -> bool:
        old = self.header
        if old.get("config_digest") != header["config_digest"]:
            differences = _config_differences(old.get("config"), header["config"])
            raise VlmbenchError(f"{self.folder} holds a run with a different config{differences}; choose another "
                                "--name or pass --overwrite")
        if not resume:
            raise VlmbenchError(f"{self.folder} already holds this run; pass --resume to continue it or --overwrite")
        for key in EXTENDABLE:  # a shorter run would leave a header that understates what was trained
            if header["config"][key] < old["config"][key]:
                raise VlmbenchError(f"{self.folder} holds a run of {key} {old['config'][key]:,}; a resume may extend "
                                    f"it, not shorten it to {header['config'][key]:,}: choose another --name")
        self._check_writable()
        if old["config"] != header["config"]:  # an extended or presentation setting: the header keeps the new value
            write_json(self.folder / "header.json", {**old, "config": header["config"]})
        _, note = read_jsonl(self.folder / "queries.jsonl", repair=True)
        if note:
            self.notes.append(note)
        if drop_torn_line(self.folder / "curves.csv"):
            self.notes.append(f"{self.folder / 'curves.csv'}: dropped a torn last row left by an interrupted write")
        return True

    def _create(self, header: dict) -> None:
        write_json(self.folder / "header.json", header)
        atomic_write(self.folder / "curves.csv", lambda tmp: tmp.write_text(",".join(CURVE_FIELDS) + "\n"))
        (self.folder / "queries.jsonl").touch()

    def _check_writable(self) -> None:
        try:
            with open(self.folder / "queries.jsonl", "a"), open(self.folder / "curves.csv", "a"):
                pass
        except OSError as exc:
            raise VlmbenchError(f"cannot write to the run record {self.folder}: {exc.strerror or exc}") from None

    def is_untouched(self) -> bool:
        """Nothing was bought or trained yet: the folder can go without losing anything."""
        return (self.folder / "queries.jsonl").stat().st_size == 0 and not self.checkpoints.exists()

    def discard(self) -> None:
        """Remove a record this process just created and never used (a run rejected at its start)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.lock.release()

    def close(self) -> None:
        self.lock.release()

    @property
    def header(self) -> dict:
        return json.loads((self.folder / "header.json").read_text())

    # -- the query log --------------------------------------------------------------------------
    def log_queries(self, lines: list[dict]) -> None:
        append_jsonl(self.folder / "queries.jsonl", lines)

    def queries(self) -> list[dict]:
        return read_jsonl(self.folder / "queries.jsonl")[0]

    @staticmethod
    def query_line(query_id: str, round_index: int, timesteps: int, segment_keys: list[str], answer: Answer) -> dict:
        line = {"query_id": query_id, "round": round_index, "timesteps": timesteps, "segments": segment_keys,
                **answer.to_dict()}
        line["provenance"] = {k: v for k, v in line["provenance"].items() if k != "seconds"}
        return line

    def log_score_batch(self, timesteps: int, answers: list[Answer], shape: tuple[int, int]) -> None:
        """A relabelled rollout: every frame's reward (NaN where the judge abstained) in an .npz of
        shape (steps, envs), and one summary line with the batch's provenance in queries.jsonl."""
        values = np.array([np.nan if a.abstained else a.value for a in answers], dtype=np.float64).reshape(shape)
        batch = len(list(self.scores.glob("batch-*.npz"))) if self.scores.exists() else 0
        name = f"batch-{batch:06d}.npz"
        atomic_write(self.scores / name, lambda tmp: np.savez(tmp, rewards=values, timesteps=np.int64(timesteps)))
        given = values[~np.isnan(values)]
        line = {
            "timesteps": timesteps, "question": "score", "frames": len(answers), "scores_file": f"scores/{name}",
            "cached": sum(a.provenance.cached for a in answers), "abstained": len(answers) - len(given),
            "abstain_reasons": sorted({a.abstain_reason for a in answers if a.abstained}),
            "mean": float(given.mean()) if len(given) else None,
            "min": float(given.min()) if len(given) else None, "max": float(given.max()) if len(given) else None,
            "cost_usd": sum(a.provenance.cost_usd for a in answers),
            "input_tokens": sum(a.provenance.input_tokens for a in answers),
            "output_tokens": sum(a.provenance.output_tokens for a in answers),
            "provenance": {k: v for k, v in answers[0].provenance.to_dict().items() if k not in ("seconds", "cached")},
        }
        self.log_queries([line])

    def score_batches(self) -> list[dict]:
        """The summary lines of relabelled rollouts logged so far."""
        return [line for line in self.queries() if line.get("question") == "score" and "frames" in line]

    # -- curves, results, timing ----------------------------------------------------------------
    def log_curve(self, row: dict) -> None:
        buffer = io.StringIO()
        csv.writer(buffer).writerow([row.get(k, "") for k in CURVE_FIELDS])
        append_lines(self.folder / "curves.csv", buffer.getvalue())

    def curve_rows(self) -> list[dict]:
        with open(self.folder / "curves.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def write_json(self, name: str, data: dict) -> Path:
        return write_json(self.folder / name, data)

    def finish(self) -> None:
        """Write summary.json (the mark of a finished run) and add the run to the results index."""
        from vlmbench.results.store import record_finished

        write_json(self.folder / "summary.json", run_summary(self.folder))
        record_finished(self.folder)

    def begin_session(self, info: dict) -> None:
        """Add this process to timing.json's sessions (a killed session keeps its last checkpoint's time)."""
        self._sessions = [*self._timing().get("sessions", []), {**info, "wall_seconds": 0.0}]
        self.tick()

    def tick(self, **fields) -> None:
        """Update this session's wall time (and ``fields``) in timing.json; totals add up every session."""
        self._sessions[-1].update(fields, wall_seconds=round(time.time() - self._started, 3))
        self.write_json("timing.json", {"sessions": self._sessions, "resumed": len(self._sessions) > 1,
                                        "wall_seconds": round(sum(s["wall_seconds"] for s in self._sessions), 3)})

    def _timing(self) -> dict:
        try:
            return json.loads((self.folder / "timing.json").read_text())
        except (OSError, ValueError):
            return {}


def run_summary(folder: Path) -> dict:
    """A finished run's summary from its header.json, eval.json and the last row of curves.csv: what
    summary.json holds (and what the results index reads from runs recorded before summary.json existed)."""
    from vlmbench.metrics.bootstrap import measure

    header = json.loads((folder / "header.json").read_text())
    evaluation = json.loads((folder / "eval.json").read_text())
    with open(folder / "curves.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    final = rows[-1] if rows else {}
    config = header["config"]
    successes = np.array([bool(e["success"]) for e in evaluation["episodes"]], dtype=float)
    success = measure("success_rate", lambda i: float(successes[i].mean()), len(successes),
                      rng=np.random.default_rng(config["seed"]), note="over evaluation episodes")
    return {
        "record": RECORD_KIND, "schema": SCHEMA, "task": header["task"]["id"], "judge": header["judge"]["name"],
        "seed": config["seed"], "reward_mode": header.get("reward_mode"), "algorithm": header.get("algorithm"),
        "timesteps": config["timesteps"], "final_ppo_timesteps": config.get("final_ppo_timesteps", 0),
        "metrics": {"success_rate": success.to_dict(),
                    "mean_progress": {"name": "mean_progress", "value": evaluation["mean_progress"], "ci_low": None,
                                      "ci_high": None, "n": len(successes), "note": "over evaluation episodes"}},
        "calls": int(float(final.get("labels") or 0)), "abstained": int(float(final.get("abstained") or 0)),
        "cost_usd": float(final.get("judge_cost_usd") or 0.0), "versions": header.get("versions", {}),
    }
