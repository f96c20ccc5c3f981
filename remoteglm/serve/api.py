"""An OpenAI-compatible HTTP API for VisualGLM (``python -m remoteglm.serve.api``), on FastAPI + uvicorn.

    POST /v1/chat/completions   OpenAI chat format, streaming (SSE, ending in ``data: [DONE]``) or not
    GET  /v1/models             the model served and its aliases; GET /v1/models/{id}: one of them
    GET  /docs, /openapi.json   the OpenAPI description (no key needed: it holds no data)

A message's ``content`` is a string or a list of ``{"type": "text"}`` / ``{"type": "image_url"}``
parts; the image is a ``data:image/...;base64,`` URL or a local path (``file://`` or plain) under
one of the ``--allow-path`` directories. VisualGLM talks about one image per conversation: the
last image in the messages is used. Earlier user/assistant turns become the history; a system
message is put in front of the first question (VisualGLM has no system role). ``model`` must be
the served name or one of its ``--model-alias`` names. Extra sampling fields beside the OpenAI
ones: ``top_k``, ``repetition_penalty``.

Every error, on any path and with any method, is OpenAI's JSON ``{"error": {"message", "type",
"param", "code"}}``: the routes' own (400 bad input, 401 missing or wrong key, 403 path not
allowed, 404 unknown model or URL, 405, 413 too large, 429 queue full, 500 internal, 503 shutting
down) and the transport's (400 malformed HTTP, 408 too slow, 431 headers too large, 503 too many
connections). A 500 carries ``x-should-retry: false`` (the openai SDK would otherwise retry the
failing generation); 429 and 503 carry ``Retry-After``.

Limits (command-line flags, defaults in brackets):

- ``--max-request-mb`` [20]: the request body. A larger Content-Length gets 413 before the body is
  read; a chunked body is counted as it streams in and refused once past the limit. Malformed
  framing (``Content-Length: -1``, two lengths, Content-Length beside Transfer-Encoding) gets 400
  and the connection is closed, so no body is ever read as the next request.
- ``--timeout-header`` [10 s]: to send the request line and headers; ``--timeout-body`` [60 s]:
  to send the body; ``--timeout-keep-alive`` [5 s]: an idle connection between requests. A slow
  client gets 408 and is disconnected.
- ``--max-connections`` [64] (uvicorn's ``limit_concurrency``): more get 503; backlog 2048;
  request line + headers at most 16 KiB (h11's incomplete-event limit; 431 beyond).
- ``--max-queue`` [16]: requests waiting for the model behind the one being answered; more get
  429 with Retry-After (estimated from recent generation times), before their body is read.

One model, one generation at a time, in a worker thread; a client that disconnects (streaming or
not, waiting or being answered) frees the model at once if it was waiting, else at the next token
that adds to its answer. Shutdown (SIGTERM, Ctrl-C):
the server stops accepting, waiting requests get 503, the answer being generated gets
``--shutdown-grace`` [10 s] to finish and is then cut (a stream ends with an error event and
``data: [DONE]``, a plain request gets 503), the worker thread is stopped and joined, exit 0.

Binds 127.0.0.1 unless told otherwise; ``--api-key`` (or ``REMOTEGLM_API_KEY``) makes every route
but the docs require ``Authorization: Bearer KEY``. ``--cors-origin`` (repeatable, ``*`` for any)
lets browser pages from those origins call the API. The access log (stderr) shows control
characters in requests as escapes.

Library use: ``create_app(engine, ...)`` builds the ASGI app around any object with the
``Engine`` interface; ``make_server(app, host, port, ...)`` binds and returns the uvicorn server
with this module's transport limits (``server.run()`` blocks; a thread may run it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import http
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, AsyncIterator, Literal, Sequence, Union
from urllib.parse import unquote, urlparse

import anyio
import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.serve.engine import Engine, Reply, strip_control
from remoteglm.serve.options import add_host_arg, add_model_args

DEFAULT_MAX_REQUEST_MB = 20.0
DEFAULT_MAX_QUEUE = 16
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_HEADER = 10.0
DEFAULT_TIMEOUT_BODY = 60.0
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0
DEFAULT_SHUTDOWN_GRACE = 10.0
BACKLOG = 2048  # pending connections the kernel queues (the stdlib server's was 5)
MAX_HEADER_BYTES = 16 * 1024  # request line + headers (h11's max incomplete event size)
MIN_DRAIN_BYTES = 64 * 2**20  # body bytes still read and dropped after an early error reply (see _drain_cap)
API_KEY_ENV = "REMOTEGLM_API_KEY"
CHAT_PATH = "/v1/chat/completions"
PLACE_KEY = "remoteglm.place"  # the ASGI scope key of a chat request's reserved queue place
PREPARING = 2  # requests read and checked at once (worker threads: image decoding takes memory)
PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
ROUTES_HINT = "this server has GET /v1/models and POST /v1/chat/completions (docs: GET /docs)"
PUBLIC_HOSTS_WARNING = (
    "warning: --host {host} makes the server reachable from other machines; anyone who can reach "
    "port {port} can use the model{key}. Bind 127.0.0.1 unless you mean it."
)

log = logging.getLogger("remoteglm.api")
access_log = logging.getLogger("remoteglm.api.access")


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable (ESC, CR and the other C0/C1 controls,
    bidirectional marks, other invisible format characters) written as a ``\\xNN`` / ``\\uNNNN``
    escape: a log line shows what a client sent instead of letting it move the cursor, clear the
    screen or fake another line. ``keep``: characters left as they are."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or c in keep:
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


class EscapingFormatter(logging.Formatter):
    """Log records with control characters escaped (newlines kept: tracebacks stay readable)."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record), keep="\n")


# ---- errors: one shape for all ---------------------------------------------------------------------
class APIError(StarletteHTTPException):
    """An HTTP error in OpenAI's JSON shape. A Starlette HTTPException, so FastAPI passes it on
    unchanged (from a route or from reading the body) to the app's one error handler."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(status, message, headers)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ClientGone(APIError):
    """The client disconnected: its generation was stopped. Nobody reads the reply; the access
    log shows 499 (nginx's "client closed request")."""

    def __init__(self) -> None:
        super().__init__(499, "the client closed the connection", code="client_closed_request")


def internal_error(exc: BaseException) -> APIError:
    """500 for an exception nobody expected (a CUDA out-of-memory, a bug). The same request
    would fail the same way, so clients are told not to retry it."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return APIError(500, f"internal error: {type(exc).__name__}{': ' + first if first else ''} "
                         "(the server's log has the details); retrying the same request is unlikely to help",
                    type_="server_error", code="internal_error", headers={"x-should-retry": "false"})


def shutting_down(cut: bool = False) -> APIError:
    what = "this answer was cut short" if cut else "no new answers are started"
    return APIError(503, f"the server is shutting down: {what}; retry once it is back", type_="server_error",
                    code="server_shutting_down", headers={"Retry-After": "5"})


def _input_path(body, loc: Sequence, missing: bool) -> list:
    """The part of pydantic's error location that names places in the input (union member tags
    such as ``str`` or ``list[...]`` dropped); a missing field's own name is kept."""
    node, out = body, []
    for i, key in enumerate(loc):
        if isinstance(node, dict) and isinstance(key, str) and key in node:
            out.append(key)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            out.append(key)
            node = node[key]
        elif missing and i == len(loc) - 1 and isinstance(key, str):
            out.append(key)
    return out


def _param_name(path: list) -> str:
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else k) for i, k in enumerate(path))


def validation_error(errors: Sequence[dict], body, *, in_body: bool = False) -> APIError:
    """400 for a request that does not fit the schema, naming the most specific place (``param``,
    e.g. ``messages[0].content[1].image_url``) and what is wrong there."""
    best: tuple[list, dict] | None = None
    for e in errors:
        loc = list(e.get("loc", ()))
        if in_body and loc[:1] == ["body"]:
            loc = loc[1:]
        path = _input_path(body, loc, e.get("type") == "missing")
        if best is None or len(path) > len(best[0]):
            best = (path, e)
    if best is None:
        return APIError(400, "the request is not valid", code="invalid_request")
    path, e = best
    kind = e.get("type")
    if kind == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')})",
                        code="invalid_json")
    if not path and kind in ("missing", "model_attributes_type", "dict_type", "model_type"):
        return APIError(400, "the request body must be a JSON object (an OpenAI chat request)", code="invalid_request")
    param = _param_name(path)
    msg = e.get("msg", "invalid value")
    return APIError(400, f"{param}: {msg}" if param else msg, param=param or None, code="invalid_value")


def as_api_error(exc: BaseException, method: str = "", path: str = "") -> APIError:
    """Any exception as the error the client gets."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_error(exc.errors(), exc.body, in_body=True)
    if isinstance(exc, StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return APIError(404, f"no route {method} {path}; {ROUTES_HINT}", code="unknown_url", headers=headers)
        if exc.status_code == 405:
            return APIError(405, f"{method} is not allowed on {path} (allowed: {headers.get('Allow', 'none')}); {ROUTES_HINT}",
                            code="method_not_allowed", headers=headers)
        return APIError(exc.status_code, str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error",
                        headers=headers)
    return internal_error(exc)


def error_response(err: APIError) -> JSONResponse:
    headers = dict(err.headers or {})
    if err.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def _handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The app's one error handler (routing's 404/405, validation, APIError, and any other
    exception, which uvicorn then logs with its traceback)."""
    return error_response(as_api_error(exc, request.method, request.url.path))


# ---- request and response bodies -------------------------------------------------------------------
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(min_length=1, description="data:image/png;base64,... or a local path under an --allow-path directory")
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: Union[ImageURL, str]


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request. Fields it has that VisualGLM cannot use (tools, seed, ...) are
    accepted and ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "model": "visualglm-6b", "max_tokens": 256, "stream": False,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "描述这张图片。"},
                                                  {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]}]})
    model: str = Field(description="the served model's id (GET /v1/models) or one of its aliases")
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy")
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, description="VisualGLM extra")
    repetition_penalty: float | None = Field(None, ge=0.01, le=10, description="VisualGLM extra")
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=1)
    stop: Union[str, list[str], None] = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


ERROR_RESPONSES = {s: {"model": ErrorResponse} for s in (400, 401, 404, 429, 500, 503)}


# ---- requests -------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    image: bytes | str | None
    query: str
    history: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    gen: dict
    stop: list[str]
    max_tokens_param: str = "max_tokens"


def _text_of(content, role: str, index: int) -> tuple[str, list]:
    """(text, image URLs) of a message's content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        if role != "user":
            raise APIError(400, f"messages[{index}]: images are only accepted in user messages", param=f"messages[{index}].content[{j}]")
        url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
        if not url:
            raise APIError(400, f"messages[{index}].content[{j}].image_url.url is missing", param=f"messages[{index}].content[{j}]")
        images.append(url)
    return "\n".join(texts), images


def resolve_image(url: str, allowed: Sequence[Path], max_bytes: int) -> bytes | str:
    """A data URL -> its bytes; a local path (plain or file://) under an allowed dir -> the path."""
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep or ";base64" not in head:
            raise APIError(400, "bad image: a data URL must look like data:image/png;base64,<data>", param="image_url")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "bad image: the data URL is not valid base64", param="image_url") from None
        if not raw:
            raise APIError(400, "bad image: the data URL is empty", param="image_url")
        return raw
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise APIError(400, "bad image: remote image URLs are not fetched; send the image as a base64 data URL", param="image_url")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise APIError(400, f"bad image: file URL with host {parsed.netloc!r}", param="image_url")
        path = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # ("c:" would be a Windows drive)
        raise APIError(400, f"bad image: unsupported URL scheme {parsed.scheme!r}; use a data URL or a local path", param="image_url")
    else:
        path = url
    if not allowed:
        raise APIError(400, "bad image: this server reads no local files (start it with --allow-path DIR); send a base64 data URL",
                       param="image_url")
    p = Path(path).expanduser()
    if not p.is_absolute():
        raise APIError(400, f"bad image: local image paths must be absolute: {path}", param="image_url")
    real = p.resolve()  # symlinks and .. resolved before the check
    if not any(real.is_relative_to(d) for d in allowed):
        raise APIError(403, f"image path {path} is outside the directories this server may read", type_="permission_error",
                       param="image_url")
    if not real.is_file():
        raise APIError(400, f"bad image: no such file: {path}", param="image_url")
    if real.stat().st_size > max_bytes:
        raise APIError(413, f"image {path} is larger than the {max_bytes / 2**20:g} MB limit", code="request_too_large")
    return str(real)


def parse_chat_request(body, allowed: Sequence[Path], max_bytes: int) -> ChatRequest:
    """An OpenAI chat request (a ``ChatCompletionRequest`` or its JSON object) -> what the engine
    needs; APIError (400/403/413) on bad input."""
    if not isinstance(body, ChatCompletionRequest):
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object (an OpenAI chat request)", code="invalid_request")
        try:
            body = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            raise validation_error(e.errors(), body) from None
    system: list[str] = []
    turns: list[list] = []  # [role, text]
    image_url = None
    for i, m in enumerate(body.messages):
        text, images = _text_of(m.content, m.role, i)
        if images:
            image_url = images[-1]  # one image per conversation: the latest wins
        if m.role in ("system", "developer"):
            system.append(text)
        elif turns and turns[-1][0] == m.role:  # two user (or assistant) messages in a row: one turn
            turns[-1][1] = f"{turns[-1][1]}\n{text}"
        else:
            turns.append([m.role, text])
    if not turns or turns[-1][0] != "user":
        raise APIError(400, "the last message must come from the user", param="messages")
    if turns[0][0] == "assistant":
        turns.insert(0, ["user", ""])
    query = turns[-1][1]
    history = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns) - 1, 2)]
    sys_text = "\n".join(s for s in system if s)
    if sys_text:
        if history:
            history[0] = (f"{sys_text}\n{history[0][0]}", history[0][1])
        else:
            query = f"{sys_text}\n{query}"
    if not query.strip():
        raise APIError(400, "the last user message has no text", param="messages")
    gen: dict = {}
    if body.temperature is not None:
        gen["temperature"] = float(body.temperature)  # 0 -> greedy (GenerationConfig.make)
    if body.top_p is not None:
        if body.top_p == 0:
            gen["do_sample"] = False
        else:
            gen["top_p"] = float(body.top_p)
    if body.top_k is not None:
        gen["top_k"] = body.top_k
    if body.repetition_penalty is not None:
        gen["repetition_penalty"] = float(body.repetition_penalty)
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    mt = body.max_completion_tokens or body.max_tokens
    if mt is not None:
        gen["max_new_tokens"] = mt
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if not all(stop) or len(stop) > 4:
        raise APIError(400, "stop must be a string or a list of up to 4 non-empty strings", param="stop")
    image = resolve_image(image_url, allowed, max_bytes) if image_url else None
    opts = body.stream_options
    return ChatRequest(image, query, history, body.stream, bool(opts and opts.include_usage), gen, stop, param)


def _cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    hits = [text.find(s) for s in stop if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def _answer(text: str) -> str:
    """An answer as the API returns it: the engine's (post-processed like the official chat's)
    without control characters. Removing characters keeps each streamed text a prefix of the next."""
    return strip_control(text)


# ---- one generation at a time, a bounded queue behind it --------------------------------------------
_END, _STOPPED = object(), object()


class Job:
    """One request's generation: waits for its turn, then runs ``engine.stream`` in a thread
    whose replies arrive on the event loop. ``stop`` (client gone, shutdown) ends the wait at
    once and wakes the request's reader at once; the thread sees it at the engine's next reply
    (the next token that adds to the answer) and closes the engine's iterator, which stops the
    engine's worker before its following token."""

    def __init__(self, gens: "Generations", req: ChatRequest):
        self.gens, self.req = gens, req
        self.cancel = threading.Event()
        self.reason: str | None = None  # why it was stopped: "client", "shutdown", "done"
        self.turn_future: asyncio.Future | None = None  # while waiting
        self.items: asyncio.Queue = asyncio.Queue()
        self.thread: threading.Thread | None = None
        self.started = 0.0

    def stop(self, reason: str) -> None:
        """Called on the event loop."""
        if self.reason is None:
            self.reason = reason
        self.cancel.set()
        if self.turn_future is not None and not self.turn_future.done():
            self.gens.leave(self)
            self.turn_future.set_result(None)
        self.items.put_nowait(_STOPPED)  # wake a reader now, not at the next token

    def _error(self) -> APIError:
        if self.reason == "shutdown":
            return shutting_down(cut=self.thread is not None)
        return ClientGone()

    async def turn(self) -> None:
        """Wait until this job's generation has started (it may start at once)."""
        if self.turn_future is not None:
            await self.turn_future
        if self.reason is not None:
            raise self._error()

    async def replies(self) -> AsyncIterator:
        while True:
            item = await self.items.get()
            if item is _END:
                return
            if item is _STOPPED or self.reason is not None:
                raise self._error()
            if isinstance(item, BaseException):
                raise _engine_error(item)
            yield item

    async def first(self):
        """The first reply (None if there was none)."""
        async for r in self.replies():
            return r
        return None

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The generation thread."""

        def post(item) -> None:
            try:
                loop.call_soon_threadsafe(self.items.put_nowait, item)
            except RuntimeError:  # the event loop is gone (forced exit): nobody is listening
                pass

        r = self.req
        try:
            replies = self.gens.engine.stream(r.image, r.query, r.history, **r.gen)
            try:
                for reply in replies:
                    if self.cancel.is_set():
                        break
                    post(reply)
            finally:
                replies.close()  # stops the engine's worker at its next token
        except BaseException as e:  # noqa: BLE001 - handed to the event loop
            post(e)
        finally:
            post(_END)
            try:
                loop.call_soon_threadsafe(self.gens.finished, self)
            except RuntimeError:
                pass


def _engine_error(exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RemoteGLMError):  # the user's input: e.g. an image that does not decode
        return APIError(400, str(exc))
    log.error("generation failed", exc_info=exc)
    return internal_error(exc)


class Generations:
    """The engine's one-at-a-time generations and the bounded queue of requests waiting for it."""

    def __init__(self, engine, max_waiting: int):
        self.engine, self.max_waiting = engine, max_waiting
        self.waiting: deque[Job] = deque()
        self.running: Job | None = None
        self.closing = False
        self.threads: set[threading.Thread] = set()
        self.seconds: float | None = None  # moving average of a generation's duration
        self.reserved = 0

    def load(self) -> int:
        """Requests holding a place: the one running, the waiting ones, the ones being read and
        checked (reserved)."""
        return (self.running is not None) + len(self.waiting) + self.reserved

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil((self.seconds or 1.0) * self.load())))

    def reserve(self) -> "Reservation":
        """A place for a new request, taken before its body is read; APIError (503 shutting
        down, 429 no place left) now, so a full server spends nothing on the rest."""
        if self.closing:
            raise shutting_down()
        if self.load() >= 1 + self.max_waiting:
            s = self.retry_after()
            raise APIError(429, f"the server is busy: one answer is being generated and {self.load() - 1} requests are "
                                f"waiting, the most it queues (--max-queue {self.max_waiting}); retry in {s} s",
                           type_="rate_limit_error", code="queue_full", headers={"Retry-After": str(s)})
        self.reserved += 1
        return Reservation(self)

    def admit(self, req: ChatRequest, place: "Reservation") -> Job:
        """A job for ``req`` in the place reserved for it: started now if the model is free,
        else queued."""
        place.release()
        if self.closing:
            raise shutting_down()
        job = Job(self, req)
        if self.running is None and not self.waiting:
            self._start(job)
        else:
            job.turn_future = asyncio.get_running_loop().create_future()
            self.waiting.append(job)
        return job

    def _start(self, job: Job) -> None:
        self.running = job
        job.started = time.monotonic()
        job.thread = threading.Thread(target=job._run, args=(asyncio.get_running_loop(),), name="remoteglm-api-job", daemon=True)
        self.threads.add(job.thread)
        job.thread.start()

    def leave(self, job: Job) -> None:
        try:
            self.waiting.remove(job)
        except ValueError:
            pass

    def finished(self, job: Job) -> None:
        """On the event loop, when a job's thread is done: the next waiting job starts."""
        self.threads.discard(job.thread)
        if self.running is job:
            self.running = None
            if job.reason is None:
                took = time.monotonic() - job.started
                self.seconds = took if self.seconds is None else 0.7 * self.seconds + 0.3 * took
        while self.running is None and self.waiting and not self.closing:
            nxt = self.waiting.popleft()
            self._start(nxt)
            nxt.turn_future.set_result(None)

    def begin_shutdown(self, grace: float) -> None:
        """On the event loop: refuse new requests, send the waiting ones away (503), give the
        running one ``grace`` seconds."""
        self.closing = True
        for job in list(self.waiting):
            job.stop("shutdown")
        if self.running is not None:
            running = self.running
            asyncio.get_running_loop().call_later(grace, lambda: running.thread is not None and running.thread.is_alive()
                                                  and running.stop("shutdown"))

    def stop_all(self, timeout: float) -> None:
        """From any thread, after the server stopped: stop what still runs and wait for the
        threads (the engine's worker included) to end."""
        for job in [self.running, *self.waiting]:
            if job is not None:
                job.cancel.set()
        end = time.monotonic() + timeout
        for t in list(self.threads):
            t.join(max(0.0, end - time.monotonic()))
        lock = getattr(self.engine, "lock", None)
        if lock is not None and lock.acquire(timeout=max(0.1, end - time.monotonic())):
            lock.release()


class Reservation:
    """A request's place in the queue until its job takes it over (``Generations.admit``) or the
    request ends without one; ``release`` is idempotent."""

    def __init__(self, gens: Generations):
        self.gens, self.held = gens, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.gens.reserved -= 1


# ---- the application ------------------------------------------------------------------------------
class APIState:
    """What the routes, the middleware and the server share."""

    def __init__(self, engine, *, api_key: str | None, allowed: Sequence[Path], max_request_bytes: int, max_queue: int,
                 shutdown_grace: float, cors_origins: Sequence[str], model_aliases: Sequence[str]):
        self.engine = engine
        self.api_key = api_key or None
        self.allowed = [Path(d).expanduser().resolve() for d in allowed]
        self.max_request_bytes = int(max_request_bytes)
        self.generations = Generations(engine, max_queue)
        self.shutdown_grace = shutdown_grace
        self.cors_origins = list(cors_origins)
        self.model_ids = list(dict.fromkeys([engine.name, *model_aliases]))
        self.created = int(time.time())
        self.preparing: anyio.CapacityLimiter | None = None  # made on the event loop

    def card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "remoteglm"}

    def begin_shutdown(self) -> None:
        self.generations.begin_shutdown(self.shutdown_grace)

    def close(self, timeout: float = 10.0) -> None:
        self.generations.stop_all(timeout)

    def prepare(self, body: ChatCompletionRequest) -> ChatRequest:
        """Everything checked before a request queues (in a worker thread: it reads files and
        decodes the image): 400 for bad input, a prompt or ``max_tokens`` beyond the context."""
        from remoteglm.serve.generation import encode_prompt

        req = parse_chat_request(body, self.allowed, self.max_request_bytes)
        engine = self.engine
        if req.image is not None:
            try:
                engine.check_image(req.image)
            except RemoteGLMError as err:
                raise APIError(400, f"bad image: {err}", param="image_url") from None
        try:
            cfg = engine.config(**req.gen)
        except RemoteGLMError as err:
            raise APIError(400, str(err)) from None
        slots = engine.model.image_length if req.image is not None else None
        n = len(encode_prompt(engine.tokenizer, req.query, req.history, cfg.english, slots)[0])
        if n >= cfg.max_length:
            raise APIError(400, f"the messages are {n} tokens, not less than this model's context of {cfg.max_length} tokens: "
                                "shorten the history or the question", param="messages", code="context_length_exceeded")
        asked = req.gen.get("max_new_tokens")
        if asked is not None and n + asked > cfg.max_length:
            raise APIError(400, f"{req.max_tokens_param} {asked} is too large: this model's context is {cfg.max_length} tokens "
                                f"and the messages take {n}, so at most {cfg.max_length - n} new tokens fit",
                           param=req.max_tokens_param, code="context_length_exceeded")
        return req

    # CORS (only with --cors-origin)
    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if not origin or not self.cors_origins:
            return []
        if "*" in self.cors_origins:
            allow = "*"
        elif origin in self.cors_origins:
            allow = origin
        else:
            return []
        return [(b"access-control-allow-origin", allow.encode("latin-1")), (b"vary", b"Origin"),
                (b"access-control-expose-headers", b"Retry-After, x-should-retry")]

    def preflight(self, headers: Headers) -> Response:
        origin = headers.get("origin")
        if not self.cors_headers(origin):
            return error_response(APIError(403, f"origin {origin} may not call this API (allowed: {', '.join(self.cors_origins)}; "
                                                "--cors-origin)", type_="permission_error", code="cors_origin_not_allowed"))
        asked = headers.get("access-control-request-headers", "")
        allowed = ", ".join(h.strip() for h in asked.split(",") if h.strip() and all(c.isalnum() or c in "-_" for c in h.strip()))
        return Response(status_code=204, headers={"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                                                  "Access-Control-Allow-Headers": allowed or "Authorization, Content-Type",
                                                  "Access-Control-Max-Age": "600"})


def _auth_error(header: str | None, key: str) -> APIError | None:
    if not header:
        return APIError(401, "You didn't provide an API key: send it in an Authorization header using Bearer auth "
                             "(Authorization: Bearer YOUR_KEY), the key this server was started with "
                             f"(--api-key or {API_KEY_ENV}).", code="missing_api_key")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return APIError(401, "The Authorization header must be 'Bearer YOUR_KEY'.", code="missing_api_key")
    if not hmac.compare_digest(token.strip().encode("latin-1"), key.encode("utf-8")):
        return APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return None


def _request_line(scope) -> str:
    """The request as the access log shows it: the path decoded (readable, 中文 included), which
    is why every log line goes through ``escape_controls``."""
    target = scope.get("path") or "-"
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("utf-8", "backslashreplace")
    return f"{scope.get('method', '-')} {target} HTTP/{scope.get('http_version', '1.1')}"


def _client(scope_or_addr) -> str:
    addr = scope_or_addr.get("client") if isinstance(scope_or_addr, dict) else scope_or_addr
    return f"{addr[0]}:{addr[1]}" if addr else "-"


def log_access(client: str, request_line: str, status: int, seconds: float | None = None) -> None:
    took = f" {seconds:.3f}s" if seconds is not None else ""
    access_log.info("%s", escape_controls(f'{client} "{request_line}" {status}{took}'))


class _LimitedReceive:
    """The body as it streams in, refused (413) once past the limit: nothing beyond it is read."""

    def __init__(self, receive, limit: int):
        self.receive, self.limit, self.total = receive, limit, 0

    async def __call__(self):
        message = await self.receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            if self.total > self.limit:
                raise APIError(413, f"the request body is over this server's {self.limit / 2**20:g} MB limit (--max-request-mb); "
                                    "send a smaller image", code="request_too_large")
        return message


def _drain_cap(limit: int) -> int:
    """Body bytes still read (and dropped) after an early error reply, so the client reads that
    reply instead of a connection reset; past it the connection is closed."""
    return max(4 * limit, MIN_DRAIN_BYTES)


class Guard:
    """The outer layer of the app (inside Starlette's error middleware): CORS preflights, the
    API key, request framing and size, the queue check before a chat body is read, the access
    log. Its refusals are the same JSON as the routes'."""

    def __init__(self, app, api: APIState):
        self.app, self.api = app, api

    def check(self, scope, headers: Headers) -> Response | None:
        api, method, path = self.api, scope["method"], scope["path"]
        if api.cors_origins and method == "OPTIONS" and "access-control-request-method" in headers:
            return api.preflight(headers)
        if api.api_key and path not in PUBLIC_PATHS:
            err = _auth_error(headers.get("authorization"), api.api_key)
            if err is not None:
                return error_response(err)
        length = headers.get("content-length")
        if length is not None and "transfer-encoding" in headers:
            return error_response(APIError(400, "invalid HTTP request: both Content-Length and Transfer-Encoding",
                                           code="invalid_http_request", headers={"Connection": "close"}))
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return error_response(APIError(400, "invalid HTTP request: bad Content-Length", code="invalid_http_request",
                                               headers={"Connection": "close"}))
            if n > api.max_request_bytes:
                close = {"Connection": "close"} if n > _drain_cap(api.max_request_bytes) else None
                return error_response(APIError(413, f"the request body is {n / 2**20:.1f} MB, over this server's "
                                                    f"{api.max_request_bytes / 2**20:g} MB limit (--max-request-mb); send a smaller image",
                                               code="request_too_large", headers=close))
        if method == "POST" and path == CHAT_PATH:
            try:
                scope[PLACE_KEY] = api.generations.reserve()
            except APIError as err:
                return error_response(err)
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, started = time.monotonic(), 0, False
        headers = Headers(scope=scope)
        cors = self.api.cors_headers(headers.get("origin"))

        async def send_logged(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                if cors:
                    message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        try:
            early = self.check(scope, headers)
            if early is not None:
                await early(scope, receive, send_logged)
                return
            try:
                await self.app(scope, _LimitedReceive(receive, self.api.max_request_bytes), send_logged)
            except APIError as err:  # raised outside a route's handler (e.g. the body limit)
                if started:
                    raise
                await error_response(err)(scope, receive, send_logged)
        finally:
            place = scope.pop(PLACE_KEY, None)
            if place is not None:
                place.release()
            log_access(_client(scope), _request_line(scope), status or 499, time.monotonic() - start)


def create_app(engine, *, api_key: str | None = None, allowed: Sequence[Path] = (),
               max_request_bytes: int = int(DEFAULT_MAX_REQUEST_MB * 2**20), max_queue: int = DEFAULT_MAX_QUEUE,
               shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE, cors_origins: Sequence[str] = (),
               model_aliases: Sequence[str] = ()) -> FastAPI:
    """The ASGI app (FastAPI) around ``engine`` (the ``Engine`` interface: ``name``, ``model``,
    ``tokenizer``, ``stream``, ``check_image``, ``config``, ``lock``). Its state is
    ``app.state.remoteglm`` (an ``APIState``); serve it with ``make_server``."""
    api = APIState(engine, api_key=api_key, allowed=allowed, max_request_bytes=max_request_bytes, max_queue=max_queue,
                   shutdown_grace=shutdown_grace, cors_origins=cors_origins, model_aliases=model_aliases)
    app = FastAPI(title="remoteglm: VisualGLM, OpenAI-compatible", version="1",
                  description="OpenAI-format chat completions (text and one image per conversation) from a VisualGLM model. "
                              "Errors are OpenAI's JSON; send `Authorization: Bearer KEY` when the server has a key.",
                  redoc_url=None)
    app.state.remoteglm = api
    for kind in (Exception, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(kind, _handle_error)
    app.add_middleware(Guard, api=api)

    @app.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="The model served and its aliases")
    async def list_models() -> dict:
        return {"object": "list", "data": [api.card(m) for m in api.model_ids]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERROR_RESPONSES, summary="One model")
    async def get_model(model_id: str) -> dict:
        if model_id not in api.model_ids:
            raise _unknown_model(model_id, api)
        return api.card(model_id)

    @app.post(CHAT_PATH, response_model=None, summary="Chat completion, streamed (SSE) or not",
              responses={**ERROR_RESPONSES, 200: {"model": ChatCompletion, "content": {"text/event-stream": {}}}})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        if body.model not in api.model_ids:
            raise _unknown_model(body.model, api)
        place = request.scope.get(PLACE_KEY) or api.generations.reserve()  # (Guard reserved it before the body)
        if api.preparing is None:
            api.preparing = anyio.CapacityLimiter(PREPARING)
        req = await anyio.to_thread.run_sync(api.prepare, body, limiter=api.preparing)
        job = api.generations.admit(req, place)
        watcher = asyncio.create_task(_watch_disconnect(request, job))
        try:
            await job.turn()
            first = await job.first()
        except BaseException:
            job.stop("done")
            watcher.cancel()
            raise
        if req.stream:
            return StreamingResponse(_events(api, job, first, watcher), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            last = first
            async for last in job.replies():
                pass
        finally:
            job.stop("done")
            watcher.cancel()
        return JSONResponse(_completion(api, req, last))

    return app


def _unknown_model(name: str, api: APIState) -> APIError:
    return APIError(404, f"The model `{name}` does not exist: this server serves {', '.join(api.model_ids)} (GET /v1/models)",
                    param="model", code="model_not_found")


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Stop ``job`` when its client goes away (waiting for its turn or being answered)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                job.stop("client")
                return
    except Exception:  # noqa: BLE001 - the request is over
        return


def _ids() -> tuple[str, int]:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())


def _usage(r) -> dict:
    return {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens}


def _completion(api: APIState, req: ChatRequest, last) -> dict:
    if last is None:
        last = _empty_reply()
    text, stopped = _cut_at_stop(_answer(last.text), req.stop)
    cid, created = _ids()
    return {"id": cid, "object": "chat.completion", "created": created, "model": api.engine.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if stopped else last.finish_reason, "logprobs": None}],
            "usage": _usage(last)}


def _empty_reply():
    return Reply("", 0, 0, "stop")


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _events(api: APIState, job: Job, first, watcher: asyncio.Task) -> AsyncIterator[bytes]:
    """The SSE stream of ``job``: a role chunk, content deltas, the finish chunk, usage if asked,
    ``data: [DONE]``. Failing or cut short (shutdown) after it began: an error event, then
    ``data: [DONE]``. The client gone: nothing more."""
    req = job.req
    cid, created = _ids()

    def chunk(delta: dict, finish=None, usage=None, choices: bool = True) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": api.engine.name,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
        if usage is not None:
            obj["usage"] = usage
        return _sse(obj)

    hold = max((len(s) for s in req.stop), default=1) - 1  # chars kept back: they may start a stop string
    sent, last, stopped = "", first, False

    async def replies():
        if first is not None:
            yield first
        async for r in job.replies():
            yield r

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for r in replies():
            last = r
            text, stopped = _cut_at_stop(_answer(r.text), req.stop)
            ready = text if (stopped or r.finish_reason) else text[: max(len(sent), len(text) - hold)]
            if ready.startswith(sent) and len(ready) > len(sent):  # (decoding may rewrite a tail: wait for it)
                yield chunk({"content": ready[len(sent):]})
                sent = ready
            if stopped:
                break
        yield chunk({}, "stop" if stopped else (last.finish_reason if last is not None else "stop"))
        if req.include_usage and last is not None:
            yield chunk({}, usage=_usage(last), choices=False)
        yield b"data: [DONE]\n\n"
    except ClientGone:
        return
    except Exception as e:  # noqa: BLE001 - the status is sent: say it in the stream
        yield _sse(as_api_error(e).body())
        yield b"data: [DONE]\n\n"
    finally:
        job.stop("done")
        watcher.cancel()


# ---- the transport: uvicorn's h11 protocol with deadlines and JSON refusals -------------------------------
@dataclass(frozen=True)
class ServerLimits:
    timeout_header: float = DEFAULT_TIMEOUT_HEADER
    timeout_body: float = DEFAULT_TIMEOUT_BODY
    drain_bytes: int = MIN_DRAIN_BYTES


class _Connection(h11.Connection):
    """h11's connection, remembering the parse error it raised (for the JSON reply)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.last_error = e
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus what it lacks: a deadline for the request line and headers
    (from the connection's first byte, or its opening), one for the body, a cap on body bytes
    read after an early reply, and JSON instead of plain text for malformed requests (400/431,
    closed), timeouts (408, closed) and the connection limit (503). ``limits``: set per server
    by ``make_server``."""

    limits = ServerLimits()

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(h11.SERVER, config.h11_max_incomplete_event_size or MAX_HEADER_BYTES)
        self.real_app = self.app
        self.max_connections = self.limit_concurrency or 0
        self.limit_concurrency = None  # checked below, answered in JSON (uvicorn's own 503 is plain text)
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._bytes = 0  # of the request being received
        self._drained = 0
        self._over = False

    # deadlines
    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        if seconds and seconds > 0:
            self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expired(self) -> None:
        phase = self._phase
        self._timer, self._phase = None, None
        if self.transport.is_closing():
            return
        if phase == "headers" and self._bytes:
            self._refuse(APIError(408, f"the request line and headers did not arrive within {self.limits.timeout_header:g} s "
                                       "(--timeout-header)", code="request_timeout"), "(request headers too slow)")
        elif phase == "body" and self.cycle is not None and not self.cycle.response_started:
            self._refuse(APIError(408, f"the request body did not arrive within {self.limits.timeout_body:g} s (--timeout-body)",
                                  code="request_timeout"), "(request body too slow)")
            self.cycle.disconnected = True  # the app's reply, if any, goes nowhere
            self.cycle.message_event.set()
        self.transport.close()

    def _refuse(self, err: APIError, what: str) -> None:
        """Write ``err`` as a complete JSON response and log it; the caller closes the connection."""
        body = json.dumps(err.body(), ensure_ascii=False).encode("utf-8")
        try:
            phrase = http.HTTPStatus(err.status).phrase
        except ValueError:
            phrase = ""
        head = [f"HTTP/1.1 {err.status} {phrase}", "content-type: application/json", f"content-length: {len(body)}",
                "connection: close", *(f"{k}: {v}" for k, v in (err.headers or {}).items())]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        log_access(_client(self.client), what, err.status)

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._bytes = 0
        # the first max_connections connections are served; later ones get 503 while that many are open
        self._over = 0 < self.max_connections < len(self.connections)
        self._arm("headers", self.limits.timeout_header)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        state = self.conn.their_state
        if state is h11.IDLE:  # (part of) a new request
            if self._phase != "headers":
                self._bytes = 0
                self._arm("headers", self.limits.timeout_header)
            self._bytes += len(data)
            self._over = self._over and len(self.connections) > self.max_connections
            busy = self._over or 0 < self.max_connections <= len(self.tasks)
            self.app = self._too_many if busy else self.real_app
        elif state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
            self._drained += len(data)  # uvicorn reads and drops the rest of a body after the reply
            if self._drained > self.limits.drain_bytes:
                self._disarm()
                self.transport.close()
                return
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._drained = 0
                self._arm("body", self.limits.timeout_body)
        elif state is h11.IDLE:
            if self._phase != "headers":
                self._bytes = 0
                self._arm("headers", self.limits.timeout_header)
        else:
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        err = self.conn.last_error
        status = getattr(err, "error_status_hint", 400) or 400
        detail = (str(err) if err is not None else msg)[:200]
        self._disarm()
        self._refuse(APIError(status, f"invalid HTTP request: {detail}", code="invalid_http_request"), "(invalid HTTP request)")
        self.transport.close()

    async def _too_many(self, scope, receive, send) -> None:
        err = APIError(503, f"too many connections: this server takes {self.max_connections} at a time (--max-connections); "
                            "retry in a moment", type_="server_error", code="too_many_connections", headers={"Retry-After": "1"})
        await error_response(err)(scope, receive, send)
        log_access(_client(scope), _request_line(scope), 503)


class APIServer(uvicorn.Server):
    """uvicorn's server on a socket bound (and listening) before it starts, so the URL is known
    at once (port 0 works). On SIGTERM / Ctrl-C it shuts down gracefully (see the module doc)
    and returns from ``run`` instead of re-raising the signal; a second Ctrl-C stops waiting."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, api: APIState | None):
        super().__init__(config)
        self.sock, self.api = sock, api

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def run(self, sockets=None) -> None:
        super().run(sockets=[self.sock])

    def handle_exit(self, sig, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def shutdown(self, sockets=None) -> None:
        if self.api is not None:
            self.api.begin_shutdown()
        await super().shutdown(sockets=sockets)


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    sock = None
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(backlog)
        sock.setblocking(False)
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        raise RemoteGLMError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port") from None


def make_server(app, host: str = "127.0.0.1", port: int = 8000, *, timeout_header: float = DEFAULT_TIMEOUT_HEADER,
                timeout_body: float = DEFAULT_TIMEOUT_BODY, timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE,
                max_connections: int = DEFAULT_MAX_CONNECTIONS, backlog: int = BACKLOG) -> APIServer:
    """Bind ``host:port`` (0: any free port) and return the uvicorn server for ``app`` (from
    ``create_app``) with these transport limits; ``server.url`` is its base URL, ``server.run()``
    serves until SIGTERM / Ctrl-C (or ``server.should_exit = True``)."""
    api = getattr(getattr(app, "state", None), "remoteglm", None)
    limits = ServerLimits(timeout_header, timeout_body, _drain_cap(api.max_request_bytes) if api else MIN_DRAIN_BYTES)
    protocol = type("RemoteGLMProtocol", (GuardedH11Protocol,), {"limits": limits})
    grace = api.shutdown_grace if api else 0.0
    config = uvicorn.Config(
        app, http=protocol, ws="none", lifespan="off", log_config=None, access_log=False, proxy_headers=False,
        server_header=False, limit_concurrency=max_connections or None, backlog=backlog,
        timeout_keep_alive=timeout_keep_alive, timeout_graceful_shutdown=math.ceil(grace + 5),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES)
    return APIServer(config, _bind(host, port, backlog), api)


# ---- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m remoteglm.serve.api", description="OpenAI-compatible API for VisualGLM: POST /v1/chat/completions, GET /v1/models.")
    add_model_args(ap)
    add_host_arg(ap)
    ap.add_argument("--port", type=int, default=8000, help="port (0: any free port; the URL is printed)")
    ap.add_argument("--api-key", dest="api_key", default=None,
                    help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV}, which keeps the key out of the process list)")
    ap.add_argument("--allow-path", dest="allow_path", action="append", default=[], metavar="DIR",
                    help="directory whose images requests may name by local path (repeatable; default: none)")
    ap.add_argument("--max-request-mb", dest="max_request_mb", type=float, default=DEFAULT_MAX_REQUEST_MB,
                    help=f"largest request body (base64 images included), MB (default {DEFAULT_MAX_REQUEST_MB:g})")
    ap.add_argument("--max_new_tokens", type=int, default=None, help="cap on answer tokens per request (default: none beyond the model's defaults)")
    ap.add_argument("--model-name", dest="model_name", default=None, help="model id reported by /v1/models (default: the directory name)")
    ap.add_argument("--model-alias", dest="model_alias", action="append", default=[], metavar="NAME",
                    help="another name requests may use for the model (repeatable); any other name gets 404 model_not_found")
    ap.add_argument("--max-queue", dest="max_queue", type=int, default=DEFAULT_MAX_QUEUE,
                    help=f"requests that may wait behind the answer being generated; more get 429 (default {DEFAULT_MAX_QUEUE})")
    ap.add_argument("--max-connections", dest="max_connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                    help=f"open connections at once; more get 503 (default {DEFAULT_MAX_CONNECTIONS})")
    ap.add_argument("--timeout-header", dest="timeout_header", type=float, default=DEFAULT_TIMEOUT_HEADER,
                    help=f"seconds a client has to send the request line and headers (default {DEFAULT_TIMEOUT_HEADER:g})")
    ap.add_argument("--timeout-body", dest="timeout_body", type=float, default=DEFAULT_TIMEOUT_BODY,
                    help=f"seconds a client has to send the request body (default {DEFAULT_TIMEOUT_BODY:g})")
    ap.add_argument("--timeout-keep-alive", dest="timeout_keep_alive", type=float, default=DEFAULT_TIMEOUT_KEEP_ALIVE,
                    help=f"seconds an idle connection stays open between requests (default {DEFAULT_TIMEOUT_KEEP_ALIVE:g})")
    ap.add_argument("--shutdown-grace", dest="shutdown_grace", type=float, default=DEFAULT_SHUTDOWN_GRACE,
                    help=f"on SIGTERM / Ctrl-C, seconds the answer being generated gets to finish (default {DEFAULT_SHUTDOWN_GRACE:g})")
    ap.add_argument("--cors-origin", dest="cors_origin", action="append", default=[], metavar="ORIGIN",
                    help="let browser pages from ORIGIN (e.g. http://localhost:5173; * for any) call the API (repeatable; default: none)")
    return ap


def _check_args(args) -> list[Path]:
    if args.max_request_mb <= 0:
        raise RemoteGLMError("--max-request-mb must be positive")
    if args.max_queue < 0 or args.max_connections < 1:
        raise RemoteGLMError("--max-queue must be >= 0 and --max-connections >= 1")
    if min(args.timeout_header, args.timeout_body, args.timeout_keep_alive) <= 0 or args.shutdown_grace < 0:
        raise RemoteGLMError("the --timeout-* values must be positive and --shutdown-grace >= 0")
    allowed = []
    for d in args.allow_path:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise RemoteGLMError(f"--allow-path {d}: not a directory")
        allowed.append(p.resolve())
    return allowed


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(message)s"))
    for name, level in (("remoteglm.api", logging.INFO), ("uvicorn", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allowed = _check_args(args)
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    import torch

    from remoteglm.compat import single_process_env
    from remoteglm.model.checkpoint import trust_checkpoints
    from remoteglm.model.quant import describe_quant, load_model_quantized, memory_summary
    from remoteglm.serve.generation import CHAT_DEFAULTS

    single_process_env()
    trust_checkpoints(args.trust_checkpoint)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"loading {args.from_pretrained} on {device} ...", file=sys.stderr, flush=True)
    model, tok, _ = load_model_quantized(args.from_pretrained, args.quant, tokenizer=args.tokenizer, device=device, dtype=args.dtype)
    name = args.model_name or Path(args.from_pretrained).expanduser().resolve().name
    print(f"{name}: {describe_quant(model)}, {memory_summary(model)}", file=sys.stderr, flush=True)
    engine = Engine(model, tok, name=name, quant=describe_quant(model), defaults=CHAT_DEFAULTS, max_new_tokens=args.max_new_tokens)
    app = create_app(engine, api_key=key, allowed=allowed, max_request_bytes=int(args.max_request_mb * 2**20),
                     max_queue=args.max_queue, shutdown_grace=args.shutdown_grace, cors_origins=args.cors_origin,
                     model_aliases=args.model_alias)
    server = make_server(app, args.host, args.port, timeout_header=args.timeout_header, timeout_body=args.timeout_body,
                         timeout_keep_alive=args.timeout_keep_alive, max_connections=args.max_connections)
    _setup_logging()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(PUBLIC_HOSTS_WARNING.format(host=args.host, port=server.sock.getsockname()[1],
                                          key="" if key else " (no --api-key is set)"), file=sys.stderr, flush=True)
    print(f"serving {name} ({engine.quant}) at {server.url}  (POST /chat/completions, GET /models)", flush=True)
    try:
        server.run()
    finally:
        app.state.remoteglm.close(timeout=args.shutdown_grace + 10)
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
