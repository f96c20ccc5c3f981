"""An OpenAI-compatible HTTP API for VisualGLM (``python -m remoteglm.serve.api``), on FastAPI + uvicorn.

    POST /v1/chat/completions   OpenAI chat format, streaming (SSE, ending in ``data: [DONE]``) or not
    GET  /v1/models             the model served and its aliases; GET /v1/models/{id}: one of them
    POST /v1/scenes             a whole raster (GeoTIFF / COG / JPEG 2000 upload, or a path under
                                --scene_root) answered tile by tile: GeoJSON, summary, quicklook
                                (``api_scene``; GET/DELETE /v1/scenes/{id}, .../quicklook.png)
    GET  /docs, /openapi.json   the OpenAPI description (no key needed: it holds no data)

A message's ``content`` is a string or a list of ``{"type": "text"}`` / ``{"type": "image_url"}``
parts; the image is a ``data:image/...;base64,`` URL or a local path (``file://`` or plain) under
one of the ``--allow_path`` directories. VisualGLM talks about one image per conversation: the
last image in the messages is used. Earlier user/assistant turns become the history; system
messages go to the model's template's system role (GLM-4.1V, Qwen2.5-VL), or in front of the first
question for VisualGLM, which has none. ``model`` must be
the served name or one of its ``--model_alias`` names. Extra sampling fields beside the OpenAI
ones: ``top_k``, ``repetition_penalty``.

Boxes (grounding): when the request has an image, each choice's ``message`` also carries
``boxes``, ``[{"bbox": [x1, y1, x2, y2], "label": "储油罐" | null}]``, the boxes of its answer
in pixels of the ORIGINAL image (top left, bottom right), read with the model family's own box
format at the resolution served, so a client need not know it; ``[]`` when the answer has none.
Streamed, they come in the ``delta`` of each choice's finish chunk. (openai SDK:
``choice.message.boxes``, ``chunk.choices[0].delta.boxes``.)

Every error, on any path and with any method, is OpenAI's JSON ``{"error": {"message", "type",
"param", "code"}}``: the routes' own (400 bad input, 401 missing or wrong key, 403 path not
allowed, 404 unknown model or URL, 405, 413 too large, 429 queue full, 500 internal, 503 shutting
down) and the transport's (400 malformed HTTP, 408 too slow, 431 headers too large, 503 too many
connections). A 500 carries ``x-should-retry: false`` (the openai SDK would otherwise retry the
failing generation); 429 and 503 carry ``Retry-After``.

Limits (command-line flags, defaults in brackets):

- ``--max_request_mb`` [20]: the request body. A larger Content-Length gets 413 before the body is
  read; a chunked body is counted as it streams in and refused once past the limit. Malformed
  framing (``Content-Length: -1``, two lengths, Content-Length beside Transfer-Encoding) gets 400
  and the connection is closed, so no body is ever read as the next request.
- ``--timeout_header`` [10 s]: to send the request line and headers; ``--timeout_body`` [60 s]:
  to send the body; ``--timeout_keep_alive`` [5 s]: an idle connection between requests. A slow
  client gets 408 and is disconnected.
- ``--max_connections`` [64]: requests being answered at once (their head arrived); more get 503.
  Connections without one (idle, or still sending the head) do not count: 256 are kept, a new
  one closes the longest idle. Backlog 2048; request line + headers at most 16 KiB (431 beyond).
- ``--max_queue`` [16]: requests waiting for the model behind the batch being answered; more get
  429 with Retry-After (when the running batch will end, at its pace so far), before their body
  is read.
- Scenes (``api_scene``, ``scene_jobs``): ``--max_scene_mb`` [2048] the upload, streamed to a
  file in ``--scene_dir`` [the system's temp folder; not a tmpfs for large scenes], never held in
  memory; ``--timeout_scene_upload`` [1800 s] to send it (instead of --timeout_body);
  ``--max_scene_jobs`` [4] queued, running or uploading, more get 429; ``--scene_keep_minutes``
  [60] results kept after a job ends; ``--scene_root DIR`` (repeatable; default none) lets JSON
  requests name rasters under DIR instead of uploading them. A job takes the model one batch of
  tiles at a time, first come first served with the chat batches, so chat is never held up for
  more than one batch of tiles.
- ``--max_batch`` [8]: answers generated together. When the model is free, the waiting requests
  start as one batch (one forward pass per token for all; those with the same sampling settings,
  first come first; ``n`` choices are ``n`` rows), each still streamed and ended on its own.

One model, one batch at a time, in a worker thread; a client that disconnects (streaming or not,
waiting or being answered) leaves at once if it was waiting, else its row leaves the batch at the
next token. Shutdown (SIGTERM, Ctrl-C):
the server stops accepting, waiting requests get 503, the answers being generated get
``--shutdown_grace`` [10 s] to finish and is then cut (a stream ends with an error event and
``data: [DONE]``, a plain request gets 503), the worker thread is stopped and joined, exit 0.

Binds 127.0.0.1 unless told otherwise; ``--api_key`` (or ``REMOTEGLM_API_KEY``) makes every route
but the docs require ``Authorization: Bearer KEY``. ``--cors_origin`` (repeatable, ``*`` for any)
lets browser pages from those origins call the API. The access log (stderr) starts each line
with its ISO 8601 time and shows control characters in requests as escapes.

Library use: ``api_app.create_app(engine, ...)`` builds the ASGI app around any object with the
``Engine`` interface; ``api_transport.make_server(app, host, port, **app.state.remoteglm.server_options())``
binds and returns the uvicorn server with the transport limits (``server.run()`` blocks; a
thread may run it).

The modules, by concern: ``api_state`` (what the app shares, the limits' defaults), ``api_guard``
(key, CORS, framing, body size, access log), ``api_app`` (the routes), ``api_request`` (a chat
request parsed and checked), ``api_replies`` (JSON and SSE answers), ``api_queue`` (the batches
and their queue), ``api_errors`` (OpenAI's error shape), ``openai_schema`` (the pydantic
bodies), ``api_transport`` (the h11 protocol, the server), ``api_log`` (the escaped logs); this
module is the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from remoteglm.errors import RemoteGLMError, cli_entry
from remoteglm.options import Parser, add_host_arg, add_model_args
from remoteglm.serve.api_app import create_app
from remoteglm.serve.api_log import EscapingFormatter
from remoteglm.serve.api_state import (API_KEY_ENV, DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, DEFAULT_MAX_REQUEST_MB,
                                       DEFAULT_SHUTDOWN_GRACE)
from remoteglm.serve.api_transport import (DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT_BODY, DEFAULT_TIMEOUT_HEADER,
                                           DEFAULT_TIMEOUT_KEEP_ALIVE, make_server)
from remoteglm.serve.bootstrap import start_engine
from remoteglm.serve.scene_jobs import (DEFAULT_MAX_SCENE_JOBS, DEFAULT_MAX_SCENE_MB, DEFAULT_SCENE_KEEP_S,
                                        DEFAULT_SCENE_UPLOAD_TIMEOUT, SceneLimits)

PUBLIC_HOSTS_WARNING = (
    "warning: --host {host} makes the server reachable from other machines; anyone who can reach "
    "port {port} can use the model{key}. Bind 127.0.0.1 unless you mean it."
)


# ---- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="python -m remoteglm.serve.api", description="OpenAI-compatible API for any model family: POST /v1/chat/completions, GET /v1/models; whole scenes: POST /v1/scenes.")
    add_model_args(ap)
    add_host_arg(ap)
    ap.add_argument("--port", type=int, default=8000, help="port (0: any free port; the URL is printed)")
    ap.add_argument("--api_key", dest="api_key", default=None,
                    help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV}, which keeps the key out of the process list)")
    ap.add_argument("--allow_path", dest="allow_path", action="append", default=[], metavar="DIR",
                    help="directory whose images requests may name by local path (repeatable; default: none)")
    ap.add_argument("--max_request_mb", dest="max_request_mb", type=float, default=DEFAULT_MAX_REQUEST_MB,
                    help=f"largest request body (base64 images included), MB (default {DEFAULT_MAX_REQUEST_MB:g})")
    ap.add_argument("--max_new_tokens", type=int, default=None, help="cap on answer tokens per request (default: none beyond the model's defaults)")
    ap.add_argument("--model_name", dest="model_name", default=None, help="model id reported by /v1/models (default: the directory name)")
    ap.add_argument("--model_alias", dest="model_alias", action="append", default=[], metavar="NAME",
                    help="another name requests may use for the model (repeatable); any other name gets 404 model_not_found")
    ap.add_argument("--max_queue", dest="max_queue", type=int, default=DEFAULT_MAX_QUEUE,
                    help=f"requests that may wait behind the batch being generated; more get 429 (default {DEFAULT_MAX_QUEUE})")
    ap.add_argument("--max_batch", dest="max_batch", type=int, default=DEFAULT_MAX_BATCH,
                    help=f"answers generated together, one forward pass per token for all (default {DEFAULT_MAX_BATCH}; "
                         "each costs its own KV cache: lower it if the GPU runs out of memory)")
    ap.add_argument("--max_connections", dest="max_connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                    help=f"requests answered at once (idle connections do not count); more get 503 (default {DEFAULT_MAX_CONNECTIONS})")
    ap.add_argument("--timeout_header", dest="timeout_header", type=float, default=DEFAULT_TIMEOUT_HEADER,
                    help=f"seconds a client has to send the request line and headers (default {DEFAULT_TIMEOUT_HEADER:g})")
    ap.add_argument("--timeout_body", dest="timeout_body", type=float, default=DEFAULT_TIMEOUT_BODY,
                    help=f"seconds a client has to send the request body (default {DEFAULT_TIMEOUT_BODY:g})")
    ap.add_argument("--timeout_keep_alive", dest="timeout_keep_alive", type=float, default=DEFAULT_TIMEOUT_KEEP_ALIVE,
                    help=f"seconds an idle connection stays open between requests (default {DEFAULT_TIMEOUT_KEEP_ALIVE:g})")
    ap.add_argument("--shutdown_grace", dest="shutdown_grace", type=float, default=DEFAULT_SHUTDOWN_GRACE,
                    help=f"on SIGTERM / Ctrl-C, seconds the answer being generated gets to finish (default {DEFAULT_SHUTDOWN_GRACE:g})")
    ap.add_argument("--cors_origin", dest="cors_origin", action="append", default=[], metavar="ORIGIN",
                    help="let browser pages from ORIGIN (e.g. http://localhost:5173; * for any) call the API (repeatable; default: none)")
    s = ap.add_argument_group("scenes (POST /v1/scenes)")
    s.add_argument("--max_scene_mb", type=float, default=DEFAULT_MAX_SCENE_MB,
                   help=f"largest raster upload, MB, streamed to disk (default {DEFAULT_MAX_SCENE_MB:g})")
    s.add_argument("--scene_dir", metavar="DIR", default=None,
                   help="folder for uploads and scene results (default: the system's temp folder; avoid a tmpfs)")
    s.add_argument("--scene_root", action="append", default=[], metavar="DIR",
                   help="folder whose rasters JSON requests may name by path instead of uploading (repeatable; default: none)")
    s.add_argument("--max_scene_jobs", type=int, default=DEFAULT_MAX_SCENE_JOBS,
                   help=f"scene jobs queued, running or uploading at once; more get 429 (default {DEFAULT_MAX_SCENE_JOBS})")
    s.add_argument("--scene_keep_minutes", type=float, default=DEFAULT_SCENE_KEEP_S / 60,
                   help=f"results kept after a job ends (default {DEFAULT_SCENE_KEEP_S / 60:g})")
    s.add_argument("--timeout_scene_upload", type=float, default=DEFAULT_SCENE_UPLOAD_TIMEOUT,
                   help=f"seconds a client has to send a scene upload (default {DEFAULT_SCENE_UPLOAD_TIMEOUT:g})")
    return ap


def _scene_limits(args) -> SceneLimits:
    if args.max_scene_mb <= 0 or args.max_scene_jobs < 1 or args.scene_keep_minutes <= 0 or args.timeout_scene_upload <= 0:
        raise RemoteGLMError("--max_scene_mb, --scene_keep_minutes and --timeout_scene_upload must be positive, "
                             "--max_scene_jobs >= 1")
    roots = []
    for d in args.scene_root:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise RemoteGLMError(f"--scene_root {d}: not a directory")
        roots.append(p.resolve())
    folder = None
    if args.scene_dir is not None:
        from remoteglm.io import check_writable

        folder = Path(args.scene_dir).expanduser().resolve()
        check_writable(folder, "--scene_dir")
    return SceneLimits(max_bytes=int(args.max_scene_mb * 2**20), folder=folder, roots=tuple(roots),
                       max_jobs=args.max_scene_jobs, keep_s=args.scene_keep_minutes * 60,
                       upload_timeout=args.timeout_scene_upload)


def _check_args(args) -> list[Path]:
    if args.max_request_mb <= 0:
        raise RemoteGLMError("--max_request_mb must be positive")
    if args.max_queue < 0 or args.max_connections < 1 or args.max_batch < 1:
        raise RemoteGLMError("--max_queue must be >= 0, --max_connections and --max_batch >= 1")
    if min(args.timeout_header, args.timeout_body, args.timeout_keep_alive) <= 0 or args.shutdown_grace < 0:
        raise RemoteGLMError("the --timeout-* values must be positive and --shutdown_grace >= 0")
    allowed = []
    for d in args.allow_path:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise RemoteGLMError(f"--allow_path {d}: not a directory")
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
    scenes = _scene_limits(args)
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    from remoteglm.serve.sampling import CHAT_DEFAULTS

    name = args.model_name or Path(args.from_pretrained).expanduser().resolve().name
    engine, _, _ = start_engine(args, name=name, defaults=CHAT_DEFAULTS, max_new_tokens=args.max_new_tokens)
    app = create_app(engine, api_key=key, allowed=allowed, max_request_bytes=int(args.max_request_mb * 2**20),
                     max_queue=args.max_queue, shutdown_grace=args.shutdown_grace, cors_origins=args.cors_origin,
                     model_aliases=args.model_alias, max_batch=args.max_batch, scenes=scenes)
    server = make_server(app, args.host, args.port, timeout_header=args.timeout_header, timeout_body=args.timeout_body,
                         timeout_keep_alive=args.timeout_keep_alive, max_connections=args.max_connections,
                         **app.state.remoteglm.server_options())
    _setup_logging()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(PUBLIC_HOSTS_WARNING.format(host=args.host, port=server.sock.getsockname()[1],
                                          key="" if key else " (no --api_key is set)"), file=sys.stderr, flush=True)
    print(f"serving {name} ({engine.quant}) at {server.url}  (POST /chat/completions, GET /models)", flush=True)
    try:
        server.run()
    finally:
        app.state.remoteglm.close(timeout=args.shutdown_grace + 10)
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
