"""The oracle judge's answers and noise models, checked against their definitions over many calls."""

import math

import numpy as np
import pytest

from vlmbench.errors import CapabilityError
from vlmbench.judges.base import Frame, Question
from vlmbench.judges.oracle import OracleJudge, OracleParams
from vlmbench.specs.catalogue import resolve_task

N = 4000


@pytest.fixture(scope="module")
def task():
    return resolve_task("cartpole-upright")


def state(angle: float, x: float = 0.0) -> Frame:
    return Frame(features={"cart_position": x, "cart_velocity": 0.0, "pole_angle": angle, "pole_velocity": 0.0})


def oracle(**params) -> OracleJudge:
    return OracleJudge("oracle-test", OracleParams(**params))


def first_rate(judge, task, a: Frame, b: Frame, n: int = N) -> float:
    return float(np.mean([ans.value for ans in judge.compare(task, [([a], [b])] * n)]))


def within(observed: float, expected: float, n: int = N) -> bool:
    """Within 4 standard errors of a binomial proportion."""
    return abs(observed - expected) <= 4 * math.sqrt(max(expected * (1 - expected), 1e-4) / n) + 1e-9


def test_scores_are_the_progress_expression(task):
    frames = [state(a) for a in (0.0, 0.3, 1.0, math.pi)]
    expected = [task.progress_of(dict(f.features)) for f in frames]
    assert [a.value for a in oracle().score(task, frames)] == expected
    assert expected[0] == pytest.approx(1.0) and expected[-1] == pytest.approx(0.0)


def test_noise_free_oracle_prefers_the_better_state(task):
    assert first_rate(oracle(), task, state(0.0), state(0.5), n=50) == 1.0
    assert first_rate(oracle(), task, state(0.5), state(0.0), n=50) == 0.0


def test_boltzmann_rationality_matches_the_sigmoid(task):
    a, b, temperature = state(0.2), state(0.35), 0.1
    diff = task.progress_of(dict(a.features)) - task.progress_of(dict(b.features))
    expected = 1 / (1 + math.exp(-diff / temperature))
    assert 0.6 < expected < 0.95  # a pair where noise is visible
    assert within(first_rate(oracle(temperature=temperature), task, a, b), expected)


@pytest.mark.parametrize("first_is_better", [True, False])
def test_mistakes_flip_that_often_whichever_clip_is_better(task, first_is_better):
    good, bad = state(0.0), state(1.0)
    pair = (good, bad) if first_is_better else (bad, good)
    assert within(first_rate(oracle(mistake_prob=0.2), task, *pair), 0.8 if first_is_better else 0.2)


def test_ties_below_the_threshold(task):
    answers = oracle(tie_threshold=0.05).compare(task, [([state(0.10)], [state(0.11)]), ([state(0.0)], [state(1.0)])])
    assert [a.value for a in answers] == [0.5, 1.0]


def test_first_position_bias_answers_first_regardless(task):
    # The second state is clearly better: every "first" answer is the injected bias.
    judge = oracle(first_bias=0.6)
    assert within(first_rate(judge, task, state(1.0), state(0.0)), 0.6)
    biased = judge.compare(task, [([state(1.0)], [state(0.0)])] * 200)
    assert all(a.detail.get("biased") for a in biased if a.value == 1.0)


@pytest.mark.parametrize("pair", ["tied", "first better", "second better"])
def test_noise_models_combine_in_their_documented_order(task, pair):
    """Bias first (also on tied pairs), then ties, then mistakes on either choice."""
    bias, mistake = 0.3, 0.2
    a, b = {"tied": (0.10, 0.11), "first better": (0.0, 1.0), "second better": (1.0, 0.0)}[pair]
    judge = oracle(first_bias=bias, tie_threshold=0.05, mistake_prob=mistake)
    values = np.array([ans.value for ans in judge.compare(task, [([state(a)], [state(b)])] * N)])
    p_first = {"tied": bias, "first better": bias + (1 - bias) * (1 - mistake),
               "second better": bias + (1 - bias) * mistake}[pair]
    assert within(np.mean(values == 1.0), p_first)
    assert within(np.mean(values == 0.5), 1 - bias if pair == "tied" else 0.0)


def expected_class(task, clip: list[Frame]) -> int:
    """The rating rule written out: the top class iff the goal holds in every frame, else the
    progress bin (of k equal bins) capped below the top."""
    k = len(task.prompts.rating.classes)
    if all(task.is_success(dict(f.features)) for f in clip):
        return k - 1
    progress = np.mean([task.progress_of(dict(f.features)) for f in clip])
    return min(math.floor(progress * k), k - 2)


def test_ratings_give_the_top_class_only_where_the_goal_holds(task):
    assert task.prompts.rating.classes == ["fallen", "tilted", "upright"]
    cases = {  # (pole angle in degrees, cart position) -> class
        (0, 0.0): 2, (10, 1.0): 2,
        (13, 0.0): 1, (30, 0.0): 1,  # progress 0.95 and 0.76, but the pole is past 12 degrees
        (0, 2.5): 1,  # upright pole, cart off the track: progress 0.75
        (60, 0.0): 0, (180, 0.0): 0,
    }
    frames = [state(math.radians(a), x) for a, x in cases]
    assert [a.value for a in oracle().rate(task, [[f] for f in frames])] == list(cases.values())


def test_ratings_bin_progress_below_the_top_class(task):
    frames = [state(a, x) for a in np.linspace(0, math.pi, 25) for x in (0.0, 2.5)]
    labels = [a.value for a in oracle().rate(task, [[f] for f in frames])]
    assert labels == [expected_class(task, [f]) for f in frames]
    assert set(labels) == {0, 1, 2}


def test_a_clip_is_top_rated_only_if_the_goal_holds_in_every_frame(task):
    upright, tilted = state(0.0), state(math.radians(13))  # progress 1.0 and 0.95: mean above 2/3
    clips = [[upright, upright, upright], [upright, tilted, upright], [tilted, tilted]]
    assert [a.value for a in oracle().rate(task, clips)] == [2, 1, 1]


def test_rating_noise_replaces_that_share_with_uniform_classes(task):
    k = len(task.prompts.rating.classes)
    answers = oracle(rating_noise=0.3).rate(task, [[state(0.0)]] * N)
    changed = np.mean([a.value != k - 1 for a in answers])
    assert within(changed, 0.3 * (k - 1) / k)


def test_segments_compare_by_summed_progress(task):
    long_good = [state(0.0), state(0.0)]
    short_better = [state(0.0)]
    assert oracle().compare(task, [(long_good, short_better)])[0].value == 1.0


def test_seeded_oracles_repeat_and_differ_across_seeds(task):
    pairs = [([state(0.2)], [state(0.35)])] * 200
    run = lambda seed: [a.value for a in oracle(temperature=0.1, seed=seed).compare(task, pairs)]  # noqa: E731
    assert run(3) == run(3) and run(3) != run(4)


def test_frames_without_features_are_refused(task):
    with pytest.raises(ValueError, match="features"):
        oracle().score(task, [Frame(pixels=np.zeros((4, 4, 3), np.uint8))])


def test_provenance_names_the_oracle(task):
    p = oracle().score(task, [state(0.0)])[0].provenance
    assert (p.judge, p.model, p.cost_usd, p.cached) == ("oracle-test", "oracle", 0.0, False)


def test_a_judge_refuses_questions_it_cannot_answer(task):
    from vlmbench.judges.clip import ClipJudge, ClipParams

    judge = ClipJudge("clip-test", ClipParams(model="ViT-B-32"))
    assert judge.can_answer(Question.COMPARE) and not judge.can_answer(Question.RATE)
    with pytest.raises(CapabilityError, match="cannot answer 'rate'.*it answers: compare, score"):
        judge.rate(task, [[state(0.0)]])
