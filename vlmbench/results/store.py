"""The results store: every finished evaluation and run record under a results folder, in a small index.

A record is a folder with a header.json naming its kind (``vlmbench-eval`` or ``vlmbench-run``) and its
layout version (``schema``; records written before the field existed are version 1), and a summary.json
written when it finishes (runs recorded before summary.json existed are summarised from eval.json and
curves.csv). The index (``<results>/index.sqlite``, SQLite in WAL mode) holds one row per record: what
the leaderboard needs from its header and summary, never its per-sample files. It is brought up to date
by comparing the modification times of each record's header and summary with those it was built from,
so only new or changed records are read again; a record that finishes adds itself at once.

A record that cannot be read (corrupt JSON, missing fields), is unfinished, or has a layout version
this vlmbench does not read is left out and listed with the reason, by path; it never stops a build.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from vlmbench.files import sqlite_create
from vlmbench.results.eval_record import RECORD_KIND as EVAL_KIND
from vlmbench.results.record import RECORD_KIND as RUN_KIND
from vlmbench.results.record import SCHEMA, run_summary

INDEX_NAME = "index.sqlite"
_TABLES = """
CREATE TABLE IF NOT EXISTS records (path TEXT PRIMARY KEY, stamp TEXT NOT NULL, row TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, stamp TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
READABLE_SCHEMAS = (1,)
# Folders under a results tree that hold no records (caches, datasets, a record's own insides).
NOT_RECORDS = {"checkpoints", "tensorboard", "scores", "frames", "datasets", "labels", "renders", "judgements", "human",
               "sweep-logs"}
# Parameter counts of open_clip architectures (image and text towers), for plots against model size.
CLIP_PARAMETERS = {
    "RN50": 102.01e6, "RN101": 119.69e6, "RN50x4": 178.3e6, "RN50x16": 290.98e6, "RN50x64": 623.26e6,
    "ViT-B-32": 151.28e6, "ViT-B-16": 149.62e6, "ViT-L-14": 427.62e6, "ViT-L-14-336": 427.94e6,
    "ViT-H-14": 986.11e6, "ViT-g-14": 1366.68e6, "ViT-bigG-14": 2539.57e6,
}


class RecordProblem(Exception):
    """Why a record folder is left out of the index."""


@dataclass(frozen=True)
class Entry:
    """One finished record as the index holds it: ``row`` has kind, task, judge, seed, metrics, calls, cost."""

    path: str
    row: dict

    def __getitem__(self, key: str):
        return self.row[key]


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordProblem(f"no {path.name}") from None
    except (OSError, ValueError) as exc:
        raise RecordProblem(f"{path.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecordProblem(f"{path.name} is not a JSON object")
    return data


def _check_schema(data: dict, name: str) -> None:
    version = data.get("schema", 1)
    if version not in READABLE_SCHEMAS:
        age = "an older" if isinstance(version, int) and version < min(READABLE_SCHEMAS) else "another"
        raise RecordProblem(f"{name} has {age} layout version (schema {version!r}); this vlmbench reads "
                            f"schema {', '.join(map(str, READABLE_SCHEMAS))}")


def _metrics(summary: dict) -> dict:
    metrics = summary.get("metrics")
    if not isinstance(metrics, dict):
        raise RecordProblem("summary.json has no metrics")
    out = {}
    for name, m in metrics.items():
        if not isinstance(m, dict) or "value" not in m:
            raise RecordProblem(f"summary.json: metric '{name}' has no value")
        out[name] = {k: m.get(k) for k in ("value", "ci_low", "ci_high", "n")}
    return out


def _abstain_rate(kind: str, summary: dict) -> dict:
    """The share of the judge's answers that abstained: over the answers an evaluation used (bought and
    reused), or the answers a run bought."""
    if kind == "eval":
        abstained = sum((summary.get("abstained") or {}).values())
        answers = int(summary["calls"]) + int(summary.get("reused_answers") or 0)
    else:
        abstained, answers = int(summary.get("abstained") or 0), int(summary["calls"])
    value = abstained / answers if answers else None
    return {"value": value, "ci_low": None, "ci_high": None, "n": answers}


def clip_parameters(judge: dict) -> float | None:
    """A CLIP judge's parameter count: from the table for a built-in open_clip architecture, else by building
    the architecture its ``model_config`` file describes (random weights); None when neither can be had."""
    if judge.get("type") != "clip":
        return None
    params = judge.get("params") or {}
    model = str(params.get("model"))
    if model in CLIP_PARAMETERS:
        return CLIP_PARAMETERS[model]
    config = params.get("model_config")
    if not config or not Path(config).expanduser().is_file():
        return None
    try:
        import open_clip

        open_clip.add_model_config(Path(config).expanduser())
        return float(sum(p.numel() for p in open_clip.create_model(model).parameters()))
    except Exception:  # noqa: BLE001 - an architecture that cannot be built has no size to plot
        return None


def read_record(folder: Path) -> dict:
    """The index row of a finished record; RecordProblem says why there is none."""
    header = _json(folder / "header.json")
    kind = header.get("record")
    if kind not in (EVAL_KIND, RUN_KIND):
        raise RecordProblem(f"header.json names no vlmbench record kind (record: {kind!r})")
    _check_schema(header, "header.json")
    judge = header.get("judge")
    if not isinstance(judge, dict) or "name" not in judge:
        raise RecordProblem("header.json has no judge config")
    try:
        if kind == EVAL_KIND:
            if not (folder / "summary.json").exists():
                raise RecordProblem("unfinished evaluation (no summary.json)")
            summary = _json(folder / "summary.json")
            _check_schema(summary, "summary.json")
            row = {"kind": "eval", "task": summary["task"], "judge": summary["judge"],
                   "seed": int(summary["settings"]["seed"]), "setting": "",
                   "calls": int(summary.get("total_calls", summary["calls"])),
                   "cost_usd": float(summary.get("total_cost_usd", summary["cost_usd"]))}
        else:
            if (folder / "summary.json").exists():
                summary = _json(folder / "summary.json")
                _check_schema(summary, "summary.json")
            elif (folder / "eval.json").exists():
                summary = run_summary(folder)
            else:
                raise RecordProblem("unfinished run (no eval.json or summary.json)")
            steps = summary["timesteps"] + (summary.get("final_ppo_timesteps") or 0)
            row = {"kind": "run", "task": summary["task"], "judge": summary["judge"], "seed": int(summary["seed"]),
                   "setting": f"{summary['reward_mode']} {summary['algorithm']} {steps:,} steps",
                   "calls": int(summary["calls"]), "cost_usd": float(summary["cost_usd"])}
    except RecordProblem:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
        raise RecordProblem(f"summary lacks or garbles a field ({type(exc).__name__}: {exc})") from None
    metrics = _metrics(summary)
    metrics["abstain_rate"] = _abstain_rate(row["kind"], summary)
    row.update(metrics=metrics, judge_type=judge.get("type"),
               judge_model=(judge.get("params") or {}).get("model"), parameters=clip_parameters(judge))
    return row


def _stamp(folder: Path) -> str:
    """The modification times a record's index row was read from (header, summary, eval.json)."""
    times = []
    for name in ("header.json", "summary.json", "eval.json"):
        try:
            times.append(str(os.stat(folder / name).st_mtime_ns))
        except OSError:
            times.append("-")
    return ":".join(times)


def record_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` holding a header.json (not looking inside records or caches)."""
    found = []
    for here, dirs, files in os.walk(root):
        if "header.json" in files:
            found.append(Path(here))
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in NOT_RECORDS)
    return sorted(found)


class ResultsIndex:
    """The index of one results folder; ``refresh`` brings it up to date and returns what it holds."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / INDEX_NAME

    def connect(self) -> sqlite3.Connection:
        db = sqlite_create(self.path, _TABLES, timeout=60, autocommit=False)
        db.execute("PRAGMA synchronous=NORMAL")
        found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if found is None or int(found[0]) != SCHEMA:  # rows of another vlmbench: build again
            with db:
                db.execute("DELETE FROM records")
                db.execute("DELETE FROM skipped")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
        return db

    def _key(self, folder: Path) -> str:
        return os.path.relpath(folder, self.root)

    def update(self, db: sqlite3.Connection, folder: Path, stamp: str) -> None:
        """Read one record again and keep its row, or the reason it has none."""
        key = self._key(folder)
        try:
            row = read_record(folder)
        except RecordProblem as problem:
            db.execute("DELETE FROM records WHERE path = ?", (key,))
            db.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?)", (key, stamp, str(problem)))
        else:
            db.execute("DELETE FROM skipped WHERE path = ?", (key,))
            db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", (key, stamp, json.dumps(row)))

    def refresh(self, *, rebuild: bool = False) -> tuple[list[Entry], list[Skipped]]:
        """Scan the folder, read the records that are new or changed since the index last saw them (every
        record with ``rebuild``), drop those that are gone; the finished records and the skipped ones."""
        db = self.connect()
        try:
            with db:
                if rebuild:
                    db.execute("DELETE FROM records")
                    db.execute("DELETE FROM skipped")
                known = dict(db.execute("SELECT path, stamp FROM records UNION ALL SELECT path, stamp FROM skipped"))
                present = set()
                for folder in record_folders(self.root):
                    key, stamp = self._key(folder), _stamp(folder)
                    present.add(key)
                    if known.get(key) != stamp:
                        self.update(db, folder, stamp)
                for gone in set(known) - present:
                    db.execute("DELETE FROM records WHERE path = ?", (gone,))
                    db.execute("DELETE FROM skipped WHERE path = ?", (gone,))
            entries = [Entry(str(self.root / p), json.loads(r))
                       for p, r in db.execute("SELECT path, row FROM records ORDER BY path")]
            skipped = [Skipped(str(self.root / p), reason)
                       for p, reason in db.execute("SELECT path, reason FROM skipped ORDER BY path")]
        finally:
            db.close()
        return entries, skipped


def record_finished(folder: Path, *, levels: int = 4) -> None:
    """Add a record that just finished to the index of the results folder it lies in, if one exists
    within ``levels`` folders above it (otherwise the next leaderboard finds it by scanning)."""
    folder = Path(folder).resolve()
    for root in list(folder.parents)[:levels]:
        if (root / INDEX_NAME).exists():
            index = ResultsIndex(root)
            db = index.connect()
            try:
                with db:
                    index.update(db, folder, _stamp(folder))
            finally:
                db.close()
            return
