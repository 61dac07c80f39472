"""Positional-bias probes of a pairwise judge, from its answers alone, and the rule that flags it as biased.

Answers are P(first clip better) in [0, 1] or None (abstained); verdicts as in ``judge_quality``: "first" above
0.5, "second" below, a tie at exactly 0.5. Abstentions are no verdict: a pair or query with one is left out of
every probe (the note counts them).

- Identical-pair bias: mean P(first) - 0.5 over pairs whose two clips are the same frame. 0 for a fair judge,
  +0.5 for one that always answers "first".
- Swapped pairs (each pair asked as (a, b) and again as (b, a)), over pairs answered in both orders:
  position consistency is the share whose verdict survives the swap (the same clip picked both times, or a
  tie both times); conflict rate is the share whose two verdicts pick the same position (first both times or
  second both times); the rest have a tie in one order only. Preference fairness is the share of "first"
  among the decided verdicts of both orders, minus 0.5: every pair puts each clip first once, so a judge
  without a position preference scores 0 (exactly, if it never conflicts), +0.5 always "first", -0.5 always
  "second".
- Accuracy by position: pairwise accuracy when the better clip is shown first, when it is shown second, and
  first minus second.
- Label-name swap consistency: the share of pairs whose verdict (as a position) is the same when the clips'
  label names are swapped (e.g. "A"/"B" become "B"/"A") while their positions stay.
- Repetition stability: the share of repeated queries whose repeats all give the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.bootstrap import LEVEL, RESAMPLES, Metric, measure, same_length
from vlmbench.metrics.judge_quality import FIRST, answer_array, decided_correctness, ordered_pairs, verdicts

Answers = Sequence[float | None]


def identical_pair_bias(answers: Answers, *, rng: np.random.Generator, resamples: int = RESAMPLES,
                        level: float = LEVEL) -> Metric:
    """Mean P(first) - 0.5 on pairs whose two clips are the same frame; n counts the answered pairs."""
    a = answer_array("answers", answers)
    answered = a[~np.isnan(a)]
    return measure("identical_pair_bias", lambda i: float(answered[i].mean() - 0.5), len(answered), rng=rng,
                   resamples=resamples, level=level, note=_abstained(len(a) - len(answered), len(a), "pairs"))


@dataclass(frozen=True)
class SwapProbe:
    consistency: Metric
    conflict_rate: Metric
    preference_fairness: Metric


def swapped_pairs(forward: Answers, backward: Answers, *, rng: np.random.Generator, resamples: int = RESAMPLES,
                  level: float = LEVEL) -> SwapProbe:
    """``forward[k]`` answers pair k as (a, b), ``backward[k]`` as (b, a); all three metrics count pairs
    answered in both orders (n) and resample them."""
    v1, v2 = _verdict_columns(forward, backward, "forward", "backward")
    both = ~np.isnan(v1) & ~np.isnan(v2)
    v1, v2 = v1[both], v2[both]
    note = _abstained(int(np.count_nonzero(~both)), len(both), "pairs")
    consistent = (v1 == -v2).astype(float)
    conflicting = ((v1 == v2) & (v1 != 0)).astype(float)
    firsts = (v1 == FIRST).astype(float) + (v2 == FIRST).astype(float)
    decided = (v1 != 0).astype(float) + (v2 != 0).astype(float)

    def share(name: str, flags: np.ndarray) -> Metric:
        return measure(name, lambda i: float(flags[i].mean()), len(flags), rng=rng, resamples=resamples,
                       level=level, note=note)

    def fairness(i: np.ndarray) -> float:
        total = decided[i].sum()
        return float(firsts[i].sum() / total - 0.5) if total else float("nan")

    if decided.sum() == 0:
        fair = Metric.not_measured("preference_fairness", len(v1), "no decided verdicts: every answer is a tie")
    else:
        fair = measure("preference_fairness", fairness, len(v1), rng=rng, resamples=resamples, level=level,
                       note=note)
    return SwapProbe(share("position_consistency", consistent), share("conflict_rate", conflicting), fair)


@dataclass(frozen=True)
class PositionAccuracy:
    better_first: Metric
    better_second: Metric
    gap: Metric  # better_first - better_second


def accuracy_by_position(answers: Answers, progress_delta: np.ndarray, *, rng: np.random.Generator,
                         min_gap: float = 0.0, resamples: int = RESAMPLES, level: float = LEVEL) -> PositionAccuracy:
    """Accuracy over decided answers on pairs with a true order (``judge_quality.pairwise_accuracy``), split by
    where the better clip was shown. The gap's interval resamples each side separately."""
    verdict, truth, unordered = ordered_pairs(answers, progress_delta, min_gap)
    correct, order = decided_correctness(verdict, truth)
    is_first = order == FIRST
    first_side, second_side = np.flatnonzero(is_first), np.flatnonzero(~is_first)
    undecided = len(verdict) - len(correct)
    note = "; ".join(part for part in (f"{undecided} ties or abstentions left out" if undecided else "",
                                       f"{unordered} pairs without a true order left out" if unordered else "")
                     if part)

    def side(name: str, where: np.ndarray, shown: str) -> Metric:
        return measure(name, lambda i: float(correct[where[i]].mean()), len(where), rng=rng, resamples=resamples,
                       level=level, note=note if len(where) else f"no decided answers with the better clip {shown}")

    first = side("accuracy_better_first", first_side, "first")
    second = side("accuracy_better_second", second_side, "second")
    if not (first.measured and second.measured):
        gap = Metric.not_measured("position_accuracy_gap", len(correct),
                                  "needs decided answers with the better clip in each position")
    else:
        gap = measure("position_accuracy_gap",
                      lambda i: float(correct[i][is_first[i]].mean() - correct[i][~is_first[i]].mean()),
                      len(correct), rng=rng, resamples=resamples, level=level, strata=[first_side, second_side],
                      note=note)
    return PositionAccuracy(first, second, gap)


def label_swap_consistency(original: Answers, swapped_labels: Answers, *, rng: np.random.Generator,
                           resamples: int = RESAMPLES, level: float = LEVEL) -> Metric:
    """Share of pairs with the same verdict when the clips' label names are swapped and their positions kept.
    Both answers are P(first position better), already mapped back from label names to positions."""
    v1, v2 = _verdict_columns(original, swapped_labels, "original", "swapped_labels")
    return _agreement("label_swap_consistency", list(np.stack([v1, v2], axis=1)), rng, resamples, level)


def repetition_stability(repeats: Sequence[Answers], *, rng: np.random.Generator, resamples: int = RESAMPLES,
                         level: float = LEVEL) -> Metric:
    """``repeats[q]`` holds the answers to query q asked two or more times; the share of queries whose
    repeats all give the same verdict."""
    rows = [verdicts(answer_array(f"repeats[{q}]", answers)) for q, answers in enumerate(repeats)]
    for q, row in enumerate(rows):
        if len(row) < 2:
            raise VlmbenchError(f"repeats[{q}] holds {len(row)} answer(s); stability needs at least 2 per query")
    return _agreement("repetition_stability", rows, rng, resamples, level)


@dataclass(frozen=True)
class PositionBiasThresholds:
    """A judge is flagged as position-biased when any measured probe crosses its threshold:
    |identical-pair bias| > ``identical_bias`` with its interval excluding 0; position consistency below
    ``consistency``; |preference fairness| > ``fairness`` with its interval excluding 0; or |accuracy gap
    between the better clip shown first and second| > ``accuracy_gap`` with its interval excluding 0.
    Signed probes need their interval to exclude 0 so that a few noisy answers cannot flag a fair judge;
    consistency is judged on its value, as a judge whose verdicts flip with the order on more than a fifth
    of the pairs gives position-dependent answers whatever their direction."""

    identical_bias: float = 0.1
    consistency: float = 0.8
    fairness: float = 0.1
    accuracy_gap: float = 0.1


@dataclass(frozen=True)
class PositionBiasVerdict:
    biased: bool | None  # None: no probe was measured
    reasons: tuple[str, ...]  # each crossed threshold, with the value that crossed it
    checked: tuple[str, ...]  # the measured probes the verdict rests on


def flag_position_bias(*, identical: Metric | None = None, swap: SwapProbe | None = None,
                       by_position: PositionAccuracy | None = None,
                       thresholds: PositionBiasThresholds = PositionBiasThresholds()) -> PositionBiasVerdict:
    """Apply ``thresholds`` to whichever probes were run and measured."""
    signed = [(identical, thresholds.identical_bias), (swap and swap.preference_fairness, thresholds.fairness),
              (by_position and by_position.gap, thresholds.accuracy_gap)]
    reasons, checked = [], []
    for metric, limit in signed:
        if metric is None or not metric.measured:
            continue
        checked.append(metric.name)
        excludes_zero = metric.ci_low is not None and (metric.ci_low > 0 or metric.ci_high < 0)
        if abs(metric.value) > limit and excludes_zero:
            reasons.append(f"{metric.name} {metric.value:+.3f} (interval [{metric.ci_low:+.3f}, "
                           f"{metric.ci_high:+.3f}]) beyond +-{limit}")
    if swap is not None and swap.consistency.measured:
        checked.append(swap.consistency.name)
        if swap.consistency.value < thresholds.consistency:
            reasons.append(f"position_consistency {swap.consistency.value:.3f} below {thresholds.consistency}")
    return PositionBiasVerdict(bool(reasons) if checked else None, tuple(reasons), tuple(checked))


def _verdict_columns(first: Answers, second: Answers, first_name: str,
                     second_name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = answer_array(first_name, first), answer_array(second_name, second)
    same_length((first_name, a), (second_name, b), of="pair")
    return verdicts(a), verdicts(b)


def _agreement(name: str, rows: list[np.ndarray], rng: np.random.Generator, resamples: int, level: float) -> Metric:
    """Share of queries (rows of verdicts, those without an abstention) whose verdicts are all equal."""
    answered = [row for row in rows if not np.isnan(row).any()]
    same = np.array([float(np.all(row == row[0])) for row in answered])
    return measure(name, lambda i: float(same[i].mean()), len(same), rng=rng, resamples=resamples, level=level,
                   note=_abstained(len(rows) - len(answered), len(rows), "queries"))


def _abstained(count: int, total: int, what: str) -> str:
    if total == 0:
        return f"no {what}"
    return f"{count} of {total} {what} left out for an abstention" if count else ""
