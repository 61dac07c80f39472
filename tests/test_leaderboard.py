"""The results index and the leaderboard, on records written directly."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from console import one_line_error, vlmbench
from synthetic_records import metric, write_eval, write_run
from vlmbench.results.leaderboard import build, over_seeds, write
from vlmbench.results.store import CLIP_PARAMETERS, ResultsIndex


def test_index_skips_corrupt_partial_and_other_schema_records_by_path(tmp_path):
    good = write_eval(tmp_path, "cartpole-upright", "oracle", 0, {"epic_goal_distance": metric(0.3)})
    legacy = write_eval(tmp_path, "cartpole-upright", "oracle", 1, {"epic_goal_distance": metric(0.4)}, schema=None)
    old = write_eval(tmp_path, "cartpole-upright", "oracle", 2, {"epic_goal_distance": metric(0.5)}, schema=0)
    newer = write_eval(tmp_path, "cartpole-upright", "oracle", 3, {"epic_goal_distance": metric(0.5)}, schema=7)
    corrupt = write_eval(tmp_path, "cartpole-upright", "oracle", 4, {})
    (corrupt / "header.json").write_text('{"record": "vlmbench-ev')
    partial = write_eval(tmp_path, "mountaincar-flag", "oracle", 0, {})
    (partial / "summary.json").unlink()
    garbled = write_eval(tmp_path, "mountaincar-flag", "oracle", 1, {})
    (garbled / "summary.json").write_text(json.dumps({"task": "mountaincar-flag", "metrics": {}}))
    unfinished_run = write_run(tmp_path, "cartpole-upright", "oracle", 0, [True])
    (unfinished_run / "eval.json").unlink()

    entries, skipped = ResultsIndex(tmp_path).refresh()

    assert sorted(e.path for e in entries) == sorted(str(p) for p in (good, legacy))
    reasons = {Path(s.path): s.reason for s in skipped}
    assert set(reasons) == {old, newer, corrupt, partial, garbled, unfinished_run}
    assert "older layout version (schema 0)" in reasons[old]
    assert "schema 7" in reasons[newer] and "older" not in reasons[newer]
    assert "header.json is not valid JSON" in reasons[corrupt]
    assert reasons[partial] == "unfinished evaluation (no summary.json)"
    assert "summary lacks or garbles a field" in reasons[garbled]
    assert reasons[unfinished_run] == "unfinished run (no eval.json or summary.json)"

    proc = vlmbench("leaderboard", "--results", str(tmp_path), "--out", str(tmp_path / "board"))
    assert proc.returncode == 0, proc.stderr
    assert str(corrupt) in proc.stdout and "left out" in proc.stdout
    assert str(corrupt) in (tmp_path / "board" / "leaderboard.md").read_text()


def test_index_reads_only_new_or_changed_records_and_drops_removed_ones(tmp_path):
    first = write_eval(tmp_path, "cartpole-upright", "oracle", 0, {"epic_goal_distance": metric(0.3)})
    second = write_eval(tmp_path, "cartpole-upright", "oracle", 1, {"epic_goal_distance": metric(0.5)})
    index = ResultsIndex(tmp_path)
    index.refresh()
    # An index row is what the index holds: a summary changed behind its back with its mtime kept is not read
    summary = first / "summary.json"
    stat = summary.stat()
    summary.write_text(summary.read_text().replace("0.3", "0.9"))
    os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    entries, _ = index.refresh()
    assert {e["seed"]: e["metrics"]["epic_goal_distance"]["value"] for e in entries} == {0: 0.3, 1: 0.5}
    # ... a newer mtime is, and so is everything with a rebuild
    os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    entries, _ = index.refresh()
    assert {e["seed"]: e["metrics"]["epic_goal_distance"]["value"] for e in entries} == {0: 0.9, 1: 0.5}
    (second / "summary.json").unlink()
    (second / "header.json").unlink()
    second.rmdir()
    entries, skipped = index.refresh(rebuild=True)
    assert [e["seed"] for e in entries] == [0] and skipped == []


def test_a_record_that_finishes_adds_itself_to_an_existing_index(tmp_path):
    from vlmbench.results.store import record_finished

    ResultsIndex(tmp_path).refresh()
    folder = write_eval(tmp_path, "cartpole-upright", "oracle", 0, {"epic_goal_distance": metric(0.3)})
    record_finished(folder)
    import sqlite3

    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert db.execute("SELECT path FROM records").fetchall() == [(os.path.relpath(folder, tmp_path),)]


def bootstrap_mean(values: list[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of a mean, written out here."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def test_metrics_over_seeds_match_an_independent_computation(tmp_path):
    epic = {0: 0.1, 1: 0.2, 2: 0.6}  # mean 0.3, median 0.2
    for seed, value in epic.items():
        write_eval(tmp_path, "cartpole-upright", "oracle-noisy", seed,
                   {"epic_goal_distance": metric(value, value - 0.05, value + 0.05),
                    "goal_roc_auc": metric(0.9 + seed / 100)}, calls=10 + seed, cost_usd=0.5 * seed, abstained=seed)
    # one seed only: the record's own interval
    write_eval(tmp_path, "mountaincar-flag", "oracle-noisy", 0, {"epic_goal_distance": metric(0.7, 0.6, 0.75)})
    write_eval(tmp_path, "lunarlander-top-left", "oracle-noisy", 0, {"epic_goal_distance": metric(0.2)})
    successes = {0: [True, True, False, False], 1: [True, True, True, False], 2: [False] * 4, 3: [True] * 4}
    for seed, episodes in successes.items():
        write_run(tmp_path, "cartpole-upright", "oracle-noisy", seed, episodes, cost_usd=1.0, labels=20,
                  summary=seed % 2 == 0)  # runs from before summary.json existed read the same
    entries, skipped = ResultsIndex(tmp_path).refresh()
    assert skipped == []
    board = build(entries, skipped)

    (row,) = board.tasks["cartpole-upright"]
    cell = row.cells["epic"]
    assert cell.mean == pytest.approx(0.3) and cell.n == 3
    assert (cell.low, cell.high) == pytest.approx(bootstrap_mean([0.1, 0.2, 0.6]))
    rates = [np.mean(e) for e in successes.values()]  # 0.5, 0.75, 0, 1
    success = row.cells["success_rate"]
    assert success.mean == pytest.approx(np.mean(rates)) and success.n == 4
    assert (success.low, success.high) == pytest.approx(bootstrap_mean(rates))
    assert row.cells["eval_abstain_rate"].mean == pytest.approx(np.mean([0 / 10, 1 / 11, 2 / 12]))
    assert row.calls == 10 + 11 + 12 + 4 * 20 and row.cost_usd == pytest.approx(0.5 + 1.0 + 4 * 1.0)
    assert row.run_setting == "preference ppo 1,000 steps" and row.run_seeds == [0, 1, 2, 3]

    (single,) = board.tasks["mountaincar-flag"]
    assert (single.cells["epic"].mean, single.cells["epic"].low, single.cells["epic"].high) == (0.7, 0.6, 0.75)

    (overall,) = board.overall
    assert overall.cells["epic"].mean == pytest.approx((0.3 + 0.7 + 0.2) / 3) and overall.cells["epic"].n == 3
    assert overall.cells["success_rate"].mean == pytest.approx(np.mean(rates)) and overall.cells["success_rate"].n == 1


def test_one_seed_with_two_records_averages_them_without_an_interval():
    cell = over_seeds({0: [metric(0.2, 0.1, 0.3), metric(0.4, 0.3, 0.5)]})
    assert cell.mean == pytest.approx(0.3) and cell.low is None and cell.n == 1


def test_outputs_and_filters(tmp_path):
    for seed in (0, 1):
        write_eval(tmp_path, "cartpole-upright", "clip-vit-b32", seed,
                   {"epic_goal_distance": metric(0.5 + seed / 10)}, model="ViT-B-32")
        write_eval(tmp_path, "cartpole-upright", "clip-vit-l14", seed,
                   {"epic_goal_distance": metric(0.3 + seed / 10)}, model="ViT-L-14")
        write_eval(tmp_path, "cartpole-upright", "oracle-first-biased", seed,
                   {"identical_pair_bias": metric(0.3, 0.2, 0.4), "preference_fairness": metric(0.28),
                    "position_consistency": metric(0.4)})
        write_run(tmp_path, "cartpole-upright", "oracle-first-biased", seed, [True, seed == 1])
    entries, skipped = ResultsIndex(tmp_path).refresh()
    written = write(build(entries, skipped), tmp_path / "board")
    assert sorted(p.name for p in written) == ["epic_vs_model_size.png", "leaderboard.csv", "leaderboard.html",
                                                "leaderboard.md", "position_bias.png", "success_rate.png"]
    rows = list(csv.DictReader(open(tmp_path / "board" / "leaderboard.csv")))
    b32 = next(r for r in rows if r["scope"] == "cartpole-upright" and r["judge"] == "clip-vit-b32")
    assert float(b32["epic_mean"]) == pytest.approx(0.55) and int(b32["parameters"]) == int(CLIP_PARAMETERS["ViT-B-32"])

    proc = vlmbench("leaderboard", "--results", str(tmp_path), "--judge", "clip-b32", "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "b" / "leaderboard.md").read_text()
    assert "clip-vit-b32" in md and "clip-vit-l14" not in md  # the alias is resolved to the records' name
    proc = vlmbench("leaderboard", "--results", str(tmp_path), "--task", "cartpole-uprigth")
    assert proc.returncode == 2 and "did you mean: cartpole-upright" in one_line_error(proc)


def test_an_empty_results_folder_gives_an_empty_leaderboard_that_says_so(tmp_path):
    proc = vlmbench("leaderboard", "--results", str(tmp_path), "--out", str(tmp_path / "board"))
    assert proc.returncode == 0, proc.stderr
    assert "the leaderboard is empty" in proc.stdout
    assert "No finished evaluation or run records were found" in (tmp_path / "board" / "leaderboard.md").read_text()
    proc = vlmbench("leaderboard", "--results", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no such folder" in one_line_error(proc)
