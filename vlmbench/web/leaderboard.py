"""The leaderboard as one self-contained HTML page: sortable tables (plain JavaScript) and the plots
embedded as base64 PNGs, so the file works offline wherever it is copied."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path


def leaderboard_html(board, plots: list[Path]) -> str:
    """The page for a ``vlmbench.results.leaderboard.Leaderboard`` and its plot files."""
    from vlmbench.results.leaderboard import COLUMNS, INTERVALS_NOTE

    data = {
        "note": (f"{board.records} records. {INTERVALS_NOTE}" if not board.empty
                 else "No finished evaluation or run records were found."),
        "columns": [{"key": c.key, "label": c.label} for c in COLUMNS],
        "overall": [asdict(r) for r in board.overall],
        "tasks": {task: [asdict(r) for r in rows] for task, rows in sorted(board.tasks.items())},
        "plots": [{"name": p.name, "png": base64.b64encode(p.read_bytes()).decode("ascii")} for p in plots],
        "skipped": [asdict(s) for s in board.skipped],
    }
    text = json.dumps(data).replace("<", "\\u003c")  # no '</script>' can end the data block early
    page = resources.files("vlmbench.web").joinpath("leaderboard.html").read_text(encoding="utf-8")
    return page.replace("__BOARD__", text)
