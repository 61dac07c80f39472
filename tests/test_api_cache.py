"""The answer cache: keys that change with every input that shapes a reply, commits that survive other
writers, expiry, and the spend table budgets count."""

import subprocess
import sys

import numpy as np
import pytest

from vlmbench.judges.api.cache import AnswerCache, CallRecord, Reply
from vlmbench.judges.api.prompting import Image, Request
from vlmbench.judges.registry import build_judge
from vlmbench.specs.judge_config import JudgeConfig


def judge(**params):
    base = {"model": "m", "base_url": "http://127.0.0.1:9/v1", "cache": "off"}
    return build_judge(JudgeConfig(name="j", type="openai-pairwise", params={**base, **params}))


def image(value: int) -> Image:
    return Image.of(np.full((4, 4, 3), value, dtype=np.uint8))


def request(text="which is better?", images=(1, 2), temperature=0.0) -> Request:
    return Request((*[image(v) for v in images], text), 16, temperature)


def test_request_key_changes_with_every_input():
    j = judge()
    key = j.request_key(request(), 0)
    assert j.request_key(request(), 0) == key
    different = [
        j.request_key(request(text="which is worse?"), 0),
        j.request_key(request(images=(2, 1)), 0),  # the order of the images
        j.request_key(request(images=(1, 3)), 0),
        j.request_key(request(temperature=0.7), 0),
        j.request_key(request(), 1),  # the sample index
        judge(model="m2").request_key(request(), 0),
        judge(base_url="http://127.0.0.1:10/v1").request_key(request(), 0),
        judge(labels="left-right").request_key(request(), 0),
    ]
    assert len({key, *different}) == len(different) + 1
    # settings that never change a reply keep the key
    assert judge(concurrency=3, max_retries=1, budget_calls=5).request_key(request(), 0) == key


def test_sample_index_counts_identical_questions():
    j = judge()
    assert [j._sample(request()), j._sample(request()), j._sample(request(text="other")), j._sample(request())] == \
        [0, 1, 0, 2]


def _record(key: str, judge_name: str = "j") -> CallRecord:
    return CallRecord(key, judge_name, "openai-pairwise", "m", "http://x", "text", ["d1"], 0)


def test_cache_round_trip_spend_and_expiry(tmp_path):
    cache = AnswerCache(tmp_path / "c.sqlite")
    reply = Reply("SECOND", [["SECOND", -0.1, [["SECOND", -0.1]]]], 100, 3, 0.2, 0.0004)
    cache.put(_record("k1"), reply, {"label": "SECOND", "reason": None})
    cache.put(_record("k2"), Reply("FIRST", None, 50, 1, 0.1, 0.0002), None)
    assert cache.get("k1") == reply
    assert cache.get("nope") is None
    assert cache.spent("j") == (2, pytest.approx(0.0006))
    assert cache.spent("other") == (0, 0.0)
    assert AnswerCache(tmp_path / "c.sqlite", max_age_s=0.0).get("k1") is None
    assert cache.expire(-1.0) == 2 and cache.get("k1") is None
    assert cache.spent("j")[0] == 2  # expiring replies keeps what was spent


WRITER = """
import sys
from vlmbench.judges.api.cache import AnswerCache, CallRecord, Reply
cache = AnswerCache(sys.argv[1])
for i in range(50):
    cache.put(CallRecord(f"w{sys.argv[2]}-{i}", "j", "t", "m", "u", "p", [], 0), Reply("FIRST", None, 1, 1, 0.0, 0.001), None)
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    AnswerCache(path).close()
    workers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)]) for w in range(3)]
    assert [w.wait(60) for w in workers] == [0, 0, 0]
    cache = AnswerCache(path)
    assert cache.spent("j") == (150, pytest.approx(0.15))
    assert all(cache.get(f"w{w}-{i}") is not None for w in range(3) for i in range(50))
