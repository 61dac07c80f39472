"""API judge throughput: labels per second against `vlmbench fake-server` (its own process) answering after 200 ms,
with 1 and 16 requests in flight, and a cached re-run (no request may reach the server).

    PYTHONPATH=. python bench/bench_api_judge.py [--pairs 48] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import urllib.request
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vlmbench.judges.base import Frame  # noqa: E402
from vlmbench.judges.registry import build_judge  # noqa: E402
from vlmbench.specs.catalogue import resolve_task  # noqa: E402
from vlmbench.specs.judge_config import JudgeConfig  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    os.environ["BENCH_KEY"] = "bench"
    task = resolve_task("cartpole-upright")
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(2 * args.pairs):  # rendered-looking frames: a flat scene with a box somewhere in it
        pixels = np.full((224, 224, 3), 235, dtype=np.uint8)
        x, y = rng.integers(0, 180, size=2)
        pixels[y : y + 40, x : x + 40] = rng.integers(0, 200, size=3, dtype=np.uint8)
        frames.append(Frame(pixels))
    port = free_port()
    pairs = [([frames[2 * i]], [frames[2 * i + 1]]) for i in range(args.pairs)]
    rows = []
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-m", "vlmbench", "fake-server", "--port", str(port),
                               "--latency-ms", str(args.latency * 1000)], cwd=root, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def served() -> int:
        with urllib.request.urlopen(f"{url}/fake/stats") as response:
            return json.load(response)["requests"]

    for _ in range(300):  # until it answers
        try:
            served()
            break
        except OSError:
            time.sleep(0.1)

    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, concurrency, cache in (("concurrency 1", 1, "c1"), ("concurrency 16", 16, "c16"),
                                              ("cached re-run", 16, "c16")):
                judge = build_judge(JudgeConfig(name="bench", type="openai-pairwise", params={
                    "model": "fake-vlm", "base_url": f"{url}/v1", "api_key_env": "BENCH_KEY",
                    "concurrency": concurrency, "cache_path": str(Path(tmp) / f"{cache}.sqlite")}))
                before = served()
                began = time.perf_counter()
                answers = judge.compare(task, pairs)
                seconds = time.perf_counter() - began
                rows.append((label, len(answers) / seconds, seconds, served() - before))
    finally:
        server.terminate()
        server.wait()
    print(f"{args.pairs} pairs of 224x224 rendered-looking frames, server latency {args.latency * 1000:.0f} ms")
    print(f"{'setting':<16}{'labels/s':>10}{'seconds':>10}{'requests':>10}")
    for label, rate, seconds, requests in rows:
        print(f"{label:<16}{rate:>10.1f}{seconds:>10.2f}{requests:>10}")
    print(f"speed-up at 16 in flight: {rows[1][1] / rows[0][1]:.1f}x (target >= 12x); "
          f"requests on the cached re-run: {rows[2][3]} (target 0)")


if __name__ == "__main__":
    main()
