"""Throughput of the CLIP judge against the bare image encoder, side by side in one run.

Measures frames/s of (a) model.encode_image on preprocessed batches, (b) the judge's score() on
the same frames (target: at most 1.1x slower than a), (c) the judge one frame per forward pass
(batch_size 1) against batch_size 32 (target: 32 at least 4x faster), (d) a second score() over
the same frames, answered from the embedding cache. Each is timed --repeats times; the best counts.
On a busy CPU, --threads 1 gives steadier numbers (threads waiting for each other distort them).

The default model is ViT-B-32 with random weights (no download needed):

    python bench/bench_clip_judge.py
    python bench/bench_clip_judge.py --model ViT-bigG-14 --pretrained laion2b_s39b_b160k --frames 256
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from vlmbench.judges.base import Frame
from vlmbench.judges.clip import ClipJudge, ClipParams
from vlmbench.specs.catalogue import resolve_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default: random weights)")
    parser.add_argument("--checkpoint", default=None, help="local weights file")
    parser.add_argument("--model-config", default=None, help="open_clip model-config JSON named <model>.json")
    parser.add_argument("--task", default="cartpole-upright", help="task whose prompts and frame size are used")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = resolve_task(args.task)
    params = ClipParams.model_validate({
        "model": args.model, "pretrained": args.pretrained, "checkpoint": args.checkpoint,
        "model_config": args.model_config, "batch_size": args.batch_size, "device": args.device,
    })
    batched = ClipJudge("bench", params)
    single = ClipJudge("bench-b1", params.model_copy(update={"batch_size": 1}))  # shares the loaded model
    rng = np.random.default_rng(0)
    shape = (task.render.height, task.render.width, 3)
    frames = [Frame(pixels=rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(args.frames)]
    model, device, bs = batched.model, batched.device, args.batch_size
    inputs = [batched.preprocess([f.pixels for f in frames[i : i + bs]]) for i in range(0, len(frames), bs)]
    on_cuda = torch.device(device).type == "cuda"

    def bare() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16) if on_cuda else nullcontext():
            for x in inputs:
                model.encode_image(x)
        if on_cuda:
            torch.cuda.synchronize()

    def fresh(judge: ClipJudge):
        def run() -> None:
            judge.clear_cache()
            judge.score(task, frames)

        return run

    runs = {
        "(a) bare encode_image": bare,
        f"(b) judge score, batch {bs}": fresh(batched),
        "(c) judge score, batch 1": fresh(single),
        f"(d) judge score, batch {bs}, cached": lambda: batched.score(task, frames),  # filled by (b)
    }
    bare(), fresh(batched)(), fresh(single)()  # warm up: text embeddings, kernels, allocator
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
        for name, run in runs.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - began)
    fps = {name: len(frames) / seconds for name, seconds in best.items()}

    a, b, c, d = fps.values()
    table = Table(title=f"CLIP judge: {batched.describe_model()} on {device}, {len(frames)} frames "
                  f"{shape[1]}x{shape[0]}, {torch.get_num_threads()} threads, best of {args.repeats}")
    table.add_column("measurement")
    table.add_column("seconds", justify="right")
    table.add_column("frames/s", justify="right")
    for name, seconds in best.items():
        table.add_row(name, f"{seconds:.3f}", f"{fps[name]:.1f}")
    console = Console()
    console.print(table)
    console.print(f"overhead of the judge over the bare encoder (a/b): {a / b:.3f}x  (target <= 1.1)")
    console.print(f"batch {bs} over batch 1 (b/c): {b / c:.2f}x faster  (target >= 4)")
    console.print(f"cached second pass over the first (d/b): {d / b:.1f}x faster")


if __name__ == "__main__":
    main()
