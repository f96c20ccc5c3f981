"""The API's errors, all in OpenAI's one JSON shape ``{"error": {"message", "type", "param",
"code"}}``: ``APIError`` and the common ones (500, 503, a client gone), a schema mismatch as 400
naming the place (``validation_error``), any exception as the error the client gets
(``as_api_error``), the response (``error_response``) and the app's one error handler."""

from __future__ import annotations

from typing import Sequence

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ROUTES_HINT = "this server has GET /v1/models, POST /v1/chat/completions and POST /v1/scenes (docs: GET /docs)"


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


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """The app's one error handler (routing's 404/405, validation, APIError, and any other
    exception, which uvicorn then logs with its traceback)."""
    return error_response(as_api_error(exc, request.method, request.url.path))
