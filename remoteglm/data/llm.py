"""A thin, thread-safe client for any OpenAI-compatible chat endpoint, with honest retries.

Works with OpenAI, DeepSeek, Qwen/DashScope compatible mode, vLLM and Ollama (``/v1``).

Keys go only where they belong (``llm_keys.py`` chooses the key for an endpoint); the key travels
only to the endpoint's own origin, not after a redirect elsewhere, and every message made here
goes through ``redact``.

Retries: the openai SDK's own (``max_retries``) for 429 / 408 / 409 / 5xx, timeouts and dropped
connections - it honours ``Retry-After`` / ``retry-after-ms`` up to two minutes and falls back to
exponential backoff with jitter when the header is missing or malformed. Replies the SDK accepts
but that are no chat completion (an HTML page with status 200, a broken JSON body, empty
content) are retried here, within the same budget of requests. A connection that is refused
before the endpoint ever answered fails at once (kind "unreachable"): retrying a closed port or
an unknown host only makes the user wait.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from dataclasses import dataclass

from ..errors import RemoteGLMError
from .llm_keys import api_key_for, is_openai_host, origin, redact


@dataclass
class LLMConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    timeout: float = 60.0  # seconds per request
    max_retries: int = 6  # per request: at most max_retries + 1 HTTP requests, whatever went wrong
    backoff: float = 1.0  # first wait before re-asking after a reply that is no completion; doubles, plus jitter
    max_backoff: float = 60.0
    temperature: float = 0.2
    api_key_env: str | None = None  # environment variable holding the key for base_url (None: see api_key_for)


class LLMUnavailable(Exception):
    """A request still failed after every retry. ``kind`` says which case it is:

    * ``"unreachable"`` - no connection at all (refused, unknown host, TLS failure, connect timeout):
      check --base_url and that the server runs; a rerun will not help until it does.
    * ``"not_json"`` - the endpoint answers, but never with an OpenAI chat completion (an HTML page,
      a broken JSON body, JSON of another shape): most likely a wrong --base_url path (it usually
      ends in /v1); a rerun will not help.
    * ``"empty"`` - well-formed completions with no text in them: check --model; a rerun rarely helps.
    * ``"rate_limited"`` - HTTP 429 after all retries (or a Retry-After longer than two minutes):
      rerun later or lower --concurrency.
    * ``"server_error"`` - HTTP 5xx (or 409, or connections the server dropped) after all retries:
      rerun later.
    * ``"timeout"`` - no answer within --timeout, every try (or HTTP 408): raise --timeout or lower
      --batch_size; a rerun may help.

    ``str(e)`` is one line: the endpoint, what happened, how many tries, and what to do next (no key
    in it). ``rerun_helps`` is True for the transient kinds (rate_limited, server_error, timeout).
    Made as ``LLMUnavailable(message, kind=...)``; the kind defaults to "server_error".
    """

    KINDS = ("unreachable", "not_json", "empty", "rate_limited", "server_error", "timeout")
    TRANSIENT = ("rate_limited", "server_error", "timeout")

    def __init__(self, message: str, kind: str = "server_error"):
        if kind not in self.KINDS:
            raise ValueError(f"unknown LLMUnavailable kind {kind!r}")
        super().__init__(redact(message))
        self.kind = kind

    @property
    def rerun_helps(self) -> bool:
        return self.kind in self.TRANSIENT


ADVICE = {
    "unreachable": "check --base_url and that the server is running; a rerun will not help until it is",
    "not_json": "it answers, but not as an OpenAI-compatible API: check --base_url (it usually ends in /v1)",
    "empty": "check --model; a rerun rarely helps",
    "rate_limited": "rerun later or lower --concurrency",
    "server_error": "the server is failing; rerun later",
    "timeout": "raise --timeout or lower --batch_size",
}


@dataclass
class Usage:
    calls: int = 0  # HTTP requests sent, retries included
    replies: int = 0  # successful replies
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

# -- the client --------------------------------------------------------------------------------
def _describe_body(text: str) -> str:
    """A few words on what came back instead of a completion."""
    head = text.lstrip()[:2000]
    if re.match(r"(?is)<!doctype html|<html|<head|<body|<\?xml", head):
        title = re.search(r"(?is)<title[^>]*>(.*?)</title>", head)
        return f"an HTML page{' (' + ' '.join(title.group(1).split())[:60] + ')' if title else ''}"
    if not head:
        return "an empty body"
    return f"text that is not JSON ({' '.join(head.split())[:40]!r})"


class _Bad(Exception):
    """A reply that is no usable completion: (kind, what)."""

    def __init__(self, kind: str, what: str):
        super().__init__(what)
        self.kind, self.what = kind, what


class LLMClient:
    """``chat(messages) -> text`` with bounded retries; counts calls and tokens."""

    def __init__(self, cfg: LLMConfig, in_flight: int | None = None):
        self.cfg = cfg
        # At most this many HTTP requests out at once, whatever the callers' threads: one waiting to
        # be retried (Retry-After, backoff) holds no slot, so callers may run more threads than this.
        self.in_flight = in_flight
        self._slots = threading.Semaphore(in_flight) if in_flight else contextlib.nullcontext()
        self._openai = None
        self._clients: dict[int, object] = {}  # SDK client per retry budget, sharing one connection pool
        self.usage = Usage()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._answered = False  # the endpoint has sent at least one HTTP response
        self._key = None
        self._origin = origin(cfg.base_url)

    # SDK set-up: made on the first call, so a fully cached rerun needs neither a key nor the SDK.
    def _sdk(self, retries: int):
        with self._lock:
            if not self._clients:
                self._key = api_key_for(self.cfg.base_url, self.cfg.api_key_env)
                import httpx2
                import openai

                self._openai = openai
                client = self

                class FailFast(httpx2.BaseTransport):
                    """Connect failures raised as an OpenAIError, which the SDK passes on without retrying."""

                    def __init__(self):
                        self.inner = httpx2.HTTPTransport()

                    def handle_request(self, request):
                        with client._slots:
                            try:
                                response = self.inner.handle_request(request)
                            except (httpx2.ConnectError, httpx2.ConnectTimeout) as e:
                                raise client._cannot_connect(request, e) from e
                            if client.in_flight:
                                response.read()  # the whole reply inside the slot
                            return response

                    def close(self):
                        self.inner.close()

                http = openai.DefaultHttpxClient(
                    transport=FailFast(),
                    event_hooks={"request": [self._on_request], "response": [self._on_response]},
                )
                timeout = httpx2.Timeout(self.cfg.timeout, connect=min(self.cfg.timeout, 10.0))
                self._clients[retries] = openai.OpenAI(
                    base_url=self.cfg.base_url, api_key=self._key, timeout=timeout, max_retries=retries,
                    http_client=http,
                )
            if retries not in self._clients:
                self._clients[retries] = next(iter(self._clients.values())).with_options(max_retries=retries)
            return self._clients[retries]

    def _cannot_connect(self, request, cause: Exception):
        exc = self._openai.APIConnectionError(message=f"cannot connect ({_cause_text(cause)})", request=request)
        exc.cannot_connect = True
        return exc

    def _on_request(self, request) -> None:
        """Every HTTP request, SDK retries included: count it; the key only to our own host."""
        with self._lock:
            self.usage.calls += 1
        self._local.sent = getattr(self._local, "sent", 0) + 1
        if origin(str(request.url)) != self._origin:  # a redirect elsewhere (host, port or scheme) takes no key
            request.headers.pop("Authorization", None)
        else:
            request.headers["Authorization"] = f"Bearer {self._key}"
        if not is_openai_host(str(request.url)):  # OPENAI_ORG_ID / OPENAI_PROJECT_ID stay with OpenAI
            request.headers.pop("OpenAI-Organization", None)
            request.headers.pop("OpenAI-Project", None)

    def _on_response(self, response) -> None:
        self._answered = True

    def _count(self, **delta: int) -> None:
        with self._lock:
            for k, v in delta.items():
                setattr(self.usage, k, getattr(self.usage, k) + v)

    def _wait(self, attempt: int) -> None:
        base = min(self.cfg.max_backoff, self.cfg.backoff * 2**attempt)
        time.sleep(base * (0.5 + random.random() / 2))  # "equal jitter"

    def _text(self, resp) -> str:
        """The reply's text, or _Bad when it is no usable completion."""
        if isinstance(resp, (str, bytes)):  # the SDK hands back non-JSON bodies as they are
            return self._bad("not_json", f"answered HTTP 200 with {_describe_body(resp if isinstance(resp, str) else '')}")
        choices = getattr(resp, "choices", None)
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self._count(tokens_in=getattr(usage, "prompt_tokens", 0) or 0,
                        tokens_out=getattr(usage, "completion_tokens", 0) or 0)
        if not isinstance(choices, list) or not choices:
            error = getattr(resp, "error", None) or (getattr(resp, "model_extra", None) or {}).get("error")
            if error:
                msg = error.get("message") if isinstance(error, dict) else error
                return self._bad("not_json", f"answered HTTP 200 with an error instead of a completion ({str(msg)[:120]})")
            return self._bad("not_json", "answered HTTP 200 with JSON that is not a chat completion (no choices)")
        first = choices[0]
        message = getattr(first, "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str) or not text.strip():
            reason = getattr(first, "finish_reason", None)
            return self._bad("empty", "answered with empty content" + (f" (finish_reason {reason})" if reason else ""))
        return text

    @staticmethod
    def _bad(kind: str, what: str):
        raise _Bad(kind, what)

    def _key_hint(self) -> str:
        if self.cfg.api_key_env:
            return f"check ${self.cfg.api_key_env}"
        if is_openai_host(self.cfg.base_url):
            return "check OPENAI_API_KEY"
        return "this server wants a key: export it in a variable and pass --api_key_env NAME"

    def chat(self, messages: list[dict], max_tokens: int | None = None) -> str:
        budget = self.cfg.max_retries + 1  # HTTP requests this call may send, SDK retries included
        self._local.sent = 0
        attempt = 0
        try:
            while True:
                sdk = self._sdk(max(0, budget - self._local.sent - 1))
                oa = self._openai
                again = False  # whether this loop (not the SDK) should ask again
                try:
                    resp = sdk.chat.completions.create(
                        model=self.cfg.model, messages=messages, temperature=self.cfg.temperature,
                        **({"max_tokens": max_tokens} if max_tokens else {}),
                    )
                    text = self._text(resp)
                    self._count(replies=1)
                    return text
                except _Bad as e:
                    kind, what, again = e.kind, e.what, True
                except (oa.AuthenticationError, oa.PermissionDeniedError) as e:
                    raise RemoteGLMError(redact(
                        f"{self.cfg.base_url} refused the key (HTTP {e.status_code}); {self._key_hint()}")) from None
                except oa.NotFoundError:
                    raise RemoteGLMError(
                        f"{self.cfg.base_url}: model '{self.cfg.model}' or /chat/completions not found (HTTP 404); "
                        "check --base_url (it usually ends in /v1) and --model"
                    ) from None
                except oa.APIStatusError as e:
                    kind, what = self._status_kind(e)
                except oa.APITimeoutError:
                    kind, what = "timeout", f"no answer within {self.cfg.timeout:g}s"
                except oa.APIConnectionError as e:
                    if getattr(e, "cannot_connect", False):
                        kind, what, again = "unreachable", str(e), self._answered
                    elif self._answered:
                        kind, what = "server_error", f"connection dropped ({_cause_text(e.__cause__ or e)})"
                    else:
                        kind, what = "unreachable", f"connection failed ({_cause_text(e.__cause__ or e)})"
                except oa.APIResponseValidationError:
                    kind, what, again = "not_json", "answered HTTP 200 with JSON that is not a chat completion", True
                except (ValueError, UnicodeError) as e:  # a JSON body that does not parse
                    kind, what, again = "not_json", f"answered HTTP 200 with a broken JSON body ({type(e).__name__})", True
                except oa.OpenAIError as e:
                    kind, what = "server_error", f"{type(e).__name__}: {str(e)[:120]}"
                if again and self._local.sent < budget:
                    self._wait(attempt)
                    attempt += 1
                    continue
                n = self._local.sent
                raise LLMUnavailable(f"{self.cfg.base_url}: {what} after {n} {'try' if n == 1 else 'tries'}"
                                     f" - {ADVICE[kind]}", kind=kind)
        finally:
            self._count(retries=max(0, self._local.sent - 1))

    def _status_kind(self, e) -> tuple[str, str]:
        code = e.status_code
        body = e.body if isinstance(e.body, dict) else {}
        nested = body.get("error") if isinstance(body.get("error"), dict) else {}
        detail = body.get("message") or nested.get("message") or body.get("error")
        if code == 429:
            if body.get("code") == "insufficient_quota" or body.get("type") == "insufficient_quota":
                raise RemoteGLMError(redact(f"{self.cfg.base_url}: quota exhausted (HTTP 429 insufficient_quota): "
                                            f"check the account's plan and billing"))
            wait = e.response.headers.get("retry-after") if e.response is not None else None
            return "rate_limited", f"rate limited (HTTP 429{', Retry-After ' + wait[:20] if wait else ''})"
        if code == 408:
            return "timeout", "request timed out (HTTP 408)"
        if code >= 500 or code == 409:
            return "server_error", f"server error (HTTP {code})"
        raise RemoteGLMError(redact(
            f"{self.cfg.base_url} rejected the request (HTTP {code}): {str(detail or e)[:200]}"))


def _cause_text(e: BaseException) -> str:
    """The innermost reason of a connection error, e.g. '[Errno 111] Connection refused'."""
    while e.__cause__ is not None or e.__context__ is not None:
        nxt = e.__cause__ or e.__context__
        if not str(nxt):
            break
        e = nxt
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:120]


def parallel(fn, jobs: list, concurrency: int, on_result) -> None:
    """Run ``fn(job)`` with at most ``concurrency`` in flight; ``on_result(job, result)`` in this thread.
    ``on_result`` may return more jobs: they run after those already given (a re-ask starts while
    the last first asks are still out, not after them).

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
                for more in on_result(job, fut.result()) or ():
                    pending[pool.submit(fn, more)] = more
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
