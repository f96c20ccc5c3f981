"""The API's application (``create_app``): FastAPI with the error handler, the ``Guard``
middleware and the routes: GET /v1/models, GET /v1/models/{id}, POST /v1/chat/completions (a
request is checked in a worker thread, queued, answered in a batch, streamed or not), and the
scene routes of ``api_scene`` (POST /v1/scenes ...). Serve it
with ``api_transport.make_server(app, host, port, **app.state.remoteglm.server_options())``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Sequence

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from remoteglm.serve.api_errors import APIError, handle_error
from remoteglm.serve.api_guard import Guard
from remoteglm.serve.api_scene import add_scene_routes
from remoteglm.serve.api_queue import Job
from remoteglm.serve.api_replies import completion, events
from remoteglm.serve.api_state import (CHAT_PATH, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_MB,
                                       DEFAULT_SHUTDOWN_GRACE, PLACE_KEY, APIState)
from remoteglm.serve.openai_schema import ERROR_RESPONSES, ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from remoteglm.serve.scene_jobs import SceneLimits

PREPARING = 2  # requests read and checked at once (worker threads: image decoding takes memory)


def create_app(engine, *, api_key: str | None = None, allowed: Sequence[Path] = (),
               max_request_bytes: int = int(DEFAULT_MAX_REQUEST_MB * 2**20), max_queue: int = DEFAULT_MAX_QUEUE,
               shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE, cors_origins: Sequence[str] = (),
               model_aliases: Sequence[str] = (), max_batch: int = DEFAULT_MAX_BATCH,
               scenes: SceneLimits = SceneLimits()) -> FastAPI:
    """The ASGI app (FastAPI) around ``engine`` (the ``Engine`` interface: ``name``, ``model``,
    ``tokenizer``, ``stream``, ``check_image``, ``config``, ``lock``). Its state is
    ``app.state.remoteglm`` (an ``APIState``), whose ``server_options()`` go to ``make_server``.
    ``scenes``: the limits of the scene routes (``api_scene``)."""
    api = APIState(engine, api_key=api_key, allowed=allowed, max_request_bytes=max_request_bytes, max_queue=max_queue,
                   shutdown_grace=shutdown_grace, cors_origins=cors_origins, model_aliases=model_aliases,
                   max_batch=max_batch, scenes=scenes)
    app = FastAPI(title="remoteglm: OpenAI-compatible", version="1",
                  description="OpenAI-format chat completions (text and one image per conversation) from a model of any family. "
                              "Errors are OpenAI's JSON; send `Authorization: Bearer KEY` when the server has a key.",
                  redoc_url=None)
    app.state.remoteglm = api
    for kind in (Exception, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(kind, handle_error)
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
            return StreamingResponse(events(api.engine.name, job, first, watcher, api.engine), media_type="text/event-stream",
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
        return JSONResponse(completion(api.engine.name, req, [lasts.get(k) for k in range(job.n)], api.engine))

    add_scene_routes(app, api)
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
