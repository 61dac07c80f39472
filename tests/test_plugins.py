"""Judge plugins from the 'vlmbench.judges' entry points, using examples/vlmbench-judge-example.

Plugins are registered without touching the shared environment: each test writes a ``*.dist-info``
folder (METADATA and entry_points.txt) into tmp_path and puts tmp_path on sys.path, which is all
importlib.metadata needs to find a distribution. The slow test really pip-installs the example.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from vlmbench.cli import judges_cmd, main
from vlmbench.judges.base import Frame, Judge
from vlmbench.judges.registry import (
    BUILTIN_TYPES,
    ENTRY_POINT_GROUP,
    JudgeLoadError,
    judge_types,
    load_judge_class,
    scan_plugins,
    shadowed_plugins,
)
from vlmbench.specs.catalogue import resolve_task

from console import one_line_error, vlmbench

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vlmbench-judge-example"
EXAMPLE_YAML = EXAMPLE / "judge.yaml"
EXAMPLE_TARGET = "vlmbench_judge_example.judge:ColourHeightJudge"
PLUGIN_MODULES = ("vlmbench_judge_example", "broken_judge_plugin", "not_a_judge_plugin", "exiting_judge_plugin",
                  "interrupted_judge_plugin")


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    """Plugin modules are imported afresh in each test, and rich output is not wrapped."""
    monkeypatch.setattr(judges_cmd, "console", Console(width=250))
    yield
    for name in [n for n in sys.modules if n.split(".")[0] in PLUGIN_MODULES]:
        del sys.modules[name]


@pytest.fixture
def register(tmp_path, monkeypatch):
    """register(dist, {type: "module:Class"}): a fake installed distribution declaring judge types."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(dist: str, types: dict[str, str]) -> None:
        info = tmp_path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        lines = "".join(f"{name} = {target}\n" for name, target in types.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")

    return write


@pytest.fixture
def example(register, monkeypatch):
    """The example plugin, registered from its source folder."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    register("vlmbench-judge-example", {"colour-height": EXAMPLE_TARGET})


def judge_yaml(folder: Path, judge_type: str, **params) -> Path:
    path = folder / f"{judge_type}.yaml"
    path.write_text(json.dumps({"name": f"my-{judge_type}", "type": judge_type, "params": params}))
    return path


def cartpole_frame(angle_deg: float, cart: bool = True) -> Frame:
    """A white 120x120 frame: black cart, brown pole of length 40 hinged just below its top, at ``angle_deg``."""
    pixels = np.full((120, 120, 3), 255, np.uint8)
    if cart:
        pixels[79:90, 50:70] = 0
    for t in np.linspace(0, 40, 200):
        r = round(80 - t * math.cos(math.radians(angle_deg)))
        c = round(60 + t * math.sin(math.radians(angle_deg)))
        pixels[r - 1 : r + 2, c - 1 : c + 2] = (202, 152, 101)
    return Frame(pixels=pixels)


# -- the example judge itself ------------------------------------------------------------------


def test_example_judge_measures_uprightness_and_abstains(example):
    cls = load_judge_class("colour-height")
    judge = cls("pole", cls.Params())
    task = resolve_task("cartpole-upright")
    answers = judge.score(task, [cartpole_frame(a) for a in (0, 30, 60, 120)] + [cartpole_frame(0, cart=False)])
    values = [a.value for a in answers[:4]]
    assert values[0] > 0.9 and values[0] > values[1] > values[2] > values[3] == 0.0
    assert abs(values[1] - math.cos(math.radians(30))) < 0.1
    assert answers[4].abstained and "anchor colour not visible" in answers[4].abstain_reason
    assert all(a.provenance.judge == "pole" and a.provenance.cost_usd == 0 for a in answers)
    compared = judge.compare(task, [([cartpole_frame(10)], [cartpole_frame(70)])])
    assert compared[0].value == 1.0


def test_example_params_are_validated(example, tmp_path, capsys):
    bad = judge_yaml(tmp_path, "colour-height", tolerance=300, colour="red")
    assert main(["judges", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "params.tolerance" in err and "params.colour: unknown field" in err


# -- (a) registering the example through an entry point ----------------------------------------


def type_row(out: str, type_name: str) -> str:
    """The row of ``judges list``'s judge-types table for one type (the console is wide enough not to wrap)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "judge types")  # the title, centred or not
    return next(line for line in lines[start:] if line.startswith(f"│ {type_name} "))


def test_example_is_known_without_being_imported(example, monkeypatch, capsys):
    jt = judge_types()["colour-height"]
    assert (jt.target, jt.origin) == (EXAMPLE_TARGET, "vlmbench-judge-example")
    assert not any(n.startswith("vlmbench_judge_example") for n in sys.modules)
    monkeypatch.setattr(judges_cmd, "console", Console(width=1000))
    assert main(["judges", "list"]) == 0  # the list loads every type to show whether it works
    row = type_row(capsys.readouterr().out, "colour-height")
    assert "vlmbench-judge-example" in row and row.rstrip(" │").endswith("yes")
    cls = load_judge_class("colour-height")
    assert issubclass(cls, Judge) and cls.__name__ == "ColourHeightJudge"


def test_example_yaml_validates(example, capsys):
    assert main(["judges", "validate", str(EXAMPLE_YAML)]) == 0
    assert "ok" in capsys.readouterr().out


def test_cli_judges_a_rollout_with_the_example(example, tmp_path):
    code = main(["judge", "--task", "cartpole-upright", "--judge", str(EXAMPLE_YAML), "--rollout", "4",
                 "--out", str(tmp_path)])
    assert code == 0
    folder = tmp_path / "cartpole-upright--cartpole-pole-height--score"
    assert (folder / "strip.png").stat().st_size > 0
    records = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 4
    values = {r["value"] for r in records if r["value"] is not None}
    assert len(values) > 1, records
    assert all(r["provenance"]["judge"] == "cartpole-pole-height" for r in records)


def test_cli_judges_png_frames_by_file_name(example, tmp_path):
    """Answers name the PNG each came from; each question writes its own folder."""
    from PIL import Image

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    angles = {"b_tilted.png": 60, "a_upright.png": 0, "c_fallen.png": 120}
    for name, angle in angles.items():
        Image.fromarray(cartpole_frame(angle).pixels).save(frames_dir / name)
    argv = ["judge", "--task", "cartpole-upright", "--judge", str(EXAMPLE_YAML), "--frames", str(frames_dir),
            "--out", str(tmp_path / "out")]
    assert main([*argv, "--question", "score"]) == 0
    assert main([*argv, "--question", "compare"]) == 0

    def answers(question: str) -> list[dict]:
        path = tmp_path / "out" / f"cartpole-upright--cartpole-pole-height--{question}" / "answers.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    scores = {r["frame"]: r["value"] for r in answers("score")}
    assert list(scores) == sorted(angles)
    judge = load_judge_class("colour-height")("pole", load_judge_class("colour-height").Params())
    task = resolve_task("cartpole-upright")
    for name, angle in angles.items():  # each file's own answer, not its neighbour's
        assert scores[name] == pytest.approx(judge.score(task, [cartpole_frame(angle)])[0].value)
    pairs = [(r["frame"], r["versus"]) for r in answers("compare")]
    assert pairs == [("a_upright.png", "b_tilted.png"), ("b_tilted.png", "c_fallen.png")]


# -- (b) a plugin that fails to import ---------------------------------------------------------


@pytest.fixture
def broken(register, tmp_path) -> Path:
    (tmp_path / "broken_judge_plugin.py").write_text('raise ImportError("needs the frobnicate package")\n')
    register("broken-plugin", {"broken-judge": "broken_judge_plugin:BrokenJudge"})
    return judge_yaml(tmp_path, "broken-judge")


def test_broken_plugin_is_listed_with_its_error(broken, monkeypatch, capsys):
    monkeypatch.setattr(judges_cmd, "console", Console(width=1000))
    assert main(["judges", "list"]) == 0
    out = capsys.readouterr().out
    row = type_row(out, "broken-judge")
    assert "broken-plugin" in row and "no: " in row and "ImportError: needs the frobnicate package" in row
    assert type_row(out, "oracle").rstrip(" │").endswith("yes")


@pytest.mark.parametrize("statement, error", [("sys.exit(3)", "SystemExit: 3"), ("sys.exit()", "SystemExit")])
def test_plugin_exiting_at_import_is_a_load_failure(statement, error, register, tmp_path, monkeypatch, capsys):
    """A plugin that calls sys.exit() while being imported must not end vlmbench."""
    (tmp_path / "exiting_judge_plugin.py").write_text(f"import sys\n{statement}\n")
    register("exiting-plugin", {"exiting-judge": "exiting_judge_plugin:ExitingJudge"})
    with pytest.raises(JudgeLoadError, match=f"'exiting-judge' \\(exiting-plugin, .*failed to load: {error}$"):
        load_judge_class("exiting-judge")
    assert main(["judges", "validate", str(judge_yaml(tmp_path, "exiting-judge"))]) == 2
    assert f"failed to load: {error}" in capsys.readouterr().err
    monkeypatch.setattr(judges_cmd, "console", Console(width=1000))
    assert main(["judges", "list"]) == 0
    assert f"failed to load: {error}" in type_row(capsys.readouterr().out, "exiting-judge")


def test_keyboard_interrupt_during_plugin_import_still_interrupts(register, tmp_path):
    (tmp_path / "interrupted_judge_plugin.py").write_text("raise KeyboardInterrupt\n")
    register("interrupted-plugin", {"interrupted-judge": "interrupted_judge_plugin:Judge"})
    with pytest.raises(KeyboardInterrupt):
        load_judge_class("interrupted-judge")


def write_unreadable_distribution(folder: Path) -> None:
    """An installed distribution whose entry_points.txt is Latin-1, not UTF-8."""
    info = folder / "latin_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: latin-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_bytes(f"[{ENTRY_POINT_GROUP}]\ncafé = café:CaféJudge\n".encode("latin-1"))


def test_unreadable_distribution_is_skipped_and_named(example, tmp_path, monkeypatch, capsys):
    write_unreadable_distribution(tmp_path)
    with pytest.raises(UnicodeDecodeError):  # what every command ran into when reading all entry points at once
        entry_points(group=ENTRY_POINT_GROUP)
    scan = scan_plugins()
    assert [name for _, name in scan.entry_points] == ["vlmbench-judge-example"]
    [line] = scan.unreadable
    assert line.startswith(f"distribution 'latin-plugin' (in {tmp_path}): its entry points cannot be read (UnicodeDecodeError")
    assert set(judge_types()) == {*BUILTIN_TYPES, "colour-height"}
    known = ", ".join(sorted({*BUILTIN_TYPES, "colour-height"}))
    with pytest.raises(JudgeLoadError, match=f"unknown judge type 'café'; known: {known}; distribution 'latin-plugin'"):
        load_judge_class("café")
    monkeypatch.setattr(judges_cmd, "console", Console(width=1000))
    assert main(["judges", "list"]) == 0
    out = capsys.readouterr().out
    assert f"unreadable: {line}" in out and type_row(out, "colour-height").rstrip(" │").endswith("yes")


def test_only_the_first_distribution_of_a_name_counts(tmp_path, monkeypatch):
    """As with importlib.metadata.entry_points(): a second copy further down sys.path is not a second plugin."""
    for copy, target in [("first", "mod_a:A"), ("second", "mod_b:B")]:
        info = tmp_path / copy / "twice_plugin-0.1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: twice-plugin\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntwice = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "second"))
    monkeypatch.syspath_prepend(str(tmp_path / "first"))
    assert judge_types()["twice"].target == "mod_a:A"
    assert [ep.value for ep, name in scan_plugins().entry_points if name == "twice-plugin"] == ["mod_a:A"]
    assert not shadowed_plugins()


def test_console_script_survives_broken_plugins(tmp_path):
    """The installed `vlmbench` script, with an unreadable distribution, an exiting plugin and the example on PYTHONPATH."""
    write_unreadable_distribution(tmp_path)
    (tmp_path / "exiting_judge_plugin.py").write_text("import sys\nsys.exit(3)\n")
    for dist, line in [("exiting-plugin", "exiting-judge = exiting_judge_plugin:ExitingJudge"),
                       ("vlmbench-judge-example", f"colour-height = {EXAMPLE_TARGET}")]:
        info = tmp_path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{line}\n")
    path = os.pathsep.join([str(tmp_path), str(EXAMPLE), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {"PYTHONPATH": path, "COLUMNS": "1000"}

    listing = vlmbench("judges", "list", env=env)
    assert listing.returncode == 0 and "Traceback" not in listing.stdout + listing.stderr, listing.stderr
    assert type_row(listing.stdout, "colour-height").rstrip(" │").endswith("yes")
    assert "failed to load: SystemExit: 3" in type_row(listing.stdout, "exiting-judge")
    assert "unreadable: distribution 'latin-plugin'" in listing.stdout

    invalid = vlmbench("judges", "validate", str(judge_yaml(tmp_path, "exiting-judge")), env=env)
    assert invalid.returncode == 2 and "failed to load: SystemExit: 3" in one_line_error(invalid)

    judged = vlmbench("judge", "--task", "cartpole-upright", "--judge", "oracle", "--rollout", "2", "--question",
                      "score", "--out", str(tmp_path / "out"), env=env)  # a judge is resolved as in `run`
    assert judged.returncode == 0, judged.stderr
    assert (tmp_path / "out" / "cartpole-upright--oracle--score" / "answers.jsonl").exists()


@pytest.mark.parametrize("command", ["validate", "judge"])
def test_broken_plugin_fails_in_one_line(broken, command, capsys):
    argv = (["judges", "validate", str(broken)] if command == "validate"
            else ["judge", "--task", "cartpole-upright", "--judge", str(broken), "--rollout", "2"])
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "broken-judge" in lines[0] and "ImportError: needs the frobnicate package" in lines[0]
    assert "Traceback" not in captured.err + captured.out


# -- (c) an entry point that is not a Judge ----------------------------------------------------


def test_entry_point_to_a_non_judge_is_refused(register, tmp_path, capsys):
    (tmp_path / "not_a_judge_plugin.py").write_text("class NotAJudge:\n    pass\n")
    register("odd-plugin", {"not-a-judge": "not_a_judge_plugin:NotAJudge"})
    with pytest.raises(JudgeLoadError, match="not-a-judge.*is not a vlmbench Judge subclass"):
        load_judge_class("not-a-judge")
    assert main(["judges", "validate", str(judge_yaml(tmp_path, "not-a-judge"))]) == 2
    assert "is not a vlmbench Judge subclass" in capsys.readouterr().err


# -- (d) a real installation -------------------------------------------------------------------


@pytest.mark.slow
def test_pip_installed_example_is_listed(tmp_path):
    """pip-install the example into a fresh venv that also sees this environment's packages.

    ``venv --system-site-packages`` made from inside a venv exposes the *base* interpreter's
    packages, not this venv's, so a .pth file adds this environment's site-packages instead.
    """
    venv, source = tmp_path / "venv", tmp_path / "vlmbench-judge-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    (Path(site) / "parent_env.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    # as a user installs a plugin: pip builds it in isolation, fetching its build backend from the index
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(source)], check=True)

    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "COLUMNS": "250"}

    def run(code: str, *args: str) -> str:
        done = subprocess.run([python, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    vlmbench = "from vlmbench.cli import entry; entry()"  # this venv has no vlmbench script of its own
    listing = run(vlmbench, "judges", "list")
    assert "colour-height" in listing and "vlmbench-judge-example" in listing
    assert "ok" in run(vlmbench, "judges", "validate", str(source / "judge.yaml"))
    assert run("import vlmbench_judge_example as m; print(m.__file__)").startswith(site)
