"""Pictures people look at: contact sheets and captioned strips of frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vlmbench.files import atomic_write


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def captioned(frame: np.ndarray, lines: Sequence[str], highlight: bool | None = None) -> Image.Image:
    """The frame with a caption band below it; a green/red border when ``highlight`` is set."""
    h, w = frame.shape[:2]
    size = max(10, w // 16)
    band = (size + 3) * len(lines) + 4
    tile = Image.new("RGB", (w, h + band), "white")
    tile.paste(Image.fromarray(frame), (0, 0))
    draw = ImageDraw.Draw(tile)
    for i, line in enumerate(lines):
        draw.text((3, h + 2 + i * (size + 3)), line, fill="black", font=_font(size))
    if highlight is not None:
        draw.rectangle([0, 0, w - 1, h - 1], outline=(30, 160, 40) if highlight else (200, 40, 40), width=3)
    return tile


def contact_sheet(tiles: Sequence[Image.Image], columns: int, title: str | None = None) -> Image.Image:
    """Tiles in a grid (all the size of the first), under an optional title."""
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    tw, th = tiles[0].size
    head = 28 if title else 0
    sheet = Image.new("RGB", (columns * tw, rows * th + head), "white")
    if title:
        ImageDraw.Draw(sheet).text((6, 6), title, fill="black", font=_font(16))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * tw, head + (i // columns) * th))
    return sheet


def save(image: Image.Image, path: Path) -> Path:
    """Write ``image`` atomically (a reader never sees half a PNG)."""
    return atomic_write(path, image.save)


def learning_curves(curves_csv: Path, out: Path, title: str) -> Path:
    """curves.csv as a PNG: judge labels, reward-model accuracy and success rate against timesteps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(curves_csv)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    left.plot(df["timesteps"], df["labels"], marker=".", color="tab:blue")
    left.set(xlabel="timesteps", title="feedback")
    left.set_ylabel("judge answers bought", color="tab:blue")
    if df["reward_model_accuracy"].notna().any():
        twin = left.twinx()
        twin.plot(df["timesteps"], df["reward_model_accuracy"], marker=".", color="tab:orange")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("reward-model accuracy (labelled pairs)", color="tab:orange")
    evaluated = df[df["success_rate"].notna()]
    right.plot(evaluated["timesteps"], evaluated["success_rate"], marker="o", color="tab:green", label="success rate")
    right.plot(evaluated["timesteps"], evaluated["mean_progress"], marker=".", color="tab:gray", label="mean progress")
    right.set(xlabel="timesteps", ylim=(-0.05, 1.05), title="agent (task's success detector)")
    right.legend(loc="lower right")
    fig.suptitle(title)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reward_plots(states: list[dict], trajectories: list[dict], out: Path, title: str) -> Path:
    """A judge's reward on labelled states: histograms of goal and other states, reward against the task's
    progress, and the reward along each goal-ending trajectory."""
    plt = _pyplot()
    fig, (hist, scatter, curves) = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    rewards = np.array([s["reward"] for s in states], dtype=float)
    goal = np.array([s["label"] == 1 for s in states], dtype=bool)
    bins = np.histogram_bin_edges(rewards, bins=30) if len(rewards) else 10
    hist.hist(rewards[~goal], bins=bins, alpha=0.6, color="tab:red", label=f"not goal ({(~goal).sum()})")
    hist.hist(rewards[goal], bins=bins, alpha=0.6, color="tab:green", label=f"goal ({goal.sum()})")
    hist.set(xlabel="reward", ylabel="states", title="reward by detector label")
    hist.legend()
    progress = np.array([s["progress"] for s in states], dtype=float)
    scatter.scatter(progress, rewards, s=8, c=np.where(goal, "tab:green", "tab:red"), alpha=0.6)
    scatter.set(xlabel="task progress", ylabel="reward", title="reward against progress")
    for curve in trajectories:
        curves.plot(range(len(curve["rewards"])), curve["rewards"], marker=".", label=f"trajectory {curve['trajectory']}")
    curves.set(xlabel="step (goal at the end)", ylabel="reward", title="reward along trajectories")
    if trajectories:
        curves.legend(fontsize=7)
    fig.suptitle(title)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out


def bias_chart(metrics: dict, out: Path, title: str) -> Path:
    """The position-bias probes that were measured, each with its interval, against 0 (or 1 for shares of
    consistent answers)."""
    plt = _pyplot()
    shown = [(name, m) for name, m in metrics.items() if m.value is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.2), constrained_layout=True)
    for y, (name, m) in enumerate(shown):
        low, high = (m.ci_low, m.ci_high) if m.ci_low is not None else (m.value, m.value)
        ax.errorbar(m.value, y, xerr=[[m.value - low], [high - m.value]], fmt="o", capsize=4)
        ax.annotate(f"{m.value:+.3f} (n={m.n})", (m.value, y), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(range(len(shown)), [name for name, _ in shown])
    ax.set(title=title, xlabel="value (95% interval)")
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out


def _with_interval(cell) -> tuple[float, list[float]]:
    """A leaderboard cell's mean and its interval as error-bar lengths (zero where it has none)."""
    if cell.low is None or cell.high is None:
        return cell.mean, [0.0, 0.0]
    return cell.mean, [max(cell.mean - cell.low, 0.0), max(cell.high - cell.mean, 0.0)]


def _row_label(row) -> str:
    return f"{row.judge} ({row.run_setting})" if row.run_setting else row.judge


def epic_against_model_size(board, out: Path) -> Path | None:
    """EPIC distance of CLIP judges against their parameter count (VLM-RM's scaling figure), a line per task;
    None (nothing written) when no CLIP judge of known size has an EPIC distance."""
    series = {}
    for task, rows in board.tasks.items():
        first = {}  # a judge's rows share its evaluations: one point per judge
        for r in rows:
            if r.parameters and r.cells["epic"].mean is not None:
                first.setdefault(r.judge, (r.parameters, r.judge, r.cells["epic"]))
        series[task] = sorted(first.values(), key=lambda point: point[0])
    series = {task: points for task, points in series.items() if points}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    named = set()
    for task, points in sorted(series.items()):
        xs = [p[0] for p in points]
        ys, errors = zip(*(_with_interval(p[2]) for p in points), strict=True)
        ax.errorbar(xs, ys, yerr=np.array(errors).T, marker="o", capsize=4, label=task)
        for x, y, (_, judge, _) in zip(xs, ys, points, strict=True):
            if judge not in named:  # each judge named once, beside its first point
                ax.annotate(judge, (x, y), textcoords="offset points", xytext=(6, 0), fontsize=8)
                named.add(judge)
    sizes = [p[0] for points in series.values() for p in points]
    ax.set_xscale("log")
    ax.set_xlim(min(sizes) / 3, max(sizes) * 3)
    ax.set(xlabel="CLIP parameters (log scale)", ylabel="EPIC distance to the goal labels (lower is better)",
           title="EPIC distance against CLIP model size")
    ax.legend(fontsize=8)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out


def success_rate_chart(board, out: Path) -> Path | None:
    """Success rate of trained agents per task, a bar per judge (and run setting) with its interval over
    seeds; None when no run has finished."""
    rows = [r for task_rows in board.tasks.values() for r in task_rows if r.cells["success_rate"].mean is not None]
    if not rows:
        return None
    tasks = sorted({r.scope for r in rows})
    labels = sorted({_row_label(r) for r in rows})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 1.8 * len(tasks) + 2), 4.8), constrained_layout=True)
    width = 0.8 / len(labels)
    column = {task: t for t, task in enumerate(tasks)}
    for k, label in enumerate(labels):
        cells = {r.scope: r.cells["success_rate"] for r in rows if _row_label(r) == label}
        xs = [column[task] + (k - (len(labels) - 1) / 2) * width for task in cells]
        means, errors = zip(*(_with_interval(cell) for cell in cells.values()), strict=True)
        ax.bar(xs, means, width, yerr=np.array(errors).T, capsize=3, color=f"C{k % 10}", label=label)
        for x, cell in zip(xs, cells.values(), strict=True):
            ax.annotate(f"n={cell.n}", (x, 0.01), ha="center", fontsize=7, rotation=90)
    ax.set_xticks(range(len(tasks)), tasks, rotation=15, ha="right")
    ax.set(ylim=(0, 1.05), ylabel="success rate (interval over seeds)", title="Success rate of trained agents")
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(labels), 2))
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out


def position_bias_chart(board, out: Path) -> Path | None:
    """The position-bias probes per judge (a marker per task, with its interval): identical-pair bias and
    preference fairness (0 is fair) and position consistency (1 is fair); None when no judge compares."""
    keys = (("identical_pair_bias", 0.0), ("preference_fairness", 0.0), ("position_consistency", 1.0))
    rows = [r for task_rows in board.tasks.values() for r in task_rows
            if any(r.cells[k].mean is not None for k, _ in keys)]
    if not rows:
        return None
    judges = sorted({r.judge for r in rows})
    tasks = sorted({r.scope for r in rows})
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.5 * len(judges) + 1.8), sharey=True, constrained_layout=True)
    place = {judge: y for y, judge in enumerate(judges)}
    for ax, (key, fair) in zip(axes, keys, strict=True):
        for t, task in enumerate(tasks):
            offset = (t - (len(tasks) - 1) / 2) * 0.12
            shown = {}  # judge -> its first row on this task (a judge's rows share its evaluation)
            for r in rows:
                if r.scope == task and r.cells[key].mean is not None:
                    shown.setdefault(r.judge, r.cells[key])
            if shown:
                means, errors = zip(*(_with_interval(cell) for cell in shown.values()), strict=True)
                ax.errorbar(means, [place[j] + offset for j in shown], xerr=np.array(errors).T, fmt="o", capsize=3,
                            color=f"C{t % 10}")
        ax.axvline(fair, color="gray", lw=0.8, ls="--")
        ax.set(title=key.replace("_", " ") + f" (fair: {fair:g})", ylim=(-0.6, len(judges) - 0.4),
               xlim=(-0.05, 1.05) if fair else (-0.55, 0.55))
    axes[0].set_yticks(range(len(judges)), judges)
    handles = [plt.Line2D([], [], marker="o", ls="", color=f"C{t % 10}") for t in range(len(tasks))]
    fig.legend(handles, tasks, loc="outside lower center", ncols=min(len(tasks), 4), fontsize=8)
    fig.suptitle("Position-bias probes of the judges that compare")
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return out
