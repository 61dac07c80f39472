"""The CLIP judge, offline, on a tiny randomly initialised open_clip model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlmbench.errors import VlmbenchError
from vlmbench.judges.base import Frame, Question
from vlmbench.judges.clip import ClipJudge, ClipParams
from vlmbench.judges.registry import build_judge, load_judge_class
from vlmbench.specs.catalogue import resolve_task
from vlmbench.specs.judge_config import JudgeConfig
from vlmbench.specs.loading import load_spec

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
JUDGES = Path(__file__).resolve().parents[1] / "judges"


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture
def make_judge(tiny_config):
    def make(**params) -> ClipJudge:
        params = {"model": "tiny-clip", "model_config": tiny_config, **params}
        return ClipJudge("clip-tiny", ClipParams.model_validate(params))

    return make


@pytest.fixture(scope="module")
def task():
    return resolve_task("cartpole-upright")


def frames(n: int, shape=(32, 32, 3), seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(pixels=rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]


def values(answers) -> np.ndarray:
    return np.array([a.value for a in answers])


def reference_embeddings(judge: ClipJudge, task, batch: list[Frame]):
    """Unit image embeddings and goal/baseline directions, straight from the model (32x32 frames)."""
    model, cfg = judge.model, judge.model.visual.preprocess_cfg
    pixels = np.stack([f.pixels for f in batch]).astype(np.float32) / 255
    images = torch.from_numpy((pixels - np.array(cfg["mean"])) / np.array(cfg["std"])).permute(0, 3, 1, 2)
    tokenizer = open_clip.get_tokenizer("tiny-clip")

    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def prompts(texts):
        with torch.no_grad():
            return unit(unit(model.encode_text(tokenizer(texts)).numpy()).mean(axis=0))

    with torch.no_grad():
        x = unit(model.encode_image(images.float()).numpy())
    return x, prompts(task.prompts.goal), prompts(task.prompts.baseline)


def test_import_loads_neither_torch_nor_open_clip():
    code = (
        "import sys, vlmbench.judges.base; torch = 'torch' in sys.modules; import vlmbench.judges.clip; "
        "assert 'open_clip' not in sys.modules and ('torch' in sys.modules) == torch"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_reward_matches_the_vlm_rm_formula(make_judge, task, alpha):
    two_goals = task.prompts.model_copy(update={"goal": [*task.prompts.goal, "a pole balanced on a cart"]})
    task = task.model_copy(update={"prompts": two_goals})
    judge, batch = make_judge(alpha=alpha), frames(6)
    x, g, b = reference_embeddings(judge, task, batch)
    d = g - b
    projection = alpha * np.outer(d, d) / (d @ d) + (1 - alpha) * np.eye(len(d))
    expected = 1 - 0.5 * np.sum(((x - g) @ projection) ** 2, axis=1)
    np.testing.assert_allclose(values(judge.score(task, batch)), expected, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_cosine_similarity(make_judge, task):
    judge, batch = make_judge(), frames(5)
    x, g, _ = reference_embeddings(judge, task, batch)
    np.testing.assert_allclose(values(judge.score(task, batch)), x @ g, atol=1e-6)


def test_batched_equals_unbatched(make_judge, task):
    batch = frames(7, (48, 40, 3), seed=1) + frames(6, (30, 64, 3), seed=2)
    batch = [batch[i] for i in np.random.default_rng(3).permutation(len(batch))]  # shapes interleaved
    one, eight = make_judge(batch_size=1, alpha=0.5), make_judge(batch_size=8, alpha=0.5)
    np.testing.assert_allclose(values(one.score(task, batch)), values(eight.score(task, batch)), atol=1e-5)


def test_preprocessing_matches_open_clip(make_judge):
    judge = make_judge()
    cfg = judge.model.visual.preprocess_cfg
    transform = open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )
    from PIL import Image

    for h, w in [(48, 40), (40, 90), (200, 120)]:
        yy, xx = np.mgrid[:h, :w]
        smooth = (np.sin(yy / 5) + 1)[..., None] * (xx / w)[..., None] * np.array([127, 64, 15])
        pixels = smooth.astype(np.uint8)
        ours = judge.preprocess([pixels])[0].numpy()
        theirs = transform(Image.fromarray(pixels)).numpy()
        np.testing.assert_allclose(ours, theirs, atol=0.03)  # PIL rounds to uint8 between passes


def count_encodes(judge: ClipJudge, monkeypatch) -> list[int]:
    """The batch sizes of every later encode_image call, appended as they happen."""
    encoded, original = [], judge.model.encode_image
    monkeypatch.setattr(judge.model, "encode_image", lambda x, **kw: encoded.append(len(x)) or original(x, **kw))
    return encoded


def test_cache_prevents_a_second_encode(make_judge, task, monkeypatch):
    judge = make_judge(batch_size=4)
    encoded = count_encodes(judge, monkeypatch)
    batch = frames(6)
    first = judge.score(task, batch + batch[:2])
    assert sum(encoded) == 6 and encoded == [4, 2]
    assert [a.provenance.cached for a in first] == [False] * 6 + [True] * 2
    assert all(a.provenance.seconds > 0 for a in first[:6]) and first[6].provenance.seconds == 0
    second = judge.score(task, batch)
    assert sum(encoded) == 6
    assert all(a.provenance.cached for a in second)
    np.testing.assert_array_equal(values(second), values(first[:6]))


def test_embed_shares_the_cache_and_matches_encode_image(make_judge, task, monkeypatch):
    judge = make_judge(batch_size=8)
    batch = frames(5)
    expected = reference_embeddings(judge, task, batch)[0]
    encoded = count_encodes(judge, monkeypatch)
    embedded = judge.embed(batch)
    assert embedded.shape == (5, judge.embedding_dim)
    np.testing.assert_allclose(embedded, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), 1.0, atol=1e-5)
    judge.score(task, batch)  # scoring the same frames reuses the embeddings
    assert sum(encoded) == 5


def test_cache_is_bounded(make_judge, task, monkeypatch):
    judge = make_judge(cache_size=2)
    encoded = count_encodes(judge, monkeypatch)
    batch = frames(3)
    judge.score(task, batch)
    assert [a.provenance.cached for a in judge.score(task, batch[1:])] == [True, True]
    assert [a.provenance.cached for a in judge.score(task, batch[:1])] == [False]  # evicted
    assert sum(encoded) == 4


def test_provenance(make_judge, task):
    answer = make_judge(alpha=0.5).score(task, frames(1))[0]
    assert answer.provenance.model == "tiny-clip/random" and answer.provenance.judge == "clip-tiny"
    assert answer.provenance.prompt_hash != make_judge(alpha=1.0).score(task, frames(1))[0].provenance.prompt_hash


@pytest.mark.parametrize("temperature", [0.0, 0.1])
def test_compare_from_score_differences(make_judge, task, temperature):
    judge = make_judge(alpha=0.5, compare_temperature=temperature)
    a, b, c = frames(3, seed=4), frames(2, seed=5), frames(1, seed=6)
    scores = {id(f): s.value for f, s in zip(a + b + c, judge.score(task, a + b + c))}
    answers = judge.compare(task, [(a, b), (c, c)])
    diff = sum(scores[id(f)] for f in a) - sum(scores[id(f)] for f in b)
    assert answers[0].question is Question.COMPARE
    assert answers[0].detail["score_difference"] == pytest.approx(diff)
    expected = 1 / (1 + math.exp(-diff / temperature)) if temperature else float(diff > 0)
    assert answers[0].value == pytest.approx(expected)
    assert answers[1].value == 0.5


def test_abstains_on_frames_without_pixels(make_judge, task):
    answers = make_judge().score(task, [Frame(features={"pole_angle": 0.0}), *frames(1)])
    assert answers[0].abstained and "pixels" in answers[0].abstain_reason
    assert not answers[1].abstained
    compared = make_judge().compare(task, [([Frame()], frames(1))])
    assert compared[0].abstained


def test_no_model_is_loaded_when_no_frame_has_pixels(task):
    judge = ClipJudge("c", ClipParams(model="no-such-architecture"))
    assert judge.score(task, [Frame(), Frame()])[0].abstained


def test_alpha_needs_a_baseline_prompt(make_judge, task):
    no_baseline = task.model_copy(update={"prompts": task.prompts.model_copy(update={"baseline": []})})
    make_judge(alpha=0.0).score(no_baseline, frames(1))
    with pytest.raises(VlmbenchError, match=r"cartpole-upright.*prompts\.baseline"):
        make_judge(alpha=0.5).score(no_baseline, frames(1))


def _missing_weights(judge: ClipJudge, task) -> str:
    with pytest.raises(VlmbenchError) as info:
        judge.score(task, frames(1))
    message = str(info.value)
    assert "\n" not in message and "could not be downloaded or found" in message
    assert "checkpoint: /path/to/file" in message and "HF_HUB_OFFLINE" in message
    return message


def test_missing_checkpoint(make_judge, task, tmp_path):
    message = _missing_weights(make_judge(pretrained="mytag", checkpoint=str(tmp_path / "nope.pt")), task)
    assert "tiny-clip/mytag" in message and "nope.pt" in message


def test_unknown_pretrained_tag(make_judge, task):
    assert "tiny-clip/laion2b_s34b_b79k" in _missing_weights(make_judge(pretrained="laion2b_s34b_b79k"), task)


def test_download_fails_fast_offline(task, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    judge = ClipJudge("c", ClipParams(model="ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu"))
    assert "ViT-B-32/laion2b_s34b_b79k" in _missing_weights(judge, task)


def test_custom_config_must_be_named_after_the_model(tiny_config, task):
    judge = ClipJudge("c", ClipParams.model_validate({"model": "other", "model_config": tiny_config}))
    with pytest.raises(VlmbenchError, match="other.json"):
        judge.score(task, frames(1))


def test_params_are_validated():
    with pytest.raises(ValueError):
        ClipParams(model="ViT-B-32", alpha=1.5)
    with pytest.raises(ValueError):
        ClipParams.model_validate({"model": "ViT-B-32", "colour": "red"})


@pytest.mark.parametrize(
    "name, model, pretrained, alpha",
    [
        ("clip-vit-b32", "ViT-B-32", "laion2b_s34b_b79k", 0.0),
        ("clip-vit-l14", "ViT-L-14", "laion2b_s32b_b82k", 0.0),
        ("clip-vit-h14", "ViT-H-14", "laion2b_s32b_b79k", 0.0),
        ("clip-vit-bigG", "ViT-bigG-14", "laion2b_s39b_b160k", 0.0),
        ("clip-vit-bigG-alpha0.5", "ViT-bigG-14", "laion2b_s39b_b160k", 0.5),
        ("clip-vit-bigG-alpha1", "ViT-bigG-14", "laion2b_s39b_b160k", 1.0),
    ],
)
def test_judge_configs(name, model, pretrained, alpha):
    config = load_spec(JUDGES / f"{name}.yaml", JudgeConfig)
    assert config.name == name and load_judge_class(config.type) is ClipJudge
    judge = build_judge(config)
    assert (judge.params.model, judge.params.pretrained, judge.params.alpha) == (model, pretrained, alpha)
    assert (model, pretrained) in open_clip.list_pretrained()
