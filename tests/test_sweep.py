"""`vlmbench sweep`: finished cells skipped, failed ones retried, one failure never stops the grid, the budget."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from console import one_line_error, vlmbench
from synthetic_records import metric, write_eval
from vlmbench.sweeps.grid import Sweep, plan

TASKS = ("cartpole-upright", "mountaincar-flag")


class FakeCells:
    """Runs no command: a cell 'succeeds' by writing a finished evaluation record costing ``cost_usd``; cells
    listed in ``failures`` fail that many times first."""

    def __init__(self, results: Path, cost_usd: float = 0.0, failures: dict[str, int] | None = None):
        self.results, self.cost_usd, self.failures = results, cost_usd, dict(failures or {})
        self.launched: list[list[str]] = []

    def __call__(self, args: list[str], log: Path) -> tuple[int, str]:
        self.launched.append(args)
        task, judge, seed = args[args.index("--task") + 1], args[args.index("--judge") + 1], int(args[6])
        if self.failures.get(task, 0) > 0:
            self.failures[task] -= 1
            return 1, f"error: {task} broke"
        write_eval(self.results, task, judge, seed, {"epic_goal_distance": metric(0.5)}, cost_usd=self.cost_usd)
        return 0, "ok"


def test_finished_cells_are_skipped(tmp_path):
    cells = plan(TASKS, ["oracle"], [0, 1], ["eval"])
    write_eval(tmp_path, "cartpole-upright", "oracle", 1, {"epic_goal_distance": metric(0.4)})  # finished before
    fake = FakeCells(tmp_path)
    outcome = Sweep(cells, tmp_path, execute=fake).run()
    assert [(r.cell.task, r.cell.seed, r.status) for r in outcome] == [
        ("cartpole-upright", 0, "done"), ("cartpole-upright", 1, "skipped"),
        ("mountaincar-flag", 0, "done"), ("mountaincar-flag", 1, "done")]
    again = FakeCells(tmp_path)
    assert {r.status for r in Sweep(cells, tmp_path, execute=again).run()} == {"skipped"}
    assert again.launched == []


def test_a_run_cell_given_other_options_is_not_the_finished_one():
    """A grid rerun with another --eval-episodes or --timesteps must train anew, not skip the old records."""
    cell = plan(["cartpole"], ["oracle"], [0], ["run"])[0]
    names = [cell.folder(Path("r"), options).name for options in (
        {}, {"timesteps": 3000, "eval_episodes": None}, {"timesteps": 3000, "eval_episodes": 10}, {"eval_episodes": 5})]
    assert names == ["cartpole-upright--oracle--seed0", "cartpole-upright--oracle--seed0--3000steps",
                     "cartpole-upright--oracle--seed0--3000steps--10episodes", "cartpole-upright--oracle--seed0--5episodes"]


def test_a_failing_cell_is_retried_and_a_lasting_failure_does_not_stop_the_grid(tmp_path):
    cells = plan(TASKS, ["oracle"], [0], ["eval"])
    flaky = FakeCells(tmp_path, failures={"cartpole-upright": 1})
    outcome = Sweep(cells, tmp_path, retries=1, workers=2, execute=flaky).run()
    assert [(r.status, r.attempts) for r in outcome] == [("done", 2), ("done", 1)]

    broken = FakeCells(tmp_path / "again", failures={"cartpole-upright": 99})
    outcome = Sweep(cells, tmp_path / "again", retries=2, execute=broken).run()
    assert [(r.status, r.attempts) for r in outcome] == [("failed", 3), ("done", 1)]
    assert outcome[0].message == "exit 1: error: cartpole-upright broke"


def test_a_cell_that_exits_0_without_a_finished_record_has_failed(tmp_path):
    cells = plan(TASKS[:1], ["oracle"], [0], ["eval"])
    (result,) = Sweep(cells, tmp_path, retries=0, execute=lambda args, log: (0, "")).run()
    assert result.status == "failed" and "left no finished record" in result.message


def test_the_budget_stops_launching_cells_once_the_grid_has_spent_it(tmp_path):
    cells = plan(TASKS, ["oracle", "oracle-noisy"], [0, 1], ["eval"])  # 8 cells
    paid = FakeCells(tmp_path, cost_usd=0.4)
    outcome = Sweep(cells, tmp_path, budget_usd=1.0, execute=paid).run()
    # launched while spent < $1: before the 1st ($0), 2nd ($0.4), 3rd ($0.8); the 4th would start at $1.2
    assert [r.status for r in outcome] == ["done"] * 3 + ["not started"] * 5
    assert outcome[-1].message == "budget of $1.00 reached"
    assert Sweep(cells, tmp_path, budget_usd=1.0, execute=paid).spent() == pytest.approx(1.2)


def test_unknown_task_or_judge_is_rejected_before_anything_starts(tmp_path):
    proc = vlmbench("sweep", "--tasks", "cartpole-uprigth,mountaincar-flag", "--judges", "oracle",
                    "--results", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown task 'cartpole-uprigth' (did you mean: cartpole-upright" in one_line_error(proc)
    proc = vlmbench("sweep", "--tasks", "cartpole-upright", "--judges", "oracle,oracel-noisy",
                    "--results", str(tmp_path))
    assert proc.returncode == 2 and "did you mean: oracle-noisy" in one_line_error(proc)
    proc = vlmbench("sweep", "--tasks", "cartpole-upright", "--judges", "oracle", "--what", "evals",
                    "--results", str(tmp_path))
    assert proc.returncode == 2 and "--what evals: choose eval, run or both" in one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


def test_a_ray_address_that_does_not_answer_is_a_one_line_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    proc = vlmbench("sweep", "--tasks", "cartpole-upright", "--judges", "oracle", "--ray", f"127.0.0.1:{port}",
                    "--results", str(tmp_path))
    assert proc.returncode == 2
    message = one_line_error(proc)
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in message and "\n" not in message


def test_one_real_cell_through_the_console_script_then_skipped(tmp_path):
    args = ("sweep", "--tasks", "cartpole-upright", "--judges", "oracle", "--seeds", "3", "--results", str(tmp_path))
    first = vlmbench(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[1/1] done eval cartpole-upright oracle seed 3" in first.stdout
    assert (tmp_path / "evals" / "seed3" / "cartpole-upright--oracle" / "summary.json").exists()
    assert "oracle" in (tmp_path / "leaderboard" / "leaderboard.md").read_text()
    second = vlmbench(*args)
    assert second.returncode == 0 and "[1/1] skipped eval cartpole-upright oracle seed 3" in second.stdout


def test_cells_run_as_ray_tasks_on_a_local_ray_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'vlmbench[ray]')")
    from vlmbench.sweeps.ray_cluster import connect, disconnect

    execute = connect("local", 1)
    try:
        code, last = execute(["judges", "show", "oracle"], tmp_path / "cell.log")
    finally:
        disconnect()
    assert code == 0 and not ray.is_initialized()
    assert "Noise-free oracle" in (tmp_path / "cell.log").read_text()
