"""VLM judges behind an HTTP API: pairwise, rating and yes-probability judges over OpenAI chat
completions (any OpenAI-compatible server) and Anthropic messages.

Every call goes through the answer cache, keyed by ``request_key``. A question asked again within
one judge object's lifetime is a new sample: the k-th identical question (same first request) gets
sample index k, so a repeat probe really asks again even at temperature 0, while a re-run
re-derives the same indices and finds every answer cached. Callers that answer some questions from
their own log tell the judge through ``note_answered``, so a resumed evaluation numbers its
repeats as the first session did. Limits: the numbering follows the order questions reach the
judge, so a caller that asks in a different order on a re-run, or a resumed run whose earlier
rounds are not replayed, may pair a question with another sample's cached reply.

A budget cap (paid calls and/or dollars) counts the calls recorded in the cache for the judge's
name, by any process; when it is reached the judge stops starting calls, lets those in flight
finish (they are cached), and raises BudgetExhausted.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal
from urllib.parse import urlparse

from pydantic import Field

from vlmbench.errors import VlmbenchError
from vlmbench.judges.api.cache import AnswerCache, CallRecord, Reply, default_cache_path
from vlmbench.judges.api.clients import CLIENTS, CallFailed
from vlmbench.judges.api.debias import label_probabilities, label_value, p_first, swap_average, swap_combine
from vlmbench.judges.api.parsing import parse_label
from vlmbench.judges.api.prompting import (PAIR_LABELS, TIE_LABEL, Generation, Guide, Layout, PairLabels, PairPrompt,
                                           PairStyle, Reasoning, Request, pixels_of, rating_request, yes_no_request)
from vlmbench.judges.base import (
    BUDGET_PARAMS, COMPARE_TEMPERATURE, Answer, Clip, Frame, Judge, JudgeParams, Provenance, Question, prompt_hash,
)
from vlmbench.specs.task import TaskSpec

# Params that never change a reply; the others are part of the cache key.
OPERATIONAL = {"api_key_env", "price_per_mtok_in", "price_per_mtok_out", "concurrency", "requests_per_minute",
               "max_retries", "retry_base_delay_s", "timeout_s", "cache", "cache_path", "cache_max_age_days",
               *BUDGET_PARAMS, "check_model", "debias", "swap_disagreement"}


class BudgetExhausted(VlmbenchError):
    """The judge's budget cap is reached: the work stops, keeping every answer bought."""


class ApiParams(JudgeParams):
    model: str = Field(min_length=1, description="model id as the endpoint names it")
    base_url: str | None = Field(default=None, description="endpoint; default OPENAI_BASE_URL / ANTHROPIC_BASE_URL, "
                                 "else the provider's own")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="environment variable holding the key (default OPENAI_API_KEY / "
                                    "ANTHROPIC_API_KEY)")
    price_per_mtok_in: float | None = Field(default=None, ge=0, description="dollars per million input tokens")
    price_per_mtok_out: float | None = Field(default=None, ge=0, description="dollars per million output tokens")
    temperature: float = Field(default=0.0, ge=0, le=2, description="sampling temperature of the replies")
    max_tokens: int = Field(default=600, gt=0, description="reasoning and analysis calls")
    answer_max_tokens: int = Field(default=16, gt=0, description="calls answering with a label alone")
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens", description="OpenAI format: the request field carrying the token limit")
    concurrency: int = Field(default=8, ge=1, le=512, description="requests in flight at once")
    requests_per_minute: float | None = Field(default=None, gt=0, description="requests started per minute at most "
                                              "(null: no limit)")
    max_retries: int = Field(default=4, ge=0, le=20, description="retries of a call that fails (429, 5xx, timeout, "
                             "malformed reply) before it becomes an abstention")
    retry_base_delay_s: float = Field(default=1.0, ge=0, description="first backoff; doubles each retry")
    timeout_s: float = Field(default=60.0, gt=0, description="per request")
    cache: Literal["use", "refresh", "off"] = Field(
        default="use", description="use: read and write; refresh: ask again and overwrite; off: neither")
    cache_path: str | None = Field(default=None, description="SQLite file; default VLMBENCH_API_CACHE, else "
                                   "~/.cache/vlmbench/api-answers.sqlite")
    cache_max_age_days: float | None = Field(default=None, gt=0, description="older cached replies are bought again")
    budget_calls: int | None = Field(default=None, ge=0, description="cap on paid calls recorded for this judge")
    budget_usd: float | None = Field(default=None, ge=0, description="cap on dollars recorded for this judge")
    check_model: bool = Field(default=True, description="warm-up asks the endpoint whether it serves the model")


class PairwiseParams(ApiParams):
    layout: Layout = Field(default="separate", description="separate: an image per clip; side_by_side: both in one "
                           "image, split by a red separator")
    reasoning: Reasoning = Field(default="answer", description="answer; chain_of_thought; two_stage: an analysis call, "
                                 "then a labelling call that shows the images again")
    labels: PairLabels = Field(default="first-second", description="names of the two clips in the prompt and answer")
    tie: bool = Field(default=True, description=f"offer {TIE_LABEL} as an answer")
    guide: Guide = Field(default="spec", description="spec: the task's question; task: plus per-task criteria")
    separator_px: int = Field(default=8, ge=0, le=64, description="width of the separator in side_by_side images")
    debias: Literal["none", "swap", "swap_average"] = Field(
        default="none", description="swap: ask both orders, agreement gives the label; swap_average: average P(first) "
        "over both orders (logprobs)")
    swap_disagreement: Literal["tie", "abstain"] = Field(default="tie", description="what orders that disagree give")
    logprobs: bool = Field(default=False, description="ask for logprobs and record P(first) (OpenAI format)")
    top_logprobs: int = Field(default=5, ge=1, le=20, description="alternatives per answer token read for P(first)")


class RatingParams(ApiParams):
    reasoning: Literal["answer", "chain_of_thought"] = Field(default="answer", description="answer, or "
                                                             "chain_of_thought: reasoning before the class")


class YesParams(ApiParams):
    top_logprobs: int = Field(default=10, ge=2, le=20, description="alternatives per answer token read for P(yes)")
    compare_temperature: float = Field(default=0.0, ge=0, description=COMPARE_TEMPERATURE)


def is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host in ("localhost",) or host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


@dataclass
class Tally:
    """What one answer's calls cost (paid calls only) and whether all came from the cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    paid: int = 0
    hits: int = 0

    def add(self, reply: Reply, cached: bool) -> None:
        if cached:
            self.hits += 1
            return
        self.paid += 1
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        self.cost_usd += reply.cost_usd
        self.seconds += reply.seconds


class _BudgetStop(Exception):
    """No call may start: the budget cap is reached."""


@dataclass
class Usage:
    """This judge object's calls: paid, from the cache, retried, failed after every try."""

    paid: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: Counter = field(default_factory=Counter)


class ApiJudge(Judge):
    """Shared machinery: the client, the cache, sample numbering, the budget and the batch runner."""

    provider: ClassVar[str] = ""
    type_name: ClassVar[str] = ""
    version = "1"
    Params = ApiParams

    def __init__(self, name: str, params: ApiParams):
        super().__init__(name, params)
        p = params
        self.client = CLIENTS[self.provider](
            judge=name, model=p.model, base_url=p.base_url, api_key_env=p.api_key_env, timeout_s=p.timeout_s,
            max_retries=p.max_retries, retry_base_delay_s=p.retry_base_delay_s, concurrency=p.concurrency,
            requests_per_minute=p.requests_per_minute,
            **({"max_tokens_field": p.max_tokens_field} if self.provider == "openai" else {}))
        if not is_local(self.client.base_url) and (p.price_per_mtok_in is None or p.price_per_mtok_out is None):
            raise VlmbenchError(f"judge '{name}': model '{p.model}' at {self.client.base_url} is paid; set "
                                "params.price_per_mtok_in and params.price_per_mtok_out (dollars per million tokens, "
                                "0 for a free endpoint)")
        self.usage = Usage()
        self._asked: Counter = Counter()
        self._cache: AnswerCache | None = None
        self._cache_opened = False
        self._spent = (0, 0.0)
        self._in_flight = 0
        answer_config = p.model_dump(mode="json", exclude=OPERATIONAL)
        self._identity = {"type": self.type_name, "version": self.version, "config": answer_config,
                          "model": p.model, "base_url": self.client.base_url}

    def describe_model(self) -> str:
        return self.params.model

    @property
    def cache(self) -> AnswerCache | None:
        if not self._cache_opened:
            self._cache_opened = True
            if self.params.cache != "off":
                max_age = self.params.cache_max_age_days * 86400 if self.params.cache_max_age_days else None
                path = self.params.cache_path or default_cache_path()
                try:
                    self._cache = AnswerCache(path, max_age)
                except Exception as exc:  # noqa: BLE001 - sqlite3 errors and unwritable folders
                    raise VlmbenchError(f"judge '{self.name}': cannot open the answer cache {path} ({exc}); set "
                                        "params.cache_path or VLMBENCH_API_CACHE") from None
        return self._cache

    def warm_up(self) -> None:
        """Check the key, the endpoint and the model, open the cache, and refuse a budget already spent."""
        if self.params.check_model:
            self.client.check()
        else:
            self.client._key()
        self._refresh_spend()
        self._check_budget()

    # -- keys and sample numbering ---------------------------------------------------------------------------
    def request_key(self, request: Request, sample: int) -> str:
        """Digest of everything that shapes a reply: judge type and answer-shaping config, model, base URL, the
        full prompt text and image digests in order, generation settings, and the sample index."""
        blob = json.dumps({**self._identity, "request": request.identity(), "sample": sample}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _sample(self, request: Request) -> int:
        """The question's sample index: how many identical questions this judge object was asked before."""
        base = self.request_key(request, -1)
        index = self._asked[base]
        self._asked[base] += 1
        return index

    def note_answered(self, task: TaskSpec, question: Question, items: Sequence) -> None:
        for request in self._first_requests(task, question, list(items)):
            self._sample(request)

    def _first_requests(self, task: TaskSpec, question: Question, items: list) -> list[Request]:
        raise NotImplementedError

    # -- budget ----------------------------------------------------------------------------------------------
    def _refresh_spend(self) -> None:
        if self.cache is not None:
            self._spent = self.cache.spent(self.name)

    def _budget_reached(self, extra_calls: int = 0) -> bool:
        p, (calls, usd) = self.params, self._spent
        return ((p.budget_calls is not None and calls + extra_calls >= p.budget_calls)
                or (p.budget_usd is not None and usd >= p.budget_usd))

    def _check_budget(self) -> None:
        if self._budget_reached():
            calls, usd = self._spent
            caps = " and ".join(f"{name} {value}" for name, value in (("budget_calls", self.params.budget_calls),
                                ("budget_usd", self.params.budget_usd)) if value is not None)
            raise BudgetExhausted(f"judge '{self.name}' has spent its budget ({calls} paid calls, ${usd:.4f}; cap "
                                  f"{caps}); every answer bought is kept: raise the cap in the judge config to go on")

    # -- calls -----------------------------------------------------------------------------------------------
    def _cost(self, reply: Reply) -> float:
        p = self.params
        return (reply.input_tokens * (p.price_per_mtok_in or 0.0) + reply.output_tokens * (p.price_per_mtok_out or 0.0)) / 1e6

    async def _call(self, session, request: Request, sample: int, tally: Tally,
                    labels: Sequence[str] | None) -> Reply:
        """One request through the cache and the budget; raises CallFailed, _BudgetStop or a config error."""
        key = self.request_key(request, sample)
        cache = self.cache
        if cache is not None and self.params.cache == "use":
            reply = cache.get(key)
            if reply is not None:
                self.usage.cache_hits += 1
                tally.add(reply, cached=True)
                return reply
        if self._budget_reached(self._in_flight):
            raise _BudgetStop
        self._in_flight += 1
        try:
            reply = await session.call(request)
        except CallFailed as exc:
            self.usage.failed[exc.reason] += 1
            raise
        finally:
            self._in_flight -= 1
        reply = Reply(reply.text, reply.logprobs, reply.input_tokens, reply.output_tokens, reply.seconds,
                      self._cost(reply))
        self._spent = (self._spent[0] + 1, self._spent[1] + reply.cost_usd)
        self.usage.paid += 1
        tally.add(reply, cached=False)
        if cache is not None:
            parsed = None
            if labels is not None:
                verdict = parse_label(reply.text, list(labels))
                parsed = {"label": verdict.label, "reason": verdict.reason}
            images = [p.digest for p in request.parts if not isinstance(p, str)]
            cache.put(CallRecord(key, self.name, self.type_name, self.params.model, self.client.base_url,
                                 request.text, images, sample), reply, parsed)
        return reply

    def _provenance(self, request: Request, tally: Tally) -> Provenance:
        return Provenance(self.name, self.version, self.params.model, prompt_hash(request.text), tally.input_tokens,
                          tally.output_tokens, tally.cost_usd, tally.seconds, cached=tally.paid == 0)

    def _run(self, jobs: list) -> list[Answer]:
        """Run the questions' coroutines concurrently on one client session; stop on a config error or budget."""
        self._refresh_spend()
        self._check_budget()

        async def main():
            session = self.client.open()
            try:
                return await asyncio.gather(*(job(session) for job in jobs), return_exceptions=True), session.retries
            finally:
                await session.close()

        results, retries = asyncio.run(main())
        self.usage.retries += retries
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, _BudgetStop):
                raise result
        if any(isinstance(result, _BudgetStop) for result in results):
            self._check_budget()
            raise BudgetExhausted(f"judge '{self.name}' reached its budget cap mid-batch; every answer bought is kept")
        return results

    @staticmethod
    def _failed(question: Question, provenance: Provenance, reason: str) -> Answer:
        return Answer(question, None, provenance, abstain_reason=f"API call failed: {reason}")


class PairwiseJudge(ApiJudge):
    """Which of two clips is better, as P(first better), with optional swap debiasing."""

    answers = frozenset({Question.COMPARE})
    Params = PairwiseParams

    def __init__(self, name: str, params: PairwiseParams):
        super().__init__(name, params)
        if (params.logprobs or params.debias == "swap_average") and self.provider != "openai":
            raise VlmbenchError(f"judge '{name}': the {self.provider} API returns no logprobs; params.logprobs and "
                                "debias: swap_average need an OpenAI-format endpoint")
        labels = PAIR_LABELS[params.labels] + ((TIE_LABEL,) if params.tie else ())
        self.style = PairStyle(params.layout, params.reasoning, labels, params.guide, params.separator_px)
        wants_logprobs = params.logprobs or params.debias == "swap_average"
        self.generation = Generation(params.temperature, params.max_tokens, params.answer_max_tokens,
                                     params.top_logprobs if wants_logprobs else 0)

    def _first_requests(self, task: TaskSpec, question: Question, items: list) -> list[Request]:
        prompt = PairPrompt(task, self.style, self.generation)
        return [prompt.first(pixels_of(a), pixels_of(b)) for a, b in items]

    async def _verdict(self, session, prompt: PairPrompt, first, second, sample: int, tally: Tally,
                       request: Request | None = None) -> tuple[float | None, float | None, str | None, str | None]:
        """(label value, P(first) from logprobs, label, abstain reason) for one order."""
        labels = self.style.labels
        request = request or prompt.first(first, second)
        try:
            if self.style.reasoning == "two_stage":
                analysis = await self._call(session, request, sample, tally, None)
                request = prompt.label(first, second, analysis.text)
            reply = await self._call(session, request, sample, tally, labels)
        except CallFailed as exc:
            return None, None, None, f"API call failed: {exc.reason}"
        parsed = parse_label(reply.text, list(labels))
        probability = None
        if self.generation.top_logprobs:
            if reply.logprobs is None:
                raise VlmbenchError(f"judge '{self.name}': {self.client.base_url} returned no logprobs for model "
                                    f"'{self.params.model}'; set logprobs: false and debias to none or swap")
            probabilities = label_probabilities(reply.logprobs, labels)
            probability = None if probabilities is None else p_first(probabilities, labels)
        if parsed.label is None:
            return None, probability, None, parsed.reason
        return label_value(parsed.label, labels), probability, parsed.label, None

    def _compare(self, task: TaskSpec, pairs: list[tuple[Clip, Clip]]) -> list[Answer]:
        prompt = PairPrompt(task, self.style, self.generation)
        jobs = []
        for a, b in pairs:
            first, second = pixels_of(a), pixels_of(b)
            request = prompt.first(first, second)
            jobs.append(self._pair_job(prompt, first, second, request, self._sample(request)))
        return self._run(jobs)

    def _pair_job(self, prompt: PairPrompt, first, second, request: Request, sample: int):
        p = self.params

        async def job(session) -> Answer:
            tally = Tally()
            if p.debias == "none":
                value, probability, label, reason = await self._verdict(session, prompt, first, second, sample, tally,
                                                                        request)
                detail = {"label": label} | ({"p_first": probability} if probability is not None else {})
                return Answer(Question.COMPARE, value, self._provenance(request, tally), reason, detail)
            results = await asyncio.gather(
                self._verdict(session, prompt, first, second, sample, tally, request),
                self._verdict(session, prompt, second, first, sample, tally), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            (v1, p1, l1, r1), (v2, p2, l2, r2) = results
            detail = {"labels": [l1, l2]}
            provenance = self._provenance(request, tally)
            if p.debias == "swap_average":
                if p1 is None or p2 is None:
                    return Answer(Question.COMPARE, None, provenance, "no answer token in the logprobs", detail)
                detail["p_first"] = [p1, p2]
                return Answer(Question.COMPARE, swap_average(p1, p2), provenance, None, detail)
            if v1 is None or v2 is None:
                return Answer(Question.COMPARE, None, provenance, r1 or r2, detail)
            value, reason = swap_combine(v1, v2, p.swap_disagreement)
            return Answer(Question.COMPARE, value, provenance, reason, detail)

        return job


class RatingJudge(ApiJudge):
    """The rating class of one clip, from the task's rating question and classes (ERL-VLM)."""

    answers = frozenset({Question.RATE})
    Params = RatingParams

    def _generation(self) -> Generation:
        p = self.params
        return Generation(p.temperature, p.max_tokens, p.answer_max_tokens, 0)

    def _first_requests(self, task: TaskSpec, question: Question, items: list) -> list[Request]:
        return [rating_request(task, pixels_of(clip), self.params.reasoning, self._generation()) for clip in items]

    def _rate(self, task: TaskSpec, clips: list[Clip]) -> list[Answer]:
        classes = list(task.prompts.rating.classes)
        jobs = []
        for request in self._first_requests(task, Question.RATE, clips):
            jobs.append(self._rate_job(request, self._sample(request), classes))
        return self._run(jobs)

    def _rate_job(self, request: Request, sample: int, classes: list[str]):
        async def job(session) -> Answer:
            tally = Tally()
            try:
                reply = await self._call(session, request, sample, tally, classes)
            except CallFailed as exc:
                return self._failed(Question.RATE, self._provenance(request, tally), exc.reason)
            parsed = parse_label(reply.text, classes)
            value = None if parsed.label is None else classes.index(parsed.label)
            return Answer(Question.RATE, value, self._provenance(request, tally), parsed.reason,
                          {"label": parsed.label})

        return job


class YesJudge(ApiJudge):
    """Score = P(yes) to the task's yes/no question, from the answer token's top logprobs, renormalised over
    the spellings of yes and no (RewardDance); OpenAI-format endpoints that return logprobs only."""

    answers = frozenset({Question.SCORE})
    Params = YesParams

    def _generation(self) -> Generation:
        p = self.params
        return Generation(p.temperature, p.max_tokens, p.answer_max_tokens, p.top_logprobs)

    def _first_requests(self, task: TaskSpec, question: Question, items: list) -> list[Request]:
        if question is Question.COMPARE:
            items = [frame for a, b in items for frame in (*a, *b)]
        return [yes_no_request(task, pixels_of([frame])[0], self._generation()) for frame in items]

    def _score(self, task: TaskSpec, frames: list[Frame]) -> list[Answer]:
        jobs = []
        for request in self._first_requests(task, Question.SCORE, frames):
            jobs.append(self._yes_job(request, self._sample(request)))
        return self._run(jobs)

    def _yes_job(self, request: Request, sample: int):
        async def job(session) -> Answer:
            tally = Tally()
            try:
                reply = await self._call(session, request, sample, tally, ["yes", "no"])
            except CallFailed as exc:
                return self._failed(Question.SCORE, self._provenance(request, tally), exc.reason)
            if reply.logprobs is None:
                raise VlmbenchError(f"judge '{self.name}': {self.client.base_url} returned no logprobs for model "
                                    f"'{self.params.model}'; a yes-probability judge needs an endpoint that returns "
                                    "top_logprobs (use a pairwise or rating judge instead)")
            probabilities = label_probabilities(reply.logprobs, ["yes", "no"])
            provenance = self._provenance(request, tally)
            if probabilities is None:
                return Answer(Question.SCORE, None, provenance, "no yes/no token in the reply's logprobs")
            return Answer(Question.SCORE, probabilities["yes"], provenance, None,
                          {"label": parse_label(reply.text, ["yes", "no"]).label})

        return job


class OpenAIPairwiseJudge(PairwiseJudge):
    provider, type_name = "openai", "openai-pairwise"


class AnthropicPairwiseJudge(PairwiseJudge):
    provider, type_name = "anthropic", "anthropic-pairwise"


class OpenAIRatingJudge(RatingJudge):
    provider, type_name = "openai", "openai-rating"


class AnthropicRatingJudge(RatingJudge):
    provider, type_name = "anthropic", "anthropic-rating"


class OpenAIYesJudge(YesJudge):
    provider, type_name = "openai", "openai-yes"
