"""`vlmbench render`: a random-policy rollout saved as PNG frames plus a captioned contact sheet."""

from __future__ import annotations

from pathlib import Path

import typer
from PIL import Image

from vlmbench.cli.output import bar, make_console
from vlmbench.errors import VlmbenchError
from vlmbench.specs.catalogue import resolve_task

console = make_console()


def render(
    task: str = typer.Option(..., "--task", "-t", help="task id, alias or YAML path"),
    out: Path = typer.Option(Path("results/renders"), "--out", help="output folder"),
    steps: int = typer.Option(None, "--steps", help="steps per episode, at most the task's length (the default)"),
    episodes: int = typer.Option(1, "--episodes", min=1),
    workers: int = typer.Option(1, "--workers", min=1, help="worker processes rendering in parallel"),
    seed: int = typer.Option(0, "--seed"),
    sheet_frames: int = typer.Option(24, "--sheet-frames", min=1, help="frames shown on the contact sheet"),
) -> None:
    """Roll out a random policy and save its frames and a contact sheet.

    The frame after step S of episode E (episodes count from 0, episode E reset with seed + E;
    steps from 1) is saved as epEE_stepSSSS.png and captioned "ep E step S".
    """
    from vlmbench.envs.rollout import rollout
    from vlmbench.plots import captioned, contact_sheet, save

    spec = resolve_task(task)
    if steps is not None and not 1 <= steps <= spec.env.episode_length:
        raise VlmbenchError(
            f"--steps {steps}: give 1 to {spec.env.episode_length}; {spec.id} episodes end after "
            f"{spec.env.episode_length} steps (env.episode_length), so use --episodes for more frames"
        )
    length = steps or spec.env.episode_length
    with bar() as progress:
        job = progress.add_task(f"render {spec.id}", total=episodes * length, status="")
        eps = rollout(
            spec, episodes=episodes, seed=seed, workers=workers, steps=length, keep_states=False,
            progress=lambda n: progress.advance(job, n),
        )
    folder = out / spec.id
    folder.mkdir(parents=True, exist_ok=True)
    tiles = []
    for e, ep in enumerate(eps):
        for t, frame in enumerate(ep.frames):
            Image.fromarray(frame).save(folder / f"ep{e:02d}_step{t + 1:04d}.png")
    flat = [(e, t, ep) for e, ep in enumerate(eps) for t in range(len(ep))]
    stride = max(1, len(flat) // sheet_frames)
    for e, t, ep in flat[::stride][:sheet_frames]:
        lines = [f"ep {e} step {t + 1}", f"success {'yes' if ep.successes[t] else 'no'}  progress {ep.progress[t]:.2f}"]
        tiles.append(captioned(ep.frames[t], lines, highlight=ep.successes[t]))
    sheet = save(contact_sheet(tiles, columns=6, title=f"{spec.id}: random policy, seed {seed}"), folder / "contact_sheet.png")
    successes = [ep.success_fraction() for ep in eps]
    console.print(f"{sum(len(ep) for ep in eps)} frames in {folder}; contact sheet {sheet}")
    console.print(f"goal held in {100 * sum(successes) / len(successes):.0f}% of steps")
