"""Positional-bias probes on hand-counted answers, and the bias flag on synthetic answerers."""

import math

import numpy as np
import pytest

from vlmbench.errors import VlmbenchError
from vlmbench.metrics.bias_probes import (PositionBiasThresholds, PositionBiasVerdict, SwapProbe, accuracy_by_position,
                                          flag_position_bias, identical_pair_bias, label_swap_consistency,
                                          repetition_stability, swapped_pairs)
from vlmbench.metrics.bootstrap import Metric


def rng(seed=0):
    return np.random.default_rng(seed)


def test_identical_pair_bias_is_the_mean_answer_minus_a_half_over_answered_pairs():
    got = identical_pair_bias([1.0, 0.5, 0.7, None, 0.3, 0.9], rng=rng())
    assert got.value == pytest.approx(0.18) and got.n == 5
    assert got.note == "1 of 6 pairs left out for an abstention"
    assert got.ci_low < 0.18 < got.ci_high
    empty = identical_pair_bias([None, None], rng=rng())
    assert empty.value is None and empty.n == 0 and empty.note == "2 of 2 pairs left out for an abstention"


def test_swapped_pairs_count_consistency_conflicts_and_first_share():
    forward = [1.0, 0.8, 0.3, 0.5, 0.5, None, 0.9, 0.2]
    backward = [0.0, 0.7, 0.6, 0.5, 0.9, 0.4, 0.1, 0.1]
    # verdicts: (F,S) kept; (F,F) conflict; (S,F) kept; (T,T) kept; (T,F) neither; abstained; (F,S) kept;
    # (S,S) conflict. Decided verdicts: 11, of which "first": 6.
    got = swapped_pairs(forward, backward, rng=rng())
    assert (got.consistency.value, got.consistency.n) == (pytest.approx(4 / 7), 7)
    assert (got.conflict_rate.value, got.conflict_rate.n) == (pytest.approx(2 / 7), 7)
    assert (got.preference_fairness.value, got.preference_fairness.n) == (pytest.approx(6 / 11 - 0.5), 7)
    assert got.consistency.note == "1 of 8 pairs left out for an abstention"
    ties = swapped_pairs([0.5, 0.5], [0.5, 0.5], rng=rng())
    assert ties.consistency.value == 1.0 and ties.conflict_rate.value == 0.0
    assert ties.preference_fairness.value is None and "every answer is a tie" in ties.preference_fairness.note


def test_accuracy_by_position_splits_by_where_the_better_clip_was_shown():
    answers = [0.9, 0.8, 0.3, 0.6, 0.7, 0.1, 0.5, None, 0.9]
    deltas = [1, 1, 1, -1, -1, -1, 1, -1, 0]
    got = accuracy_by_position(answers, np.array(deltas, float), rng=rng())
    assert (got.better_first.value, got.better_first.n) == (pytest.approx(2 / 3), 3)
    assert (got.better_second.value, got.better_second.n) == (pytest.approx(1 / 3), 3)
    assert (got.gap.value, got.gap.n) == (pytest.approx(1 / 3), 6)
    assert got.gap.note == "2 ties or abstentions left out; 1 pairs without a true order left out"
    one_sided = accuracy_by_position([0.9, 0.2], np.array([1.0, 1.0]), rng=rng())
    assert one_sided.better_second.value is None and one_sided.gap.value is None
    assert one_sided.better_second.note == "no decided answers with the better clip second"


def test_label_swap_consistency_and_repetition_stability_compare_verdicts():
    swap = label_swap_consistency([0.9, 0.2, 0.5, 0.7, None], [0.6, 0.8, 0.5, 0.3, 0.4], rng=rng())
    assert (swap.value, swap.n, swap.note) == (0.5, 4, "1 of 5 queries left out for an abstention")
    stable = repetition_stability([[0.9, 0.8, 0.7], [0.2, 0.6], [0.5, 0.5], [0.9, None], [0.1, 0.3, 0.2, 0.4]],
                                  rng=rng())
    assert (stable.value, stable.n) == (0.75, 4)
    with pytest.raises(VlmbenchError, match=r"repeats\[1\] holds 1 answer"):
        repetition_stability([[0.2, 0.3], [0.4]], rng=rng())
    with pytest.raises(VlmbenchError, match="one per pair"):
        label_swap_consistency([0.2], [0.3, 0.4], rng=rng())


def truthful(first, second, generator):
    return 1.0 if first > second else 0.0 if first < second else 0.5


def always_first(first, second, generator):
    return 1.0


def noisy(first_share, noise):
    """With probability ``first_share`` answers 1.0; otherwise a soft, noisy truthful answer."""
    def answer(first, second, generator):
        if generator.random() < first_share:
            return 1.0
        return 1.0 / (1.0 + math.exp(-((first - second) / 0.1 + generator.normal(0.0, noise))))
    return answer


def run_probes(answerer, seed=0, pairs=400):
    generator = rng(seed)
    progress_a, progress_b = generator.random(pairs), generator.random(pairs)
    forward = [answerer(a, b, generator) for a, b in zip(progress_a, progress_b)]
    backward = [answerer(b, a, generator) for a, b in zip(progress_a, progress_b)]
    identical = [answerer(a, a, generator) for a in progress_a]
    deltas = np.concatenate([progress_a - progress_b, progress_b - progress_a])
    probes = dict(identical=identical_pair_bias(identical, rng=generator, resamples=300),
                  swap=swapped_pairs(forward, backward, rng=generator, resamples=300),
                  by_position=accuracy_by_position(forward + backward, deltas, rng=generator, resamples=300))
    return probes, flag_position_bias(**probes)


def test_an_answerer_that_always_says_first_is_flagged_on_every_probe():
    probes, verdict = run_probes(always_first)
    assert probes["identical"].value == 0.5 and probes["swap"].consistency.value == 0.0
    assert probes["swap"].conflict_rate.value == 1.0 and probes["swap"].preference_fairness.value == 0.5
    assert probes["by_position"].gap.value == 1.0
    assert verdict.biased is True
    assert [r.split()[0] for r in verdict.reasons] == ["identical_pair_bias", "preference_fairness",
                                                       "position_accuracy_gap", "position_consistency"]


def test_a_noise_free_truthful_answerer_is_not_flagged():
    probes, verdict = run_probes(truthful)
    assert probes["identical"].value == 0.0 and probes["swap"].consistency.value == 1.0
    assert probes["swap"].preference_fairness.value == 0.0 and probes["by_position"].gap.value == 0.0
    assert verdict == PositionBiasVerdict(False, (), ("identical_pair_bias", "preference_fairness",
                                                      "position_accuracy_gap", "position_consistency"))


def test_a_noisy_answerer_that_says_first_30_percent_of_the_time_is_flagged():
    probes, verdict = run_probes(noisy(0.3, 1.0))
    assert probes["identical"].value == pytest.approx(0.15, abs=0.04)
    assert probes["swap"].consistency.value < 0.8
    assert verdict.biased is True and any(r.startswith("identical_pair_bias") for r in verdict.reasons)


def test_a_noisy_answerer_without_position_preference_is_not_flagged():
    probes, verdict = run_probes(noisy(0.0, 1.0))
    assert abs(probes["identical"].value) < 0.05 and probes["swap"].consistency.value > 0.8
    assert verdict.biased is False


def metric(value, low, high, name="identical_pair_bias"):
    return Metric(name, value, low, high, 100)


@pytest.mark.parametrize("value, low, high, flagged", [
    (0.15, 0.05, 0.25, True),
    (-0.15, -0.25, -0.05, True),
    (0.15, -0.01, 0.30, False),  # interval holds 0
    (0.15, 0.0, 0.30, False),  # interval touches 0
    (0.09, 0.05, 0.12, False),  # beyond 0 but within the threshold
])
def test_signed_probes_need_the_threshold_and_an_interval_clear_of_zero(value, low, high, flagged):
    assert flag_position_bias(identical=metric(value, low, high)).biased is flagged


def test_consistency_flags_below_its_threshold_and_nothing_measured_gives_no_verdict():
    def swap(consistency):
        return SwapProbe(Metric("position_consistency", consistency, None, None, 50),
                         Metric("conflict_rate", 1 - consistency, None, None, 50),
                         Metric("preference_fairness", 0.0, -0.01, 0.01, 50))
    assert flag_position_bias(swap=swap(0.79)).biased is True
    assert flag_position_bias(swap=swap(0.8)).biased is False
    assert flag_position_bias(swap=swap(0.85), thresholds=PositionBiasThresholds(consistency=0.9)).biased is True
    nothing = flag_position_bias(identical=Metric.not_measured("identical_pair_bias", 0, "no pairs"))
    assert nothing == PositionBiasVerdict(None, (), ())
