"""The fake VLM server through the real openai and anthropic clients: its answering rule, its error shapes and
failures, its counters, and `vlmbench fake-server`'s bad input."""

from __future__ import annotations

import base64
import io
import json
import socket
import urllib.error
import urllib.request

import anthropic
import numpy as np
import openai
import pytest
from PIL import Image

from console import one_line_error, vlmbench
from vlmbench.judges.api.fake_server import FakeServer, draw_marker, progress_of

BLANK = np.full((40, 50, 3), 90, dtype=np.uint8)


def b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def openai_ask(server, text, images, **kwargs):
    client = openai.OpenAI(base_url=server.openai_url, api_key="any", max_retries=0, timeout=5)
    content = [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(p)}"}} for p in images]
    return client.chat.completions.create(model="fake-vlm", messages=[
        {"role": "user", "content": [*content, {"type": "text", "text": text}]}], **kwargs)


def anthropic_ask(server, text, images):
    client = anthropic.Anthropic(base_url=server.anthropic_url, api_key="any", max_retries=0, timeout=5)
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(p)}}
               for p in images]
    return client.messages.create(model="fake-vlm", max_tokens=50, messages=[
        {"role": "user", "content": [*content, {"type": "text", "text": text}]}])


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.37, 0.5, 0.98, 1.0])
def test_a_marker_is_read_back_to_within_a_pixel(progress):
    assert abs(progress_of(draw_marker(BLANK, progress)) - progress) <= 1 / BLANK.shape[1] or progress == 0.0


def test_cartpole_frames_are_read_close_to_the_tasks_progress():
    from vlmbench.datasets.format import load_dataset, resolve_dataset
    from vlmbench.datasets.render import frames
    from vlmbench.specs.catalogue import resolve_task

    dataset = load_dataset(resolve_dataset("cartpole-upright"))
    rows = dataset.lone()[:60]
    read = np.array([progress_of(p) for p in frames(dataset, resolve_task("cartpole-upright"), rows, cache=None)])
    truth = np.array([row.progress for row in rows])
    assert np.mean(np.abs(read - truth)) < 0.06
    goal = np.array([row.label == 1 for row in rows])
    assert goal.any() and (~goal).any() and read[goal].min() > np.median(read[~goal])


def test_pairs_ratings_and_yes_no_over_both_wire_formats():
    low, high = draw_marker(BLANK, 0.2), draw_marker(BLANK, 0.8)
    with FakeServer() as server:
        pair = "Which is closer? Answer with one of: LEFT, RIGHT, NEITHER"
        assert openai_ask(server, pair, [low, high]).choices[0].message.content == "RIGHT"
        assert anthropic_ask(server, pair, [high, low]).content[0].text == "LEFT"
        assert anthropic_ask(server, pair, [high, draw_marker(BLANK, 0.81)]).content[0].text == "NEITHER"
        side_by_side = np.concatenate([high, np.full((40, 8, 3), 0, np.uint8), low], axis=1)
        side_by_side = np.concatenate([side_by_side, side_by_side], axis=1)  # at least twice as wide as tall
        assert openai_ask(server, pair, [side_by_side]).choices[0].message.content in ("LEFT", "NEITHER")
        clips = [low, low, high, high]  # two clips of two frames
        assert openai_ask(server, pair, clips).choices[0].message.content == "RIGHT"
        rating = "How upright? Answer with one of: fallen, tilted, upright"
        assert [anthropic_ask(server, rating, [draw_marker(BLANK, p)]).content[0].text
                for p in (0.1, 0.5, 0.9)] == ["fallen", "tilted", "upright"]
        reply = openai_ask(server, "Is it upright? Answer with one of: yes, no", [high], logprobs=True, top_logprobs=5)
        answer = reply.choices[0].logprobs.content[-1]
        probabilities = {alt.token: np.exp(alt.logprob) for alt in answer.top_logprobs}
        p_yes = (probabilities["yes"] + probabilities["Yes"]) / sum(probabilities.values())
        assert reply.choices[0].message.content == "yes" and p_yes == pytest.approx(progress_of(high))
        reasoned = openai_ask(server, "Think step by step. Answer with one of: A, B", [low, high])
        assert reasoned.choices[0].message.content.splitlines()[-1] == "Answer: B"
        assert reasoned.usage.prompt_tokens == len("Think step by step. Answer with one of: A, B") // 4 + 2 * 85


def test_first_bias_answers_first_at_its_rate():
    low, high = draw_marker(BLANK, 0.2), draw_marker(BLANK, 0.8)
    with FakeServer(first_bias=0.4, seed=1) as server:
        answers = [openai_ask(server, "Answer with one of: FIRST, SECOND", [low, high]).choices[0].message.content
                   for _ in range(200)]
    assert 0.3 < answers.count("FIRST") / 200 < 0.5


def test_errors_and_failures_surface_as_the_sdks_exceptions():
    with FakeServer(logprobs=False) as server:
        with pytest.raises(openai.NotFoundError):
            openai.OpenAI(base_url=server.openai_url, api_key="k", max_retries=0).chat.completions.create(
                model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(urllib.error.HTTPError) as unauthorised:  # no key sent
            urllib.request.urlopen(f"{server.openai_url}/models")
        assert unauthorised.value.code == 401
        assert openai.OpenAI(base_url=server.openai_url, api_key="k").models.retrieve("fake-vlm").id == "fake-vlm"
        assert anthropic.Anthropic(base_url=server.anthropic_url, api_key="k").models.retrieve("fake-vlm").id == "fake-vlm"
        reply = openai_ask(server, "Answer with one of: yes, no", [BLANK], logprobs=True, top_logprobs=5)
        assert reply.choices[0].logprobs is None  # an endpoint without logprobs
        expected = {"429": openai.RateLimitError, "500": openai.InternalServerError, "timeout": openai.APITimeoutError}
        for kind, error in expected.items():
            server.fail_rate, server.failures, server.timeout_seconds = 1.0, (kind,), 8.0
            with pytest.raises(error) as raised:
                openai_ask(server, "Answer with one of: A, B", [BLANK, BLANK])
            if kind == "429":
                assert raised.value.response.headers["retry-after"] == "0"
        server.failures = ("garbage-text",)
        assert "one of" not in anthropic_ask(server, "Answer with one of: A, B", [BLANK, BLANK]).content[0].text
        server.failures = ("malformed-json",)
        with pytest.raises(Exception) as raised:
            openai_ask(server, "Answer with one of: A, B", [BLANK, BLANK])
        assert not isinstance(raised.value, (openai.APIStatusError, openai.APITimeoutError))
        with urllib.request.urlopen(f"{server.anthropic_url}/fake/stats") as response:
            stats = json.load(response)
    assert stats["by_outcome"] == {"404": 1, "answered": 1, "429": 1, "500": 1, "timeout": 1, "garbage-text": 1,
                                   "malformed-json": 1}
    assert stats["requests"] == 7 and stats["by_endpoint"] == {"/v1/chat/completions": 6, "/v1/messages": 1}


def test_console_script_bad_input_is_one_line():
    proc = vlmbench("fake-server", "--failures", "429,bogus")
    assert proc.returncode == 2 and "bogus" in one_line_error(proc)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = vlmbench("fake-server", "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 2 and "--port" in one_line_error(proc)
