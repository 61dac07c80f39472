"""A small scripted VLM server for the API judge tests: both wire formats on 127.0.0.1, answering by the
image contract the judges' prompts follow (labels from the last 'one of:' line; two images, 2k images or one
wide image are a pair), with optional position bias, latency and injected faults, and a log of requests."""

from __future__ import annotations

import base64
import io
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

GARBAGE = "lorem ipsum dolor sit amet"


class StubServer:
    def __init__(self, *, key="stub-key", models=("stub-vlm",), first_bias=0.0, fail_rate=0.0, latency=0.0,
                 logprobs=True, seed=0):
        self.key, self.models, self.first_bias, self.fail_rate = key, set(models), first_bias, fail_rate
        self.latency, self.logprobs = latency, logprobs
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # {"path", "headers", "body"} of every POST
        self.faults: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one send: no delayed-ACK stall per response

            def log_message(self, *args):
                pass

            def do_GET(self):
                stub._get(self)

            def do_POST(self):
                stub._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- HTTP -------------------------------------------------------------------------------------------------
    @staticmethod
    def _send(handler, status: int, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _authorised(self, handler) -> bool:
        given = handler.headers.get("x-api-key") or handler.headers.get("authorization", "").removeprefix("Bearer ")
        return given == self.key

    def _get(self, handler):
        if handler.path == "/stub/stats":
            return self._send(handler, 200, {"requests": len(self.requests)})
        if not self._authorised(handler):
            return self._send(handler, 401, {"error": {"type": "authentication_error", "message": "bad key"}})
        match = re.fullmatch(r"/v1/models(?:/(.+))?", handler.path)
        if not match:
            return self._send(handler, 404, {"error": {"message": "no route"}})
        if match.group(1) is None:
            return self._send(handler, 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
        if match.group(1) not in self.models:
            return self._send(handler, 404, {"error": {"type": "not_found_error", "message": "no such model"}})
        return self._send(handler, 200, {"id": match.group(1), "object": "model", "type": "model",
                                         "display_name": match.group(1), "created_at": "2024-01-01T00:00:00Z"})

    def _post(self, handler):
        body = json.loads(handler.rfile.read(int(handler.headers["content-length"])))
        with self.lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers), "body": body})
            fault = self.rng.random() < self.fail_rate
            kind = self.rng.choice(["429", "500", "malformed", "garbage"]) if fault else None
            if kind:
                self.faults.append(kind)
        if not self._authorised(handler):
            return self._send(handler, 401, {"error": {"type": "authentication_error", "message": "bad key"}})
        if body.get("model") not in self.models:
            return self._send(handler, 404, {"error": {"type": "not_found_error", "message": "no such model"}})
        if self.latency:
            time.sleep(self.latency)
        if kind == "429":
            return self._send(handler, 429, {"error": {"type": "rate_limit_error", "message": "slow down"}},
                              {"retry-after": "0"})
        if kind == "500":
            return self._send(handler, 500, {"error": {"type": "api_error", "message": "boom"}})
        if kind == "malformed":
            return self._send(handler, 200, b'{"choices": [{"mess')
        anthropic = handler.path.endswith("/messages")
        texts, images = self._content(body, anthropic)
        reply = GARBAGE if kind == "garbage" else self._answer("\n".join(texts), images)
        if anthropic:
            return self._send(handler, 200, {
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 100 * len(images) + 20, "output_tokens": len(reply.split())}})
        choice = {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        if body.get("logprobs") and self.logprobs:
            choice["logprobs"] = {"content": self._logprobs(reply, body.get("top_logprobs") or 1)}
        return self._send(handler, 200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                         "choices": [choice], "usage": {"prompt_tokens": 100 * len(images) + 20,
                                                                        "completion_tokens": len(reply.split()),
                                                                        "total_tokens": 0}})

    @staticmethod
    def _content(body, anthropic):
        texts, images = [], []
        for part in body["messages"][-1]["content"]:
            if part["type"] == "text":
                texts.append(part["text"])
            elif anthropic:
                images.append(base64.b64decode(part["source"]["data"]))
            else:
                images.append(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))
        return texts, images

    # -- answers ----------------------------------------------------------------------------------------------
    def _answer(self, text: str, images: list[bytes]) -> str:
        lines = [line for line in text.splitlines() if "one of:" in line]
        if not lines:
            return "The first shows the pole leaning and the second shows it upright."
        labels = [label.strip() for label in lines[-1].split("one of:", 1)[1].split(",")]
        pixels = [np.asarray(Image.open(io.BytesIO(png))).astype(float) for png in images]
        if labels[:2] == ["yes", "no"]:
            label = "yes" if pixels[0].mean() > 127 else "no"
        elif len(pixels) >= 2 or (len(pixels) == 1 and pixels[0].shape[1] >= 2 * pixels[0].shape[0]):
            if len(pixels) == 1:
                half = pixels[0].shape[1] // 2
                first, second = pixels[0][:, : half - 4], pixels[0][:, half + 4 :]
            else:
                k = len(pixels) // 2
                first, second = np.mean([p.mean() for p in pixels[:k]]), np.mean([p.mean() for p in pixels[k:]])
            a, b = float(np.mean(first)), float(np.mean(second))
            with self.lock:
                biased = self.rng.random() < self.first_bias
            label = labels[0] if biased or a > b else labels[1] if b > a else labels[-1]
        else:
            label = labels[min(int(pixels[0].mean() / 256 * len(labels)), len(labels) - 1)]
        if "step by step" in text:
            return f"Looking at brightness first, then the rest.\nAnswer: {label}"
        return label

    @staticmethod
    def _logprobs(reply: str, top: int) -> list[dict]:
        out = []
        for token in re.findall(r"\S+|\s+", reply):
            alternatives = [{"token": token, "logprob": np.log(0.8), "bytes": None}]
            if token in ("yes", "no"):
                alternatives.append({"token": "no" if token == "yes" else "yes", "logprob": np.log(0.15), "bytes": None})
            out.append({"token": token, "logprob": alternatives[0]["logprob"], "bytes": None,
                        "top_logprobs": alternatives[:top]})
        return out


if __name__ == "__main__":  # python -m tests.api_stub KEY LATENCY: serve in this process, print the port
    import sys

    with StubServer(key=sys.argv[1], latency=float(sys.argv[2])) as served:
        print(served.port, flush=True)
        served.thread.join()
