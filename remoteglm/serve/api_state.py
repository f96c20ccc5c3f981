"""What the API's application shares (``APIState``): the engine and its queue, the key, the
allowed image folders and limits, the model ids, the CORS origins; the checks a chat request
passes before it queues (``prepare``), CORS answers, and the options the transport takes from it
(``server_options``), the scene jobs (``scenes``) and each route's body limit (``body_limit``).
The defaults of the limits are here, the command line's too."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import anyio
from fastapi.responses import Response
from starlette.datastructures import Headers

from remoteglm.errors import RemoteGLMError
from remoteglm.serve.api_errors import APIError, error_response
from remoteglm.serve.api_queue import Generations
from remoteglm.serve.api_request import ChatRequest, parse_chat_request
from remoteglm.serve.openai_schema import ChatCompletionRequest
from remoteglm.serve.scene_jobs import SceneJobs, SceneLimits

DEFAULT_MAX_REQUEST_MB = 20.0
DEFAULT_MAX_QUEUE = 16
DEFAULT_MAX_BATCH = 8
DEFAULT_SHUTDOWN_GRACE = 10.0
API_KEY_ENV = "REMOTEGLM_API_KEY"
CHAT_PATH = "/v1/chat/completions"
SCENES_PATH = "/v1/scenes"  # POST: a raster upload, up to its own limit (serve.api_scene)
PLACE_KEY = "remoteglm.place"  # the ASGI scope key of a chat request's reserved queue place


class APIState:
    """What the routes, the middleware and the server share."""

    def __init__(self, engine, *, api_key: str | None, allowed: Sequence[Path], max_request_bytes: int, max_queue: int,
                 shutdown_grace: float, cors_origins: Sequence[str], model_aliases: Sequence[str],
                 max_batch: int = DEFAULT_MAX_BATCH, scenes: SceneLimits = SceneLimits()):
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
        self.scenes = SceneJobs(engine, scenes)

    def card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "remoteglm"}

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """(the most body bytes a request may send, what to send instead): a scene upload has its
        own limit (--max_scene_mb), every other request --max_request_mb."""
        if method == "POST" and path == SCENES_PATH:
            return self.scenes.limits.max_bytes, "--max_scene_mb; send a smaller raster"
        return self.max_request_bytes, "--max_request_mb; send a smaller image"

    def begin_shutdown(self) -> None:
        self.generations.begin_shutdown(self.shutdown_grace)
        self.scenes.begin_shutdown()

    def close(self, timeout: float = 10.0) -> None:
        self.generations.stop_all(timeout)
        self.scenes.close(timeout)

    def prepare(self, body: ChatCompletionRequest) -> ChatRequest:
        """Everything checked before a request queues (in a worker thread: it reads files and
        decodes the image): 400 for bad input, a prompt or ``max_tokens`` beyond the context."""

        req = parse_chat_request(body, self.allowed, self.max_request_bytes)
        if req.n > self.generations.max_batch:
            raise APIError(400, f"n {req.n} is more than this server generates at once (--max_batch "
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

    def server_options(self) -> dict:
        """What ``api_transport.make_server`` takes from the app: the body limit, the grace
        period, and ``begin_shutdown`` to call when the server stops."""
        return {"max_request_bytes": self.max_request_bytes, "shutdown_grace": self.shutdown_grace,
                "on_shutdown": self.begin_shutdown,
                "body_timeouts": ((SCENES_PATH, self.scenes.limits.upload_timeout, "--timeout_scene_upload"),)}

    # CORS (only with --cors_origin)
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
                                                "--cors_origin)", type_="permission_error", code="cors_origin_not_allowed"))
        asked = headers.get("access-control-request-headers", "")
        allowed = ", ".join(h.strip() for h in asked.split(",") if h.strip() and all(c.isalnum() or c in "-_" for c in h.strip()))
        return Response(status_code=204, headers={"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                                                  "Access-Control-Allow-Headers": allowed or "Authorization, Content-Type",
                                                  "Access-Control-Max-Age": "600"})
