"""One judge evaluation's record on disk.

    <eval>/header.json    task, judge config, dataset (path and digest), settings: what the answers mean
    <eval>/pairs.jsonl    every compare query (accuracy pairs and probes) with its answer and provenance
    <eval>/answers.jsonl  every score or rate query, likewise
    <eval>/states.jsonl   one line per evaluated state: state_id, label, progress, reward (EPIC's input)
    <eval>/summary.json   every metric with its interval and n, position-bias verdict, calls, cost, abstains;
                          written last, so it marks a finished evaluation (the results index reads it)
    <eval>/rewards.png    reward histograms (goal vs not), reward against progress, trajectory rewards
    <eval>/bias.png       the position-bias probes (compare judges)

The answer logs are append-only and flushed line by line; an evaluation run again with the same
header reuses every answer they hold.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmbench.errors import VlmbenchError
from vlmbench.files import FolderLock, append_jsonl, atomic_write_text, read_jsonl, write_json
from vlmbench.judges.base import BUDGET_PARAMS, Answer, Question
from vlmbench.results.record import SCHEMA

RECORD_KIND = "vlmbench-eval"


class EvalRecord:
    """An evaluation folder under its lock; the answer log `JudgeEvaluation` asks through."""

    def __init__(self, folder: Path, header: dict, *, overwrite: bool = False):
        self.folder = folder
        self.notes: list[str] = []
        header = {"record": RECORD_KIND, "schema": SCHEMA, **header}
        self.lock = FolderLock(folder)
        existing = bool(self.lock.others())
        old = self._read_header() if existing else None
        if existing and (old is None or old.get("record") != RECORD_KIND):
            raise VlmbenchError(f"{folder} exists and is not a vlmbench evaluation record; choose another --results")
        try:
            self.lock.acquire()
        except OSError as exc:
            raise VlmbenchError(f"cannot create the evaluation folder {folder}: {exc.strerror or exc}") from None
        if existing and _settings(old) != _settings(header):
            if not overwrite:
                self.lock.release()
                raise VlmbenchError(f"{folder} holds an evaluation with other settings (judge, dataset or options); "
                                    "pass --overwrite to replace it")
            self.lock.clear_others()
            existing = False
        if not existing or (old != header and old.get("schema") == SCHEMA):  # new, or other spending caps
            write_json(folder / "header.json", header)
        for name in ("pairs.jsonl", "answers.jsonl"):
            _, note = read_jsonl(folder / name, repair=True)
            if note:
                self.notes.append(note)

    def _read_header(self) -> dict | None:
        try:
            return json.loads((self.folder / "header.json").read_text())
        except (OSError, ValueError):
            return None

    def known(self) -> dict[str, Answer]:
        lines = read_jsonl(self.folder / "pairs.jsonl")[0] + read_jsonl(self.folder / "answers.jsonl")[0]
        return {line["query_id"]: Answer.from_dict(line) for line in lines}

    def add(self, lines: list[dict]) -> None:
        pairs = [line for line in lines if line["question"] == Question.COMPARE.value]
        append_jsonl(self.folder / "pairs.jsonl", pairs)
        append_jsonl(self.folder / "answers.jsonl", [line for line in lines if line not in pairs])

    def write_states(self, states: list[dict]) -> None:
        atomic_write_text(self.folder / "states.jsonl", "".join(json.dumps(s, sort_keys=True) + "\n" for s in states))

    def finish(self, summary: dict) -> None:
        """Write summary.json (the mark of a finished evaluation) and add it to the results index."""
        from vlmbench.results.store import record_finished

        write_json(self.folder / "summary.json", {"record": RECORD_KIND, "schema": SCHEMA, **summary})
        record_finished(self.folder)

    def close(self) -> None:
        self.lock.release()


def _settings(header: dict) -> dict:
    """What an evaluation's header says about its answers: not the layout version it was written in, nor
    the judge's spending caps (raising a spent cap continues the evaluation)."""
    settings = {k: v for k, v in header.items() if k != "schema"}
    judge = settings.get("judge")
    if isinstance(judge, dict) and isinstance(judge.get("params"), dict):
        params = {k: v for k, v in judge["params"].items() if k not in BUDGET_PARAMS}
        settings["judge"] = {**judge, "params": params}
    return settings
