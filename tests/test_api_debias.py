"""Swap debiasing and label probabilities from logprobs, against hand-computed values."""

import math

import pytest

from vlmbench.judges.api.debias import label_probabilities, p_first, swap_average, swap_combine, token_label

PAIR = ("FIRST", "SECOND", "NEITHER")


@pytest.mark.parametrize(("forward", "backward", "mode", "expected"), [
    (1.0, 0.0, "tie", (1.0, None)),  # FIRST, then SECOND on the swapped pair: the same clip wins
    (0.0, 1.0, "abstain", (0.0, None)),
    (0.5, 0.5, "abstain", (0.5, None)),
    (1.0, 1.0, "tie", (0.5, None)),  # FIRST both times: the position won, not the clip
    (1.0, 1.0, "abstain", (None, "swap disagreement: the two orders gave different verdicts")),
    (1.0, 0.5, "tie", (0.5, None)),
])
def test_swap_combine(forward, backward, mode, expected):
    assert swap_combine(forward, backward, mode) == expected


def test_swap_average():
    assert swap_average(0.9, 0.7) == pytest.approx((0.9 + 0.3) / 2)
    assert swap_average(0.2, 0.2) == pytest.approx(0.5)


def test_token_label():
    assert token_label(" Yes", ["yes", "no"]) == "yes"
    assert token_label("**SEC", PAIR) == "SECOND"
    assert token_label("N", PAIR) is None  # one letter is too little to tell NEITHER from a word
    assert token_label("the", PAIR) is None


def test_label_probabilities_renormalise_over_spellings():
    logprobs = [["Yes", math.log(0.5), [["Yes", math.log(0.5)], ["yes", math.log(0.1)], ["No", math.log(0.2)],
                                        ["Maybe", math.log(0.15)]]]]
    probabilities = label_probabilities(logprobs, ["yes", "no"])
    assert probabilities["yes"] == pytest.approx(0.6 / 0.8)
    assert probabilities["no"] == pytest.approx(0.2 / 0.8)


def test_label_probabilities_at_the_last_label_token():
    logprobs = [["FIRST", 0.0, [["FIRST", 0.0]]], [" looks", -0.1, []], ["Answer", 0.0, []], [":", 0.0, []],
                [" SECOND", math.log(0.6), [[" SECOND", math.log(0.6)], [" FIRST", math.log(0.3)],
                                            [" NEITHER", math.log(0.1)]]]]
    probabilities = label_probabilities(logprobs, PAIR)
    assert probabilities == pytest.approx({"FIRST": 0.3, "SECOND": 0.6, "NEITHER": 0.1})
    assert p_first(probabilities, PAIR) == pytest.approx(0.3 + 0.05)
    assert label_probabilities([["garbage", 0.0, []]], PAIR) is None
    assert label_probabilities(None, PAIR) is None
