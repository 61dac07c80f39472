"""The answer cache: every paid API call's reply, in SQLite, so a re-run buys nothing twice.

One row per call, keyed by a digest of everything that shapes the reply (see ``ApiJudge.request_key``):
judge type, the answer-shaping config, model, base URL, the full prompt text, the image digests in
order, the generation settings and the sample index. A row keeps the raw reply text, its logprobs,
the parsed answer, token usage, cost and latency. The ``spend`` table adds up calls and dollars per
judge name in the same transaction, for budget caps that hold across processes and resumes.

WAL mode and a busy timeout let several processes write at once; each reply is committed as it
arrives, so a kill -9 loses at most the calls in flight. API keys never reach this file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vlmbench.files import sqlite_create

SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY, judge TEXT NOT NULL, judge_type TEXT NOT NULL, model TEXT NOT NULL,
    base_url TEXT NOT NULL, prompt TEXT NOT NULL, images TEXT NOT NULL, sample INTEGER NOT NULL,
    text TEXT NOT NULL, logprobs TEXT, parsed TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS spend (judge TEXT PRIMARY KEY, calls INTEGER NOT NULL, cost_usd REAL NOT NULL);
"""


def default_cache_path() -> Path:
    """VLMBENCH_API_CACHE, else $XDG_CACHE_HOME (or ~/.cache)/vlmbench/api-answers.sqlite."""
    if os.environ.get("VLMBENCH_API_CACHE"):
        return Path(os.environ["VLMBENCH_API_CACHE"]).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "vlmbench" / "api-answers.sqlite"


@dataclass(frozen=True)
class Reply:
    """What one call returned: text, per-token logprobs [(token, logprob, [(alt, logprob), ...])], usage."""

    text: str
    logprobs: list | None
    input_tokens: int
    output_tokens: int
    seconds: float
    cost_usd: float = 0.0


@dataclass(frozen=True)
class CallRecord:
    """The identity of a call, stored beside its reply."""

    key: str
    judge: str
    judge_type: str
    model: str
    base_url: str
    prompt: str
    images: list[str]
    sample: int


class AnswerCache:
    """Replies by request key; ``max_age_s`` makes older rows misses (bought again, then replaced)."""

    def __init__(self, path: Path, max_age_s: float | None = None):
        self.path, self.max_age_s = Path(path), max_age_s
        self._db = sqlite_create(self.path, SCHEMA, timeout=60, any_thread=True)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, logprobs, input_tokens, output_tokens, seconds, cost_usd, created FROM replies "
                "WHERE key = ?", (key,)).fetchone()
        if row is None or (self.max_age_s is not None and time.time() - row[6] > self.max_age_s):
            return None
        return Reply(row[0], json.loads(row[1]) if row[1] else None, row[2], row[3], row[4], row[5])

    def put(self, call: CallRecord, reply: Reply, parsed: dict | None) -> None:
        """Store a paid reply and add it to its judge's spend, in one committed transaction."""
        row = (call.key, call.judge, call.judge_type, call.model, call.base_url, call.prompt, json.dumps(call.images),
               call.sample, reply.text, json.dumps(reply.logprobs) if reply.logprobs is not None else None,
               json.dumps(parsed) if parsed is not None else None, reply.input_tokens, reply.output_tokens,
               reply.cost_usd, reply.seconds, time.time())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"INSERT OR REPLACE INTO replies VALUES ({', '.join('?' * len(row))})", row)
                self._db.execute(
                    "INSERT INTO spend VALUES (?, 1, ?) ON CONFLICT(judge) DO UPDATE SET calls = calls + 1, "
                    "cost_usd = cost_usd + excluded.cost_usd", (call.judge, reply.cost_usd))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def spent(self, judge: str) -> tuple[int, float]:
        """Paid calls and dollars recorded for ``judge`` (by every process that used this cache)."""
        with self._lock:
            row = self._db.execute("SELECT calls, cost_usd FROM spend WHERE judge = ?", (judge,)).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def expire(self, older_than_s: float) -> int:
        """Delete rows older than ``older_than_s`` seconds; returns how many went."""
        with self._lock:
            return self._db.execute("DELETE FROM replies WHERE created < ?", (time.time() - older_than_s,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
