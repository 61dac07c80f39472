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
