"""The outer layer of the API's application (``Guard``): CORS preflights, the API key, request
framing and body size (declared and as it streams in), a chat body's Content-Type, the queue
place reserved before a chat body is read, and the access log. Its refusals are the same JSON
as the routes'."""

from __future__ import annotations

import hmac
import time

from fastapi.responses import Response
from starlette.datastructures import Headers

from remoteglm.serve.api_errors import APIError, error_response
from remoteglm.serve.api_log import client_address, escape_controls, log_access, request_line
from remoteglm.serve.api_state import API_KEY_ENV, CHAT_PATH, PLACE_KEY, APIState
from remoteglm.serve.api_transport import drain_cap

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


def _auth_error(header: str | None, key: str) -> APIError | None:
    if not header:
        return APIError(401, "You didn't provide an API key: send it in an Authorization header using Bearer auth "
                             "(Authorization: Bearer YOUR_KEY), the key this server was started with "
                             f"(--api_key or {API_KEY_ENV}).", code="missing_api_key")
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
    """The body as it streams in, refused (413) once past the limit: nothing beyond it is read.
    ``hint``: the flag that sets the limit and what to send instead."""

    def __init__(self, receive, limit: int, hint: str = "--max_request_mb; send a smaller image"):
        self.receive, self.limit, self.hint, self.total = receive, limit, hint, 0

    async def __call__(self):
        message = await self.receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            if self.total > self.limit:
                raise APIError(413, f"the request body is over this server's {self.limit / 2**20:g} MB limit ({self.hint})",
                               code="request_too_large")
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
            limit, hint = api.body_limit(method, path)
            if n > limit:
                close = {"Connection": "close"} if n > drain_cap(api.max_request_bytes) else None  # (what the transport drains)
                return error_response(APIError(413, f"the request body is {n / 2**20:.1f} MB, over this server's "
                                                    f"{limit / 2**20:g} MB limit ({hint})",
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
                await self.app(scope, _LimitedReceive(receive, *self.api.body_limit(scope["method"], scope["path"])),
                               send_logged)
            except APIError as err:  # raised outside a route's handler (e.g. the body limit)
                if started:
                    raise
                await error_response(err)(scope, receive, send_logged)
        finally:
            place = scope.pop(PLACE_KEY, None)
            if place is not None:
                place.release()
            log_access(client_address(scope), request_line(scope), status or 499, time.monotonic() - start)
