"""The task spec schema: round trips, strictness, JSON Schema export, and the catalogue."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import yaml
from pydantic import ValidationError

from vlmbench.cli import main
from vlmbench.errors import SpecError, UnknownNameError
from vlmbench.specs import catalogue
from vlmbench.specs.catalogue import Catalogue, resolve_task
from vlmbench.specs.loading import load_spec
from vlmbench.specs.task import TaskSpec

INLINE_THEME = {
    "floor": {"pattern": "checker", "rgb1": [0.2, 0.2, 0.2], "rgb2": [0.8, 0.8, 0.8]},
    "sky": {"pattern": "gradient", "rgb1": [0.4, 0.6, 0.9]},
}


def kneel_with_inline_theme() -> dict:
    data = resolve_task("humanoid-kneel").model_dump(mode="json")
    data["render"]["theme"] = copy.deepcopy(INLINE_THEME)
    return data


def test_round_trip_every_catalogue_task():
    specs = [spec for _, spec in catalogue.tasks().items()]
    specs.append(TaskSpec.model_validate(kneel_with_inline_theme()))
    assert len(specs) > 5
    for spec in specs:
        assert TaskSpec.model_validate(spec.model_dump()) == spec
        text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        assert TaskSpec.model_validate(yaml.safe_load(text)) == spec, spec.id


def test_equality_ignores_evaluated_expressions():
    spec = resolve_task("cartpole-upright")
    fresh = TaskSpec.model_validate(spec.model_dump())
    assert spec.is_success({"pole_angle": 0.0, "cart_position": 0.0})
    assert spec.progress_of({"pole_angle": 0.0, "cart_position": 0.0}) == pytest.approx(1.0)
    assert spec == fresh


def test_spec_pickles_after_use():
    """Specs cross process boundaries (spawned rollout workers, sweeps) after they were used."""
    spec = TaskSpec.model_validate(resolve_task("cartpole-upright").model_dump())
    spec.is_success({"pole_angle": 0.0, "cart_position": 0.0})
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_json_schema_export(capsys):
    assert main(["tasks", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"id", "env", "render", "prompts", "features", "success", "progress"} <= schema["properties"].keys()
    assert {"id", "description", "source", "env", "prompts", "features", "success", "progress"} == set(schema["required"])
    assert schema["additionalProperties"] is False
    kinds = json.dumps(schema["$defs"])
    for kind in ("body_position", "contact", "joint_velocity", "observation", "state"):
        assert f'"{kind}"' in kinds


@pytest.mark.parametrize(
    "where",
    [(), ("env",), ("render",), ("render", "camera"), ("render", "theme"), ("render", "theme", "floor"),
     ("prompts",), ("prompts", "rating"), ("features", "head_height"), ("evaluation",)],
    ids=lambda w: ".".join(w) or "top",
)
def test_unknown_fields_rejected_at_every_level(where, tmp_path):
    data = kneel_with_inline_theme()
    TaskSpec.model_validate(data)  # valid before the extra field
    node = data
    for key in where:
        node = node[key]
    node["bogus"] = 1
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as exc:
        load_spec(path, TaskSpec)
    unknown = [p for p in exc.value.problems if p.endswith(": unknown field")]
    assert len(unknown) == 1 and f": {'.'.join((*where, 'bogus'))}: " in unknown[0]


def test_single_prompt_strings_become_lists():
    data = resolve_task("cartpole-upright").model_dump(mode="json")
    data["prompts"].update(goal="a pole upright", baseline="a pole")
    prompts = TaskSpec.model_validate(data).prompts
    assert prompts.goal == ["a pole upright"] and prompts.baseline == ["a pole"]
    data["prompts"]["goal"] = []
    with pytest.raises(ValidationError, match="prompts.goal"):
        TaskSpec.model_validate(data)


@pytest.mark.parametrize(
    "name, task_id",
    [("kneel", "humanoid-kneel"), ("kneeling", "humanoid-kneel"), ("cartpole", "cartpole-upright"),
     ("mountaincar", "mountaincar-flag"), ("humanoid-kneel", "humanoid-kneel")],
)
def test_aliases_resolve(name, task_id):
    assert resolve_task(name).id == task_id


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as exc:
        resolve_task("humanoid-kneal")
    assert "unknown task 'humanoid-kneal'" in str(exc.value) and "did you mean: humanoid-kneel" in str(exc.value)
    with pytest.raises(UnknownNameError) as exc:
        resolve_task("zzzzzz")
    assert "did you mean" not in str(exc.value)


def _write_task(path, task_id: str, **changes) -> None:
    data = resolve_task("cartpole-upright").model_dump(mode="json")
    data.update({"id": task_id, "aliases": [], **changes})
    path.write_text(yaml.safe_dump(data))


def test_user_yaml_path_resolves(tmp_path):
    path = tmp_path / "my-task.yaml"
    _write_task(path, "my-task", description="a user task")
    spec = resolve_task(str(path))
    assert spec.id == "my-task" and spec.description == "a user task"


def test_broken_file_does_not_block_the_rest(tmp_path):
    _write_task(tmp_path / "good.yaml", "good", aliases=["gd"])
    _write_task(tmp_path / "broken.yaml", "broken", success="pole_angel < 0.2")
    _write_task(tmp_path / "renamed.yaml", "other-name")
    (tmp_path / "notyaml.yaml").write_text("id: [unclosed\n")
    tasks = Catalogue("task", TaskSpec, tmp_path)
    assert tasks.names() == ["good"]
    assert tasks.resolve("gd").id == "good"
    assert sorted(tasks.broken) == ["broken", "notyaml", "renamed"]
    with pytest.raises(SpecError, match=r"broken\.yaml:\d+: success: unknown name 'pole_angel'"):
        tasks.resolve("broken")
    with pytest.raises(SpecError, match="'other-name' must match the file name 'renamed'"):
        tasks.resolve("renamed")
    with pytest.raises(UnknownNameError, match="did you mean: good"):
        tasks.resolve("goood")
