"""A thin, thread-safe client for any OpenAI-compatible chat endpoint, with honest retries.

Works with OpenAI, DeepSeek, Qwen/DashScope compatible mode, vLLM and Ollama (``/v1``). The key
comes from ``OPENAI_API_KEY`` only; it is never printed or written anywhere.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import RemoteGLMError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass
class LLMConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    timeout: float = 60.0  # seconds per request
    max_retries: int = 6  # per request, on 429 / 5xx / timeout / connection error
    backoff: float = 1.0  # first wait; doubles each retry, plus jitter
    max_backoff: float = 60.0
    temperature: float = 0.2


class LLMUnavailable(Exception):
    """A request still failed after every retry (transient kind: rerun later)."""


@dataclass
class Usage:
    calls: int = 0  # HTTP requests sent, retries included
    replies: int = 0  # successful replies
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


def api_key_for(base_url: str) -> str:
    """The key from OPENAI_API_KEY; local servers get a placeholder when it is unset."""
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if key:
        return key
    host = urlparse(base_url).hostname or ""
    if host in LOCAL_HOSTS:
        return "not-needed"
    raise RemoteGLMError(
        f"OPENAI_API_KEY is not set for {base_url}; export OPENAI_API_KEY=... (local servers need no key)"
    )


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After / retry-after-ms header (number or HTTP date), if any."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


class LLMClient:
    """``chat(messages) -> text`` with bounded retries; counts calls and tokens."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self._openai = None
        self._client = None  # made on the first call: a fully cached rerun needs no key
        self.usage = Usage()
        self._lock = threading.Lock()

    def _sdk(self):
        with self._lock:
            if self._client is None:
                import openai  # imported late: a fully cached rerun never needs it

                self._openai = openai
                # Our own retry loop (Retry-After, jitter, counting), so the SDK's is switched off.
                self._client = self._openai.OpenAI(
                    base_url=self.cfg.base_url, api_key=api_key_for(self.cfg.base_url),
                    timeout=self.cfg.timeout, max_retries=0,
                )
            return self._client

    def _count(self, **delta: int) -> None:
        with self._lock:
            for k, v in delta.items():
                setattr(self.usage, k, getattr(self.usage, k) + v)

    def _wait(self, attempt: int, hint: float | None) -> None:
        base = min(self.cfg.max_backoff, self.cfg.backoff * 2**attempt)
        delay = max(hint or 0.0, base * (0.5 + random.random() / 2))  # "equal jitter"
        time.sleep(min(delay, self.cfg.max_backoff))

    def chat(self, messages: list[dict], max_tokens: int | None = None) -> str:
        sdk = self._sdk()
        oa = self._openai
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            self._count(calls=1)
            hint = None
            try:
                resp = sdk.chat.completions.create(
                    model=self.cfg.model, messages=messages, temperature=self.cfg.temperature,
                    **({"max_tokens": max_tokens} if max_tokens else {}),
                )
                text = resp.choices[0].message.content if resp.choices else None
                if resp.usage is not None:
                    self._count(tokens_in=resp.usage.prompt_tokens or 0, tokens_out=resp.usage.completion_tokens or 0)
                if text is None:
                    last = "reply had no message content"
                else:
                    self._count(replies=1)
                    return text
            except (oa.AuthenticationError, oa.PermissionDeniedError) as e:
                raise RemoteGLMError(
                    f"{self.cfg.base_url} refused the key (HTTP {e.status_code}); check OPENAI_API_KEY"
                ) from None
            except oa.NotFoundError:
                raise RemoteGLMError(
                    f"{self.cfg.base_url}: model '{self.cfg.model}' or /chat/completions not found (HTTP 404); "
                    "check --base-url (it usually ends in /v1) and --model"
                ) from None
            except oa.APIStatusError as e:
                if e.status_code != 429 and e.status_code < 500 and e.status_code != 408:
                    raise RemoteGLMError(
                        f"{self.cfg.base_url} rejected the request (HTTP {e.status_code}): {str(e)[:200]}"
                    ) from None
                last, hint = f"HTTP {e.status_code}", _retry_after(e.response.headers)
            except oa.APITimeoutError:
                last = f"timed out after {self.cfg.timeout:g}s"
            except oa.APIConnectionError as e:
                last = f"connection error ({e.__cause__ or e})"
            except (oa.APIResponseValidationError, ValueError) as e:  # body was not the JSON promised
                last = f"unreadable reply ({type(e).__name__})"
            if attempt < self.cfg.max_retries:
                self._count(retries=1)
                self._wait(attempt, hint)
        raise LLMUnavailable(f"{self.cfg.base_url}: {last} after {self.cfg.max_retries + 1} tries")


def parallel(fn, jobs: list, concurrency: int, on_result) -> None:
    """Run ``fn(job)`` with at most ``concurrency`` in flight; ``on_result(job, result)`` in this thread.

    A RemoteGLMError (bad key, wrong URL) or Ctrl-C stops everything not yet started.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if not jobs:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        pending = {pool.submit(fn, job): job for job in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                on_result(job, fut.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
