"""Async clients for the two wire formats: OpenAI chat completions (OpenAI, vLLM, Ollama, LM Studio,
Gemini's OpenAI-compatible endpoint, ...) and Anthropic messages.

Requests run concurrently up to ``concurrency`` and start no faster than ``requests_per_minute``.
One retry policy covers every transient fault: HTTP 408, 409, 429 and 5xx, timeouts, refused
connections and malformed responses are tried again with exponential backoff (a server's
retry-after wins when it gives one); the SDKs' own retries are off so faults are counted once and
the backoff is configurable. A bad key (401/403) or an unknown model (404) stops everything with a
config error; a request the server rejects (400/422) and a call that fails every try come back as
a ``CallFailed`` with a short reason, which the judge turns into a counted abstention.

The API key is read from the environment when a client is built and passed to the SDK only; it
never appears in a message, a log line or the cache.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from email.utils import parsedate_to_datetime

import anthropic
import openai

from vlmbench.errors import VlmbenchError
from vlmbench.judges.api.cache import Reply
from vlmbench.judges.api.prompting import Image, Request

RETRYABLE_STATUS = {408, 409, 429}
MAX_RETRY_AFTER_S = 120.0


class CallFailed(Exception):
    """A call that did not produce a usable reply; ``reason`` is short and never holds the key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Malformed(Exception):
    """A 200 response whose body is not the expected shape."""


class ApiConfigError(VlmbenchError):
    """The endpoint refuses the key or the model: nothing a retry can fix."""


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class RateLimiter:
    """Spaces request starts at least 60/rpm seconds apart (None: no limit)."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.next_start = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class ApiClient:
    """One provider's client settings; ``session()`` opens the SDK client for one batch of calls."""

    provider = ""
    key_env_default = ""
    base_url_env = ""

    def __init__(self, *, judge: str, model: str, base_url: str | None, api_key_env: str | None, timeout_s: float,
                 max_retries: int, retry_base_delay_s: float, concurrency: int, requests_per_minute: float | None):
        self.judge, self.model = judge, model
        self.key_env = api_key_env or self.key_env_default
        self.base_url = (base_url or os.environ.get(self.base_url_env) or self.default_base_url).rstrip("/")
        self.timeout_s, self.max_retries, self.retry_base_delay_s = timeout_s, max_retries, retry_base_delay_s
        self.concurrency = concurrency
        self.limiter = RateLimiter(requests_per_minute)

    default_base_url = ""

    def _key(self) -> str:
        key = os.environ.get(self.key_env, "")
        if not key.strip():
            raise VlmbenchError(f"judge '{self.judge}': set the environment variable {self.key_env} to the API key "
                                f"for {self.base_url} (any value for a local server without keys)")
        return key

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.key_env, "")
        return text.replace(key, "***") if len(key) >= 4 else text

    # -- provider specifics ---------------------------------------------------------------------------------
    def _sdk(self):
        raise NotImplementedError

    async def _send(self, sdk, request: Request) -> Reply:
        raise NotImplementedError

    async def _retrieve_model(self, sdk) -> None:
        await sdk.models.retrieve(self.model, timeout=min(self.timeout_s, 15.0))

    async def _list_models(self, sdk) -> list[str]:
        page = await sdk.models.list(timeout=min(self.timeout_s, 15.0))
        return [m.id for m in page.data]

    # -- shared ---------------------------------------------------------------------------------------------
    def open(self) -> _Session:
        return _Session(self, self._sdk())

    def _fatal(self, exc: Exception) -> ApiConfigError | None:
        status = getattr(exc, "status_code", None)
        if status in (401, 403):
            return ApiConfigError(f"judge '{self.judge}': {self.base_url} rejected the API key in {self.key_env} "
                                  f"(HTTP {status}); set {self.key_env} to a valid key")
        if status == 404:
            return ApiConfigError(f"judge '{self.judge}': {self.base_url} does not serve model '{self.model}' "
                                  "(HTTP 404); set params.model (or params.base_url) in the judge config")
        return None

    def _classify(self, exc: Exception) -> tuple[str, bool]:
        """(short reason, retryable) for a failed call."""
        if isinstance(exc, Malformed):
            return "malformed response", True
        if isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError)):
            return "timeout", True
        if isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError)):
            return "connection error", True
        status = getattr(exc, "status_code", None)
        if status is not None:
            retryable = status in RETRYABLE_STATUS or status >= 500
            kind = "rate limited" if status == 429 else "server error" if status >= 500 else "request rejected"
            return f"{kind} (HTTP {status})", retryable
        return f"unexpected {type(exc).__name__}", False

    def _delay(self, attempt: int, exc: Exception) -> float:
        hinted = _retry_after(exc)
        if hinted is not None:
            return min(hinted, MAX_RETRY_AFTER_S)
        return self.retry_base_delay_s * 2**attempt * (0.5 + random.random() / 2)

    def check(self) -> None:
        """Fail now, with the setting to change, if the key is missing, the endpoint is unreachable or the
        model is not served."""
        self._key()

        async def probe() -> None:
            session = self.open()
            try:
                try:
                    await self._retrieve_model(session.sdk)
                except (openai.NotFoundError, anthropic.NotFoundError):
                    served = await self._list_models(session.sdk)  # some servers list models but cannot retrieve one
                    if self.model not in served:
                        shown = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
                        raise ApiConfigError(f"judge '{self.judge}': {self.base_url} does not serve model "
                                             f"'{self.model}' (it serves: {shown or 'none'}); set params.model") from None
            except (openai.APIConnectionError, anthropic.APIConnectionError):
                raise VlmbenchError(f"judge '{self.judge}': cannot reach {self.base_url}; start the server or set "
                                    f"params.base_url (or {self.base_url_env})") from None
            except (openai.APIStatusError, anthropic.APIStatusError) as exc:
                fatal = self._fatal(exc)
                if fatal is not None:
                    raise fatal from None
                raise VlmbenchError(f"judge '{self.judge}': {self.base_url} answered the model check with HTTP "
                                    f"{exc.status_code}") from None
            finally:
                await session.close()

        asyncio.run(probe())


class _Session:
    """One SDK client and the concurrency gate for a batch of calls on one event loop."""

    def __init__(self, client: ApiClient, sdk):
        self.client, self.sdk = client, sdk
        self.gate = asyncio.Semaphore(client.concurrency)
        self.retries = 0  # tries after a transient fault

    async def close(self) -> None:
        await self.sdk.close()

    async def call(self, request: Request) -> Reply:
        """The reply to ``request``, after retries; raises CallFailed or ApiConfigError."""
        c = self.client
        async with self.gate:
            for attempt in range(c.max_retries + 1):
                await c.limiter.wait()
                began = time.perf_counter()
                try:
                    reply = await c._send(self.sdk, request)
                    return Reply(reply.text, reply.logprobs, reply.input_tokens, reply.output_tokens,
                                 time.perf_counter() - began)
                except (openai.APIStatusError, anthropic.APIStatusError) as exc:
                    fatal = c._fatal(exc)
                    if fatal is not None:
                        raise fatal from None
                    reason, retryable = c._classify(exc)
                    error = exc
                except (openai.APIConnectionError, anthropic.APIConnectionError, Malformed) as exc:
                    reason, retryable = c._classify(exc)
                    error = exc
                except (ValueError, openai.APIResponseValidationError, anthropic.APIResponseValidationError) as exc:
                    reason, retryable = c._classify(Malformed(type(exc).__name__))  # e.g. a body that is not JSON
                    error = exc
                if not retryable:
                    raise CallFailed(c._scrub(reason))
                if attempt < c.max_retries:
                    self.retries += 1
                    await asyncio.sleep(c._delay(attempt, error))
            raise CallFailed(c._scrub(f"{reason} after {c.max_retries + 1} tries"))


def _b64(image: Image) -> str:
    return base64.b64encode(image.png).decode("ascii")


class OpenAIClient(ApiClient):
    provider = "openai"
    key_env_default = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    default_base_url = "https://api.openai.com/v1"

    def __init__(self, *, max_tokens_field: str = "max_tokens", **kwargs):
        super().__init__(**kwargs)
        self.max_tokens_field = max_tokens_field

    def _sdk(self):
        return openai.AsyncOpenAI(api_key=self._key(), base_url=self.base_url, max_retries=0, timeout=self.timeout_s)

    @staticmethod
    def content(request: Request) -> list[dict]:
        return [{"type": "text", "text": p} if isinstance(p, str) else
                {"type": "image_url", "image_url": {"url": f"data:{p.media_type};base64,{_b64(p)}"}}
                for p in request.parts]

    async def _send(self, sdk, request: Request) -> Reply:
        options = {self.max_tokens_field: request.max_tokens, "temperature": request.temperature}
        if request.top_logprobs:
            options.update(logprobs=True, top_logprobs=request.top_logprobs)
        response = await sdk.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": self.content(request)}], **options)
        try:
            choice = response.choices[0]
            text = choice.message.content
            if not isinstance(text, str):
                raise TypeError("no message text")
            logprobs = None
            if choice.logprobs is not None and choice.logprobs.content:
                logprobs = [[t.token, float(t.logprob), [[a.token, float(a.logprob)] for a in (t.top_logprobs or [])]]
                            for t in choice.logprobs.content]
            usage = response.usage
            tokens = (int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)) if usage else (0, 0)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise Malformed(type(exc).__name__) from None
        return Reply(text, logprobs, *tokens, 0.0)


class AnthropicClient(ApiClient):
    provider = "anthropic"
    key_env_default = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    default_base_url = "https://api.anthropic.com"

    def _sdk(self):
        return anthropic.AsyncAnthropic(api_key=self._key(), base_url=self.base_url, max_retries=0,
                                        timeout=self.timeout_s)

    @staticmethod
    def content(request: Request) -> list[dict]:
        return [{"type": "text", "text": p} if isinstance(p, str) else
                {"type": "image", "source": {"type": "base64", "media_type": p.media_type, "data": _b64(p)}}
                for p in request.parts]

    async def _send(self, sdk, request: Request) -> Reply:
        response = await sdk.messages.create(  # temperature goes in the body: recent SDKs dropped the argument
            model=self.model, max_tokens=request.max_tokens, extra_body={"temperature": request.temperature},
            messages=[{"role": "user", "content": self.content(request)}])
        try:
            texts = [block.text for block in response.content if block.type == "text"]
            if not texts:
                raise TypeError("no text block")
            usage = response.usage
            tokens = (int(usage.input_tokens or 0), int(usage.output_tokens or 0)) if usage else (0, 0)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise Malformed(type(exc).__name__) from None
        return Reply("".join(texts), None, *tokens, 0.0)


CLIENTS = {"openai": OpenAIClient, "anthropic": AnthropicClient}
