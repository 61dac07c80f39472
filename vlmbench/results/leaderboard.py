"""The leaderboard: the results index's records grouped by task, judge and run setting, each metric averaged
over seeds with a confidence interval; a table per task and an overall one.

Over seeds: with two or more seeds the value is the mean of the per-seed values and the interval a percentile
bootstrap of that mean over seeds (as ``metrics.bootstrap.measure`` makes it, resampling seeds); with one seed they are
that record's own value and interval (a bootstrap over its states, pairs or episodes). Where one seed has
several records (a folder copied, say) their values are averaged first. The overall table averages each
judge's per-task means over the tasks it has (n counts tasks; no interval).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmbench.files import atomic_write_text
from vlmbench.metrics.bootstrap import LEVEL, RESAMPLES, percentile_interval
from vlmbench.results.store import Entry, Skipped

INTERVAL_SEED = 0  # the bootstrap over seeds is seeded, so a leaderboard is reproducible


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    short: str  # its header on the terminal
    kind: str  # "eval" or "run": which records the metric comes from
    metric: str  # its name in the records' summaries


COLUMNS = (
    Column("epic", "EPIC distance", "EPIC", "eval", "epic_goal_distance"),
    Column("roc_auc", "goal ROC-AUC", "AUC", "eval", "goal_roc_auc"),
    Column("value_order", "value-order correlation", "order", "eval", "value_order_correlation"),
    Column("success_rate", "success rate (runs)", "success", "run", "success_rate"),
    Column("pairwise_accuracy", "pairwise accuracy", "pair acc", "eval", "pairwise_accuracy"),
    Column("identical_pair_bias", "identical-pair bias", "id bias", "eval", "identical_pair_bias"),
    Column("position_consistency", "position consistency", "consist", "eval", "position_consistency"),
    Column("preference_fairness", "preference fairness", "fair", "eval", "preference_fairness"),
    Column("eval_abstain_rate", "abstain rate (evals)", "abstain", "eval", "abstain_rate"),
)
COLUMN = {c.key: c for c in COLUMNS}
OVERALL = "overall"


@dataclass(frozen=True)
class Cell:
    """A metric over seeds (or, in the overall table, over tasks): ``n`` counts them."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


EMPTY = Cell(None, None, None, 0)


@dataclass
class Row:
    scope: str  # a task id, or "overall"
    judge: str
    run_setting: str  # reward mode, algorithm and steps of the runs in this row; "" with none
    cells: dict[str, Cell]
    eval_seeds: list[int] = field(default_factory=list)
    run_seeds: list[int] = field(default_factory=list)
    calls: int = 0
    cost_usd: float = 0.0
    parameters: float | None = None  # CLIP judges: the model's parameter count


@dataclass
class Leaderboard:
    tasks: dict[str, list[Row]]  # task id -> its rows
    overall: list[Row]
    skipped: list[Skipped]
    records: int

    @property
    def empty(self) -> bool:
        return not self.tasks


def over_seeds(per_seed: dict[int, list[dict]]) -> Cell:
    """One metric of one group: ``per_seed`` maps each seed to its records' metric dicts (value, ci_low,
    ci_high, n). Seeds whose value is missing are left out."""
    values = {seed: [m["value"] for m in ms if m.get("value") is not None] for seed, ms in per_seed.items()}
    seeds = sorted(seed for seed, v in values.items() if v)
    if not seeds:
        return EMPTY
    means = np.array([sum(values[s]) / len(values[s]) for s in seeds], dtype=float)
    if len(seeds) == 1:
        (only,) = [m for m in per_seed[seeds[0]] if m.get("value") is not None][:1]
        if len(values[seeds[0]]) == 1:
            return Cell(float(means[0]), only.get("ci_low"), only.get("ci_high"), 1)
        return Cell(float(means[0]), None, None, 1)
    # measure()'s percentile bootstrap, its draws made at once: the same draws, the same interval
    draws = np.random.default_rng(INTERVAL_SEED).integers(0, len(means), (RESAMPLES, len(means)))
    low, high = percentile_interval(means[draws].mean(axis=1), LEVEL)
    return Cell(float(means.mean()), low, high, len(seeds))


def _group_rows(entries: Sequence[Entry]) -> dict[str, list[Row]]:
    evals: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    runs: dict[tuple[str, str], dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for entry in entries:
        key = (entry["task"], entry["judge"])
        if entry["kind"] == "eval":
            evals[key].append(entry)
        else:
            runs[key][entry["setting"]].append(entry)
    tasks: dict[str, list[Row]] = defaultdict(list)
    for key in sorted(set(evals) | set(runs)):
        task, judge = key
        eval_cells = _cells(evals.get(key, []), "eval")
        settings = runs.get(key) or {"": []}
        for setting in sorted(settings):
            group = evals.get(key, []) + settings[setting]
            cells = {**eval_cells, **_cells(settings[setting], "run")}
            sizes = [e["parameters"] for e in group if e.row.get("parameters")]
            tasks[task].append(Row(
                task, judge, setting, cells,
                eval_seeds=sorted({e["seed"] for e in evals.get(key, [])}),
                run_seeds=sorted({e["seed"] for e in settings[setting]}),
                # a judge's evaluations are shared by its rows: their cost is counted in the first row only
                calls=sum(e["calls"] for e in settings[setting]) + (sum(e["calls"] for e in evals.get(key, []))
                                                                     if setting == min(settings) else 0),
                cost_usd=sum(e["cost_usd"] for e in settings[setting]) + (
                    sum(e["cost_usd"] for e in evals.get(key, [])) if setting == min(settings) else 0.0),
                parameters=sizes[0] if sizes else None,
            ))
    return dict(tasks)


def _cells(entries: Sequence[Entry], kind: str) -> dict[str, Cell]:
    cells = {}
    for column in COLUMNS:
        if column.kind != kind:
            continue
        per_seed: dict[int, list[dict]] = defaultdict(list)
        for entry in entries:
            if column.metric in entry["metrics"]:
                per_seed[entry["seed"]].append(entry["metrics"][column.metric])
        cells[column.key] = over_seeds(per_seed)
    return cells


def _mean_over(rows: Sequence[Row], key: str) -> Cell:
    means = [r.cells[key].mean for r in rows if r.cells.get(key, EMPTY).mean is not None]
    return Cell(float(np.mean(means)), None, None, len(means)) if means else EMPTY


def _overall(tasks: dict[str, list[Row]]) -> list[Row]:
    """Per judge: evaluation metrics averaged over every task it was evaluated on, run metrics over the tasks
    with runs of each run setting (a row per setting)."""
    by_judge: dict[str, list[Row]] = defaultdict(list)
    for rows in tasks.values():
        for row in rows:
            by_judge[row.judge].append(row)
    overall = []
    for judge, rows in sorted(by_judge.items()):
        first_per_task = list({r.scope: r for r in reversed(rows)}.values())  # a task's rows share evaluations
        eval_cells = {c.key: _mean_over(first_per_task, c.key) for c in COLUMNS if c.kind == "eval"}
        settings = sorted({r.run_setting for r in rows if r.run_setting}) or [""]
        sizes = [r.parameters for r in rows if r.parameters]
        for k, setting in enumerate(settings):
            with_setting = [r for r in rows if r.run_setting == setting]
            counted = with_setting + ([r for r in rows if not r.run_setting] if k == 0 and setting else [])
            run_cells = {c.key: _mean_over(with_setting, c.key) for c in COLUMNS if c.kind == "run"}
            overall.append(Row(OVERALL, judge, setting, {**eval_cells, **run_cells},
                               eval_seeds=sorted({s for r in rows for s in r.eval_seeds}),
                               run_seeds=sorted({s for r in with_setting for s in r.run_seeds}),
                               calls=sum(r.calls for r in counted), cost_usd=sum(r.cost_usd for r in counted),
                               parameters=sizes[0] if sizes else None))
    return overall


def build(entries: Sequence[Entry], skipped: Sequence[Skipped], *, tasks: Sequence[str] = (),
          judges: Sequence[str] = ()) -> Leaderboard:
    """The leaderboard of ``entries``, limited to ``tasks`` and ``judges`` when given."""
    chosen = [e for e in entries if (not tasks or e["task"] in tasks) and (not judges or e["judge"] in judges)]
    by_task = _group_rows(chosen)
    return Leaderboard(by_task, _overall(by_task), list(skipped), len(chosen))


# -- writing ----------------------------------------------------------------------------------------------
def format_cell(cell: Cell, *, seeds: bool = True) -> str:
    if cell.mean is None:
        return "-"
    text = f"{cell.mean:.3f}"
    if cell.low is not None and cell.high is not None:
        text += f" [{cell.low:.3f}, {cell.high:.3f}]"
    return text + (f" (n={cell.n})" if seeds and cell.n > 1 else "")


def _seeds(values: list[int]) -> str:
    return ",".join(map(str, values)) or "-"


def short_cell(cell: Cell) -> str:
    """A cell in a narrow column: the mean and, under it, the interval."""
    if cell.mean is None:
        return "-"
    if cell.low is None or cell.high is None:
        return f"{cell.mean:.3f}"
    return f"{cell.mean:.3f}\n{cell.low:.2f}..{cell.high:.2f}"


def table_rows(rows: Sequence[Row], *, short: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of one table: full for markdown, ``short`` for the terminal."""
    show = short_cell if short else format_cell
    header = ["judge", "run setting", *[c.short if short else c.label for c in COLUMNS],
              *(["seeds e/r", "calls", "$"] if short else ["eval seeds", "run seeds", "calls", "cost ($)"])]
    body = []
    for r in rows:
        seeds = ([f"{len(r.eval_seeds)}/{len(r.run_seeds)}"] if short
                 else [_seeds(r.eval_seeds), _seeds(r.run_seeds)])
        body.append([r.judge, r.run_setting or "-", *[show(r.cells.get(c.key, EMPTY)) for c in COLUMNS],
                     *seeds, f"{r.calls:,}", f"{r.cost_usd:.2f}"])
    return header, body


def _markdown_table(rows: Sequence[Row]) -> str:
    header, body = table_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in body]
    return "\n".join(lines) + "\n"


INTERVALS_NOTE = ("Cells: mean [95% interval] (n seeds). Over two or more seeds: the mean of the per-seed values, "
                  "with a percentile bootstrap over seeds (1,000 resamples); over one seed: that record's value and its bootstrap "
                  "interval over states, pairs or episodes. The overall table averages per-task means (n tasks). "
                  "EPIC distance: lower is better; identical-pair bias and preference fairness: 0 is fair.")


def markdown(board: Leaderboard, plots: Sequence[str] = ()) -> str:
    parts = ["# vlmbench leaderboard\n"]
    if board.empty:
        parts.append("No finished evaluation or run records were found.\n")
    else:
        parts.append(f"{board.records} records. {INTERVALS_NOTE}\n")
        parts.append("## Overall\n")
        parts.append(_markdown_table(board.overall))
        for task, rows in sorted(board.tasks.items()):
            parts.append(f"## {task}\n")
            parts.append(_markdown_table(rows))
    for name in plots:
        parts.append(f"![{name}]({name})\n")
    if board.skipped:
        parts.append("## Records left out\n")
        parts += [f"- `{s.path}`: {s.reason}" for s in board.skipped]
        parts.append("")
    return "\n".join(parts)


def csv_text(board: Leaderboard) -> str:
    """One line per (scope, judge, run setting): each metric's mean, interval and n; seeds, calls, cost."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    metric_fields = [f"{c.key}_{part}" for c in COLUMNS for part in ("mean", "ci_low", "ci_high", "n")]
    writer.writerow(["scope", "judge", "run_setting", *metric_fields, "eval_seeds", "run_seeds", "calls",
                     "cost_usd", "parameters"])
    for row in board.overall + [r for _, rows in sorted(board.tasks.items()) for r in rows]:
        values = []
        for c in COLUMNS:
            cell = row.cells.get(c.key, EMPTY)
            values += ["" if v is None else v for v in (cell.mean, cell.low, cell.high)] + [cell.n]
        writer.writerow([row.scope, row.judge, row.run_setting, *values, " ".join(map(str, row.eval_seeds)),
                         " ".join(map(str, row.run_seeds)), row.calls, round(row.cost_usd, 6),
                         "" if row.parameters is None else int(row.parameters)])
    return buffer.getvalue()


def write(board: Leaderboard, out: Path) -> list[Path]:
    """leaderboard.md, .csv, .html and the plots under ``out``; the paths written."""
    from vlmbench.plots import epic_against_model_size, position_bias_chart, success_rate_chart
    from vlmbench.web.leaderboard import leaderboard_html

    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for name, draw in (("epic_vs_model_size.png", epic_against_model_size),
                       ("success_rate.png", success_rate_chart), ("position_bias.png", position_bias_chart)):
        if draw(board, out / name) is not None:
            plots.append(out / name)
    written = [atomic_write_text(out / "leaderboard.md", markdown(board, [p.name for p in plots])),
               atomic_write_text(out / "leaderboard.csv", csv_text(board)),
               atomic_write_text(out / "leaderboard.html", leaderboard_html(board, plots))]
    return written + plots
