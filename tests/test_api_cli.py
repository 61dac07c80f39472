"""API judges through the console script: bad settings fail in one line before any record exists, and
`vlmbench eval` / `vlmbench run` work end to end against a local server without leaking the key."""

import json
import socket

import pytest

from vlmbench.judges.api.fake_server import FakeServer
from tests.console import one_line_error, vlmbench
from tests.test_api_judges import tokens_in

KEY = "sk-cli-Hx7pW2distinctive"


def config(tmp_path, name="api-judge", **params) -> str:
    base = {"model": "fake-vlm", "api_key_env": "STUB_KEY", "cache_path": str(tmp_path / "cache.sqlite"),
            "retry_base_delay_s": 0.01}
    lines = [f"name: {name}", "type: openai-pairwise", "default_reward: preference", "params:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in {**base, **params}.items()]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fails_cleanly(tmp_path, judge: str, env: dict, *, command="eval") -> str:
    args = (["eval", "--task", "cartpole-upright", "--judge", judge, "--results", str(tmp_path / "out")]
            if command == "eval" else
            ["run", "--task", "cartpole-upright", "--judge", judge, "--results", str(tmp_path / "out")])
    proc = vlmbench(*args, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = one_line_error(proc)
    assert len(message.splitlines()) == 1 and not (tmp_path / "out").exists()
    assert KEY not in proc.stdout + proc.stderr
    return message


def test_missing_key(tmp_path):
    with FakeServer(key=KEY) as server:
        message = fails_cleanly(tmp_path, config(tmp_path, base_url=server.openai_url), {"STUB_KEY": ""})
    assert "set the environment variable STUB_KEY" in message


def test_unreachable_endpoint(tmp_path):
    judge = config(tmp_path, base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=3)
    message = fails_cleanly(tmp_path, judge, {"STUB_KEY": KEY}, command="run")
    assert "cannot reach http://127.0.0.1:" in message and "params.base_url" in message


def test_wrong_key_and_unknown_model(tmp_path):
    with FakeServer(key=KEY) as server:
        judge = config(tmp_path, base_url=server.openai_url)
        assert "rejected the API key in STUB_KEY" in fails_cleanly(tmp_path, judge, {"STUB_KEY": "wrong-key"})
        judge = config(tmp_path, name="other-model", base_url=server.openai_url, model="gpt-nonexistent")
        message = fails_cleanly(tmp_path, judge, {"STUB_KEY": KEY}, command="run")
    assert "does not serve model 'gpt-nonexistent'" in message and "params.model" in message


def test_unknown_field_and_missing_price(tmp_path):
    judge = config(tmp_path, base_url="http://127.0.0.1:9/v1", temprature=0.5)
    assert "params.temprature: unknown field" in fails_cleanly(tmp_path, judge, {"STUB_KEY": KEY})
    judge = config(tmp_path, name="paid", base_url="https://api.example.com/v1")
    message = fails_cleanly(tmp_path, judge, {"STUB_KEY": KEY}, command="run")
    assert "is paid; set params.price_per_mtok_in and params.price_per_mtok_out" in message


@pytest.mark.slow
def test_eval_flags_a_first_biased_api_judge_and_run_works_without_leaking_the_key(tmp_path):
    env = {"STUB_KEY": KEY, "MUJOCO_GL": "egl"}
    with FakeServer(key=KEY, first_bias=0.7) as server:
        judge = config(tmp_path, base_url=server.openai_url, price_per_mtok_in=1.0, price_per_mtok_out=2.0)
        proc = vlmbench("eval", "--task", "cartpole-upright", "--judge", judge, "--pairs", "8", "--probes", "identical",
                        "--results", str(tmp_path / "evals"), cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((tmp_path / "evals" / "cartpole-upright--api-judge" / "summary.json").read_text())
        assert summary["position_bias"]["biased"] is True
        assert summary["calls"] == 58 and summary["cache_hits"] + len(server.requests) == 58
        assert summary["input_tokens"] == sum(tokens_in(request) for request in server.requests)
        assert summary["cost_usd"] == pytest.approx((summary["input_tokens"] + 2 * summary["output_tokens"]) / 1e6)
        asked = len(server.requests)
        proc = vlmbench("run", "--task", "cartpole-upright", "--judge", judge, "--timesteps", "256",
                        "--label-budget", "8", "--eval-episodes", "1", "--results", str(tmp_path / "runs"),
                        cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        usage = json.loads(next((tmp_path / "runs").glob("*/judge_usage.json")).read_text())
        assert usage["answers"] >= 1 and usage["answers"] - usage["cache_hits"] == len(server.requests) - asked
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written) and any(p.name == "queries.jsonl" for p in written)
    assert not [p for p in written if KEY.encode() in p.read_bytes()]
    assert KEY not in proc.stdout + proc.stderr


def test_raising_a_spent_budget_continues_the_evaluation_without_buying_twice(tmp_path):
    """The budget message says to raise the cap; doing so must continue the record, not ask for --overwrite."""
    env = {"STUB_KEY": KEY}
    args = ("eval", "--task", "cartpole-upright", "--pairs", "20", "--probes", "none",
            "--results", str(tmp_path / "out"))
    with FakeServer(key=KEY) as server:
        capped = vlmbench(*args, "--judge", config(tmp_path, base_url=server.openai_url, budget_calls=10), env=env,
                          timeout=300)
        assert capped.returncode == 2 and "spent its budget" in one_line_error(capped)
        bought = len(server.requests)
        raised = vlmbench(*args, "--judge", config(tmp_path, base_url=server.openai_url, budget_calls=1000), env=env,
                          timeout=300)
        assert raised.returncode == 0, raised.stdout + raised.stderr
        folder = tmp_path / "out" / "cartpole-upright--api-judge"
        header = json.loads((folder / "header.json").read_text())
        assert header["judge"]["params"]["budget_calls"] == 1000  # the header says which cap was in force last
        summary = json.loads((folder / "summary.json").read_text())
        assert bought >= 10 and summary["reused_answers"] + summary["cache_hits"] == bought  # kept, not bought again
        assert len(server.requests) - bought == summary["calls"] - summary["cache_hits"]
        cached = summary["cache_hits"]
        assert f"judge answers {summary['calls']} ({cached} of them from the judge's cache)" in raised.stdout
        assert "no position bias found (checked: position_accuracy_gap)" in raised.stdout  # --probes none: that alone
        other = vlmbench(*args, "--judge", config(tmp_path, base_url=server.openai_url, budget_calls=1000,
                                                  temperature=0.5), env=env, timeout=300)
        assert other.returncode == 2 and "other settings" in one_line_error(other)  # a real change still is one
