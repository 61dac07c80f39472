"""`vlmbench eval`: score a judge against a task's labelled states."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vlmbench.cli.output import bar, make_console
from vlmbench.errors import Interrupted, VlmbenchError

console = make_console()


def _probes(text: str) -> tuple[str, ...]:
    from vlmbench.metrics.judge_eval import PROBES

    chosen = tuple(p.strip() for p in text.split(",") if p.strip()) if text != "none" else ()
    unknown = [p for p in chosen if p not in PROBES]
    if unknown:
        raise VlmbenchError(f"--probes: unknown probe {', '.join(unknown)}; choose from {', '.join(PROBES)} or none")
    return chosen


def _metric_dict(metric) -> dict:
    return {"value": metric.value, "ci_low": metric.ci_low, "ci_high": metric.ci_high, "n": metric.n,
            "note": metric.note}


def evaluate_judge(
    task: str = typer.Option(..., "--task", "-t", help="task id, alias or YAML path"),
    judge: str = typer.Option(..., "--judge", "-j", help="judge name, alias or YAML path"),
    dataset: str = typer.Option(None, "--dataset", "-d", help="dataset path or task id (default: the task's shipped one)"),
    probes: str = typer.Option(",".join(("identical", "swap", "repeat")), "--probes",
                               help="position-bias probes for compare judges: identical, swap, repeat, or none"),
    pairs: int = typer.Option(200, "--pairs", help="accuracy pairs asked of a compare judge"),
    seed: int = typer.Option(0, "--seed", help="seed of the split, the pairs and the bootstrap intervals"),
    workers: int = typer.Option(1, "--workers", help="processes rendering frames for pixel judges"),
    results: Path = typer.Option(Path("results/evals"), "--results", help="where evaluation records go"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an evaluation made with other settings"),
) -> None:
    """Score a judge: EPIC distance, goal ROC-AUC, progress correlation, value order, pairwise accuracy, bias probes."""
    from vlmbench.datasets.format import load_dataset, resolve_dataset
    from vlmbench.datasets.render import frames
    from vlmbench.judges.registry import build_judge
    from vlmbench.metrics.judge_eval import EvalSettings, JudgeEvaluation
    from vlmbench.plots import bias_chart, reward_plots
    from vlmbench.results.eval_record import EvalRecord
    from vlmbench.results.record import library_versions, session_info
    from vlmbench.specs.catalogue import resolve_judge, resolve_task

    for option, value, ok in (("--pairs", pairs, pairs >= 1), ("--workers", workers, workers >= 1),
                              ("--seed", seed, 0 <= seed < 2**31)):
        if not ok:
            raise VlmbenchError(f"{option} {value}: give " + ("0 to 2^31-1" if option == "--seed" else "at least 1"))
    spec = resolve_task(task)
    judge_config = resolve_judge(judge)
    the_judge = build_judge(judge_config, source=judge)
    settings = EvalSettings(pairs=pairs, probes=_probes(probes), seed=seed)
    data = load_dataset(resolve_dataset(dataset or spec.id), spec)
    the_judge.warm_up()
    header = {"task": spec.model_dump(mode="json"), "judge": judge_config.model_dump(mode="json"),
              "dataset": {"task": data.task, "task_version": data.task_version, "digest": data.digest},
              "settings": vars(settings)}
    header["settings"]["probes"] = list(settings.probes)
    record = EvalRecord(results / f"{spec.id}--{judge_config.name}", header, overwrite=overwrite)
    try:
        for note in record.notes:
            console.print(f"note: {note}")
        render = (lambda rows: frames(data, spec, rows, workers=workers)) if the_judge.needs_pixels else None
        if console.is_terminal:
            with bar() as progress:
                evaluation = JudgeEvaluation(spec, the_judge, data, record, render, settings)
                job = progress.add_task(f"eval {judge_config.name}", total=evaluation.planned_queries(), status="")
                r = evaluation.result
                evaluation.progress = lambda n: progress.update(job, advance=n, status=(
                    f"bought {r.calls} ({r.cache_hits} from the judge's cache), reused {r.reused}, "
                    f"tokens {r.input_tokens:,}/{r.output_tokens:,}, ${r.cost_usd:.4f}, "
                    f"abstained {sum(r.abstained.values())}"))
                result = evaluation.run()
        else:
            result = JudgeEvaluation(spec, the_judge, data, record, render, settings).run()
        record.write_states(result.states)
        summary = {
            "task": spec.id, "task_version": spec.version, "judge": judge_config.name,
            "dataset": {**header["dataset"], "path": str(data.path)},
            "settings": header["settings"], "versions": library_versions(), "session": session_info(),
            "metrics": {name: _metric_dict(m) for name, m in result.metrics.items()},
            "position_bias": result.position_bias, "calls": result.calls, "reused_answers": result.reused,
            "cost_usd": round(result.cost_usd, 6), "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens, "cache_hits": result.cache_hits, "abstained": dict(result.abstained),
        }
        logged = record.known().values()  # every answer the logs hold, bought in this session or before
        summary.update(total_calls=len(logged), total_cost_usd=round(sum(a.provenance.cost_usd for a in logged), 6))
        title = f"{judge_config.name} on {spec.id}"
        if result.states:
            reward_plots(result.states, result.trajectories, record.folder / "rewards.png", title)
        probes_shown = {k: m for k, m in result.metrics.items()
                        if k in ("identical_pair_bias", "position_consistency", "preference_fairness",
                                 "accuracy_gap", "repetition_stability", "conflict_rate")}
        if probes_shown:
            bias_chart(probes_shown, record.folder / "bias.png", f"{title}: position-bias probes")
        record.finish(summary)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; run the same command again to continue (answers bought are kept)") from None
    finally:
        record.close()
    table = Table(title=f"{judge_config.name} on {spec.id} ({len(data.rows)} states)")
    for column in ("metric", "value", "95% interval", "n", "note"):
        table.add_column(column, overflow="fold")
    for name, m in result.metrics.items():
        interval = f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.ci_low is not None else "-"
        table.add_row(name, "not measured" if m.value is None else f"{m.value:.3f}", interval, str(m.n), m.note)
    console.print(table)
    if result.position_bias is not None:
        verdict = result.position_bias
        text = {True: "[red]position-biased[/red]: " + "; ".join(verdict["reasons"]),
                False: f"no position bias found (checked: {', '.join(verdict['checked'])})",
                None: "position bias not measured"}[verdict["biased"]]
        console.print(text)
    reasons = ", ".join(f"{n} {reason}" for reason, n in result.abstained.most_common())
    console.print(f"judge answers {result.calls} ({result.cache_hits} of them from the judge's cache), reused from "
                  f"this record {result.reused}, tokens in {result.input_tokens:,} out {result.output_tokens:,}, "
                  f"${result.cost_usd:.4f}; abstained {sum(result.abstained.values())}"
                  f"{f' ({reasons})' if reasons else ''}; record: {record.folder}")
