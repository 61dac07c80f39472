"""Learning from noisy judges: the noisy Bradley-Terry likelihood, label smoothing, contradicted pairs,
swap debiasing in the feedback loop, and the batched reward ensemble."""

from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from console import one_line_error, vlmbench
from stable_baselines3.common.logger import Logger

from vlmbench.agents.config import FeedbackConfig
from vlmbench.agents.feedback import FeedbackLoop, swap_debiased
from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Answer, Frame, Provenance, Question
from vlmbench.judges.oracle import OracleJudge, OracleParams
from vlmbench.learning import PreferenceDataset, RewardEnsemble, preference_loss
from vlmbench.learning.preferences import contradicted_weights
from vlmbench.results.record import RunRecord
from vlmbench.specs.catalogue import resolve_task

# Returns of 2 members on 6 pairs (rows: members); labels include ties, a soft label and a pair the
# members confidently contradict (pair 5: the first is labelled better, the returns say far worse).
FIRST = np.array([[1.2, -0.4, 0.3, 2.0, 0.0, -6.0], [0.8, 0.1, -0.2, 1.5, 0.4, -5.0]])
SECOND = np.array([[0.2, 0.6, 0.3, -1.0, 0.1, 1.0], [0.5, 0.9, 0.0, -0.5, 0.2, 2.0]])
P_FIRST = np.array([1.0, 0.0, 0.5, 0.75, 0.5, 1.0])
WEIGHTS = np.array([1.0, 0.5, 2.0, 1.0, 0.0, 1.0])


def noisy_bradley_terry(first, second, p_first, eps, smoothing=0.0, weights=None) -> float:
    """Per pair: P = (1 - eps) / (1 + exp(R2 - R1)) + eps / 2, target q = (1 - s) p + s / 2,
    loss -(q log P + (1 - q) log(1 - P)); weighted mean over pairs per member, mean over members."""
    total = []
    for f_row, s_row in zip(first, second, strict=True):
        losses, ws = [], []
        for k, (r1, r2, p) in enumerate(zip(f_row, s_row, p_first, strict=True)):
            prob = (1 - eps) / (1 + math.exp(r2 - r1)) + eps / 2
            q = (1 - smoothing) * p + smoothing / 2
            losses.append(-(q * math.log(prob) + (1 - q) * math.log(1 - prob)))
            ws.append(1.0 if weights is None else weights[k])
        total.append(sum(w * x for w, x in zip(ws, losses, strict=True)) / sum(ws))
    return float(np.mean(total))


def loss(eps, **kwargs) -> float:
    return preference_loss(torch.from_numpy(FIRST), torch.from_numpy(SECOND), torch.from_numpy(P_FIRST),
                           mistake_prob=eps, **kwargs).item()


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_noisy_bradley_terry_matches_the_per_pair_formula(eps):
    assert loss(eps) == pytest.approx(noisy_bradley_terry(FIRST, SECOND, P_FIRST, eps), rel=1e-9)
    # a fitted mistake probability arrives as a tensor
    assert loss(torch.tensor(eps, dtype=torch.float64)) == pytest.approx(loss(eps), rel=1e-12)
    # the inputs tell the mixture apart from a mixture with eps instead of eps / 2 and from the plain loss
    assert abs(noisy_bradley_terry(FIRST, SECOND, P_FIRST, 2 * eps) / 2 - loss(eps)) > 0.01
    assert abs(noisy_bradley_terry(FIRST, SECOND, P_FIRST, 0.0) - loss(eps)) > 0.05


def test_label_smoothing_and_pair_weights_match_the_per_pair_formula():
    expected = noisy_bradley_terry(FIRST, SECOND, P_FIRST, 0.1, smoothing=0.2, weights=WEIGHTS)
    assert loss(0.1, label_smoothing=0.2, weights=torch.from_numpy(WEIGHTS)) == pytest.approx(expected, rel=1e-9)
    plain_smoothed = noisy_bradley_terry(FIRST, SECOND, P_FIRST, 0.0, smoothing=0.2)
    assert loss(0.0, label_smoothing=0.2) == pytest.approx(plain_smoothed, rel=1e-9)
    assert abs(plain_smoothed - noisy_bradley_terry(FIRST, SECOND, P_FIRST, 0.0)) > 0.05


def test_zero_mistake_probability_is_the_plain_loss():
    plain = noisy_bradley_terry(FIRST, SECOND, P_FIRST, 0.0)
    assert loss(0.0) == pytest.approx(plain, rel=1e-9)
    assert loss(torch.tensor(0.0, dtype=torch.float64)) == pytest.approx(plain, rel=1e-9)  # the mixture's own path


@pytest.mark.parametrize("eps", [0.01, 0.1, 0.4])
def test_a_confidently_contradicted_label_costs_at_most_minus_log_half_eps(eps):
    diff = torch.tensor([-5.0, -50.0, -500.0], dtype=torch.float64)
    costs = [preference_loss(d.view(1, 1), torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                             mistake_prob=eps).item() for d in diff]
    assert all(c <= -math.log(eps / 2) + 1e-12 for c in costs)
    assert costs[-1] == pytest.approx(-math.log(eps / 2), rel=1e-9)  # the bound is reached
    plain = preference_loss(diff[-1].view(1, 1), torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    assert plain.item() == pytest.approx(500.0)  # without the mistake model it grows without bound


def test_contradicted_weights_follow_the_ensemble_mean_probability():
    weights = contradicted_weights(torch.from_numpy(FIRST), torch.from_numpy(SECOND), torch.from_numpy(P_FIRST),
                                   confidence=0.75, weight=0.25).numpy()
    predicted_first = (1 / (1 + np.exp(SECOND - FIRST))).mean(0)
    label_side = np.where(P_FIRST > 0.5, predicted_first, 1 - predicted_first)
    expected = np.where((P_FIRST != 0.5) & (label_side <= 0.25), 0.25, 1.0)
    np.testing.assert_allclose(weights, expected)
    assert expected.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.25]  # only pair 5 is confidently contradicted


# -- swap debiasing ------------------------------------------------------------------------------------------


def answers(values) -> list[Answer]:
    provenance = Provenance("oracle", "2", "oracle", "x")
    return [Answer(Question.COMPARE, v, provenance) for v in values]


@pytest.mark.parametrize("position, disagreement", [("swap-tie", 0.5), ("swap-drop", None)])
def test_swap_debiasing_keeps_agreeing_answers_only(position, disagreement):
    shown = answers([1.0, 0.0, 1.0, 0.5, 0.8, None, 0.5])
    reversed_ = answers([0.0, 1.0, 1.0, 0.5, 0.4, 0.0, 0.0])  # answered for (second, first)
    assert swap_debiased(shown, reversed_, position) == [1.0, 0.0, disagreement, 0.5, 0.7, None, disagreement]


class Feedback:
    """A feedback loop on cartpole-upright's oracle, driven directly (no agent): 40 buffered one-frame
    segments of random states, a 24-label budget bought in two rounds."""

    def __init__(self, tmp_path, position: str, first_bias: float = 0.0):
        task = resolve_task("cartpole-upright")
        self.record, _ = RunRecord.open(tmp_path / "run", {"config": {"position": position}}, resume=False)
        config = FeedbackConfig(label_budget=24, rounds=2, epochs=2, position=position)
        self.loop = FeedbackLoop(task=task, judge=OracleJudge("oracle", OracleParams(first_bias=first_bias)),
                                 mode="preference", ensemble=RewardEnsemble(4, members=2, hidden=(8,)), config=config,
                                 total_timesteps=1000, seed=0, record=self.record, save_to=tmp_path / "feedback")
        self.loop.model = SimpleNamespace(logger=Logger(folder=None, output_formats=[]))
        rng = np.random.default_rng(0)
        for state in rng.normal(scale=[1.0, 1.0, 1.5, 1.0], size=(40, 4)):
            features = dict(zip(["cart_position", "cart_velocity", "pole_angle", "pole_velocity"], state, strict=True))
            self.loop.add_segment(state[None].astype(np.float32), (Frame(features=features),))

    def buy(self) -> tuple[list[dict], PreferenceDataset]:
        for _ in range(2):
            self.loop.run_round()
        self.record.close()
        return self.record.queries(), self.loop.dataset


@pytest.mark.parametrize("position", ["swap-tie", "swap-drop"])
def test_swap_debiasing_turns_a_fully_first_biased_judge_into_ties_or_nothing(tmp_path, position):
    lines, labels = Feedback(tmp_path, position, first_bias=1.0).buy()
    assert len(lines) == 24 and all(line["value"] == 1.0 for line in lines)  # always "first"
    asked = [tuple(line["segments"]) for line in lines]
    assert sorted(asked) == sorted((b, a) for a, b in asked)  # every pair asked in both orders
    if position == "swap-tie":
        assert len(labels) == 12 and set(labels.pairs()[2].tolist()) == {0.5}
    else:
        assert len(labels) == 0


def test_swap_debiasing_keeps_an_unbiased_judges_labels(tmp_path):
    lines, labels = Feedback(tmp_path, "swap-drop").buy()
    answered = {tuple(line["segments"]): line["value"] for line in lines}
    first, second, p_first = labels.pairs()
    keys = [s.key for s in labels.table.segments]
    assert len(labels) == 12 and set(p_first.tolist()) == {0.0, 1.0}
    for i, j, p in zip(first, second, p_first, strict=True):
        assert p == answered[(keys[i], keys[j])] == 1.0 - answered[(keys[j], keys[i])]


def test_a_randomly_ordered_first_biased_judge_labels_both_orders(tmp_path):
    """Shown once in random order, a first-biased judge's blind answers favour either clip equally often."""
    lines, labels = Feedback(tmp_path, "random", first_bias=1.0).buy()
    assert len(lines) == len(labels) == 24
    first, second, _ = labels.pairs()
    keys = [s.key for s in labels.table.segments]
    progress = {line["segments"][0]: line["detail"]["progress_difference"] for line in lines}
    better_first = [progress[keys[i]] > 0 for i in first]
    assert 6 <= sum(better_first) <= 18  # a label favouring the better clip about half the time, not always


# -- the batched ensemble ---------------------------------------------------------------------------------


def per_member_rewards(ensemble: RewardEnsemble, x: np.ndarray, member: int) -> np.ndarray:
    """One member's MLP in numpy, layer by layer: LeakyReLU(0.01) between linear layers."""
    h = x.astype(np.float64)
    layers = list(zip(ensemble.weights, ensemble.biases, strict=True))
    for k, (weight, bias) in enumerate(layers):
        h = h @ weight[member].detach().double().numpy() + bias[member].detach().double().numpy()
        if k < len(layers) - 1:
            h = np.where(h > 0, h, 0.01 * h)
    return h[..., 0]


def test_batched_ensemble_equals_the_per_member_loop():
    ensemble = RewardEnsemble(5, members=4, hidden=(16, 8), seed=3)
    x = np.random.default_rng(0).normal(size=(6, 3, 5)).astype(np.float32)
    expected = np.stack([per_member_rewards(ensemble, x, m) for m in range(4)])
    np.testing.assert_allclose(ensemble.member_rewards_numpy(x), expected, rtol=1e-5, atol=1e-6)
    own = np.random.default_rng(1).normal(size=(4, 7, 2, 5)).astype(np.float32)
    each = ensemble.each_member(torch.from_numpy(own)).detach().numpy()
    np.testing.assert_allclose(each, np.stack([per_member_rewards(ensemble, own[m], m) for m in range(4)]),
                               rtol=1e-5, atol=1e-6)


def legacy_state(ensemble: RewardEnsemble) -> dict:
    """The ensemble's parameters in the per-member layout older checkpoints used."""
    state = {"reward_mean": torch.tensor(0.25), "reward_std": torch.tensor(2.0)}
    for layer, (weight, bias) in enumerate(zip(ensemble.weights, ensemble.biases, strict=True)):
        for m in range(ensemble.members):
            state[f"nets.{m}.{2 * layer}.weight"] = weight[m].detach().T.clone()
            state[f"nets.{m}.{2 * layer}.bias"] = bias[m].detach().clone()
    return state


def test_checkpoints_in_the_per_member_layout_still_load():
    saved = RewardEnsemble(3, members=2, hidden=(8,), seed=1)
    loaded = RewardEnsemble(3, members=2, hidden=(8,), seed=2)
    loaded.load_state_dict(legacy_state(saved))
    x = np.random.default_rng(2).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.member_rewards_numpy(x), saved.member_rewards_numpy(x))
    assert loaded.reward_std.item() == 2.0
    with pytest.raises(ValueError, match="saved reward model has 2 members of 2 layers; this ensemble has 3 members"):
        RewardEnsemble(3, members=3, hidden=(8,)).load_state_dict(legacy_state(saved))


def test_a_saved_reward_model_that_does_not_fit_is_a_clear_error(tmp_path):
    feedback = Feedback(tmp_path, "random")
    feedback.loop.ensemble = RewardEnsemble(4, members=2, hidden=(8,))
    feedback.loop.save()
    state_file = feedback.loop.save_to / "state.pkl"
    saved = pickle.loads(state_file.read_bytes())
    saved["reward_model"] = legacy_state(RewardEnsemble(4, members=3, hidden=(8,)))
    state_file.write_bytes(pickle.dumps(saved))
    with pytest.raises(VlmbenchError, match=r"state.pkl: the saved reward model does not fit this run's ensemble: "
                                            r"saved reward model has 3 members of 2 layers; this ensemble has 2"):
        feedback.loop.load()


@pytest.mark.parametrize("value", ["0.7", "fitx", "-0.1"])
def test_a_bad_mistake_probability_is_one_line_naming_the_field(tmp_path, value):
    config = tmp_path / "run.yaml"
    config.write_text(f"task: cartpole-upright\njudge: oracle\nfeedback:\n  mistake_prob: {value}\n")
    proc = vlmbench("run", "--config", str(config), "--print-config")
    assert proc.returncode == 2
    assert one_line_error(proc) == f"error: {config}:4: feedback.mistake_prob: must be 'fit' or a number from 0 to 0.5"


@pytest.mark.parametrize("rows", [1, 8, 3000])
def test_predict_is_the_standardised_member_mean(rows):
    ensemble = RewardEnsemble(5, members=4, hidden=(16, 8), seed=3)
    ensemble.reward_mean.fill_(0.3)
    ensemble.reward_std.fill_(1.7)
    x = np.random.default_rng(rows).normal(size=(rows, 5)).astype(np.float32)
    expected = (np.stack([per_member_rewards(ensemble, x, m) for m in range(4)]).mean(axis=0) - 0.3) / 1.7
    got = ensemble.predict(x)
    assert got.dtype == np.float32 and got.shape == (rows,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # after a training step predict reads the new weights
    with torch.no_grad():
        ensemble.weights[0].mul_(2.0)
    expected = (np.stack([per_member_rewards(ensemble, x, m) for m in range(4)]).mean(axis=0) - 0.3) / 1.7
    np.testing.assert_allclose(ensemble.predict(x), expected, rtol=1e-5, atol=1e-6)


def expected_predict(ensemble: RewardEnsemble, x: np.ndarray) -> np.ndarray:
    members = np.stack([per_member_rewards(ensemble, x, m) for m in range(ensemble.members)])
    return (members.mean(axis=0) - ensemble.reward_mean.item()) / ensemble.reward_std.item()


def test_predict_on_a_few_rows_follows_every_change_of_the_parameters():
    """The per-step path reads numpy views of the parameters: training, normalisation, loading,
    casting, copying and pickling must all show through, never a stale copy."""
    ensemble = RewardEnsemble(5, members=3, hidden=(16, 8), seed=4)
    x = np.random.default_rng(5).normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_allclose(ensemble.predict(x), expected_predict(ensemble, x), rtol=1e-5, atol=1e-6)

    optimiser = torch.optim.Adam(ensemble.parameters(), lr=0.1)  # a training step
    ensemble.member_rewards(torch.from_numpy(x)).square().mean().backward()
    optimiser.step()
    ensemble.fit_normalisation(np.random.default_rng(6).normal(size=(50, 5)).astype(np.float32))
    np.testing.assert_allclose(ensemble.predict(x), expected_predict(ensemble, x), rtol=1e-5, atol=1e-6)

    other = RewardEnsemble(5, members=3, hidden=(16, 8), seed=9)
    other.reward_std.fill_(3.0)
    ensemble.load_state_dict(other.state_dict())
    np.testing.assert_allclose(ensemble.predict(x), other.predict(x), rtol=1e-6)
    ensemble.load_state_dict(RewardEnsemble(5, members=3, hidden=(16, 8), seed=10).state_dict(), assign=True)
    np.testing.assert_allclose(ensemble.predict(x), expected_predict(ensemble, x), rtol=1e-5, atol=1e-6)

    copy = pickle.loads(pickle.dumps(ensemble))
    with torch.no_grad():
        copy.weights[0].mul_(3.0)  # changes the copy only
    np.testing.assert_allclose(copy.predict(x), expected_predict(copy, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ensemble.predict(x), expected_predict(ensemble, x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(copy.predict(x), ensemble.predict(x))

    ensemble.double()  # replaces every parameter
    with torch.no_grad():
        ensemble.biases[-1].add_(1.0)
    np.testing.assert_allclose(ensemble.predict(x), expected_predict(ensemble, x), rtol=1e-5, atol=1e-6)
