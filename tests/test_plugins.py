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
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from vlmbench.cli import judges_cmd, main
from vlmbench.judges.base import Frame, Judge
from vlmbench.judges.registry import ENTRY_POINT_GROUP, JudgeLoadError, judge_types, load_judge_class
from vlmbench.specs.catalogue import resolve_task

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vlmbench-judge-example"
EXAMPLE_YAML = EXAMPLE / "judge.yaml"
EXAMPLE_TARGET = "vlmbench_judge_example.judge:ColourHeightJudge"
PLUGIN_MODULES = ("vlmbench_judge_example", "broken_judge_plugin", "not_a_judge_plugin")


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


def test_example_is_listed_without_being_imported(example, capsys):
    jt = judge_types()["colour-height"]
    assert (jt.target, jt.origin) == (EXAMPLE_TARGET, "vlmbench-judge-example")
    assert main(["judges", "list"]) == 0
    assert "colour-height" in capsys.readouterr().out
    assert not any(n.startswith("vlmbench_judge_example") for n in sys.modules)
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


def test_broken_plugin_is_still_listed(broken, capsys):
    assert main(["judges", "list"]) == 0
    out = capsys.readouterr().out
    assert "broken-judge" in out and "broken-plugin" in out


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
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    str(source)], check=True)

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
