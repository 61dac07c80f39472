"""`vlmbench judges list|show|validate` and `vlmbench judge`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from vlmbench.cli.output import make_console, print_yaml, readable_yaml
from vlmbench.errors import SpecError, VlmbenchError
from vlmbench.judges.base import Answer, Frame, JudgeParams, Question
from vlmbench.judges.registry import (
    JudgeLoadError,
    PluginScan,
    build_judge,
    judge_types,
    load_judge_class,
    scan_plugins,
    shadowed_plugins,
)
from vlmbench.specs import catalogue
from vlmbench.specs.judge_config import JudgeConfig
from vlmbench.specs.loading import line_of, load_spec, parse_yaml

app = typer.Typer(help="List, show and validate judge configs.", no_args_is_help=True)
console = make_console()


def _load_failure(type_name: str, scan: PluginScan) -> str | None:
    """Why the type's class does not load, or None when it does."""
    try:
        load_judge_class(type_name, scan)
    except JudgeLoadError as exc:
        return str(exc)
    return None


@app.command("list")
def list_judges() -> None:
    """Judge configs in judges/, and the judge types (built-in and plugins) they can use, each loaded to check it."""
    scan = scan_plugins()
    types = judge_types(scan)
    failures = {name: _load_failure(name, scan) for name in types}
    table = Table(title=f"judges ({catalogue.judges().directory})")
    for column in ("name", "type", "aliases", "description"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for _, config in catalogue.judges().items():
        kind = escape(config.type)
        if config.type not in types:
            kind = f"[red]{kind} (unknown)[/red]"
        elif failures[config.type]:
            kind = f"[red]{kind} (fails to load)[/red]"
        table.add_row(config.name, kind, ", ".join(config.aliases), config.description)
    console.print(table)
    for name, problems in catalogue.judges().broken.items():
        console.print(f"[red]invalid:[/red] {name} ({problems[0]}); `vlmbench judges validate` lists all problems")
    kinds = Table(title="judge types")
    for column in ("type", "provided by", "target", "loads"):
        kinds.add_column(column, overflow="fold", no_wrap=column == "type", min_width=5 if column == "loads" else None)
    for jt in types.values():
        failure = failures[jt.name]
        status = f"[red]no: {escape(failure)}[/red]" if failure else "[green]yes[/green]"
        kinds.add_row(escape(jt.name), escape(jt.origin), escape(jt.target), status)
    console.print(kinds)
    for clash in shadowed_plugins(scan):
        console.print(f"[yellow]ignored:[/yellow] {escape(clash)}")
    for line in scan.unreadable:
        console.print(f"[yellow]unreadable:[/yellow] {escape(line)}")


@app.command("show")
def show(name: str = typer.Argument(..., help="judge name, alias or YAML path")) -> None:
    """A judge config with its type's parameters filled in."""
    config = catalogue.resolve_judge(name)
    params = load_judge_class(config.type).Params.model_validate(config.params)
    text = "".join(_params_yaml(params) if key == "params" else readable_yaml({key: value})
                   for key, value in config.model_dump(mode="json").items())
    print_yaml(console, text)


def _params_yaml(params: JudgeParams) -> str:
    """The params block under the names a judge file uses, each param after a comment giving its meaning."""
    values = params.model_dump(mode="json", by_alias=True)
    if not values:
        return "params: {}\n"
    lines = ["params:"]
    for name, field in type(params).model_fields.items():
        key = field.alias or name
        lines += [f"  # {line}" for line in textwrap.wrap(field.description or "", 96)]
        lines += [f"  {line}" for line in readable_yaml({key: values[key]}).splitlines()]
    return "\n".join(lines) + "\n"


@app.command("validate")
def validate(paths: list[Path] = typer.Argument(None, help="YAML files (default: every built-in judge)")) -> None:
    """Check judge configs and their params against their judge type."""
    targets = paths or catalogue.judges().files()
    problems: list[str] = []
    for path in targets:
        try:
            config = load_spec(path, JudgeConfig)
            try:  # the type, located in the file; then its params (likewise) and the judge itself
                load_judge_class(config.type)
            except JudgeLoadError as exc:
                _, root = parse_yaml(path)
                raise SpecError([f"{path}:{line_of(root, ('type',))}: type: {exc}"]) from None
            build_judge(config, source=str(path))
            console.print(f"[green]ok[/green] {escape(str(path))}")
        except VlmbenchError as exc:
            problems.extend(line if line.startswith(str(path)) else f"{path}: {line}" for line in exc.lines())
    if problems:
        raise SpecError(problems)


def _frames_from_dir(folder: Path) -> tuple[list[Frame], list[str]]:
    """The folder's PNG frames in file-name order, and their file names."""
    from PIL import Image

    files = sorted(p for p in folder.glob("*.png") if p.name != "contact_sheet.png")
    if not files:
        raise VlmbenchError(f"--frames: no PNG files in {folder}")
    return [Frame(pixels=np.asarray(Image.open(p).convert("RGB"))) for p in files], [p.name for p in files]


def _value_text(question: Question, answer: Answer, classes: list[str] | None) -> str:
    if answer.abstained:
        return f"abstained: {answer.abstain_reason}"
    if question is Question.RATE and classes:
        return f"{answer.value} ({classes[int(answer.value)]})"
    return f"{answer.value:.4f}"


def judge(
    task: str = typer.Option(..., "--task", "-t", help="task id, alias or YAML path"),
    judge_name: str = typer.Option(..., "--judge", "-j", help="judge name, alias or YAML path"),
    frames_dir: Path = typer.Option(None, "--frames", help="folder of PNG frames to judge"),
    rollout_frames: int = typer.Option(None, "--rollout", min=2, help="judge N frames of a random-policy rollout"),
    question: Question = typer.Option(None, "--question", "-q", help="score, compare or rate (default: the first it answers)"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("results/judgements"), "--out"),
) -> None:
    """Ask a judge about frames and print its answers; writes a PNG strip and answers.jsonl.

    They go to OUT/<task>--<judge>--<question>/. Each answer names its frame: the file name with
    --frames, the frame's position among the N (from 0) with --rollout; a compare answer also
    names the frame it was compared with.
    """
    from vlmbench.plots import captioned, contact_sheet, save

    if (frames_dir is None) == (rollout_frames is None):
        raise VlmbenchError("give exactly one of --frames DIR or --rollout N")
    spec = catalogue.resolve_task(task)
    config = catalogue.resolve_judge(judge_name)
    judge_ = build_judge(config, source=config.name)
    question = question or next(q for q in (Question.SCORE, Question.RATE, Question.COMPARE) if judge_.can_answer(q))
    if frames_dir is not None:
        (frames, names), truth = _frames_from_dir(frames_dir), None
    else:
        from vlmbench.envs.rollout import rollout

        episodes = rollout(spec, episodes=1 + (rollout_frames - 1) // spec.env.episode_length, seed=seed,
                           render=True, keep_states=False)
        steps = [(ep, t) for ep in episodes for t in range(len(ep))]
        picks = np.linspace(0, len(steps) - 1, rollout_frames).round().astype(int)
        frames = [Frame(ep.frames[t], ep.features[t]) for ep, t in (steps[i] for i in picks)]
        truth = [(ep.successes[t], ep.progress[t]) for ep, t in (steps[i] for i in picks)]
        names = list(range(len(frames)))
    if not judge_.needs_pixels and frames[0].features is None:
        raise VlmbenchError(f"judge '{config.name}' reads simulator features, which PNG frames lack: use --rollout")
    classes = spec.prompts.rating.classes if spec.prompts.rating else None
    if question is Question.SCORE:
        answers = judge_.score(spec, frames)
    elif question is Question.RATE:
        answers = judge_.rate(spec, [[f] for f in frames])
    else:
        answers = judge_.compare(spec, [([a], [b]) for a, b in zip(frames[:-1], frames[1:])])

    table = Table(title=f"{config.name} on {spec.id}: {question.value}")
    for column in ("frame", "answer", "success", "progress", "cached"):
        table.add_column(column)
    tiles, records = [], []
    short = [Path(str(name)).stem for name in names]  # captions are narrow: no ".png"
    for i, answer in enumerate(answers):
        compared = question is Question.COMPARE
        label = f"{names[i]} vs {names[i + 1]}" if compared else f"{names[i]}"
        text = _value_text(question, answer, classes)
        success, progress = truth[i] if truth else (None, None)
        table.add_row(escape(label), escape(text), "-" if success is None else str(success),
                      "-" if progress is None else f"{progress:.3f}", str(answer.provenance.cached))
        caption = f"{short[i]} vs {short[i + 1]}" if compared else short[i]
        tiles.append(captioned(frames[i].pixels, [caption, text], highlight=success))
        records.append({"frame": names[i], **({"versus": names[i + 1]} if compared else {}), **answer.to_dict()})
    if question is Question.COMPARE:
        tiles.append(captioned(frames[-1].pixels, [short[-1]], highlight=truth[-1][0] if truth else None))
    console.print(table)
    folder = out / f"{spec.id}--{config.name}--{question.value}"
    strip = save(contact_sheet(tiles, columns=min(8, len(tiles)), title=f"{config.name} {question.value}: {spec.id}"),
                 folder / "strip.png")
    (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    console.print(f"strip: {strip}")
