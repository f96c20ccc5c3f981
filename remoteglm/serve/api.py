"""An OpenAI-compatible HTTP API for VisualGLM (``python -m remoteglm.serve.api``), on FastAPI + uvicorn.

    POST /v1/chat/completions   OpenAI chat format, streaming (SSE, ending in ``data: [DONE]``) or not
    GET  /v1/models             the model served and its aliases; GET /v1/models/{id}: one of them
    GET  /docs, /openapi.json   the OpenAPI description (no key needed: it holds no data)

A message's ``content`` is a string or a list of ``{"type": "text"}`` / ``{"type": "image_url"}``
parts; the image is a ``data:image/...;base64,`` URL or a local path (``file://`` or plain) under
one of the ``--allow-path`` directories. VisualGLM talks about one image per conversation: the
last image in the messages is used. Earlier user/assistant turns become the history; system
messages go to the model's template's system role (GLM-4.1V, Qwen2.5-VL), or in front of the first
question for VisualGLM, which has none. ``model`` must be
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
- ``--max-connections`` [64]: requests being answered at once (their head arrived); more get 503.
  Connections without one (idle, or still sending the head) do not count: 256 are kept, a new
  one closes the longest idle. Backlog 2048; request line + headers at most 16 KiB (431 beyond).
- ``--max-queue`` [16]: requests waiting for the model behind the batch being answered; more get
  429 with Retry-After (when the running batch will end, at its pace so far), before their body
  is read.
- ``--max-batch`` [8]: answers generated together. When the model is free, the waiting requests
  start as one batch (one forward pass per token for all; those with the same sampling settings,
  first come first; ``n`` choices are ``n`` rows), each still streamed and ended on its own.

One model, one batch at a time, in a worker thread; a client that disconnects (streaming or not,
waiting or being answered) leaves at once if it was waiting, else its row leaves the batch at the
next token. Shutdown (SIGTERM, Ctrl-C):
the server stops accepting, waiting requests get 503, the answers being generated get
``--shutdown-grace`` [10 s] to finish and is then cut (a stream ends with an error event and
``data: [DONE]``, a plain request gets 503), the worker thread is stopped and joined, exit 0.

Binds 127.0.0.1 unless told otherwise; ``--api-key`` (or ``REMOTEGLM_API_KEY``) makes every route
but the docs require ``Authorization: Bearer KEY``. ``--cors-origin`` (repeatable, ``*`` for any)
lets browser pages from those origins call the API. The access log (stderr) starts each line
with its ISO 8601 time and shows control characters in requests as escapes.

Library use: ``create_app(engine, ...)`` builds the ASGI app around any object with the
``Engine`` interface; ``make_server(app, host, port, ...)`` binds and returns the uvicorn server
with this module's transport limits (``server.run()`` blocks; a thread may run it).

Split by concern: ``openai_schema`` (errors, request/response bodies, request parsing),
``api_queue`` (the batches and their queue), ``api_transport`` (the h11
protocol, the server, ``make_server``), ``api_log`` (the escaped logs); this module keeps the
application and the command line, and its names stay importable from here.
"""


from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import AsyncIterator, Sequence

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.serve.api_log import EscapingFormatter, _client, _request_line, access_log, escape_controls, log, log_access
from remoteglm.serve.api_queue import Generations, Job, Reservation
from remoteglm.serve.api_transport import (BACKLOG, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_BODY, DEFAULT_TIMEOUT_HEADER,
                                           DEFAULT_TIMEOUT_KEEP_ALIVE, MAX_HEADER_BYTES, MIN_DRAIN_BYTES, APIServer,
                                           GuardedH11Protocol, ServerLimits, _drain_cap, make_server)
from remoteglm.serve.engine import Reply
from remoteglm.serve.openai_schema import (ERROR_RESPONSES, ROUTES_HINT, APIError, AssistantMessage, ChatCompletion,
                                           ChatCompletionRequest, ChatRequest, Choice, ClientGone, ContentPart,
                                           ErrorDetail, ErrorResponse, ImagePart, ImageURL, Message, ModelCard, ModelList,
                                           StreamOptions, TextPart, Usage, _answer, _cut_at_stop, _handle_error,
                                           as_api_error, error_response, internal_error, parse_chat_request, resolve_image,
                                           shutting_down, validation_error)
from remoteglm.options import add_host_arg, add_model_args

__all__ = [  # the module's public names, those of the modules it was split into included
    "API_KEY_ENV", "BACKLOG", "CHAT_PATH", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_QUEUE", "DEFAULT_MAX_REQUEST_MB",
    "DEFAULT_SHUTDOWN_GRACE", "DEFAULT_TIMEOUT_BODY", "DEFAULT_TIMEOUT_HEADER", "DEFAULT_TIMEOUT_KEEP_ALIVE",
    "ERROR_RESPONSES", "MAX_HEADER_BYTES", "MIN_DRAIN_BYTES", "PLACE_KEY", "PREPARING", "PUBLIC_HOSTS_WARNING",
    "PUBLIC_PATHS", "ROUTES_HINT",
    "APIError", "APIServer", "APIState", "AssistantMessage", "ChatCompletion", "ChatCompletionRequest", "ChatRequest",
    "Choice", "ClientGone", "ContentPart", "EscapingFormatter", "ErrorDetail", "ErrorResponse", "Generations", "Guard",
    "GuardedH11Protocol", "ImagePart", "ImageURL", "Job", "Message", "ModelCard", "ModelList", "Reservation",
    "ServerLimits", "StreamOptions", "TextPart", "Usage",
    "access_log", "as_api_error", "build_parser", "create_app", "error_response", "escape_controls", "internal_error",
    "log", "log_access", "main", "make_server", "parse_chat_request", "resolve_image", "shutting_down",
    "validation_error",
]

DEFAULT_MAX_REQUEST_MB = 20.0
DEFAULT_MAX_QUEUE = 16
DEFAULT_MAX_BATCH = 8
DEFAULT_SHUTDOWN_GRACE = 10.0
API_KEY_ENV = "REMOTEGLM_API_KEY"
CHAT_PATH = "/v1/chat/completions"
PLACE_KEY = "remoteglm.place"  # the ASGI scope key of a chat request's reserved queue place
PREPARING = 2  # requests read and checked at once (worker threads: image decoding takes memory)
PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
PUBLIC_HOSTS_WARNING = (
    "warning: --host {host} makes the server reachable from other machines; anyone who can reach "
    "port {port} can use the model{key}. Bind 127.0.0.1 unless you mean it."
)


# ---- the application ------------------------------------------------------------------------------
class APIState:
    """What the routes, the middleware and the server share."""

    def __init__(self, engine, *, api_key: str | None, allowed: Sequence[Path], max_request_bytes: int, max_queue: int,
                 shutdown_grace: float, cors_origins: Sequence[str], model_aliases: Sequence[str],
                 max_batch: int = DEFAULT_MAX_BATCH):
        self.engine = engine
        self.api_key = api_key or None
        self.allowed = [Path(d).expanduser().resolve() for d in allowed]
        self.max_request_bytes = int(max_request_bytes)
        self.generations = Generations(engine, max_queue, max_batch)
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

        req = parse_chat_request(body, self.allowed, self.max_request_bytes)
        if req.n > self.generations.max_batch:
            raise APIError(400, f"n {req.n} is more than this server generates at once (--max-batch "
                                f"{self.generations.max_batch})", param="n")
        engine = self.engine
        if req.image is not None:
            try:
                req.image = engine.load_image(req.image)  # decoded once, here, at the size the model uses
            except RemoteGLMError as err:
                raise APIError(400, f"bad image: {err}", param="image_url") from None
        try:
            cfg = engine.config(**req.gen)
        except RemoteGLMError as err:
            raise APIError(400, str(err)) from None
        n = engine.prompt_tokens(req.query, req.history, cfg.english, image=req.image, system=req.system)
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


def _content_type_error(value: str | None) -> APIError | None:
    """400 naming the content type for a chat body not declared as JSON (FastAPI, strict about it
    so that a browser page cannot post one without a CORS preflight, would only say that the body
    is not an object)."""
    media = (value or "").split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if kind == "application" and (sub == "json" or sub.endswith("+json")):
        return None
    got = f"'{escape_controls(media[:100])}'" if media else "none"
    return APIError(400, f"the request body must be JSON sent with 'Content-Type: application/json' (Content-Type: {got})",
                    code="unsupported_content_type")


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
            err = _content_type_error(headers.get("content-type"))
            if err is not None:
                return error_response(err)
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
               model_aliases: Sequence[str] = (), max_batch: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """The ASGI app (FastAPI) around ``engine`` (the ``Engine`` interface: ``name``, ``model``,
    ``tokenizer``, ``stream``, ``check_image``, ``config``, ``lock``). Its state is
    ``app.state.remoteglm`` (an ``APIState``); serve it with ``make_server``."""
    api = APIState(engine, api_key=api_key, allowed=allowed, max_request_bytes=max_request_bytes, max_queue=max_queue,
                   shutdown_grace=shutdown_grace, cors_origins=cors_origins, model_aliases=model_aliases,
                   max_batch=max_batch)
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
        lasts: dict = {}
        try:
            if first is not None:
                lasts[first[0]] = first[1]
            async for k, r in job.replies():
                lasts[k] = r
        finally:
            job.stop("done")
            watcher.cancel()
        return JSONResponse(_completion(api, req, [lasts.get(k) for k in range(job.n)]))

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


def _usage(replies) -> dict:
    """Usage of a request's choices: the prompt once, every choice's answer."""
    done = [r for r in replies if r is not None]
    prompt = done[0].prompt_tokens if done else 0
    completion = sum(r.completion_tokens for r in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(api: APIState, req: ChatRequest, lasts: list) -> dict:
    """The response body of a request whose choices ended with the replies ``lasts``."""
    lasts = [r if r is not None else _empty_reply() for r in lasts]
    choices = []
    for k, last in enumerate(lasts):
        text, stopped = _cut_at_stop(_answer(last.text), req.stop)
        choices.append({"index": k, "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop" if stopped else last.finish_reason, "logprobs": None})
    cid, created = _ids()
    return {"id": cid, "object": "chat.completion", "created": created, "model": api.engine.name, "choices": choices,
            "usage": _usage(lasts)}


def _empty_reply():
    return Reply("", 0, 0, "stop")


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


async def _events(api: APIState, job: Job, first, watcher: asyncio.Task) -> AsyncIterator[bytes]:
    """The SSE stream of ``job``: per choice a role chunk, content deltas and its finish chunk;
    usage if asked; ``data: [DONE]``. Failing or cut short (shutdown) after it began: an error
    event, then ``data: [DONE]``. The client gone: nothing more."""
    req = job.req
    cid, created = _ids()

    def chunk(k: int | None, delta: dict | None = None, finish=None, usage=None) -> bytes:
        obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": api.engine.name,
               "choices": [{"index": k, "delta": delta, "finish_reason": finish, "logprobs": None}] if k is not None else []}
        if usage is not None:
            obj["usage"] = usage
        return _sse(obj)

    hold = max((len(s) for s in req.stop), default=1) - 1  # chars kept back: they may start a stop string
    sent = [""] * job.n
    lasts: list = [None] * job.n
    ended = [False] * job.n

    async def replies():
        if first is not None:
            yield first
        async for r in job.replies():
            yield r

    try:
        for k in range(job.n):
            yield chunk(k, {"role": "assistant", "content": ""})
        async for k, r in replies():
            if ended[k]:
                continue
            lasts[k] = r
            text, stopped = _cut_at_stop(_answer(r.text), req.stop)
            ready = text if (stopped or r.finish_reason) else text[: max(len(sent[k]), len(text) - hold)]
            if ready.startswith(sent[k]) and len(ready) > len(sent[k]):  # (decoding may rewrite a tail: wait for it)
                yield chunk(k, {"content": ready[len(sent[k]):]})
                sent[k] = ready
            if stopped or r.finish_reason:
                ended[k] = True
                yield chunk(k, {}, "stop" if stopped else r.finish_reason)
                if all(ended):
                    break
        for k in range(job.n):
            if not ended[k]:  # (no final reply: the answer ended without one)
                yield chunk(k, {}, "stop")
        if req.include_usage and any(r is not None for r in lasts):
            yield chunk(None, usage=_usage(lasts))
        yield b"data: [DONE]\n\n"
    except ClientGone:
        return
    except Exception as e:  # noqa: BLE001 - the status is sent: say it in the stream
        yield _sse(as_api_error(e).body())
        yield b"data: [DONE]\n\n"
    finally:
        job.stop("done")
        watcher.cancel()


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
                    help=f"requests that may wait behind the batch being generated; more get 429 (default {DEFAULT_MAX_QUEUE})")
    ap.add_argument("--max-batch", dest="max_batch", type=int, default=DEFAULT_MAX_BATCH,
                    help=f"answers generated together, one forward pass per token for all (default {DEFAULT_MAX_BATCH}; "
                         "each costs its own KV cache: lower it if the GPU runs out of memory)")
    ap.add_argument("--max-connections", dest="max_connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                    help=f"requests answered at once (idle connections do not count); more get 503 (default {DEFAULT_MAX_CONNECTIONS})")
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
    if args.max_queue < 0 or args.max_connections < 1 or args.max_batch < 1:
        raise RemoteGLMError("--max-queue must be >= 0, --max-connections and --max-batch >= 1")
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
    handler.setFormatter(EscapingFormatter())
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
    from remoteglm.compat import single_process_env
    from remoteglm.device import default_device
    from remoteglm.model.checkpoint import trust_checkpoints
    from remoteglm.serve.generation import CHAT_DEFAULTS
    from remoteglm.serve.loading import load_engine

    single_process_env()
    trust_checkpoints(args.trust_checkpoint)
    device = default_device(args.device)
    print(f"loading {args.from_pretrained} on {device} ...", file=sys.stderr, flush=True)
    name = args.model_name or Path(args.from_pretrained).expanduser().resolve().name
    engine, memory = load_engine(args.from_pretrained, quant=args.quant, tokenizer=args.tokenizer, device=device,
                                 dtype=args.dtype, name=name, defaults=CHAT_DEFAULTS, max_new_tokens=args.max_new_tokens,
                                 min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    print(f"{name}: {engine.quant}, {memory}", file=sys.stderr, flush=True)
    app = create_app(engine, api_key=key, allowed=allowed, max_request_bytes=int(args.max_request_mb * 2**20),
                     max_queue=args.max_queue, shutdown_grace=args.shutdown_grace, cors_origins=args.cors_origin,
                     model_aliases=args.model_alias, max_batch=args.max_batch)
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
