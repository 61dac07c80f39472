"""The built-in catalogue (tasks, judges, datasets) ships inside the wheel, so a plain `pip install .` finds it."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from vlmbench.specs.catalogue import catalogue_dir

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_tasks_and_judges_into_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included == {"tasks": "vlmbench/catalogue/tasks", "judges": "vlmbench/catalogue/judges",
                        "datasets": "vlmbench/catalogue/datasets"}
    assert pyproject["project"]["scripts"]["vlmbench"] == "vlmbench.cli:entry"


def test_a_checkout_reads_its_own_catalogue():
    assert catalogue_dir("task") == ROOT / "tasks" and catalogue_dir("judge") == ROOT / "judges"


@pytest.mark.slow
def test_the_built_wheel_carries_every_task_judge_and_dataset(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True)
    (wheel,) = tmp_path.glob("vlmbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind, pattern in (("tasks", "*.yaml"), ("judges", "*.yaml"), ("datasets", "*.parquet")):
        for path in (ROOT / kind).glob(pattern):
            assert f"vlmbench/catalogue/{kind}/{path.name}" in names
