"""API judges against the fake VLM server: both wire formats, debiasing, the cache, faults, budgets."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from vlmbench.judges.api.fake_server import FakeServer, progress_of
from vlmbench.errors import VlmbenchError
from vlmbench.judges.api.judges import BudgetExhausted
from vlmbench.judges.base import Frame
from vlmbench.judges.registry import build_judge
from vlmbench.specs.catalogue import resolve_task
from vlmbench.specs.judge_config import JudgeConfig

KEY = "sk-test-Zq8vK3distinctive"
TASK = resolve_task("cartpole-upright")


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("STUB_KEY", KEY)


def make(server, kind="openai-pairwise", tmp_path=None, **params):
    url = server.anthropic_url if kind.startswith("anthropic") else server.openai_url
    base = {"model": "fake-vlm", "base_url": url, "api_key_env": "STUB_KEY", "retry_base_delay_s": 0.01,
            "cache": "off" if tmp_path is None else "use"}
    if tmp_path is not None:
        base["cache_path"] = str(tmp_path / "cache.sqlite")
    judge = build_judge(JudgeConfig(name=f"test-{kind}", type=kind, params={**base, **params}))
    judge.warm_up()
    return judge


def frame(brightness: int, size=(12, 16)) -> Frame:
    rng = np.random.default_rng(brightness)
    pixels = np.clip(brightness + rng.integers(-3, 4, size=(*size, 3)), 0, 255).astype(np.uint8)
    return Frame(pixels)


def png_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def tokens_in(request: dict) -> int:
    """The fake server's input token count for a request: 1 per 4 characters of text, 85 per image."""
    parts = [p for m in request["body"]["messages"] for p in m["content"]]
    return sum(len(p["text"]) for p in parts if p["type"] == "text") // 4 + 85 * sum(p["type"] != "text" for p in parts)


def test_openai_wire_format(key_env):
    a, b = frame(40), frame(200)
    with FakeServer(key=KEY) as server:
        answers = make(server, concurrency=1).compare(TASK, [([a], [b]), ([b], [a])])  # requests arrive in order
        request = server.requests[0]
    assert [x.value for x in answers] == [0.0, 1.0]  # the brighter one wins
    assert request["path"] == "/v1/chat/completions" and {k.lower(): v for k, v in request["headers"].items()}["authorization"] == f"Bearer {KEY}"
    content = request["body"]["messages"][0]["content"]
    images = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
    assert all(url.startswith("data:image/png;base64,") for url in images)
    decoded = [png_of(base64.b64decode(url.split(",", 1)[1])) for url in images]
    assert np.array_equal(decoded[0], a.pixels) and np.array_equal(decoded[1], b.pixels)
    assert content[-1]["text"].splitlines()[-1] == "Answer with one of: FIRST, SECOND, NEITHER"
    assert answers[0].provenance.input_tokens == tokens_in(request) and answers[0].provenance.cached is False


def test_anthropic_wire_format_and_clips(key_env):
    a, b = [frame(40), frame(60)], [frame(200), frame(180)]
    with FakeServer(key=KEY) as server:
        answers = make(server, "anthropic-pairwise").compare(TASK, [(a, b)])
        request = server.requests[0]
    assert answers[0].value == 0.0
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert request["path"] == "/v1/messages" and KEY in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert "anthropic-version" in headers
    images = [p["source"] for p in request["body"]["messages"][0]["content"] if p["type"] == "image"]
    assert [s["media_type"] for s in images] == ["image/png"] * 4 and {s["type"] for s in images} == {"base64"}
    assert np.array_equal(png_of(base64.b64decode(images[2]["data"])), b[0].pixels)  # first clip's frames first
    assert request["body"]["max_tokens"] == 16


def test_side_by_side_layout_and_chain_of_thought(key_env):
    with FakeServer(key=KEY) as server:
        judge = make(server, layout="side_by_side", labels="left-right", tie=False, reasoning="chain_of_thought")
        answers = judge.compare(TASK, [([frame(220)], [frame(30)])])
        content = server.requests[0]["body"]["messages"][0]["content"]
    picture = png_of(base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1]))
    assert picture.shape == (12, 16 * 2 + 8, 3)
    assert (picture[:, 16:24] == (220, 30, 30)).all()  # the red bar in the middle
    assert answers[0].value == 1.0 and answers[0].detail["label"] == "LEFT"
    assert "step by step" in content[-1]["text"]


def test_two_stage_shows_the_images_again(key_env):
    with FakeServer(key=KEY) as server:
        answers = make(server, reasoning="two_stage").compare(TASK, [([frame(30)], [frame(220)])])
        analysis, labelling = server.requests
    assert answers[0].value == 0.0
    assert "one of:" not in json.dumps(analysis["body"])
    second = labelling["body"]["messages"][0]["content"]
    assert sum(p["type"] == "image_url" for p in second) == 2
    assert "progress of about 0.12, 0.86" in second[-1]["text"]  # stage one's analysis, passed on


def test_swap_debiasing_against_a_first_biased_server(key_env):
    pairs = [([frame(30)], [frame(220)]), ([frame(220)], [frame(30)])]
    with FakeServer(key=KEY, first_bias=1.0) as server:
        biased = make(server).compare(TASK, pairs)
        as_tie = make(server, debias="swap").compare(TASK, pairs)
        abstain = make(server, debias="swap", swap_disagreement="abstain").compare(TASK, pairs)
    assert [a.value for a in biased] == [1.0, 1.0]
    assert [a.value for a in as_tie] == [0.5, 0.5] and as_tie[0].detail["labels"] == ["FIRST", "FIRST"]
    assert [a.abstain_reason for a in abstain] == ["swap disagreement: the two orders gave different verdicts"] * 2
    with FakeServer(key=KEY) as server:
        fair = make(server, debias="swap").compare(TASK, pairs)
        assert len(server.requests) == 4
    assert [a.value for a in fair] == [0.0, 1.0]


def test_swap_average_from_logprobs(key_env):
    with FakeServer(key=KEY) as server:
        answers = make(server, debias="swap_average").compare(TASK, [([frame(30)], [frame(220)])])
    # the server's P(first label) is sigmoid((progress difference) / 0.1); swapped, the second frame is first
    a, b = progress_of(frame(30).pixels), progress_of(frame(220).pixels)
    forward, backward = 1 / (1 + np.exp(-(a - b) / 0.1)), 1 / (1 + np.exp(-(b - a) / 0.1))
    assert answers[0].detail["p_first"] == pytest.approx([forward, backward], abs=1e-6)
    assert answers[0].value == pytest.approx((forward + 1 - backward) / 2, abs=1e-6)


def test_yes_probability_and_refusal_without_logprobs(key_env):
    with FakeServer(key=KEY) as server:
        scores = make(server, "openai-yes").score(TASK, [frame(220), frame(30)])
    # P(yes) = the frame's progress (brightness / 255 here), spread over yes/Yes/no/No and renormalised
    assert [s.value for s in scores] == pytest.approx([progress_of(frame(220).pixels), progress_of(frame(30).pixels)])
    with FakeServer(key=KEY, logprobs=False) as server, pytest.raises(VlmbenchError, match="returned no logprobs"):
        make(server, "openai-yes").score(TASK, [frame(220)])


def test_rating(key_env):
    with FakeServer(key=KEY) as server:
        for kind in ("openai-rating", "anthropic-rating"):
            answers = make(server, kind).rate(TASK, [[frame(20)], [frame(120)], [frame(240)]])
            assert [a.value for a in answers] == [0, 1, 2]
            assert [a.detail["label"] for a in answers] == ["fallen", "tilted", "upright"]


def test_cache_makes_a_rerun_free_and_repeats_ask_again(key_env, tmp_path):
    pairs = [([frame(30)], [frame(220)]), ([frame(100)], [frame(90)])]
    with FakeServer(key=KEY) as server:
        first = make(server, tmp_path=tmp_path).compare(TASK, pairs)
        assert len(server.requests) == 2
        again = make(server, tmp_path=tmp_path)
        rerun = again.compare(TASK, pairs)
        assert len(server.requests) == 2 and all(a.provenance.cached for a in rerun)
        assert [a.value for a in rerun] == [a.value for a in first]
        assert rerun[0].provenance.cost_usd == 0 and again.usage.cache_hits == 2
        repeat = again.compare(TASK, pairs[:1])  # the same question again in this judge's lifetime: a new sample
        assert len(server.requests) == 3 and not repeat[0].provenance.cached
        resumed = make(server, tmp_path=tmp_path)
        resumed.note_answered(TASK, resumed.answers and next(iter(resumed.answers)), pairs)  # answered from a log
        resumed.compare(TASK, pairs[:1])  # re-derives sample index 1: cached
        assert len(server.requests) == 3
        make(server, tmp_path=tmp_path, cache="refresh").compare(TASK, pairs[:1])
        assert len(server.requests) == 4


def test_faults_never_mislabel_and_every_abstention_has_its_reason(key_env, tmp_path):
    rng = np.random.default_rng(1)
    levels = rng.permutation(np.arange(4, 252, 3))[:80]
    pairs = [([frame(int(x))], [frame(int(y))]) for x, y in zip(levels[::2], levels[1::2])]
    with FakeServer(key=KEY, fail_rate=0.3, seed=9, timeout_seconds=2.0) as server:  # all 5 faults in 32 requests
        judge = make(server, tmp_path=tmp_path, max_retries=1, concurrency=8, timeout_s=0.5)
        answers = judge.compare(TASK, pairs)
        faults, asked = list(server.faults), len(server.requests)
        server.fail_rate = 0.0  # a re-run buys only what the faults left unanswered
        rerun = make(server, tmp_path=tmp_path).compare(TASK, pairs)
        garbage = sum(a.abstain_reason.startswith("unparseable") for a in answers if a.abstained)
        failed = sum(a.abstain_reason.startswith("API call failed") for a in answers if a.abstained)
        assert len(server.requests) - asked == failed
    assert len(faults) >= 5 and {"429", "500", "malformed-json", "garbage-text", "timeout"} <= set(faults)
    # the server's verdict: the brighter frame, a tie (NEITHER) within 0.02 of progress
    reads = [(progress_of(first[0].pixels), progress_of(second[0].pixels)) for first, second in pairs]
    truth = [0.5 if abs(x - y) <= 0.02 else 1.0 if x > y else 0.0 for x, y in reads]
    answered = [(a.value, t) for a, t in zip(answers, truth) if not a.abstained]
    assert all(value == t for value, t in answered) and len(answered) >= 10
    reasons = [a.abstain_reason for a in answers if a.abstained]
    assert len(reasons) == failed + garbage > 0
    assert sum(judge.usage.failed.values()) == failed and judge.usage.retries > 0
    assert garbage == sum(1 for a in answers if a.abstained and a.provenance.input_tokens)  # a garbage reply is paid
    assert [a.value for a in rerun] == [t if a.abstained and a.abstain_reason.startswith("API") else a.value
                                        for a, t in zip(answers, truth)]


def test_budget_cap_stops_and_holds_across_judges(key_env, tmp_path):
    pairs = [([frame(10 + 20 * i)], [frame(15 + 20 * i)]) for i in range(8)]
    with FakeServer(key=KEY) as server:
        judge = make(server, tmp_path=tmp_path, budget_calls=5, concurrency=1)
        with pytest.raises(BudgetExhausted, match="budget"):
            judge.compare(TASK, pairs)
        assert len(server.requests) == 5
        with pytest.raises(BudgetExhausted, match=r"5 paid calls"):
            make(server, tmp_path=tmp_path, budget_calls=5)  # a resumed process: warm-up refuses
        cached = make(server, tmp_path=tmp_path, budget_calls=6).compare(TASK, pairs[:5])  # bought answers are free
        assert all(a.provenance.cached for a in cached) and len(server.requests) == 5


def test_no_key_in_any_file(key_env, tmp_path):
    with FakeServer(key=KEY) as server:
        make(server, tmp_path=tmp_path, debias="swap").compare(TASK, [([frame(30)], [frame(220)])])
        make(server, "openai-yes", tmp_path=tmp_path).score(TASK, [frame(30)])
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if KEY.encode() in p.read_bytes()]
