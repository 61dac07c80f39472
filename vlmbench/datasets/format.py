"""The dataset file: labelled simulator states of one task, in one Parquet file.

One row per state (``?`` marks a column that may be null):

    state_id      string    unique in the file; names the state's cached frame
    task          string    the task id, as in the file metadata
    task_version  int32     the task's version, as in the file metadata
    state         string    ``SimState.to_dict()`` as JSON: restoring it re-renders the frame bit for bit
    features      string    the task's features in that state, a JSON object of numbers
    label         int8      1 where the goal holds, 0 where it does not
    rating        int8 ?    the index of one of the task's rating classes (0 = worst), where a person rated it
    progress      float64   the task's progress expression in that state
    labeller      string    who gave the label: ``detector`` (the task's success expression) or a person's handle
    sampler       string    how the state was found (vlmbench.datasets.build: random, goal, near-miss, trajectory)
    seed          int64     the seed that, with the sampler, reproduces the state
    episode       int64 ?   the episode (or attempt) of that sampler call the state comes from
    step          int64 ?   environment steps since that episode's reset
    trajectory    int64 ?   the trajectory the state belongs to; null for a lone state
    t             int64 ?   its index in the trajectory, 0 first; the last state of a trajectory holds the goal

Trajectories (short state sequences ending in the goal, for metrics of order) share the table:
their rows have ``trajectory`` and ``t`` set, lone states have both null.

The file's key-value metadata holds, under the key ``vlmbench``, a JSON object: ``format_version``,
``task``, ``task_version``, ``created`` (ISO 8601, UTC), ``vlmbench_version``, ``build`` (the
settings it was built with) and ``notes`` (anything a reader should know, e.g. a sampler that
found fewer goal states than asked for).

Loading checks all of it against the task catalogue: a file that is missing, not Parquet, not a
vlmbench dataset, of another task or task version, or with missing or malformed columns is a
one-line VlmbenchError naming the file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata as importlib_metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vlmbench.envs.sim_state import SimState
from vlmbench.errors import VlmbenchError
from vlmbench.files import atomic_write
from vlmbench.specs.catalogue import catalogue_dir, tasks
from vlmbench.specs.task import TaskSpec

FORMAT_VERSION = 1
METADATA_KEY = b"vlmbench"
LOCAL_DIR = Path("results/datasets")  # where `vlmbench dataset build` writes, and `dataset list` looks
SCHEMA = pa.schema([
    ("state_id", pa.string()),
    ("task", pa.string()),
    ("task_version", pa.int32()),
    ("state", pa.string()),
    ("features", pa.string()),
    ("label", pa.int8()),
    ("rating", pa.int8()),
    ("progress", pa.float64()),
    ("labeller", pa.string()),
    ("sampler", pa.string()),
    ("seed", pa.int64()),
    ("episode", pa.int64()),
    ("step", pa.int64()),
    ("trajectory", pa.int64()),
    ("t", pa.int64()),
])
NULLABLE = frozenset({"rating", "episode", "step", "trajectory", "t"})
METADATA_FIELDS = ("format_version", "task", "task_version", "created", "vlmbench_version", "build", "notes")


@dataclass(frozen=True)
class Row:
    """One labelled state."""

    state_id: str
    state: SimState
    features: dict[str, float]
    label: int
    progress: float
    labeller: str
    sampler: str
    seed: int
    rating: int | None = None
    episode: int | None = None
    step: int | None = None
    trajectory: int | None = None
    t: int | None = None


@dataclass(frozen=True)
class Dataset:
    """Labelled states of one task version; ``path`` is the file it was read from or saved to."""

    task: str
    task_version: int
    rows: list[Row]
    build: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    created: str = ""
    vlmbench_version: str = ""
    path: Path | None = None

    def lone(self) -> list[Row]:
        """The states that belong to no trajectory."""
        return [row for row in self.rows if row.trajectory is None]

    def trajectories(self) -> dict[int, list[Row]]:
        """Each trajectory's states in order, by trajectory id."""
        out: dict[int, list[Row]] = {}
        for row in sorted((r for r in self.rows if r.trajectory is not None), key=lambda r: (r.trajectory, r.t)):
            out.setdefault(row.trajectory, []).append(row)
        return out

    @cached_property
    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the file it was read from or saved to."""
        if self.path is None:
            raise ValueError("a dataset has a digest once saved")
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


def vlmbench_version() -> str:
    try:
        return importlib_metadata.version("vlmbench")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _columns(dataset: Dataset) -> dict[str, list]:
    rows = dataset.rows
    return {
        "state_id": [r.state_id for r in rows],
        "task": [dataset.task] * len(rows),
        "task_version": [dataset.task_version] * len(rows),
        "state": [_json(r.state.to_dict()) for r in rows],
        "features": [_json(r.features) for r in rows],
        "label": [r.label for r in rows],
        "rating": [r.rating for r in rows],
        "progress": [r.progress for r in rows],
        "labeller": [r.labeller for r in rows],
        "sampler": [r.sampler for r in rows],
        "seed": [r.seed for r in rows],
        "episode": [r.episode for r in rows],
        "step": [r.step for r in rows],
        "trajectory": [r.trajectory for r in rows],
        "t": [r.t for r in rows],
    }


def save_dataset(dataset: Dataset, path: Path) -> Dataset:
    """Write ``dataset`` to ``path`` atomically (zstd-compressed Parquet); returns it with its path set."""
    info = {
        "format_version": FORMAT_VERSION,
        "task": dataset.task,
        "task_version": dataset.task_version,
        "created": dataset.created or now(),
        "vlmbench_version": dataset.vlmbench_version or vlmbench_version(),
        "build": dataset.build,
        "notes": dataset.notes,
    }
    table = pa.Table.from_pydict(_columns(dataset), schema=SCHEMA.with_metadata({METADATA_KEY: _json(info)}))
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", compression_level=19))
    return Dataset(dataset.task, dataset.task_version, dataset.rows, dataset.build, dataset.notes,
                   info["created"], info["vlmbench_version"], path)


# -- reading ----------------------------------------------------------------------------------------
def shipped_dir() -> Path:
    """datasets/ of a source checkout, or the copy inside the wheel."""
    return catalogue_dir("dataset")


def shipped_path(task_id: str) -> Path:
    return shipped_dir() / f"{task_id}.parquet"


def resolve_dataset(name: str) -> Path:
    """The file a dataset name means: a path (ending in .parquet or holding a path separator) as
    given; otherwise a task id or alias names the task's shipped dataset, or else an existing file."""
    separators = {os.sep, os.altsep} - {None}
    if name.endswith(".parquet") or any(sep in name for sep in separators):
        return Path(name)
    catalogue = tasks()
    if name in catalogue.names() or any(name in spec.aliases for _, spec in catalogue.items()):
        task_id = catalogue.resolve(name).id
        path = shipped_path(task_id)
        if not path.is_file():
            raise VlmbenchError(f"no shipped dataset for task '{task_id}' (expected {path}); build one with "
                                f"`vlmbench dataset build --task {task_id}`")
        return path
    if Path(name).exists():
        return Path(name)
    raise VlmbenchError(f"unknown dataset '{name}': neither a task with a shipped dataset nor a file; "
                        "`vlmbench dataset list` shows them")


def _fail(path: Path, problem: str) -> VlmbenchError:
    return VlmbenchError(f"{path}: {problem}")


def read_info(path: Path) -> dict:
    """The file's vlmbench metadata, checked; errors name the file."""
    if not path.exists():
        raise VlmbenchError(f"dataset file {path} does not exist")
    if not path.is_file():
        raise VlmbenchError(f"dataset file {path} is not a regular file")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(path, f"not a readable Parquet file ({_brief(exc)})") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise _fail(path, "not a vlmbench dataset (no 'vlmbench' entry in the Parquet metadata)")
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _fail(path, "the 'vlmbench' metadata is not valid JSON") from None
    if not isinstance(info, dict):
        raise _fail(path, "the 'vlmbench' metadata is not a JSON object")
    missing = [name for name in METADATA_FIELDS if name not in info]
    if missing:
        raise _fail(path, f"the 'vlmbench' metadata lacks {', '.join(missing)}")
    version = info["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(path, f"format_version {version!r} is not a positive whole number")
    if version > FORMAT_VERSION:
        raise _fail(path, f"format version {version} is newer than this vlmbench reads ({FORMAT_VERSION}); "
                          "upgrade vlmbench")
    if not isinstance(info["task"], str) or not isinstance(info["task_version"], int):
        raise _fail(path, "the 'vlmbench' metadata's task must be a string and task_version a whole number")
    if not isinstance(info["build"], dict) or not isinstance(info["notes"], list):
        raise _fail(path, "the 'vlmbench' metadata's build must be an object and notes a list")
    return info


def _task_for(path: Path, info: dict, task: TaskSpec | None) -> TaskSpec:
    """The task the file must match: ``task`` if given, else the catalogue's task of the file's id."""
    if task is None:
        catalogue = tasks()
        if info["task"] not in catalogue.names():
            raise _fail(path, f"built for task '{info['task']}', which is not in the task catalogue")
        task = catalogue.resolve(info["task"])
    if info["task"] != task.id:
        raise _fail(path, f"holds states of task '{info['task']}', not '{task.id}'")
    if info["task_version"] != task.version:
        raise _fail(path, f"built for version {info['task_version']} of task '{task.id}', which is now version "
                          f"{task.version}; rebuild it with `vlmbench dataset build --task {task.id}`")
    return task


_KINDS = {
    "string": (pa.types.is_string, pa.types.is_large_string),
    "int": (pa.types.is_integer,),
    "float": (pa.types.is_floating,),
}


def _kind(dtype: pa.DataType) -> str:
    return "string" if pa.types.is_string(dtype) else "float" if pa.types.is_floating(dtype) else "int"


def load_dataset(path: Path, task: TaskSpec | None = None) -> Dataset:
    """Read and check a dataset file. ``task`` (default: the catalogue's task of the file's id) must be
    the file's task and version."""
    path = Path(path)
    info = read_info(path)
    task = _task_for(path, info, task)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise _fail(path, f"not a readable Parquet file ({_brief(exc)})") from None
    if table.num_rows == 0:
        raise _fail(path, "holds no states")
    missing = [name for name in SCHEMA.names if name not in table.column_names]
    if missing:
        raise _fail(path, f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    for column in SCHEMA:
        kind = _kind(column.type)
        actual = table.schema.field(column.name).type
        if not (pa.types.is_null(actual) and column.name in NULLABLE) and not any(
                check(actual) for check in _KINDS[kind]):
            raise _fail(path, f"column '{column.name}' holds {actual}, expected {kind} values")
    rows = [_row(path, i, raw, info, task) for i, raw in enumerate(table.select(SCHEMA.names).to_pylist())]
    _check_ids_and_trajectories(path, rows)
    return Dataset(info["task"], info["task_version"], rows, info["build"], list(info["notes"]),
                   str(info["created"]), str(info["vlmbench_version"]), path)


def _row(path: Path, index: int, raw: dict, info: dict, task: TaskSpec) -> Row:
    where = f"row {index}"
    for name in SCHEMA.names:
        if raw[name] is None and name not in NULLABLE:
            raise _fail(path, f"{where}: '{name}' is empty")
    where = f"row {index} (state_id {raw['state_id']})"
    if raw["task"] != info["task"] or raw["task_version"] != info["task_version"]:
        raise _fail(path, f"{where}: task {raw['task']} version {raw['task_version']} differs from the file's "
                          f"{info['task']} version {info['task_version']}")
    if raw["label"] not in (0, 1):
        raise _fail(path, f"{where}: label {raw['label']} is neither 1 (goal) nor 0 (not goal)")
    classes = len(task.prompts.rating.classes) if task.prompts.rating else 0
    if raw["rating"] is not None and not 0 <= raw["rating"] < classes:
        raise _fail(path, f"{where}: rating {raw['rating']} is not a class index of task '{task.id}' "
                          f"(0 to {classes - 1})")
    try:
        state = SimState.from_dict(json.loads(raw["state"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"{where}: state is not a saved simulator state ({_brief(exc)})") from None
    try:
        features = json.loads(raw["features"])
    except json.JSONDecodeError:
        features = None
    if not isinstance(features, dict) or not all(isinstance(v, (int, float)) for v in features.values()):
        raise _fail(path, f"{where}: features is not a JSON object of numbers")
    if set(features) != set(task.features):
        raise _fail(path, f"{where}: features {sorted(features)} are not the task's {sorted(task.features)}")
    fields = {name: raw[name] for name in ("label", "progress", "labeller", "sampler", "seed", "rating", "episode",
                                           "step", "trajectory", "t")}
    return Row(state_id=raw["state_id"], state=state, features=features, **fields)


def _check_ids_and_trajectories(path: Path, rows: list[Row]) -> None:
    seen: set[str] = set()
    for row in rows:
        if row.state_id in seen:
            raise _fail(path, f"state_id {row.state_id} occurs more than once")
        seen.add(row.state_id)
        if (row.trajectory is None) != (row.t is None):
            raise _fail(path, f"state_id {row.state_id}: trajectory and t must both be set or both be empty")
    steps: dict[int, list[int]] = {}
    for row in rows:
        if row.trajectory is not None:
            steps.setdefault(row.trajectory, []).append(row.t)
    for trajectory, ts in steps.items():
        if sorted(ts) != list(range(len(ts))):
            raise _fail(path, f"trajectory {trajectory}: t runs {sorted(ts)}, expected 0 to {len(ts) - 1}")


def _brief(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
