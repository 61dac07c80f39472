"""Reward learning from preferences and ratings, on synthetic feedback from a known linear reward."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlmbench.learning import (
    DisagreementPairSampler,
    PreferenceDataset,
    RatingDataset,
    RewardEnsemble,
    Segment,
    SegmentBuffer,
    UniformPairSampler,
    class_weights,
    preference_loss,
    rating_loss,
    rating_probabilities,
    stratified_batches,
    train_on_preferences,
    train_on_ratings,
)
from vlmbench.learning.segments import masked_returns, pad_segments

W = np.array([1.0, -2.0, 0.5, 1.5])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(v)) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def make_segments(rng: np.random.Generator, n: int, lengths: tuple[int, ...], prefix: str = "s") -> list[Segment]:
    return [Segment(f"{prefix}{i}", rng.normal(size=(rng.choice(lengths), 4))) for i in range(n)]


def true_return(segment: Segment) -> float:
    return float((segment.inputs @ W).sum())


def predicted_return(ensemble: RewardEnsemble, segment: Segment) -> float:
    return float(ensemble.member_rewards_numpy(segment.inputs).mean(0).sum())


def random_pairs(rng: np.random.Generator, segments: list[Segment], n: int) -> list[tuple[Segment, Segment]]:
    return [tuple(segments[i] for i in rng.choice(len(segments), 2, replace=False)) for _ in range(n)]


# -- preference loss ------------------------------------------------------------------------------


def bradley_terry_loss(first_returns: np.ndarray, second_returns: np.ndarray, p_first: np.ndarray) -> float:
    """Cross-entropy of each member's softmax over the two summed rewards against [p, 1 - p],
    averaged over members and pairs; returns (members, pairs), p_first (pairs,)."""
    logits = np.stack([first_returns, second_returns], axis=-1).astype(np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.stack([p_first, 1 - p_first], axis=-1)
    return float(-(targets * log_softmax).sum(-1).mean())


# Per-step rewards of 3 members on 5 pairs of 4-step segments: each pair's first segment leads by
# its own margin (plus member noise), so the members' differences do not cancel, a flipped label
# changes the loss, and so does a tie (pairs 2 and 4) counted as a win of the first.
P_FIRST = np.array([1.0, 0.0, 0.5, 0.25, 0.5])
FIRST_LEAD = np.array([1.0, -1.5, 2.0, -0.5, 1.2])
PAIR_REWARDS = 0.3 * np.random.default_rng(7).normal(size=(2, 3, 5, 4))
PAIR_REWARDS[0] += FIRST_LEAD[:, None] / 4


def test_preference_loss_is_the_bradley_terry_cross_entropy():
    first, second = PAIR_REWARDS.sum(-1)
    expected = bradley_terry_loss(first, second, P_FIRST)
    loss = preference_loss(torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(P_FIRST))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # the inputs tell the right labels from flipped ones and from ties counted as first wins
    for wrong in (1 - P_FIRST, np.where(P_FIRST == 0.5, 1.0, P_FIRST)):
        assert abs(bradley_terry_loss(first, second, wrong) - expected) > 0.05


def test_preference_training_reports_the_loss_and_accuracy_of_its_dataset():
    """Untrained (0 epochs), so the numbers follow from the initial networks' rewards."""
    rng = np.random.default_rng(8)
    segments = make_segments(rng, 12, (1, 2, 4))
    pairs = random_pairs(rng, segments, 30)
    p_first = rng.choice([0.0, 0.25, 0.5, 1.0], size=len(pairs))
    dataset = PreferenceDataset()
    for (a, b), p in zip(pairs, p_first, strict=True):
        dataset.add(a, b, float(p))
    ensemble = RewardEnsemble(4, members=3, hidden=(16,), seed=0)
    stats = train_on_preferences(ensemble, dataset, epochs=0, rng=np.random.default_rng(0))

    member_return = {s.key: ensemble.member_rewards_numpy(s.inputs).sum(-1) for s in segments}  # (members,)
    first = np.stack([member_return[a.key] for a, _ in pairs], axis=1)
    second = np.stack([member_return[b.key] for _, b in pairs], axis=1)
    assert stats["loss"] == pytest.approx(bradley_terry_loss(first, second, p_first), rel=1e-5)
    decided = p_first != 0.5
    agree = (first.mean(0) > second.mean(0)) == (p_first > 0.5)
    assert stats["accuracy"] == pytest.approx(agree[decided].mean())
    assert 0.2 < agree[decided].mean() < 0.8  # an untrained ensemble: right on some pairs, wrong on others


def test_tie_with_equal_returns_costs_log_2():
    returns = torch.tensor([[0.7, -3.0], [2.5, 0.0]])
    loss = preference_loss(returns, returns.clone(), torch.tensor([0.5, 0.5]))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_masked_returns_ignore_padding():
    rng = np.random.default_rng(0)
    segments = make_segments(rng, 5, (1, 2, 3))
    padded, lengths = pad_segments(segments)
    rewards = torch.from_numpy(padded @ W.astype(np.float32)) + 7.0  # padding would add 7 per step
    returns = masked_returns(rewards, torch.from_numpy(lengths))
    expected = [true_return(s) + 7.0 * len(s) for s in segments]
    np.testing.assert_allclose(returns.numpy(), expected, rtol=1e-5)


# -- reward ensemble ------------------------------------------------------------------------------


def test_predict_is_standardised_and_state_dict_round_trips():
    rng = np.random.default_rng(1)
    ensemble = RewardEnsemble(4, members=3, seed=1)
    assert len(ensemble.weights) == len(ensemble.biases) == 5
    data = rng.normal(size=(500, 4)).astype(np.float32)
    ensemble.fit_normalisation(data)
    predicted = ensemble.predict(data)
    assert predicted.dtype == np.float32 and predicted.shape == (500,)
    assert abs(predicted.mean()) < 1e-4 and predicted.std() == pytest.approx(1.0, abs=1e-4)
    assert ensemble.predict(data.reshape(50, 10, 4)).shape == (50, 10)
    assert ensemble.disagreement(data).shape == (500,)
    assert ensemble.member_rewards(torch.from_numpy(data[:7])).shape == (3, 7)

    copy = RewardEnsemble(4, members=3, seed=99)
    copy.load_state_dict(ensemble.state_dict())
    np.testing.assert_array_equal(copy.predict(data), predicted)


def test_construction_leaves_global_torch_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    RewardEnsemble(4, seed=0)
    assert torch.equal(torch.rand(3), expected)


# -- preference learning --------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [(1,), (3,), (1, 2, 3)])
def test_preference_training_recovers_known_reward(lengths):
    rng = np.random.default_rng(2)
    train, held_out = make_segments(rng, 300, lengths), make_segments(rng, 100, lengths, "h")
    dataset = PreferenceDataset()
    for a, b in random_pairs(rng, train, 600):
        dataset.add(a, b, float(true_return(a) > true_return(b)))
    ensemble = RewardEnsemble(4, seed=0)
    stats = train_on_preferences(ensemble, dataset, epochs=30, rng=np.random.default_rng(0))
    assert stats["pairs"] == 600 and stats["accuracy"] >= 0.9 and math.isfinite(stats["loss"])

    test_pairs = random_pairs(rng, held_out, 300)
    agree = [(predicted_return(ensemble, a) > predicted_return(ensemble, b)) == (true_return(a) > true_return(b))
             for a, b in test_pairs]
    assert np.mean(agree) >= 0.9
    states = rng.normal(size=(300, 4)).astype(np.float32)
    assert spearman(ensemble.predict(states), states @ W) > 0.8


@pytest.mark.parametrize("feedback", ["preferences", "ratings"])
def test_training_is_deterministic_given_the_rng_seed(feedback):
    def train(seed: int) -> dict:
        rng = np.random.default_rng(3)
        segments = make_segments(rng, 40, (1, 2))
        ensemble = RewardEnsemble(4, members=2, hidden=(16, 16), seed=0)
        options = {"epochs": 3, "batch_size": 16, "rng": np.random.default_rng(seed)}
        if feedback == "preferences":
            dataset = PreferenceDataset()
            for a, b in random_pairs(rng, segments, 60):
                dataset.add(a, b, float(true_return(a) > true_return(b)))
            train_on_preferences(ensemble, dataset, **options)
        else:
            dataset = RatingDataset()
            for segment in segments:
                dataset.add(segment, int(true_return(segment) > 0))
            train_on_ratings(ensemble, dataset, n_classes=2, **options)
        return ensemble.state_dict()

    first, again, other = train(0), train(0), train(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_training_on_an_empty_dataset_does_nothing():
    stats = train_on_preferences(RewardEnsemble(4), PreferenceDataset(), rng=np.random.default_rng(0))
    assert stats["pairs"] == 0 and math.isnan(stats["loss"])


def test_preference_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    a, b, c = make_segments(rng, 3, (1, 3, 5))
    dataset = PreferenceDataset()
    dataset.add(a, b, 1.0)
    dataset.add(b, c, 0.5)
    dataset.add(c, a, 0.2)
    path = tmp_path / "prefs.npz"
    dataset.save(path)
    loaded = PreferenceDataset.load(path)
    assert len(loaded) == 3 and len(loaded.table) == 3
    for original, restored in zip(dataset.table.segments, loaded.table.segments, strict=True):
        assert restored.key == original.key
        np.testing.assert_array_equal(restored.inputs, original.inputs)
    for original, restored in zip(dataset.pairs(), loaded.pairs(), strict=True):
        np.testing.assert_array_equal(original, restored)


# -- segments and samplers ------------------------------------------------------------------------


def test_segment_buffer_keeps_the_most_recent():
    buffer = SegmentBuffer(capacity=3)
    for segment in make_segments(np.random.default_rng(0), 5, (1,)):
        buffer.add(segment)
    assert len(buffer) == 3 and [s.key for s in buffer.segments] == ["s2", "s3", "s4"]


def test_uniform_sampler_gives_distinct_unrepeated_pairs():
    buffer = SegmentBuffer()
    for segment in make_segments(np.random.default_rng(0), 6, (1,)):
        buffer.add(segment)
    rng = np.random.default_rng(0)
    for n, expected in [(5, 5), (15, 15), (100, 15)]:
        pairs = UniformPairSampler().sample(buffer, n, rng)
        keys = [frozenset((a.key, b.key)) for a, b in pairs]
        assert len(pairs) == expected and len(set(keys)) == expected and all(len(k) == 2 for k in keys)
    single = SegmentBuffer()
    single.add(buffer.segments[0])
    assert UniformPairSampler().sample(single, 3, rng) == []


def test_disagreement_sampler_prefers_disputed_pairs():
    # Member 0's reward is +x0 and member 1's is -x0 (for x0 > 0): they disagree only on pairs
    # whose summed x0 differs, i.e. pairs with exactly one "odd" segment.
    ensemble = RewardEnsemble(2, members=2, hidden=(4, 4), seed=0)
    with torch.no_grad():
        for weight, bias in zip(ensemble.weights, ensemble.biases, strict=True):  # weight (members, in, out)
            weight.zero_()
            bias.zero_()
            weight[:, 0, 0] = 1.0
        ensemble.weights[-1][1, 0, 0] = -1.0
    buffer = SegmentBuffer()
    for i in range(10):
        buffer.add(Segment(f"s{i}", np.array([[3.0 if i in (2, 7) else 1.0, 0.0]])))
    pairs = DisagreementPairSampler(ensemble, candidates_per_pair=9).sample(buffer, 5, np.random.default_rng(0))
    assert len(pairs) == 5 and len({frozenset((a.key, b.key)) for a, b in pairs}) == 5
    assert all(({a.key, b.key} & {"s2", "s7"}) and {a.key, b.key} != {"s2", "s7"} for a, b in pairs)


# -- ratings --------------------------------------------------------------------------------------


def test_rating_probabilities_are_distributions_even_in_degenerate_batches():
    returns = torch.linspace(-2.0, 5.0, 10)
    cases = [(returns, [0.5, 0.5]), (returns, [0.3, 0.0, 0.7]), (torch.full((6,), 1.5), [0.5, 0.0, 0.5])]
    for batch, proportions in cases:
        probs = rating_probabilities(batch, torch.tensor(proportions))
        assert probs.shape == (len(batch), len(proportions)) and torch.isfinite(probs).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(len(batch)))
    halves = rating_probabilities(returns, torch.tensor([0.5, 0.5])).argmax(-1)
    assert halves.tolist() == [0] * 5 + [1] * 5


def rbrl_probabilities(returns: np.ndarray, counts, sharpness: float = 30.0) -> np.ndarray:
    """Rating-based RL class probabilities in numpy: returns min-max normalised over the batch,
    class boundaries at the quantiles (linear interpolation) of the cumulative label proportions,
    Q(k) = softmax_k(-sharpness (r - b_k)(r - b_{k+1}))."""
    r = (returns - returns.min()) / (returns.max() - returns.min())
    cumulative = np.cumsum(counts) / np.sum(counts)
    bounds = np.concatenate([[0.0], np.quantile(r, cumulative[:-1]), [1.0]])
    logits = -sharpness * (r[:, None] - bounds[:-1]) * (r[:, None] - bounds[1:])
    q = np.exp(logits - logits.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True)


# Skewed returns far from [0, 1] and imbalanced labels (one class absent): the quantile boundaries
# (0.10, 0.10, 0.33 after normalising) are far from equal-width ones.
SKEWED_RETURNS = 6.0 * np.exp(np.random.default_rng(9).normal(size=20)) - 2.0
IMBALANCED_COUNTS = np.array([12, 0, 6, 2])


@pytest.mark.parametrize("counts", [IMBALANCED_COUNTS, IMBALANCED_COUNTS[[0, 2, 3]]], ids=["absent", "present"])
def test_rating_probabilities_follow_the_rating_based_rl_definition(counts):
    probs = rating_probabilities(torch.from_numpy(SKEWED_RETURNS), torch.from_numpy(counts).double())
    np.testing.assert_allclose(probs.numpy(), rbrl_probabilities(SKEWED_RETURNS, counts), rtol=1e-7, atol=1e-12)


def test_rating_boundaries_put_as_many_returns_in_each_class_as_were_rated_in_it():
    probs = rating_probabilities(torch.from_numpy(SKEWED_RETURNS), torch.from_numpy(IMBALANCED_COUNTS).double())
    most_likely = probs.argmax(-1).numpy()
    np.testing.assert_array_equal(np.bincount(most_likely, minlength=4), IMBALANCED_COUNTS)
    ranks = np.argsort(np.argsort(SKEWED_RETURNS))
    np.testing.assert_array_equal(most_likely, np.digitize(ranks, np.cumsum(IMBALANCED_COUNTS)[:-1]))


def test_rating_training_reports_the_loss_and_accuracy_of_its_dataset():
    """Untrained (0 epochs), so the numbers follow from the initial networks' rewards: class
    weights from the whole dataset's counts, boundaries from its label proportions."""
    rng = np.random.default_rng(10)
    segments = make_segments(rng, 30, (1, 2, 4))
    labels = rng.choice([0, 2, 3], p=[0.6, 0.3, 0.1], size=len(segments))
    dataset = RatingDataset()
    for segment, label in zip(segments, labels, strict=True):
        dataset.add(segment, int(label))
    ensemble = RewardEnsemble(4, members=3, hidden=(16,), seed=0)
    stats = train_on_ratings(ensemble, dataset, n_classes=4, epochs=0, rng=np.random.default_rng(0))

    returns = np.stack([ensemble.member_rewards_numpy(s.inputs).sum(-1) for s in segments], axis=1)  # (members, N)
    counts = np.bincount(labels, minlength=4)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights /= weights[counts > 0].mean()
    member_losses = [np.mean(-np.log(rbrl_probabilities(r, counts)[np.arange(len(labels)), labels]) * weights[labels])
                     for r in returns]
    assert stats["loss"] == pytest.approx(np.mean(member_losses), rel=1e-4)
    correct = rbrl_probabilities(returns.mean(0), counts).argmax(-1) == labels
    assert stats["accuracy"] == pytest.approx(correct.mean())
    assert 0.1 < correct.mean() < 0.9  # an untrained ensemble: right on some segments, wrong on others


def test_rating_probabilities_backpropagate_with_an_absent_class():
    returns = torch.tensor([0.1, 0.5, 0.5, 2.0], requires_grad=True)
    probs = rating_probabilities(returns, torch.tensor([0.5, 0.0, 0.5]))
    rating_loss(probs, torch.tensor([0, 0, 2, 2])).backward()
    assert torch.isfinite(returns.grad).all()


def test_rating_loss_matches_hand_computation():
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]]
    labels = [0, 2, 1]
    weights = [2.0, 0.0, 0.5]
    ce = np.mean([-math.log(p[y]) * weights[y] for p, y in zip(probs, labels)])
    mae = np.mean([sum(abs(q - (k == y)) for k, q in enumerate(p)) * weights[y] for p, y in zip(probs, labels)])
    args = (torch.tensor(probs), torch.tensor(labels))
    w = torch.tensor(weights)
    assert rating_loss(*args, kind="ce", class_weights=w).item() == pytest.approx(ce, rel=1e-6)
    assert rating_loss(*args, kind="mae", class_weights=w).item() == pytest.approx(mae, rel=1e-6)
    assert rating_loss(*args).item() == pytest.approx(np.mean([-math.log(p[y]) for p, y in zip(probs, labels)]))


def test_class_weights_with_an_absent_class():
    torch.testing.assert_close(class_weights([10, 0, 30], 3), torch.tensor([1.5, 0.0, 0.5]))
    torch.testing.assert_close(class_weights([0, 0], 2), torch.zeros(2))


def test_stratified_batches_hold_each_class_in_proportion():
    labels = np.repeat([0, 2, 3], [60, 30, 10])
    batches = stratified_batches(labels, 20, np.random.default_rng(0))
    assert len(batches) == 5
    assert sorted(np.concatenate(batches).tolist()) == list(range(100))
    for batch in batches:
        counts = np.bincount(labels[batch], minlength=4)
        assert abs(counts[0] - 12) <= 1 and abs(counts[2] - 6) <= 1 and abs(counts[3] - 2) <= 1 and counts[1] == 0
    assert stratified_batches(np.array([], dtype=int), 8, np.random.default_rng(0)) == []


def test_rating_training_with_an_absent_class(tmp_path):
    rng = np.random.default_rng(5)
    dataset = RatingDataset()
    for segment in make_segments(rng, 40, (1, 2)):
        dataset.add(segment, 2 if true_return(segment) > 0 else 0)
    assert dataset.class_counts(3)[1] == 0
    ensemble = RewardEnsemble(4, members=2, hidden=(16,), seed=0)
    stats = train_on_ratings(ensemble, dataset, n_classes=3, epochs=2, batch_size=8, rng=rng)
    assert stats["ratings"] == 40 and math.isfinite(stats["loss"])

    dataset.save(tmp_path / "ratings.npz")
    loaded = RatingDataset.load(tmp_path / "ratings.npz")
    np.testing.assert_array_equal(loaded.class_counts(3), dataset.class_counts(3))
    for original, restored in zip(dataset.ratings(), loaded.ratings(), strict=True):
        np.testing.assert_array_equal(original, restored)


@pytest.mark.parametrize("loss", ["ce", "mae"])
def test_rating_training_recovers_known_reward_despite_label_noise(loss):
    rng = np.random.default_rng(6)
    segments = make_segments(rng, 600, (1, 3))
    returns = np.array([true_return(s) for s in segments])
    labels = np.digitize(returns, np.quantile(returns, [0.25, 0.5, 0.75]))
    noisy = rng.random(len(labels)) < 0.1
    labels[noisy] = rng.integers(4, size=noisy.sum())
    dataset = RatingDataset()
    for segment, label in zip(segments, labels, strict=True):
        dataset.add(segment, int(label))
    ensemble = RewardEnsemble(4, seed=0)
    stats = train_on_ratings(ensemble, dataset, n_classes=4, epochs=30, loss=loss, rng=np.random.default_rng(0))
    assert stats["accuracy"] > 0.5
    states = rng.normal(size=(300, 4)).astype(np.float32)
    assert spearman(ensemble.predict(states), states @ W) > 0.8
