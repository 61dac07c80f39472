"""`vlmbench fake-server`: the fake VLM server for offline demos and tests, on 127.0.0.1."""

from __future__ import annotations

import typer

from vlmbench.cli.output import make_console
from vlmbench.errors import VlmbenchError

console = make_console()


def fake_server(
    port: int = typer.Option(8400, "--port", min=1, max=65535, help="port on 127.0.0.1"),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0, help="added to every answer"),
    fail_rate: float = typer.Option(0.0, "--fail-rate", min=0, max=1, help="share of requests that fail"),
    failures: str = typer.Option("429,500,malformed-json,garbage-text,timeout", "--failures",
                                 help="kinds of failure drawn from, comma-separated"),
    timeout_seconds: float = typer.Option(30.0, "--timeout-seconds", min=0,
                                          help="how long a 'timeout' failure takes to answer"),
    first_bias: float = typer.Option(0.0, "--first-bias", min=0, max=1,
                                     help="probability of answering the first label whatever the frames show"),
    models: str = typer.Option("fake-vlm", "--models", help="model ids served, comma-separated"),
    logprobs: bool = typer.Option(True, "--logprobs/--no-logprobs", help="return logprobs when asked"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Serve a fake VLM speaking the OpenAI and Anthropic wire formats on 127.0.0.1, answering from the frames
    (a progress marker, the CartPole pole's angle, else brightness); see vlmbench/judges/api/fake_server.py."""
    from vlmbench.judges.api.fake_server import FAILURES, FakeServer, FakeVLM

    kinds = tuple(kind.strip() for kind in failures.split(",") if kind.strip())
    unknown = [kind for kind in kinds if kind not in FAILURES]
    if unknown or (fail_rate > 0 and not kinds):
        raise VlmbenchError(f"--failures {failures}: use some of {', '.join(FAILURES)}")
    served = tuple(model.strip() for model in models.split(",") if model.strip())
    if not served:
        raise VlmbenchError("--models: name at least one model id")
    settings = FakeVLM(models=served, first_bias=first_bias, fail_rate=fail_rate, failures=kinds,
                       latency=latency_ms / 1000, timeout_seconds=timeout_seconds, logprobs=logprobs, seed=seed)
    try:
        server = FakeServer(settings, port=port)
    except OSError as exc:
        raise VlmbenchError(f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror}); pass another --port") from None
    with server:
        console.print(f"fake VLM on http://127.0.0.1:{server.port} (OpenAI: /v1, Anthropic: /; models "
                      f"{', '.join(served)}; any non-empty key; Ctrl-C stops)")
        try:
            server.thread.join()
        except KeyboardInterrupt:
            console.print("stopped")
