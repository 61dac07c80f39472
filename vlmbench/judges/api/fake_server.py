"""A fake VLM server on 127.0.0.1 for tests and offline demos (`vlmbench fake-server`).

It speaks the OpenAI chat-completions wire format (``POST /v1/chat/completions``, with
``logprobs``/``top_logprobs``) and the Anthropic messages format (``POST /v1/messages``), serves
``GET /v1/models[/{id}]`` in a shape both SDKs read, and answers errors as the real services do
(401 without the key, 404 for an unknown model, 429 with ``retry-after``, 500). ``GET /fake/stats``
counts the requests it received by outcome (answered, a failure kind, or a refusal's status); ``POST /fake/reset`` zeroes the counts.

How it answers (the API judges' prompts follow this contract):

- The allowed labels are the comma-separated words after the last ``one of:`` in the request's
  text: for a pair [first-clip label, second-clip label, optional tie label]; for a rating the
  classes from worst to best; for a yes/no question ``yes, no``. Without such a line it answers a
  sentence describing the frames (the analysis stage of a two-stage prompt).
- Images in order: two or more are a pair of clips (the first half of them the first clip); one
  image at least twice as wide as tall is a side-by-side pair, split at its middle; otherwise one
  image is the frame to rate or to answer yes or no about.
- The progress of a frame, in [0, 1]: a marker if the frame has one (``draw_marker``: a magenta
  bar along the top-left whose length is the progress); else, for a CartPole frame (mostly white
  background), the task's progress ((1 + cos a) / 2) ** 4 from the pole's angle a measured in the
  pixels (0 when no cart is in view); else the frame's mean brightness / 255. A clip's progress is
  its frames' mean.
- A pair gets the label of the higher progress (the tie label, if offered, within 0.02); with
  probability ``first_bias`` the first label whatever the frames show. A rating gets class
  min(int(progress * k), k - 1); a yes/no question "yes" at progress >= 0.5. With logprobs the
  answer token's top alternatives give P(yes) = clip(progress, 0.02, 0.98) (split 9:1 between
  "yes"/"Yes" and "no"/"No"), or P(first label) = sigmoid(difference / 0.1).
- A prompt asking to think "step by step" or to "explain" gets a sentence stating the progress
  it read, then ``Answer: <LABEL>``. At temperature > 0 each progress reading gets Gaussian noise
  of 0.05, so repeated questions can differ; at temperature 0 answers are deterministic.
- With probability ``fail_rate`` a request fails instead, in one of ``failures``: ``429`` and
  ``500`` errors, ``malformed-json`` (a 200 whose body is cut short), ``garbage-text`` (a 200 with
  a reply naming no label) or ``timeout`` (an answer only after ``timeout_seconds``).

Token usage is counted as 1 per 4 characters of text plus 85 per image in, and 1 per word out.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

FAILURES = ("429", "500", "malformed-json", "garbage-text", "timeout")
GARBAGE = "The weather is lovely today."  # a reply that answers nothing it was asked
MARKER = (255, 0, 255)
MARKER_HEIGHT = 4
TIE_MARGIN = 0.02
PAIR_TEMPERATURE = 0.1
NOISE_AT_TEMPERATURE = 0.05
TOKENS_PER_IMAGE = 85


def draw_marker(pixels: np.ndarray, progress: float) -> np.ndarray:
    """A copy of ``pixels`` with the progress marker: a magenta bar along the top whose length is ``progress``
    of the width (at least one pixel)."""
    out = np.array(pixels, dtype=np.uint8, copy=True)
    width = max(1, int(round(progress * out.shape[1])))
    out[:MARKER_HEIGHT, :width] = MARKER
    out[:MARKER_HEIGHT, width:] = 0
    return out


def _marker(pixels: np.ndarray) -> float | None:
    top = pixels[:MARKER_HEIGHT, :, :3]
    magenta = np.all(top == MARKER, axis=-1).all(axis=0)
    if not magenta[0]:
        return None
    width = int(np.argmin(magenta)) if not magenta.all() else magenta.size
    return width / pixels.shape[1]


def _cartpole(pixels: np.ndarray) -> float | None:
    """Progress from a CartPole frame's pole angle, or None if the frame is not one (mostly white)."""
    rgb = pixels[..., :3].astype(int)
    if np.mean(rgb.min(axis=-1) >= 245) < 0.8:
        return None
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    pole = (r - b > 60) & (r > 120) & (g > 80)
    cart = (r < 60) & (g < 60) & (b < 60)
    if pole.sum() < 3 or cart.sum() < 3:
        return 0.0
    cart_y, cart_x = np.nonzero(cart)
    axle_x, axle_y = (cart_x.min() + cart_x.max()) / 2, cart_y.min()
    pole_y, pole_x = np.nonzero(pole)
    dx, dy = pole_x.mean() - axle_x, axle_y - pole_y.mean()
    cosine = dy / max(math.hypot(dx, dy), 1e-9)
    return ((1 + cosine) / 2) ** 4


def progress_of(pixels: np.ndarray) -> float:
    """The progress the server reads from one frame (see the module docstring)."""
    for read in (_marker, _cartpole):
        found = read(pixels)
        if found is not None:
            return float(found)
    return float(pixels[..., :3].mean() / 255)


@dataclass
class FakeVLM:
    """How the server behaves; tests may change fields while it runs."""

    key: str | None = None  # the one key accepted; None: any non-empty key
    models: tuple[str, ...] = ("fake-vlm",)
    first_bias: float = 0.0
    fail_rate: float = 0.0
    failures: tuple[str, ...] = FAILURES
    latency: float = 0.0  # seconds added to each answer
    timeout_seconds: float = 30.0  # how long a "timeout" failure takes to answer
    logprobs: bool = True
    seed: int = 0


@dataclass
class _Log:
    requests: list[dict] = field(default_factory=list)  # {"path", "headers", "body"} of every POST
    faults: list[str] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)


class FakeServer:
    """The server, running in a thread while used as a context manager; ``port`` 0 picks a free one."""

    def __init__(self, settings: FakeVLM | None = None, *, port: int = 0, **fields):
        self.settings = settings or FakeVLM(**fields)
        # Two streams: the k-th request's fault depends on k alone, not on how many answer draws
        # (noise, first-position bias) other threads made before it.
        self.fault_rng = random.Random(self.settings.seed)
        self.rng = random.Random(self.settings.seed + 1)
        self.lock = threading.Lock()
        self.log = _Log()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one send

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake._get(self)

            def do_POST(self):
                fake._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-vlm", daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __getattr__(self, name):  # settings read and set through the server, e.g. ``server.fail_rate = 0``
        if name in FakeVLM.__dataclass_fields__:
            return getattr(self.settings, name)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in FakeVLM.__dataclass_fields__:
            setattr(self.settings, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def requests(self) -> list[dict]:
        return self.log.requests

    @property
    def faults(self) -> list[str]:
        return self.log.faults

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict:
        with self.lock:
            endpoints = Counter(r["path"] for r in self.log.requests)
            return {"requests": len(self.log.requests), "by_endpoint": dict(endpoints),
                    "by_outcome": dict(self.log.outcomes)}

    # -- HTTP -------------------------------------------------------------------------------------------------
    @staticmethod
    def _send(handler, status: int, body, headers=None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _error(self, handler, status: int, kind: str, message: str, headers=None) -> None:
        anthropic = "anthropic-version" in handler.headers
        body = ({"type": "error", "error": {"type": kind, "message": message}} if anthropic else
                {"error": {"message": message, "type": kind, "param": None, "code": kind}})
        self._send(handler, status, body, headers)

    def _authorised(self, handler) -> bool:
        given = handler.headers.get("x-api-key") or handler.headers.get("authorization", "").removeprefix("Bearer ")
        return bool(given) and (self.settings.key is None or given == self.settings.key)

    def _get(self, handler) -> None:
        if handler.path == "/fake/stats":
            return self._send(handler, 200, self.stats())
        if not self._authorised(handler):
            return self._error(handler, 401, "authentication_error", "invalid API key")
        match = re.fullmatch(r"/v1/models(?:/([^/?]+))?", handler.path.split("?")[0])
        if not match:
            return self._error(handler, 404, "not_found_error", f"no route {handler.path}")
        model = lambda name: {"id": name, "object": "model", "created": 0, "owned_by": "vlmbench",  # noqa: E731
                              "type": "model", "display_name": name, "created_at": "2024-01-01T00:00:00Z"}
        if match.group(1) is None:
            data = [model(name) for name in self.settings.models]
            return self._send(handler, 200, {"object": "list", "data": data, "has_more": False,
                                             "first_id": data[0]["id"] if data else None,
                                             "last_id": data[-1]["id"] if data else None})
        if match.group(1) not in self.settings.models:
            return self._error(handler, 404, "not_found_error", f"model '{match.group(1)}' does not exist")
        return self._send(handler, 200, model(match.group(1)))

    def _post(self, handler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        if handler.path == "/fake/reset":
            with self.lock:
                self.log = _Log()
            return self._send(handler, 200, {"reset": True})
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        s = self.settings
        with self.lock:
            self.log.requests.append({"path": handler.path, "headers": dict(handler.headers), "body": body})
            kind = self.fault_rng.choice(s.failures) if s.failures and self.fault_rng.random() < s.fail_rate else None
        refusal = self._refusal(handler, body)
        if refusal is not None:
            self._count(str(refusal[0]))
            return self._error(handler, *refusal)
        anthropic = handler.path == "/v1/messages"
        try:
            texts, images = self._content(body, anthropic)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            self._count("400")
            return self._error(handler, 400, "invalid_request_error", f"cannot read the message content: {exc}")
        if kind:
            with self.lock:
                self.log.faults.append(kind)
        self._count(kind or "answered")
        if s.latency:
            time.sleep(s.latency)
        if kind == "timeout":
            time.sleep(s.timeout_seconds)
        if kind == "429":
            return self._error(handler, 429, "rate_limit_error", "rate limit reached", {"retry-after": "0"})
        if kind == "500":
            return self._error(handler, 500, "api_error", "internal error")
        if kind == "malformed-json":
            return self._send(handler, 200, b'{"choices": [{"mess')
        temperature = float(body.get("temperature") or 0.0)
        text = "\n".join(texts)
        reply, label_probability = (GARBAGE, None) if kind == "garbage-text" else self._answer(text, images, temperature)
        tokens_in = sum(len(t) for t in texts) // 4 + TOKENS_PER_IMAGE * len(images)
        tokens_out = len(reply.split())
        if anthropic:
            return self._send(handler, 200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}})
        choices = []
        for index in range(int(body.get("n") or 1)):
            choice = {"index": index, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            if body.get("logprobs") and s.logprobs:
                choice["logprobs"] = {"content": _logprobs(reply, label_probability, int(body.get("top_logprobs") or 1))}
            choices.append(choice)
        return self._send(handler, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
            "choices": choices, "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                                          "total_tokens": tokens_in + tokens_out}})

    def _count(self, outcome: str) -> None:
        with self.lock:
            self.log.outcomes[outcome] += 1

    def _refusal(self, handler, body) -> tuple[int, str, str] | None:
        """(status, error type, message) for a request the real services would refuse, else None."""
        if handler.path not in ("/v1/chat/completions", "/v1/messages"):
            return 404, "not_found_error", f"no route {handler.path}"
        if not self._authorised(handler):
            return 401, "authentication_error", "invalid API key"
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return 400, "invalid_request_error", "the body is not a JSON request with messages"
        if body.get("model") not in self.settings.models:
            return 404, "not_found_error", f"model '{body.get('model')}' does not exist"
        return None

    @staticmethod
    def _content(body: dict, anthropic: bool) -> tuple[list[str], list[np.ndarray]]:
        texts = [body["system"]] if anthropic and isinstance(body.get("system"), str) else []
        images = []
        for message in body["messages"]:
            content = message["content"]
            for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
                if part["type"] == "text":
                    texts.append(part["text"])
                elif part["type"] in ("image", "image_url"):
                    data = (part["source"]["data"] if part["type"] == "image"
                            else part["image_url"]["url"].split(",", 1)[1])
                    images.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")))
        return texts, images

    # -- answers ----------------------------------------------------------------------------------------------
    def _read(self, frames: list[np.ndarray], temperature: float) -> float:
        values = [progress_of(f) for f in frames]
        if temperature > 0:
            with self.lock:
                values = [v + self.rng.gauss(0.0, NOISE_AT_TEMPERATURE) for v in values]
        return float(np.mean(values))

    def _answer(self, text: str, images: list[np.ndarray], temperature: float) -> tuple[str, tuple | None]:
        """The reply, and (label, P(label), the alternatives' labels and probabilities) for logprobs."""
        lines = [line for line in text.splitlines() if "one of:" in line]
        reasoning = "step by step" in text.lower() or "explain" in text.lower()
        if not lines:
            readings = ", ".join(f"{self._read([image], temperature):.2f}" for image in images)
            return f"The frames show progress of about {readings} towards the goal, in the order given.", None
        labels = [label.strip().strip(".") for label in lines[-1].split("one of:", 1)[1].split(",") if label.strip()]
        pair = len(images) >= 2 or (len(images) == 1 and images[0].shape[1] >= 2 * images[0].shape[0])
        if [label.lower() for label in labels[:2]] == ["yes", "no"] and not pair:
            p_yes = min(max(self._read(images, temperature), 0.02), 0.98)
            label = labels[0] if p_yes >= 0.5 else labels[1]
            probability = ("yes", p_yes)
            explanation = f"The frame shows progress of about {p_yes:.2f}."
        elif pair:
            if len(images) == 1:
                half = images[0].shape[1] // 2
                first, second = [images[0][:, : half - 4]], [images[0][:, half + 4 :]]
            else:
                k = len(images) // 2
                first, second = images[:k], images[k:]
            a, b = self._read(first, temperature), self._read(second, temperature)
            with self.lock:
                biased = self.rng.random() < self.settings.first_bias
            tie = labels[2] if len(labels) > 2 else None
            if biased or (a > b and not (tie and abs(a - b) <= TIE_MARGIN)):
                label = labels[0]
            elif tie and abs(a - b) <= TIE_MARGIN:
                label = tie
            else:
                label = labels[1]
            p_first = 1.0 if biased else 1.0 / (1.0 + math.exp(-(a - b) / PAIR_TEMPERATURE))
            probability = ("pair", labels[0], labels[1], p_first)
            explanation = f"The first shows progress of about {a:.2f} and the second about {b:.2f}."
        else:
            value = self._read(images, temperature)
            label = labels[min(int(max(value, 0.0) * len(labels)), len(labels) - 1)]
            probability = None
            explanation = f"The frame shows progress of about {value:.2f}."
        if reasoning:
            return f"{explanation}\nAnswer: {label}", (label, probability)
        return label, (label, probability)


def _logprobs(reply: str, answer: tuple | None, top: int) -> list[dict]:
    """Per-token logprobs of ``reply``; the answer token's top alternatives carry the stated probabilities."""
    label, probability = answer if answer else (None, None)
    out = []
    tokens = re.findall(r"\S+|\s+", reply)
    answer_index = max((i for i, t in enumerate(tokens) if label and t == label), default=None)
    for i, token in enumerate(tokens):
        alternatives = [(token, 0.0)]
        if i == answer_index and probability is not None:
            if probability[0] == "yes":
                p = probability[1]
                alternatives = [("yes", 0.9 * p), ("Yes", 0.1 * p), ("no", 0.9 * (1 - p)), ("No", 0.1 * (1 - p))]
            else:
                _, first, second, p = probability
                alternatives = [(first, p), (second, 1 - p)]
            alternatives = sorted(((t, math.log(max(q, 1e-12))) for t, q in alternatives), key=lambda x: -x[1])
            own = dict(alternatives).get(token, 0.0)
        else:
            own = 0.0
        out.append({"token": token, "logprob": own, "bytes": list(token.encode()),
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                     for t, lp in alternatives[:max(top, 1)]]})
    return out
